//! `claimledger bench`: a load generator. Registers two sources, then submits claims, each with
//! one piece of evidence, from concurrent clients, and reports throughput and latency.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::anyhow;
use clap::Args;
use tonic::Status;

use super::connect::{connect, ClientOpts};
use super::output;
use crate::pb;

#[derive(Args)]
pub struct BenchArgs {
    /// Claims to submit (each with one piece of evidence).
    #[arg(long, default_value_t = 2000)]
    claims: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn run(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let c = connect(&a.opts).await?;
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut sources = c.sources.clone();
    for (id, side, role, grade) in [
        (
            format!("bench-claimant-{run}"),
            "RU",
            pb::Role::Party,
            pb::Reliability::D,
        ),
        (
            format!("bench-agency-{run}"),
            "",
            pb::Role::NonParty,
            pb::Reliability::B,
        ),
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
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(a.claims * 2)));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let mut claims = c.claims.clone();
        let next = next.clone();
        let lat = lat.clone();
        let run = run.clone();
        let total = a.claims;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), Status>(());
                }
                let t = Instant::now();
                let r = claims
                    .submit_claim(pb::SubmitClaimRequest {
                        request_id: String::new(),
                        claim: Some(pb::Claim {
                            kind: pb::ClaimKind::Interception as i32,
                            modality: pb::Modality::AssertedFact as i32,
                            summary: format!("bench claim {i}: drones destroyed overnight"),
                            claimant_id: format!("bench-claimant-{run}"),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                let t2 = Instant::now();
                let claim_id = r.claim.map(|c| c.id).unwrap_or_default();
                claims
                    .add_evidence(pb::AddEvidenceRequest {
                        request_id: String::new(),
                        claim_id,
                        evidence: Some(pb::Evidence {
                            source_id: format!("bench-agency-{run}"),
                            stance: pb::Stance::Supports as i32,
                            kind: pb::EvidenceKind::MediaReport as i32,
                            credibility: 2,
                            ..Default::default()
                        }),
                    })
                    .await?;
                if let Ok(mut l) = lat.lock() {
                    l.push(t2 - t);
                    l.push(t2.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = lat
        .lock()
        .map_err(|_| anyhow!("latency lock poisoned"))?
        .clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    output::bench(a.claims, a.concurrency, secs, pct(0.5), pct(0.99));
    Ok(ExitCode::SUCCESS)
}
