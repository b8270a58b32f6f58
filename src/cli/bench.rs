//! `claimledger bench`: measures, in one run against a running server, the calls users make
//! most — SubmitClaim, AddEvidence, GetClaimStatus, ListClaims (a text query and a status
//! filter) — beside `grpc.health.v1.Health/Check`, the no-op call that shows what gRPC itself
//! costs on this machine, at several numbers of concurrent streams (1, 16 and 64 by default).
//!
//! Each figure is throughput (successful calls per second over a fixed time), p50 and p99
//! latency, and the throughput as a share of Health/Check's at the same concurrency. Streams
//! are spread over connections of at most `--streams-per-connection` each (HTTP/2
//! multiplexing, as a real client pool would). Before measuring it registers two sources and
//! submits `--seed-claims` claims with one piece of evidence each, for the reads to find.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use tonic::Status;

use super::connect::{connect, ClientOpts, Clients};
use super::output;
use crate::pb;

#[derive(Args)]
pub struct BenchArgs {
    /// Seconds each call is measured for, at each concurrency.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Concurrent streams, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    concurrency: Vec<usize>,
    /// Calls to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values_t = Call::all()
    )]
    calls: Vec<Call>,
    /// Claims submitted (each with one piece of evidence) before measuring, for the reads.
    #[arg(long, default_value_t = 200)]
    seed_claims: usize,
    /// The free text ListClaims searches for (every bench claim has "drones"; "report N"
    /// matches the claims the N-th submit of each run made).
    #[arg(long, default_value = "drones")]
    list_query: String,
    /// Most streams sharing one connection; more streams open more connections.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    streams_per_connection: u32,
    #[command(flatten)]
    opts: ClientOpts,
}

/// One call the benchmark makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Call {
    /// `grpc.health.v1.Health/Check`: the no-op baseline.
    Health,
    /// SubmitClaim of a new 20-word claim (durable write).
    Submit,
    /// AddEvidence to the claims the SubmitClaim measurement made, round robin (durable write).
    Evidence,
    /// GetClaimStatus of a seeded claim.
    Status,
    /// ListClaims with a one-word text query, first page of 20.
    ListText,
    /// ListClaims filtered by a status, first page of 20.
    ListStatus,
}

impl Call {
    fn all() -> Vec<Call> {
        vec![
            Call::Health,
            Call::Submit,
            Call::Evidence,
            Call::Status,
            Call::ListText,
            Call::ListStatus,
        ]
    }

    /// The gRPC method, as the table names it.
    pub fn method(self) -> &'static str {
        match self {
            Call::Health => "Health/Check",
            Call::Submit => "SubmitClaim",
            Call::Evidence => "AddEvidence",
            Call::Status => "GetClaimStatus",
            Call::ListText => "ListClaims query",
            Call::ListStatus => "ListClaims status=…",
        }
    }
}

/// How long past the end of a measurement a call may take before it counts as failed.
const STALL: Duration = Duration::from_secs(5);

/// What one (call, concurrency) measurement found.
pub struct Figure {
    pub call: Call,
    pub concurrency: usize,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// `per_sec` over Health/Check's at the same concurrency, when that was measured.
    pub vs_health: Option<f64>,
    /// For writes: how far the query index stayed behind the log while they ran.
    pub index_lag: Option<IndexLag>,
    /// The server's CPU time (all its threads) over the measurement, per call answered in it,
    /// from its `/metrics`; for writes until the index had read them. `None` when the server
    /// does not say (not on Linux, or `/metrics` out of reach). Each measurement starts once
    /// the server is quiet (`settle`). Approximate: it also holds the calls answered late or
    /// failed, the index-lag sampling, whatever else the server did meanwhile (a tantivy merge
    /// an earlier write phase left running past `SETTLE_MAX`), and a write's share of each
    /// group's fixed cost, which grows as groups get smaller (fewer streams).
    pub server_cpu: Option<Duration>,
}

/// The server's `process_cpu_seconds_total`, read from `/metrics` on the gRPC port (`None`
/// if it does not answer within [`STALL`]: a stalled server must not stall the benchmark).
async fn server_cpu_seconds(channel: &tonic::transport::Channel) -> Option<f64> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::get("/metrics")
        .body(tonic::body::Body::empty())
        .ok()?;
    let body = tokio::time::timeout(STALL, async {
        let resp = channel.clone().oneshot(req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        Some(resp.into_body().collect().await.ok()?.to_bytes())
    })
    .await
    .ok()??;
    std::str::from_utf8(&body)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))?
        .trim()
        .parse()
        .ok()
}

/// How long a quiet server's CPU time is watched for before a measurement, the most CPU it may
/// use in that time (a tenth of a core: the kernel counts in 10 ms ticks, and the scrape itself
/// costs some), and the longest [`settle`] waits for it.
const SETTLE_WINDOW: Duration = Duration::from_millis(200);
const SETTLE_CPU: f64 = 0.02;
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Waits, at most [`SETTLE_MAX`], until the server used less than [`SETTLE_CPU`] seconds of CPU
/// in a [`SETTLE_WINDOW`], so that work left by the previous measurement (tantivy merging the
/// segments a write phase made) is not counted in the next one. Returns the server's CPU
/// seconds at the end, or `None` if it does not say.
async fn settle(channel: &tonic::transport::Channel) -> Option<f64> {
    let until = Instant::now() + SETTLE_MAX;
    let mut last = server_cpu_seconds(channel).await?;
    loop {
        tokio::time::sleep(SETTLE_WINDOW).await;
        let now = server_cpu_seconds(channel).await?;
        if now - last < SETTLE_CPU || Instant::now() >= until {
            return Some(now);
        }
        last = now;
    }
}

/// The query index's lag behind the log during a write measurement, sampled every
/// [`LAG_SAMPLE`]: at each sample, how long ago the log first held an entry the index had not
/// read yet (0 when the index had read everything).
pub struct IndexLag {
    pub p50: Duration,
    pub max: Duration,
    /// From the end of the measurement until the index had read every entry written in it.
    pub catch_up: Duration,
}

const LAG_SAMPLE: Duration = Duration::from_millis(50);

/// Samples (time, log size, indexed size) until `stop`, then keeps sampling until the index
/// covers the log size seen at `stop` (at most [`STALL`] more).
async fn sample_lag(mut c: Clients, stop: Instant) -> Result<IndexLag, Status> {
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    let mut final_size = None;
    loop {
        let now = Instant::now();
        let size = c
            .log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await?
            .into_inner()
            .size;
        let indexed = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                claimant_id: "bench-no-such-claimant".into(),
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner()
            .indexed_size;
        if now >= stop {
            let target = *final_size.get_or_insert(size);
            if indexed >= target || now >= stop + STALL {
                let catch_up = now.saturating_duration_since(stop);
                let mut lags: Vec<Duration> = samples
                    .iter()
                    .map(|&(t, _, indexed)| {
                        // The first moment the log held more than the index had read.
                        let since = samples
                            .iter()
                            .find(|&&(_, s, _)| s > indexed)
                            .map_or(t, |&(t0, _, _)| t0);
                        t.saturating_sub(since)
                    })
                    .collect();
                lags.sort_unstable();
                return Ok(IndexLag {
                    p50: lags.get(lags.len() / 2).copied().unwrap_or_default(),
                    max: lags.last().copied().unwrap_or_default(),
                    catch_up,
                });
            }
        } else {
            samples.push((now - started, size, indexed));
        }
        tokio::time::sleep(LAG_SAMPLE).await;
    }
}

/// What the calls work on: the run's sources, seeded claims, and claims the Submit
/// measurement created (AddEvidence spreads over those, so no record grows large).
struct Fixture {
    run: String,
    seeded: Vec<String>,
    fresh: std::sync::Mutex<Vec<String>>,
    status: pb::Status,
    counter: AtomicUsize,
    /// The next claim AddEvidence goes to.
    evidence_next: AtomicUsize,
    /// `--list-query`.
    list_query: String,
}

impl Fixture {
    fn claimant(&self) -> String {
        format!("bench-claimant-{}", self.run)
    }

    fn agency(&self) -> String {
        format!("bench-agency-{}", self.run)
    }
}

pub async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.seconds <= 0.0 || !a.seconds.is_finite() {
        bail!("--seconds must be a positive number");
    }
    if a.concurrency.contains(&0) {
        bail!("--concurrency values must be at least 1");
    }
    if a.seed_claims == 0 && a.calls.contains(&Call::Status) {
        bail!("measuring GetClaimStatus needs seeded claims: give --seed-claims 1 or more");
    }
    if a.seed_claims == 0 && a.calls.contains(&Call::Evidence) && !a.calls.contains(&Call::Submit) {
        bail!("measuring AddEvidence needs claims: give --seed-claims, or measure submit too");
    }
    // The baseline first at each concurrency, so every figure can be compared with it.
    let mut calls = a.calls.clone();
    calls.sort_by_key(|c| *c != Call::Health);
    calls.dedup();
    let widest = a.concurrency.iter().copied().max().unwrap_or(1);
    let per_conn = a.streams_per_connection as usize;
    let mut pool = Vec::new();
    for _ in 0..widest.div_ceil(per_conn) {
        pool.push(connect(&a.opts).await?);
    }
    let fixture = Arc::new(seed(&pool[0], a.seed_claims, a.list_query.clone()).await?);
    let duration = Duration::from_secs_f64(a.seconds);
    let mut figures = Vec::new();
    for &c in &a.concurrency {
        let mut health = None;
        for &call in &calls {
            let mut f = measure(&pool, per_conn, &fixture, call, c, duration).await;
            if call == Call::Health {
                health = Some(f.per_sec);
            }
            f.vs_health = health.filter(|h| *h > 0.0).map(|h| f.per_sec / h);
            output::bench_figure(&f, a.opts.json);
            figures.push(f);
        }
    }
    // Figures with failed calls are not what they seem: say so, and fail the run.
    if let Some(f) = figures.iter().find(|f| f.errors > 0) {
        bail!(
            "{} of {} calls failed ({} at {} streams first: {})",
            figures.iter().map(|f| f.errors).sum::<u64>(),
            figures.iter().map(|f| f.errors + f.ok).sum::<u64>(),
            f.call.method(),
            f.concurrency,
            f.first_error.as_deref().unwrap_or("unknown")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Registers the run's two sources and submits `n` claims with one piece of evidence each.
async fn seed(c: &Clients, n: usize, list_query: String) -> anyhow::Result<Fixture> {
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut fixture = Fixture {
        run,
        seeded: Vec::with_capacity(n),
        fresh: std::sync::Mutex::new(Vec::new()),
        status: pb::Status::Claimed,
        counter: AtomicUsize::new(0),
        evidence_next: AtomicUsize::new(0),
        list_query,
    };
    let mut sources = c.sources.clone();
    for (id, side, role, grade) in [
        (
            fixture.claimant(),
            "RU",
            pb::Role::Party,
            pb::Reliability::D,
        ),
        (fixture.agency(), "", pb::Role::NonParty, pb::Reliability::B),
    ] {
        sources
            .register_source(pb::RegisterSourceRequest {
                request_id: String::new(),
                source: Some(pb::Source {
                    id,
                    name: "bench".into(),
                    kind: pb::SourceKind::Other as i32,
                    side: side.into(),
                    role: role as i32,
                    reliability: grade as i32,
                    ..Default::default()
                }),
            })
            .await?;
    }
    let mut claims = c.claims.clone();
    for i in 0..n {
        let id = submit(&mut claims, &fixture, i).await?;
        evidence(&mut claims, &fixture, id.clone()).await?;
        fixture.seeded.push(id);
    }
    if let Some(first) = fixture.seeded.first() {
        let s = claims
            .get_claim_status(pb::GetClaimStatusRequest {
                claim_id: first.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        fixture.status = pb::Status::try_from(s.status).unwrap_or(pb::Status::Claimed);
    }
    Ok(fixture)
}

type ClaimsClient = pb::claim_service_client::ClaimServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        super::connect::AddToken,
    >,
>;

const PLACES: [&str; 8] = [
    "Pokrovsk",
    "Kupiansk",
    "Huliaipole",
    "Sumy",
    "Kharkiv",
    "Odesa",
    "Zaporizhzhia",
    "Kherson",
];

/// Submits a claim of about 20 words and returns its id.
async fn submit(claims: &mut ClaimsClient, f: &Fixture, i: usize) -> Result<String, Status> {
    let place = PLACES[i % PLACES.len()];
    let r = claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: String::new(),
            claim: Some(pb::Claim {
                kind: pb::ClaimKind::Interception as i32,
                modality: pb::Modality::AssertedFact as i32,
                summary: format!(
                    "Air defence destroyed {n} drones overnight near {place}, the regional \
                     administration said in its morning report {i}",
                    n = 10 + i % 90
                ),
                claimant_id: f.claimant(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    r.claim
        .map(|c| c.id)
        .ok_or_else(|| Status::internal("SubmitClaim answered without the claim"))
}

async fn evidence(claims: &mut ClaimsClient, f: &Fixture, claim_id: String) -> Result<(), Status> {
    claims
        .add_evidence(pb::AddEvidenceRequest {
            request_id: String::new(),
            claim_id,
            evidence: Some(pb::Evidence {
                source_id: f.agency(),
                stance: pb::Stance::Supports as i32,
                kind: pb::EvidenceKind::MediaReport as i32,
                credibility: 2,
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}

/// One call of `call`.
async fn once(c: &mut Clients, f: &Fixture, call: Call) -> Result<(), Status> {
    let i = f.counter.fetch_add(1, Ordering::Relaxed);
    match call {
        Call::Health => {
            c.health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
        }
        Call::Submit => {
            let id = submit(&mut c.claims, f, i).await?;
            if let Ok(mut fresh) = f.fresh.lock() {
                fresh.push(id);
            }
        }
        Call::Evidence => {
            // The claims the Submit measurement made, round robin with a cursor of its own: each
            // gets one piece of evidence before any gets a second, and the seeded claims the
            // reads use are left alone (a record with much evidence is slower to read).
            let k = f.evidence_next.fetch_add(1, Ordering::Relaxed);
            let target = f
                .fresh
                .lock()
                .ok()
                .and_then(|fresh| (!fresh.is_empty()).then(|| fresh[k % fresh.len()].clone()))
                .or_else(|| (!f.seeded.is_empty()).then(|| f.seeded[i % f.seeded.len()].clone()))
                .ok_or_else(|| Status::failed_precondition("no claim to add evidence to"))?;
            evidence(&mut c.claims, f, target).await?;
        }
        Call::Status => {
            let id = f
                .seeded
                .get(i % f.seeded.len().max(1))
                .cloned()
                .ok_or_else(|| Status::failed_precondition("no seeded claim (--seed-claims 0)"))?;
            c.claims
                .get_claim_status(pb::GetClaimStatusRequest {
                    claim_id: id,
                    ..Default::default()
                })
                .await?;
        }
        Call::ListText => {
            c.claims
                .list_claims(pb::ListClaimsRequest {
                    query: f.list_query.clone(),
                    page_size: 20,
                    ..Default::default()
                })
                .await?;
        }
        Call::ListStatus => {
            c.claims
                .list_claims(pb::ListClaimsRequest {
                    status: f.status as i32,
                    page_size: 20,
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// Runs `call` from `concurrency` streams for `duration`.
async fn measure(
    pool: &[Clients],
    per_conn: usize,
    f: &Arc<Fixture>,
    call: Call,
    concurrency: usize,
    duration: Duration,
) -> Figure {
    let conns = concurrency.div_ceil(per_conn).clamp(1, pool.len());
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    // Read before the clock starts, once the server is quiet: neither the scrape's round trip
    // nor what the previous measurement left running is the calls' time.
    let cpu_before = settle(&pool[0].channel).await;
    let started = Instant::now();
    let deadline = started + duration;
    let lag = matches!(call, Call::Submit | Call::Evidence)
        .then(|| tokio::spawn(sample_lag(pool[0].clone(), deadline)));
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let mut c = pool[t % conns].clone();
        let (f, errors, first_error) = (f.clone(), errors.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                // A stalled server must not stall the benchmark: a call still unanswered a few
                // seconds past the end of the measurement is a failure.
                let answer =
                    tokio::time::timeout_at((deadline + STALL).into(), once(&mut c, &f, call))
                        .await
                        .unwrap_or_else(|_| {
                            Err(Status::deadline_exceeded(
                                "no answer within the measurement",
                            ))
                        });
                match answer {
                    // Only calls answered within the measured time count.
                    Ok(()) if Instant::now() <= deadline => lat.push(t0.elapsed()),
                    Ok(()) => {}
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                        }
                        // A failing server must not turn the benchmark into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        match t.await {
            Ok(l) => lat.extend(l),
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = first_error.lock() {
                    first.get_or_insert_with(|| format!("a benchmark task failed: {e}"));
                }
            }
        }
    }
    let elapsed = duration.as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let index_lag = match lag {
        Some(task) => match task.await {
            Ok(Ok(lag)) => Some(lag),
            Ok(Err(e)) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = first_error.lock() {
                    first.get_or_insert_with(|| format!("measuring the index lag: {e}"));
                }
                None
            }
            Err(e) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = first_error.lock() {
                    first.get_or_insert_with(|| format!("measuring the index lag: {e}"));
                }
                None
            }
        },
        None => None,
    };
    // After the index caught up with the writes: indexing them is part of what they cost.
    let cpu_after = server_cpu_seconds(&pool[0].channel).await;
    let server_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if b >= a && !lat.is_empty() => {
            Some(Duration::from_secs_f64((b - a) / lat.len() as f64))
        }
        _ => None,
    };
    let first_error = first_error.lock().ok().and_then(|mut e| e.take());
    Figure {
        call,
        concurrency,
        ok: lat.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        per_sec: lat.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        vs_health: None,
        index_lag,
        server_cpu,
    }
}
