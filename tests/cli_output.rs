//! What the real `claimledger` binary prints around writes: a request id it made up is shown so
//! the command can be retried, and a retry with it returns the first result without writing;
//! an import without request ids can be run again without writing anything new.
//! `bench` measures every call it lists. (Escaping of stored text is tested at the bottom of
//! `src/cli/output.rs`.)

mod common;

use common::{cli, TestServer};

/// The log size, as `log checkpoint --json` reports it.
async fn size(url: &str) -> u64 {
    let out = cli(&["log", "checkpoint", "--json", "--server", url])
        .await
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).expect("checkpoint JSON");
    // proto3 JSON writes uint64 as a string.
    v["size"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["size"].as_u64())
        .unwrap_or_else(|| panic!("no size in {out}"))
}

/// The id from the `request_id: ID …` line the CLI prints on stderr.
fn generated_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("request_id: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated request id in {stderr:?}"))
        .to_string()
}

const REGISTER: &[&str] = &[
    "source",
    "register",
    "reuters",
    "--name",
    "Reuters",
    "--kind",
    "news-agency",
    "--role",
    "non-party",
    "--grade",
    "B",
];

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_prints_its_generated_request_id_and_a_retry_with_it_writes_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&tmp.path().join("data")).await;
    let url = server.url();

    let first = cli(&[REGISTER, &["--server", &url]].concat()).await;
    assert!(first.ok, "{}", first.stderr);
    let id = generated_id(&first.stderr);
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert!(first.stdout.contains("reuters"), "{}", first.stdout);
    let after_first = size(&url).await;

    // The retry names the id: same answer (the first entry's receipt), nothing written, and
    // nothing made up.
    let retry = cli(&[REGISTER, &["--server", &url, "--request-id", &id]].concat()).await;
    assert!(retry.ok, "{}", retry.stderr);
    assert_eq!(retry.stdout, first.stdout);
    assert!(!retry.stderr.contains("request_id:"), "{}", retry.stderr);
    assert_eq!(size(&url).await, after_first);

    // In JSON too, stdout is only the answer; the id goes to stderr.
    let json = cli(&[REGISTER, &["--server", &url, "--request-id", &id, "--json"]].concat()).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout()).expect("JSON answer");
    assert_eq!(v["source"]["id"], "reuters");
    assert_eq!(size(&url).await, after_first);

    // Without --request-id, each run makes up a new id: two grades are two entries.
    let grade = [
        "source",
        "grade",
        "reuters",
        "A",
        "--rationale",
        "long record",
    ];
    let a = cli(&[&grade[..], &["--server", &url]].concat()).await;
    let b = cli(&[&grade[..], &["--server", &url]].concat()).await;
    assert!(a.ok && b.ok, "{} {}", a.stderr, b.stderr);
    assert_ne!(generated_id(&a.stderr), generated_id(&b.stderr));
    assert_eq!(size(&url).await, after_first + 2);

    server.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_lines_without_request_ids_twice_writes_them_once() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(&tmp.path().join("data")).await;
    let url = server.url();
    let file = tmp.path().join("lines.jsonl");
    // Two identical grade lines are two changes (B, then B again): both must be written once.
    let grade =
        r#"{"grade": {"source_id": "isw", "reliability": "RELIABILITY_B", "rationale": "r"}}"#;
    let lines = [
        r#"{"source": {"id": "ru-mod", "name": "Russian MoD", "kind": "SOURCE_KIND_MILITARY", "role": "ROLE_PARTY", "side": "RU", "reliability": "RELIABILITY_D"}}"#,
        r#"{"source": {"id": "isw", "name": "ISW", "kind": "SOURCE_KIND_OSINT_GROUP", "role": "ROLE_NON_PARTY", "reliability": "RELIABILITY_C"}}"#,
        grade,
        grade,
        r#"{"claim": {"claim": {"kind": "CLAIM_KIND_INTERCEPTION", "modality": "MODALITY_ASSERTED_FACT", "summary": "35 drones destroyed", "claimant_id": "ru-mod"}}}"#,
    ];
    std::fs::write(&file, lines.join("\n")).expect("write the import file");
    let path = file.to_str().expect("UTF-8 path");

    let first = cli(&["import", path, "--server", &url]).await.stdout();
    assert!(first.contains("2 grades"), "{first}");
    assert!(first.contains("1 claims"), "{first}");
    let after_first = size(&url).await;
    assert_eq!(after_first, 5);

    // Same ids the second time: the same claim id printed, and no new entries.
    let again = cli(&["import", path, "--server", &url]).await.stdout();
    assert_eq!(again, first);
    assert_eq!(size(&url).await, after_first);

    server.stop().await;
}
}

both_stores! {
/// `claimledger bench` measures every call it lists against the real server, with the health
/// check as the baseline of each concurrency (the figures themselves are not asserted: speed
/// is shown by benchmarks, not tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_each_call_against_the_health_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let url = server.url();
    let out = cli(&[
        "bench",
        "--server",
        &url,
        "--seconds",
        "0.2",
        "--concurrency",
        "1,3",
        "--seed-claims",
        "3",
        "--json",
    ])
    .await
    .stdout();
    let figures: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line per figure"))
        .collect();
    assert_eq!(figures.len(), 12, "6 calls at 2 concurrencies: {out}");
    for f in &figures {
        assert!(f["ok"].as_u64().unwrap_or(0) > 0, "{f}");
        assert_eq!(f["errors"].as_u64(), Some(0), "{f}");
        assert!(f["vs_health"].as_f64().is_some(), "{f}");
        // Read from the server's /metrics before and after (on Linux, as here): under a
        // second a call, and never nothing for a write (the writer and the indexer ran).
        let cpu = f["server_cpu_us_per_call"].as_f64();
        assert!(cpu.is_some_and(|us| (0.0..1e6).contains(&us)), "{f}");
        if f["call"] == "SubmitClaim" || f["call"] == "AddEvidence" {
            assert!(cpu.is_some_and(|us| us > 0.0), "{f}");
        }
    }
    for c in [1, 3] {
        let health = figures
            .iter()
            .find(|f| f["call"] == "Health/Check" && f["concurrency"] == c)
            .expect("a health figure");
        assert_eq!(health["vs_health"].as_f64(), Some(1.0));
    }
    // The writes it measured are in the log: 2 sources, 3 seeded claims with evidence, then
    // at least one SubmitClaim and one AddEvidence per concurrency.
    assert!(size(&url).await >= 2 + 6 + 4);
}
}
