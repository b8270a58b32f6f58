//! `/metrics`: parses as Prometheus/OpenMetrics text (checked line by line by a parser written
//! here from the format's grammar) and counts the gRPC calls and HTTP requests made, by
//! method and code, with the log's, writer's and index's figures beside them.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use claimledger::pb;
use common::*;
use tokio_stream::StreamExt;
use tonic::Code;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly: every line is a `# HELP`, `# TYPE` or `# UNIT`
/// comment, the final `# EOF`, or a sample `name{label="value",…} value` of a family whose
/// TYPE came before it. Panics naming the first line that is none of these.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"# EOF"),
        "the exposition ends with # EOF"
    );
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
        let bad = |why: &str| -> ! { panic!("line {}: {why}: {line:?}", n + 1) };
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default();
            if !is_name(name) {
                bad("a comment names no metric");
            }
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or_default();
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "unknown",
                        "info",
                    ];
                    if !known.contains(&t) {
                        bad("unknown type");
                    }
                    types.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => bad("unknown comment"),
            }
            continue;
        }
        // name, optional labels, value.
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad("no value"));
        let name = &line[..name_end];
        if !is_name(name) {
            bad("bad metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r.find('=').unwrap_or_else(|| bad("a label without ="));
                let key = &r[..eq];
                if !is_name(key) {
                    bad("bad label name");
                }
                r = r[eq + 1..]
                    .strip_prefix('"')
                    .unwrap_or_else(|| bad("a label value is not quoted"));
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            _ => bad("bad escape in a label value"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => bad("an unterminated label value"),
                    }
                };
                labels.insert(key.to_string(), value);
                r = &r[end + 1..];
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                }
            }
            rest = r;
        }
        let rest = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| bad("no space before the value"));
        let value_text = rest.split(' ').next().unwrap_or_default();
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| bad("the value is not a number")),
        };
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            bad("a sample of a family with no TYPE before it");
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` with (at least) `labels`, or 0 when there is none.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let a = http_get(addr, "/metrics").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(
        a.header("content-type")
            .starts_with("application/openmetrics-text"),
        "{}",
        a.header("content-type")
    );
    parse(&a.text())
}

fn handled(samples: &[Sample], service: &str, method: &str, code: &str) -> f64 {
    value(
        samples,
        "grpc_server_handled_total",
        &[
            ("grpc_service", service),
            ("grpc_method", method),
            ("grpc_code", code),
        ],
    )
}

const CLAIMS: &str = "claimledger.v1.ClaimService";
const HEALTH: &str = "grpc.health.v1.Health";

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_calls_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    let before = scrape(addr).await;

    // Health checks, two writes, a refused write, an unknown claim, a stream, HTTP reads.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for _ in 0..3 {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Check");
    }
    c.register(source("m", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let r = c
        .submit(
            "m-1",
            claim(pb::ClaimKind::Strike, "m", "a strike on a depot"),
        )
        .await;
    let claim_id = r.claim.expect("a claim").id;
    let err = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "m-2".into(),
            claim: Some(claim(pb::ClaimKind::Strike, "m", "")),
        })
        .await
        .expect_err("a claim without a summary");
    assert_eq!(err.code(), Code::InvalidArgument);
    for _ in 0..2 {
        let err = c
            .claims
            .get_claim_status(pb::GetClaimStatusRequest {
                claim_id: "c-0000000000000000".into(),
                as_of_size: 0,
                with_proof: false,
            })
            .await
            .expect_err("no such claim");
        assert_eq!(err.code(), Code::NotFound);
    }
    c.status(&claim_id).await;
    let mut s = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 0, end: 0 })
        .await
        .expect("GetEntries")
        .into_inner();
    while let Some(e) = s.next().await {
        e.expect("an entry");
    }
    // A method this server does not have.
    let a = http_get_with(
        addr,
        "/claimledger.v1.ClaimService/Invented",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(a.header("grpc-status"), "12");
    assert_eq!(http_get(addr, "/checkpoint").await.status, 200);
    assert_eq!(http_get(addr, "/checkpoint").await.status, 200);
    assert_eq!(http_get(addr, "/tile/0/1").await.status, 400);
    assert_eq!(http_get(addr, "/no-such-page").await.status, 404);

    // A live tail the client drops is counted as canceled once the server sees it go.
    let mut tail = c
        .log
        .watch_entries(pb::WatchEntriesRequest { from_index: 0 })
        .await
        .expect("WatchEntries")
        .into_inner();
    tail.next().await.expect("an entry").expect("an entry");
    drop(tail);

    let size = c.size().await;
    // The index catches up (ListClaims with min_size waits for it).
    c.claims
        .list_claims(pb::ListClaimsRequest {
            min_size: size,
            ..Default::default()
        })
        .await
        .expect("ListClaims");

    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(addr).await;
        let canceled = value(
            &after,
            "grpc_server_handled_total",
            &[("grpc_method", "WatchEntries"), ("grpc_code", "Canceled")],
        );
        if canceled >= 1.0 || Instant::now() > deadline {
            break after;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let delta = |f: &dyn Fn(&[Sample]) -> f64| f(&after) - f(&before);

    assert_eq!(delta(&|s| handled(s, HEALTH, "Check", "OK")), 3.0);
    assert_eq!(delta(&|s| handled(s, CLAIMS, "SubmitClaim", "OK")), 1.0);
    assert_eq!(
        delta(&|s| handled(s, CLAIMS, "SubmitClaim", "InvalidArgument")),
        1.0
    );
    assert_eq!(
        delta(&|s| handled(s, CLAIMS, "GetClaimStatus", "NotFound")),
        2.0
    );
    assert_eq!(delta(&|s| handled(s, CLAIMS, "GetClaimStatus", "OK")), 1.0);
    assert_eq!(
        delta(&|s| handled(s, "claimledger.v1.SourceService", "RegisterSource", "OK")),
        1.0
    );
    assert_eq!(
        delta(&|s| handled(s, "claimledger.v1.LogService", "GetEntries", "OK")),
        1.0
    );
    assert_eq!(
        delta(&|s| handled(s, "claimledger.v1.LogService", "WatchEntries", "Canceled")),
        1.0,
        "the dropped tail"
    );
    assert_eq!(
        delta(&|s| handled(s, "unknown", "unknown", "Unimplemented")),
        1.0
    );
    // The type label, as go-grpc-prometheus has it.
    assert_eq!(
        value(
            &after,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "GetEntries"),
                ("grpc_type", "server_stream")
            ]
        ),
        1.0
    );
    // Every call has its latency observed.
    let seconds = |s: &[Sample], method: &str| {
        value(
            s,
            "grpc_server_handling_seconds_count",
            &[("grpc_service", CLAIMS), ("grpc_method", method)],
        )
    };
    assert_eq!(delta(&|s| seconds(s, "SubmitClaim")), 2.0);
    assert_eq!(delta(&|s| seconds(s, "GetClaimStatus")), 3.0);
    let started = |s: &[Sample]| {
        value(
            s,
            "grpc_server_started_total",
            &[("grpc_service", CLAIMS), ("grpc_method", "SubmitClaim")],
        )
    };
    assert_eq!(delta(&started), 2.0);

    // HTTP by route and status.
    let http = |s: &[Sample], route: &str, code: &str| {
        value(
            s,
            "http_requests_total",
            &[("route", route), ("code", code)],
        )
    };
    assert_eq!(delta(&|s| http(s, "checkpoint", "200")), 2.0);
    assert_eq!(delta(&|s| http(s, "tile", "400")), 1.0);
    assert_eq!(delta(&|s| http(s, "other", "404")), 1.0);
    assert!(
        value(
            &after,
            "http_request_duration_seconds_count",
            &[("route", "checkpoint")]
        ) >= 2.0
    );

    // The log, the writer and the index.
    assert_eq!(value(&after, "claimledger_log_size", &[]), size as f64);
    assert!(value(&after, "claimledger_index_size", &[]) >= size as f64);
    assert_eq!(value(&after, "claimledger_index_lag_entries", &[]), 0.0);
    assert_eq!(value(&after, "claimledger_writer_queue_depth", &[]), 0.0);
    assert_eq!(value(&after, "claimledger_log_halted", &[]), 0.0);
    assert_eq!(value(&after, "claimledger_writer_failing", &[]), 0.0);
    assert_eq!(value(&after, "claimledger_witness_quorum", &[]), 0.0);
    // Two groups at least (the registration and the claim; the refused one wrote nothing).
    assert!(value(&after, "claimledger_writer_group_size_count", &[]) >= 2.0);
    assert!(value(&after, "claimledger_writer_group_size_sum", &[]) >= 2.0);
    assert!(value(&after, "claimledger_writer_sync_seconds_count", &[]) >= 2.0);
    let inf = value(
        &after,
        "claimledger_writer_sync_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(
        inf,
        value(&after, "claimledger_writer_sync_seconds_count", &[]),
        "the +Inf bucket counts every observation"
    );

    // The process (this test's own, which runs the server): CPU time that only grows, and the
    // memory and descriptors it holds.
    let cpu = |s: &[Sample]| value(s, "process_cpu_seconds_total", &[]);
    assert!(cpu(&before) > 0.0, "process_cpu_seconds_total");
    assert!(cpu(&after) >= cpu(&before));
    assert!(value(&after, "process_resident_memory_bytes", &[]) > 1_048_576.0);
    assert!(value(&after, "process_open_fds", &[]) >= 3.0);

    server.stop().await;
}
}

/// The CPU time by group of threads: every group there, none going down, together the
/// process's time, and the gRPC workers' growing with the calls they serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_time_is_counted_by_group_of_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let groups = [
        "tokio",
        "writer",
        "checkpoint_file",
        "index",
        "sled",
        "other",
        "ended",
    ];
    let thread_cpu =
        |s: &[Sample], g: &str| value(s, "claimledger_thread_cpu_seconds_total", &[("threads", g)]);
    let before = scrape(server.addr).await;
    // Enough calls for the kernel's 10 ms ticks to see them (the server shares this process
    // with the test, whose own thread counts as `other`).
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    for _ in 0..2_000 {
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("Health/Check");
    }
    let after = scrape(server.addr).await;
    for g in groups {
        assert!(
            after
                .iter()
                .any(|s| s.name == "claimledger_thread_cpu_seconds_total"
                    && s.labels.get("threads").map(String::as_str) == Some(g)),
            "no thread CPU for {g}"
        );
        assert!(thread_cpu(&after, g) >= thread_cpu(&before, g), "{g}");
    }
    assert!(thread_cpu(&after, "tokio") > thread_cpu(&before, "tokio"));
    // One scrape reads both; a thread started while the threads were listed can be counted
    // twice, by a few ticks.
    let process = value(&after, "process_cpu_seconds_total", &[]);
    let sum: f64 = groups.iter().map(|g| thread_cpu(&after, g)).sum();
    assert!(
        sum >= process - 0.005 && sum <= process + 0.05,
        "threads {sum} s, process {process} s"
    );
    server.stop().await;
}
