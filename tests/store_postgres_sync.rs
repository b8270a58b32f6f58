//! Synchronous replication (README, "On PostgreSQL"): with `synchronous_standby_names` set on
//! the primary and `synchronous_commit = remote_apply`, a write is acknowledged, and its
//! checkpoint signed and published, only once the standby has applied the group.
//!
//! The test process's own PostgreSQL gets a streaming replica (`pg_basebackup -R`) and is made
//! to wait for it. With the standby's replay paused, a write through `serve --store …` does
//! not return, the process keeps serving its earlier size, and the primary shows no new head to
//! other sessions; once replay resumes, the write returns with a receipt that verifies, and the
//! standby already holds the entry it names. A file of its own: the primary's settings would
//! hold every other test's commits while the replay is paused.

mod common;

use std::time::Duration;

use claimledger::pb;
use common::pg::cluster;
use common::*;

const DB: &str = "sync_standby";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_only_once_the_standby_applied_it() {
    let primary = cluster().unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
    let url = primary.create_database(DB).expect("create the database");
    let standby = primary.start_replica().expect("a streaming replica");
    let sql =
        |c: &common::pg::PgCluster, q: &str| c.psql(DB, q).unwrap_or_else(|e| panic!("{q}: {e}"));
    // ALTER SYSTEM runs outside a transaction: one statement per psql.
    for q in [
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
        "ALTER SYSTEM SET synchronous_commit = 'remote_apply'",
        "SELECT pg_reload_conf()",
    ] {
        sql(primary, q);
    }
    let mut sync = String::new();
    for _ in 0..200 {
        sync = sql(
            primary,
            "SELECT string_agg(sync_state, ',') FROM pg_stat_replication",
        );
        if sync == "sync" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sync, "sync", "the replica is the synchronous standby");

    let dir = tempfile::tempdir().expect("temp dir");
    let args = vec![
        "--addr".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--store".into(),
        url.clone(),
    ];
    let server = tokio::task::spawn_blocking(move || ServeProcess::start(args))
        .await
        .expect("serve starts");
    let mut c = connect(&server.url).await;
    let key = c.verifier_key().await;
    let register = |c: &mut Clients, id: &str| {
        let mut sources = c.sources.clone();
        let id = id.to_string();
        async move {
            sources
                .register_source(pb::RegisterSourceRequest {
                    request_id: format!("src-{id}"),
                    source: Some(source(&id, "", pb::Role::NonParty, pb::Reliability::B, "")),
                })
                .await
                .map(|r| r.into_inner())
        }
    };

    // With the standby applying, a write returns, and the standby has it when it does.
    let first = register(&mut c, "first").await.expect("the first write");
    let receipt = first.receipt.expect("a receipt");
    let signed = verify_receipt(&receipt, &key);
    assert_eq!(
        sql(&standby, "SELECT tree_size FROM head"),
        signed.size().to_string(),
        "the standby has applied what was acknowledged"
    );

    // Replay paused: the write waits, nothing of it shows.
    sql(&standby, "SELECT pg_wal_replay_pause()");
    let before = c.size().await;
    let pending = tokio::spawn(register(&mut c, "second"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !pending.is_finished(),
        "a write returned while the standby could not apply it"
    );
    assert_eq!(
        c.size().await,
        before,
        "the process published a size the standby lacks"
    );
    assert_eq!(
        sql(primary, "SELECT tree_size FROM head"),
        before.to_string(),
        "other sessions on the primary see the group before the standby has it"
    );
    let count = sql(&standby, "SELECT count(*) FROM entries");
    assert_eq!(count, before.to_string());

    // Replay resumed: the write returns, and what it acknowledges is on the standby.
    sql(&standby, "SELECT pg_wal_replay_resume()");
    let second = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the write returns once the standby applies it")
        .expect("the task")
        .expect("the second write");
    let signed = verify_receipt(&second.receipt.expect("a receipt"), &key);
    assert_eq!(signed.size(), before + 1);
    let on_standby: u64 = sql(&standby, "SELECT tree_size FROM head")
        .parse()
        .expect("a size");
    assert!(
        on_standby >= signed.size(),
        "{on_standby} < {}",
        signed.size()
    );
    assert_eq!(c.size().await, before + 1);
    drop(server);
}
