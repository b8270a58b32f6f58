//! `claimledger migrate` copies a log between sled and PostgreSQL, both ways, keeping every
//! entry, root and status; it refuses a non-empty target and a source that does not verify.
//! Against a real PostgreSQL (tests/common/pg.rs) and the real binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use claimledger::pb;
use common::*;

/// What a reader can see of a log: its signed checkpoint, every entry's bytes, and every
/// demo claim's status with its trace.
#[derive(Debug, PartialEq)]
struct Seen {
    checkpoint: String,
    entries: Vec<Vec<u8>>,
    statuses: BTreeMap<String, (i32, bool, Vec<pb::TraceItem>)>,
}

async fn seen(server: &TestServer, claim_ids: &[String]) -> Seen {
    let mut c = server.clients().await;
    let cp = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("GetCheckpoint")
        .into_inner();
    let size = c.size().await;
    let entries = common::entries(&mut c, 0, size)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    let mut statuses = BTreeMap::new();
    for id in claim_ids {
        let s = c.status(id).await;
        statuses.insert(id.clone(), (s.status, s.confirmed, s.trace.clone()));
    }
    Seen {
        checkpoint: cp.note,
        entries,
        statuses,
    }
}

fn database(name: &str) -> String {
    pg::cluster()
        .unwrap_or_else(|e| panic!("start PostgreSQL: {e}"))
        .create_database(name)
        .unwrap_or_else(|e| panic!("create database {name}: {e}"))
}

fn on_postgres(url: &str) -> claimledger::log::Options {
    claimledger::log::Options {
        postgres: Some(url.to_string()),
        ..claimledger::log::Options::default()
    }
}

fn sled(dir: &Path) -> String {
    format!("sled:{}", dir.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_both_ways_keeps_every_root_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let node = tmp.path().join("node");
    let back = tmp.path().join("back");

    // The demo data on sled.
    let server = TestServer::start_with_options(&first, claimledger::log::Options::default()).await;
    let imported = import_article(&mut server.clients().await).await;
    let ids: Vec<String> = imported.claims.values().cloned().collect();
    assert!(ids.len() >= 6, "the demo data has its claims");
    let before = seen(&server, &ids).await;
    server.stop().await;

    // sled → PostgreSQL.
    let url = database("migrate_there");
    let out = cli(&["migrate", "--from", &sled(&first), "--to", &url]).await;
    let text = out.stdout();
    assert!(
        text.contains(&format!("copied {} entries", before.entries.len())),
        "{text}"
    );
    std::fs::create_dir_all(&node).unwrap();
    std::fs::copy(first.join("log.key"), node.join("log.key")).unwrap();
    let server = TestServer::start_with_options(&node, on_postgres(&url)).await;
    let there = seen(&server, &ids).await;
    server.stop().await;
    assert_eq!(there, before, "PostgreSQL serves the same log and statuses");

    // PostgreSQL → a new sled directory (the key comes from a data directory of the log).
    let out = cli(&[
        "migrate",
        "--from",
        &url,
        "--to",
        &sled(&back),
        "--data-dir",
        node.to_str().unwrap(),
    ])
    .await;
    out.stdout();
    let server = TestServer::start_with_options(&back, claimledger::log::Options::default()).await;
    let again = seen(&server, &ids).await;
    // The copy goes on as a log of its own: a write lands at the next index and verifies.
    let mut c = server.clients().await;
    let r = c
        .register(source(
            "after-migration",
            "",
            pb::Role::NonParty,
            pb::Reliability::B,
            "",
        ))
        .await;
    let receipt = r.receipt.expect("a receipt");
    assert_eq!(receipt.index, before.entries.len() as u64);
    verify_receipt(&receipt, &c.verifier_key().await);
    server.stop().await;
    assert_eq!(again, before, "back on sled, the same log and statuses");

    // Offline, the copy verifies entry by entry.
    let out = cli(&["verify", "--data-dir", back.to_str().unwrap()]).await;
    let text = out.stdout();
    assert!(text.starts_with("ok: "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_target_that_holds_a_log_or_a_source_that_does_not_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let server = TestServer::start_with_options(&first, claimledger::log::Options::default()).await;
    import_article(&mut server.clients().await).await;
    server.stop().await;

    let url = database("migrate_twice");
    cli(&["migrate", "--from", &sled(&first), "--to", &url])
        .await
        .stdout();
    let rows = |sql: &str| {
        pg::cluster()
            .unwrap_or_else(|e| panic!("{e}"))
            .psql("migrate_twice", sql)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let size = rows("SELECT tree_size FROM head");

    // Into the same database again: refused, and nothing changes there.
    let out = cli(&["migrate", "--from", &sled(&first), "--to", &url]).await;
    assert!(
        !out.ok,
        "a second copy into a non-empty database is refused"
    );
    assert!(out.stderr.contains("already holds a log"), "{}", out.stderr);
    assert_eq!(rows("SELECT tree_size FROM head"), size);

    // Into a directory that holds a log: refused.
    let out = cli(&[
        "migrate",
        "--from",
        &url,
        "--to",
        &sled(&first),
        "--data-dir",
        first.to_str().unwrap(),
    ])
    .await;
    assert!(!out.ok);
    assert!(out.stderr.contains("already holds a log"), "{}", out.stderr);

    // A source whose entry was changed in the database: refused before anything is written.
    rows("UPDATE entries SET body = body || '\\x00'::bytea WHERE idx = 3");
    let empty = tmp.path().join("empty");
    let out = cli(&[
        "migrate",
        "--from",
        &url,
        "--to",
        &sled(&empty),
        "--data-dir",
        first.to_str().unwrap(),
    ])
    .await;
    assert!(!out.ok, "a changed entry stops the copy");
    assert!(out.stderr.contains("index 3"), "{}", out.stderr);
    assert!(!empty.join("sled").exists(), "nothing was written");

    // Without a key for a PostgreSQL source: a clear error.
    let out = cli(&["migrate", "--from", &url, "--to", &sled(&empty)]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("--data-dir"), "{}", out.stderr);
}
