//! End-to-end tests of the limits of SPEC §7 and §6 ("bad input gets a clear error and changes
//! nothing"): malformed and hostile requests are refused with the right code and a short message
//! and write nothing; entry streams are capped; streams nobody reads and connections that never
//! speak do not make the server's memory grow with the log; SIGTERM ends a stalled stream within
//! the drain time; and a write that fails because the process ran out of file descriptors
//! recovers once descriptors are free again, without the log gaining a second copy.
//!
//! The memory, shutdown and file-descriptor tests run the real binary, so that what they measure
//! (resident memory, exit status, open-file limit) is the server's own.

mod common;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use claimledger::pb;
use claimledger::pb::claim_service_client::ClaimServiceClient;
use claimledger::pb::log_service_client::LogServiceClient;
use common::*;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long any single call or step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

/// `fut`, or a failure naming `what` if it takes longer than `limit`.
async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

// ---------------------------------------------------------------------------------------------
// Raw request bodies
// ---------------------------------------------------------------------------------------------

/// A codec that sends a message's bytes as they are and takes a response's bytes as they come,
/// so a test can put on the wire what no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

/// Sends `body` as the request message of the unary method `path`.
async fn raw_unary(ch: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

/// A line of `/proc/PID/status`, in kB (`VmRSS`, `VmHWM`).
fn proc_kb(pid: libc::pid_t, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Starts `claimledger serve` on a free loopback port over `dir`, with `extra` flags.
fn serve(dir: &Path, extra: &[&str]) -> (ServeProcess, libc::pid_t) {
    let mut args = vec![
        "--data-dir".to_string(),
        dir.to_string_lossy().into_owned(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let sp = ServeProcess::start(args);
    let pid = sp.pid();
    (sp, pid)
}

async fn connect(url: &str) -> Channel {
    within(
        "connect",
        STEP,
        Channel::from_shared(url.to_string())
            .expect("endpoint")
            .connect(),
    )
    .await
    .expect("connect to serve")
}

/// SIGTERM to `sp` and the time it took to exit 0 (ServeProcess::stop asserts the status).
async fn stop_timed(sp: ServeProcess) -> Duration {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        sp.stop();
        t.elapsed()
    })
    .await
    .expect("stop serve")
}

/// A claim of about 52 KB, near the largest one a client may send: a 20,000-character text
/// (the field limit) and 64 URLs (the list limit) of 512 characters (the URL limit). The text
/// varies with `i` but has few distinct words, so the text index stays small and setup fast.
fn big_claim(i: usize) -> pb::Claim {
    let mut c = claim(pb::ClaimKind::Statement, "bulk", &format!("Bulk claim {i}"));
    let mut text = format!("Report {i}.\n");
    while text.len() < 20_000 {
        text.push_str("\tlorem ipsum dolor sit amet\n");
    }
    text.truncate(20_000);
    c.text = text;
    c.urls = (0..64)
        .map(|u| {
            let mut url = format!("https://example.org/{i}/{u}/");
            url.push_str(&"a".repeat(512 - url.len()));
            url
        })
        .collect();
    c
}

/// Registers the claimant `bulk` and submits `n` [`big_claim`]s from 16 concurrent callers (so
/// the writer commits them in groups). Returns the log size.
async fn fill(ch: &Channel, n: usize) -> u64 {
    let mut c = Clients {
        sources: pb::source_service_client::SourceServiceClient::new(ch.clone()),
        claims: ClaimServiceClient::new(ch.clone()),
        log: LogServiceClient::new(ch.clone()),
    };
    c.register(source(
        "bulk",
        "",
        pb::Role::NonParty,
        pb::Reliability::B,
        "",
    ))
    .await;
    let workers = 16;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut claims = ClaimServiceClient::new(ch.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(workers) {
                claims
                    .submit_claim(pb::SubmitClaimRequest {
                        request_id: format!("bulk-{i}"),
                        claim: Some(big_claim(i)),
                    })
                    .await
                    .unwrap_or_else(|e| panic!("bulk claim {i}: {e}"));
            }
        }));
    }
    within("filling the log", Duration::from_secs(300), async {
        for t in tasks {
            t.await.expect("a filling task");
        }
    })
    .await;
    c.size().await
}

// ---------------------------------------------------------------------------------------------
// 1. Bad input
// ---------------------------------------------------------------------------------------------

fn dated_claim(start: i64, end: i64) -> pb::Claim {
    let mut c = claim(pb::ClaimKind::Strike, "claimant-a", "A strike on a depot");
    c.event_time = Some(pb::EventTime {
        start: Some(ts(start)),
        end: Some(ts(end)),
        ..Default::default()
    });
    c
}

/// 2024-01-01T00:00:00Z.
const JAN_2024: i64 = 1_704_067_200;
/// 10000-01-01T00:00:00Z, the first second past year 9999.
const YEAR_10000: i64 = 253_402_300_800;
/// A year of 365.25 days.
const YEAR: i64 = 31_557_600;

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let mut c = server.clients().await;
    c.register(source(
        "claimant-a",
        "",
        pb::Role::NonParty,
        pb::Reliability::B,
        "",
    ))
    .await;
    let size = c.size().await;

    let claims = c.claims.clone();
    let submit = |rid: &str, claim: pb::Claim| {
        let mut claims = claims.clone();
        let req = pb::SubmitClaimRequest {
            request_id: rid.into(),
            claim: Some(claim),
        };
        async move { within("SubmitClaim", STEP, claims.submit_claim(req)).await }
    };
    let mut cases: Vec<(&str, Result<_, Status>, Code, &str)> = vec![
        (
            "event time from i64::MIN to i64::MAX",
            submit("t1", dated_claim(i64::MIN, i64::MAX)).await,
            Code::InvalidArgument,
            "claim.event_time.start",
        ),
        (
            "event time ending at i64::MAX",
            submit("t2", dated_claim(JAN_2024, i64::MAX)).await,
            Code::InvalidArgument,
            "claim.event_time.end",
        ),
        (
            "event time in year 10000",
            submit("t3", dated_claim(YEAR_10000, YEAR_10000)).await,
            Code::InvalidArgument,
            "claim.event_time.start",
        ),
        (
            "event span of 101 years",
            submit("t4", dated_claim(0, 101 * YEAR)).await,
            Code::InvalidArgument,
            "claim.event_time.end",
        ),
    ];
    let mut resolve = claim(
        pb::ClaimKind::MissileLaunchOrWarning,
        "claimant-a",
        "A warning",
    );
    resolve.resolve_by = Some(ts(YEAR_10000));
    cases.push((
        "resolve_by in year 10000",
        submit("t5", resolve.clone()).await,
        Code::InvalidArgument,
        "claim.resolve_by",
    ));
    resolve.resolve_by = Some(ts(i64::MIN));
    cases.push((
        "resolve_by at i64::MIN",
        submit("t6", resolve).await,
        Code::InvalidArgument,
        "claim.resolve_by",
    ));
    for (i, bad) in [
        "Depot hit\rDepot safe",
        "Depot hit\x1b[2K",
        "Depot\u{0} hit",
    ]
    .into_iter()
    .enumerate()
    {
        let cl = claim(pb::ClaimKind::Strike, "claimant-a", bad);
        cases.push((
            "control characters in the summary",
            submit(&format!("s{i}"), cl).await,
            Code::InvalidArgument,
            "claim.summary",
        ));
    }
    for (what, r, code, needle) in cases {
        let s = expect_err(r, code, needle);
        assert!(
            !s.message().contains('\u{1b}') && !s.message().contains('\r'),
            "{what}: the message echoes a control character: {:?}",
            s.message()
        );
        assert_eq!(c.size().await, size, "{what}: the refusal wrote nothing");
    }

    // A source name that would make its text read backwards.
    let mut s = source("rlo-source", "", pb::Role::NonParty, pb::Reliability::B, "");
    s.name = "Daily \u{202E}sweN".into();
    let r = within(
        "RegisterSource",
        STEP,
        c.sources.register_source(pb::RegisterSourceRequest {
            request_id: "rlo".into(),
            source: Some(s),
        }),
    )
    .await;
    expect_err(r, Code::InvalidArgument, "source.name");
    assert_eq!(c.size().await, size, "the RLO name wrote nothing");

    // A query over an impossible time range.
    let r = within(
        "ListClaims",
        STEP,
        c.claims.list_claims(pb::ListClaimsRequest {
            event_time_from: Some(ts(i64::MIN)),
            ..Default::default()
        }),
    )
    .await;
    expect_err(r, Code::InvalidArgument, "event_time_from");
    assert_eq!(c.size().await, size, "the refused query wrote nothing");

    // A 1 MB id is refused with a message that quotes at most a short prefix of it.
    let huge = "x".repeat(1 << 20);
    let r = within(
        "GetClaim",
        STEP,
        c.claims.get_claim(pb::GetClaimRequest { id: huge.clone() }),
    )
    .await;
    let get = expect_err(r, Code::InvalidArgument, "id");
    let r = within(
        "AddEvidence",
        STEP,
        c.claims.add_evidence(pb::AddEvidenceRequest {
            request_id: "huge-id".into(),
            claim_id: huge.clone(),
            evidence: Some(evidence("claimant-a", pb::Stance::Supports, 2)),
        }),
    )
    .await;
    let add = expect_err(r, Code::InvalidArgument, "claim_id");
    for (what, s) in [("GetClaim", get), ("AddEvidence", add)] {
        assert!(
            s.message().len() < 200,
            "{what}: a {}-byte message for a 1 MB id: {:.300}",
            s.message().len(),
            s.message()
        );
        assert!(
            !s.message().contains(&"x".repeat(65)),
            "{what}: the message quotes more than 64 characters of the id"
        );
    }
    assert_eq!(c.size().await, size, "the 1 MB claim id wrote nothing");

    // Bytes that are no protobuf message are the client's mistake, not an INTERNAL error.
    for path in [
        "/claimledger.v1.ClaimService/GetClaim",
        "/claimledger.v1.ClaimService/SubmitClaim",
    ] {
        let r = within(
            "an undecodable body",
            STEP,
            raw_unary(server.channel().await, path, vec![0xff, 0xff, 0xff]),
        )
        .await;
        expect_err(r, Code::InvalidArgument, "");
        assert_eq!(c.size().await, size, "the undecodable body wrote nothing");
    }

    // Request messages over 4 MiB: a well-formed one and raw bytes.
    let mut big = source("big", "", pb::Role::NonParty, pb::Reliability::B, "");
    big.name = "n".repeat(5 << 20);
    let r = within(
        "an oversized RegisterSource",
        STEP,
        c.sources.register_source(pb::RegisterSourceRequest {
            request_id: "big".into(),
            source: Some(big),
        }),
    )
    .await;
    expect_err(r, Code::ResourceExhausted, "too large");
    let r = within(
        "an oversized raw body",
        STEP,
        raw_unary(
            server.channel().await,
            "/claimledger.v1.ClaimService/SubmitClaim",
            vec![0u8; 5 << 20],
        ),
    )
    .await;
    expect_err(r, Code::ResourceExhausted, "too large");
    assert_eq!(c.size().await, size, "the oversized bodies wrote nothing");

    // Full text may hold newlines and tabs.
    let mut ok = claim(pb::ClaimKind::Strike, "claimant-a", "A strike on a depot");
    ok.text = "First paragraph.\n\n\tAn indented quote,\ton two lines.\n".into();
    let accepted = within("SubmitClaim", STEP, submit("multiline", ok))
        .await
        .expect("a text with newlines and tabs is accepted")
        .into_inner();
    assert_eq!(c.size().await, size + 1, "the accepted claim is logged");

    // Nothing the refusals did breaks reading: listing and the CLI's entry dump still work.
    let list = within(
        "ListClaims",
        STEP,
        c.claims.list_claims(pb::ListClaimsRequest {
            min_size: size + 1,
            ..Default::default()
        }),
    )
    .await
    .expect("ListClaims after the refusals")
    .into_inner();
    let accepted_id = accepted.claim.expect("claim").id;
    let ids: Vec<_> = list
        .claims
        .iter()
        .filter_map(|i| i.claim.as_ref().map(|c| c.id.clone()))
        .collect();
    assert_eq!(ids, vec![accepted_id], "only the accepted claim is listed");
    let url = format!("http://{}", server.addr);
    let dump = tokio::task::spawn_blocking(move || {
        claimledger(["log", "entries", "--json", "--server", url.as_str()])
    })
    .await
    .expect("run the CLI");
    assert!(
        dump.status.success(),
        "`claimledger log entries` failed: {}",
        dump.stderr
    );
    assert_eq!(
        dump.stdout.lines().count() as u64,
        size + 1,
        "`log entries` prints every entry:\n{}",
        dump.stdout
    );
    assert!(dump.stdout.contains("An indented quote"));
    server.stop().await;
}
}

// ---------------------------------------------------------------------------------------------
// 2. The cap on entry streams
// ---------------------------------------------------------------------------------------------

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_streams_beyond_the_cap_are_refused_until_some_close() {
    use claimledger::api::MAX_STREAMS;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    // Several connections: each allows 64 concurrent streams by default, and the cap is on the
    // whole server.
    let per_conn = 50;
    let conns = MAX_STREAMS.div_ceil(per_conn) + 1;
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(LogServiceClient::new(server.channel().await));
    }
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for i in 0..conns * per_conn {
        let r = within(
            "WatchEntries",
            STEP,
            clients[i / per_conn].watch_entries(pb::WatchEntriesRequest { from_index: 0 }),
        )
        .await;
        match r {
            Ok(s) => open.push(s.into_inner()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    Code::ResourceExhausted,
                    "stream {i}: {}",
                    s.message()
                );
                refused.push(i);
            }
        }
    }
    assert_eq!(open.len(), MAX_STREAMS, "exactly the cap is open");
    assert_eq!(
        refused,
        (MAX_STREAMS..conns * per_conn).collect::<Vec<_>>(),
        "the streams beyond the cap are refused"
    );

    // The open streams are live: a new entry reaches them.
    let mut c = server.clients().await;
    c.register(source("s", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let first = within("a watched entry", STEP, open[0].message())
        .await
        .expect("the watch stream")
        .expect("an entry");
    assert_eq!(first.index, 0);

    // Closing streams frees their places (once the server has seen the reset).
    let closed = 10;
    drop(open.drain(..closed));
    let deadline = Instant::now() + STEP;
    let mut reopened = 0;
    while reopened < closed {
        let r = within(
            "WatchEntries",
            STEP,
            clients[0].watch_entries(pb::WatchEntriesRequest { from_index: 1 }),
        )
        .await;
        match r {
            Ok(s) => {
                open.push(s.into_inner());
                reopened += 1;
            }
            Err(s) if s.code() == Code::ResourceExhausted && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("reopening stream {reopened} after closing {closed}: {s}"),
        }
    }
    let r = within(
        "WatchEntries",
        STEP,
        clients[1].watch_entries(pb::WatchEntriesRequest { from_index: 1 }),
    )
    .await;
    expect_err(r, Code::ResourceExhausted, "entry streams");
    drop(open);
    server.stop().await;
}
}

// ---------------------------------------------------------------------------------------------
// 3. Memory with streams nobody reads and connections that never speak
// ---------------------------------------------------------------------------------------------

/// 800 claims of ~52 KB make a ~42 MB log.
const MEMORY_CLAIMS: usize = 800;
/// Resident memory allowed while 8 unread whole-log streams and 200 idle connections are held,
/// about twice what was measured (127 MB, of which sled's page cache holding the freshly written
/// log is most) …
const MAX_RSS_KB: u64 = 256 * 1024;
/// … and how much of it those streams and connections may add (measured: 5 MB; each stream may
/// hold ~1 MB: 256 KiB read ahead, 4 queued entries, hyper's send buffer). The code before the
/// stream limits queued 256 entries per stream plus a 256-entry batch, ~27 MB per stream of
/// these entries: measured 322 MB in all, 199 MB more than before the streams opened.
const MAX_GROWTH_KB: u64 = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_and_idle_connections_keep_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sp, pid) = serve(dir.path(), &[]);
    let ch = connect(&sp.url).await;
    let size = fill(&ch, MEMORY_CLAIMS).await;
    let log_bytes: u64 = std::fs::metadata(dir.path().join("sled/db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let before = proc_kb(pid, "VmRSS");

    // Eight connections, each with a stream over the whole log that is never polled.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut log = LogServiceClient::new(connect(&sp.url).await);
        let stream = within(
            "GetEntries",
            STEP,
            log.get_entries(pb::GetEntriesRequest { start: 0, end: 0 }),
        )
        .await
        .expect("GetEntries over the whole log")
        .into_inner();
        held.push((log, stream));
    }
    // Two hundred connections that never send a byte.
    let addr = sp.addr().to_string();
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|i| {
            std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("idle conn {i}: {e}"))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = proc_kb(pid, "VmRSS");
    let peak = proc_kb(pid, "VmHWM");
    eprintln!(
        "serve RSS: {} MB after writing {size} entries ({} MB sled file), {} MB with 8 unread \
         streams and 200 idle connections (peak {} MB; bounds {} MB, growth {} MB)",
        before / 1024,
        log_bytes >> 20,
        rss / 1024,
        peak / 1024,
        MAX_RSS_KB / 1024,
        MAX_GROWTH_KB / 1024
    );
    assert!(
        rss < MAX_RSS_KB,
        "serve holds {} MB with unread streams and idle connections (bound {} MB)",
        rss / 1024,
        MAX_RSS_KB / 1024
    );
    assert!(
        rss.saturating_sub(before) < MAX_GROWTH_KB,
        "unread streams and idle connections added {} MB (bound {} MB)",
        rss.saturating_sub(before) / 1024,
        MAX_GROWTH_KB / 1024
    );

    // Writes still go through while all that is held.
    let mut claims = ClaimServiceClient::new(connect(&sp.url).await);
    let cl = claim(
        pb::ClaimKind::Statement,
        "bulk",
        "Written while streams stall",
    );
    let r = within(
        "SubmitClaim while streams stall",
        STEP,
        claims.submit_claim(pb::SubmitClaimRequest {
            request_id: "while-held".into(),
            claim: Some(cl),
        }),
    )
    .await
    .expect("a write while unread streams and idle connections are held")
    .into_inner();
    assert_eq!(r.receipt.expect("receipt").index, size);

    drop(idle);
    drop(held);
    let took = stop_timed(sp).await;
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. SIGTERM while a stream stalls
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_stalled_stream_within_the_drain_time() {
    let drain = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let (sp, _pid) = serve(dir.path(), &["--drain-seconds", &drain.to_string()]);
    let ch = connect(&sp.url).await;
    // ~3 MB of entries against 64 KiB flow-control windows: the server cannot send it all.
    let size = fill(&ch, 60).await;
    let small_windows = within(
        "connect",
        STEP,
        Channel::from_shared(sp.url.clone())
            .expect("endpoint")
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect(),
    )
    .await
    .expect("connect with small windows");
    let mut log = LogServiceClient::new(small_windows);
    let mut stalled = within(
        "GetEntries",
        STEP,
        log.get_entries(pb::GetEntriesRequest { start: 0, end: 0 }),
    )
    .await
    .expect("GetEntries over the whole log")
    .into_inner();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let took = stop_timed(sp).await;
    assert!(
        took < Duration::from_secs(drain + 5),
        "serve took {took:?} to exit after SIGTERM with --drain-seconds {drain}"
    );

    // The stream was cut off, not finished: the server had not sent everything.
    let mut got = 0u64;
    let ended = within("the cut-off stream to end", STEP, async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => got += 1,
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        }
    })
    .await;
    assert!(
        got < size,
        "the stream received all {size} entries ({ended:?}): it never stalled, so this test \
         proves nothing about the drain"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Recovery after running out of file descriptors
// ---------------------------------------------------------------------------------------------

/// `(soft, hard)` open-file limits of `pid`.
fn nofile(pid: libc::pid_t) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_string(), v[4].to_string())
}

fn set_nofile(pid: libc::pid_t, soft: &str, hard: &str) {
    let out = run_bounded(
        std::process::Command::new("prlimit").args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ]),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "prlimit --nofile={soft}:{hard}: {}",
        out.stderr
    );
}

/// The lowest file descriptor number `pid` has free: with the soft limit set to it, the next
/// open fails with EMFILE.
fn lowest_free_fd(pid: libc::pid_t) -> u64 {
    let mut used: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the server's fds")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    used.sort_unstable();
    let mut n = 0;
    for fd in used {
        if fd != n {
            break;
        }
        n += 1;
    }
    n
}

async fn health(h: &mut HealthClient<Channel>) -> ServingStatus {
    let r = within(
        "Health/Check",
        STEP,
        h.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("Health/Check")
    .into_inner();
    ServingStatus::try_from(r.status).expect("a known serving status")
}

/// Polls health until it is `want`; after `limit`, the status it still has.
async fn health_becomes(
    h: &mut HealthClient<Channel>,
    want: ServingStatus,
    limit: Duration,
) -> Result<(), ServingStatus> {
    let deadline = Instant::now() + limit;
    loop {
        let now = health(h).await;
        if now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_recover_after_running_out_of_file_descriptors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sp, pid) = serve(dir.path(), &[]);
    // Connect first: with no descriptor free the server cannot accept a new connection.
    let ch = connect(&sp.url).await;
    let mut c = Clients {
        sources: pb::source_service_client::SourceServiceClient::new(ch.clone()),
        claims: ClaimServiceClient::new(ch.clone()),
        log: LogServiceClient::new(ch.clone()),
    };
    let mut h = HealthClient::new(ch.clone());
    c.register(source(
        "claimant-a",
        "",
        pb::Role::NonParty,
        pb::Reliability::B,
        "",
    ))
    .await;
    let key = c.verifier_key().await;
    let pending_at = c.size().await;
    // Let the query index commit what it has to read, so the files it opens for that are
    // closed again before the descriptors are counted.
    c.claims
        .list_claims(pb::ListClaimsRequest {
            min_size: pending_at,
            ..Default::default()
        })
        .await
        .expect("the index reads the registration");
    assert_eq!(health(&mut h).await, ServingStatus::Serving);
    assert!(
        dir.path().join("sled/blobs").is_dir(),
        "sled made no blobs directory, so a commit opens no file and cannot fail for want of one"
    );

    let first = pb::SubmitClaimRequest {
        request_id: "during-emfile".into(),
        claim: Some(claim(
            pb::ClaimKind::Strike,
            "claimant-a",
            "Written while no file descriptor is free",
        )),
    };
    let (soft, hard) = nofile(pid);
    let limit = lowest_free_fd(pid);
    set_nofile(pid, &limit.to_string(), &hard);
    let failed = within("SubmitClaim", STEP, c.claims.submit_claim(first.clone())).await;
    let other = within(
        "SubmitClaim",
        STEP,
        c.claims.submit_claim(pb::SubmitClaimRequest {
            request_id: "refused-while-pending".into(),
            claim: Some(claim(pb::ClaimKind::Strike, "claimant-a", "Refused")),
        }),
    )
    .await;
    let unhealthy = health_becomes(&mut h, ServingStatus::NotServing, Duration::from_secs(5)).await;
    // Give the descriptors back before anything can fail.
    set_nofile(pid, &soft, &hard);
    let s = expect_err(failed, Code::Unavailable, "retry with the same request_id");
    eprintln!("the write without free descriptors: {}", s.message());
    expect_err(other, Code::Unavailable, "retry with the same request_id");
    if let Err(now) = unhealthy {
        panic!("health stayed {now:?} while the commit could not be made durable");
    }

    let recovered = health_becomes(&mut h, ServingStatus::Serving, Duration::from_secs(10)).await;
    if let Err(now) = recovered {
        panic!("health still {now:?} 10 s after descriptors were free again");
    }
    let next = c
        .submit(
            "after-recovery",
            claim(
                pb::ClaimKind::Strike,
                "claimant-a",
                "Written after recovery",
            ),
        )
        .await;
    let next = next.receipt.expect("receipt");
    assert_eq!(next.index, pending_at + 1, "the pending entry was kept");
    verify_receipt(&next, &key);

    let retried = within(
        "the retried SubmitClaim",
        STEP,
        c.claims.submit_claim(first),
    )
    .await
    .expect("retrying the first request with its request_id succeeds")
    .into_inner();
    let receipt = retried.receipt.expect("receipt");
    assert_eq!(
        receipt.index, pending_at,
        "the retry answers with the entry that was pending"
    );
    verify_receipt(&receipt, &key);
    assert_eq!(
        c.size().await,
        pending_at + 2,
        "the log holds the pending entry and the new one, nothing more"
    );
    let took = stop_timed(sp).await;
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
}
