//! How long a checkpoint takes to be cosigned by 1 and by 3 local witnesses while the log is
//! under full write load (issue 7's benchmark; figures in BENCHMARKS.md).
//!
//!     cargo run --release --example witness_bench                 # 10 s per configuration
//!     CLAIMLEDGER_BENCH_SECS=3 cargo run --release --example witness_bench
//!
//! Everything runs in this process, on loopback: the log engine (`Log`, no gRPC, no domain
//! hook), 64 tasks appending ~300-byte entries as fast as the writer takes them, the witness
//! client exactly as `serve` runs it, and 0, 1 or 3 witnesses (`claimledger::witness`, real
//! HTTP, each fsyncing its state before it answers). Every 100 ms a sampler notes the
//! committed size and how long until a cosigned checkpoint of at least that size is
//! published: that latency is what a user waits, after a receipt, for a checkpoint that
//! witnesses vouch for. The run with no witnesses gives the append rate to compare with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use claimledger::log::{Log, NoApply, Options};
use claimledger::witness::submit::{Submitter, WitnessConfig, Witnessing};
use claimledger::witness::Witness;

const ORIGIN: &str = "bench.example/log";
const WRITERS: usize = 64;

struct Run {
    appends_per_sec: f64,
    latencies: Vec<Duration>,
    distinct_cosigned: usize,
}

async fn run(witnesses: usize, secs: u64) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let opts = Options {
        origin: Some(ORIGIN.into()),
        ..Options::default()
    };
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, opts, Arc::new(NoApply))?;
    let log_vkey = log.checkpointer().verifier_key().to_string();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut configs = Vec::new();
    for i in 0..witnesses {
        let name = format!("w{i}.bench.example");
        let w = Arc::new(Witness::open(
            &tmp.path().join(&name),
            &name,
            vec![(ORIGIN.into(), log_vkey.clone())],
        )?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        configs.push(format!("http://{addr}={}", w.verifier_key()).parse::<WitnessConfig>()?);
        let mut stop = stop_rx.clone();
        tokio::spawn(claimledger::witness::serve(listener, w, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let view = match Witnessing::new(configs, None)? {
        Some(w) => {
            let (mut submitter, view) = Submitter::new(log.clone(), &dir, w);
            submitter.first_round(Duration::from_secs(5)).await;
            tokio::spawn(submitter.run(stop_rx.clone()));
            Some(view)
        }
        None => None,
    };

    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let base = log.size();
    let mut writers = Vec::new();
    for t in 0..WRITERS {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let body = format!("{t:04}-{i:012}-{}", "x".repeat(280)).into_bytes();
                if log.append("bench", body).await.is_err() {
                    break;
                }
                i += 1;
            }
        }));
    }
    let mut samples = Vec::new();
    if let Some(view) = &view {
        while Instant::now() < deadline {
            let (size, at) = (log.size(), Instant::now());
            let view = view.clone();
            samples.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(30), view.wait_for(size))
                    .await
                    .ok()
                    .flatten()
                    .map(|c| (at.elapsed(), c.size))
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for w in writers {
        w.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let appended = log.size() - base;
    let mut latencies = Vec::new();
    let mut sizes = std::collections::BTreeSet::new();
    for s in samples {
        match s.await? {
            Some((d, size)) => {
                latencies.push(d);
                sizes.insert(size);
            }
            None => anyhow::bail!("a checkpoint was not cosigned within 30 s"),
        }
    }
    let _ = stop_tx.send(true);
    log.shutdown().await?;
    latencies.sort();
    Ok(Run {
        appends_per_sec: appended as f64 / elapsed,
        latencies,
        distinct_cosigned: sizes.len(),
    })
}

fn pct(v: &[Duration], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.1}", v[i].as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs = std::env::var("CLAIMLEDGER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!("{WRITERS} writers, ~300-byte entries, {secs} s per configuration");
    println!(
        "| witnesses | appends/s | samples | cosigned sizes seen | cosigned within: p50 ms | p90 ms | p99 ms | max ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for witnesses in [0, 1, 3] {
        let r = run(witnesses, secs).await?;
        println!(
            "| {witnesses} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.appends_per_sec,
            r.latencies.len(),
            r.distinct_cosigned,
            pct(&r.latencies, 0.5),
            pct(&r.latencies, 0.9),
            pct(&r.latencies, 0.99),
            pct(&r.latencies, 1.0),
        );
    }
    Ok(())
}
