//! History that cannot silently shrink or fork (SPEC §3, issue 7): the latest checkpoint kept
//! outside sled, storage failures named instead of panics, and a halted log signing nothing.

use std::path::Path;
use std::sync::Arc;

use claimledger::log::{AppendError, Log, LogError, NoApply, Options};

fn open(dir: &Path) -> Result<Log, LogError> {
    Log::open(dir, Options::default(), Arc::new(NoApply))
}

async fn append_n(log: &Log, n: usize) {
    for i in 0..n {
        log.append("tester", format!("entry {i}").into_bytes())
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_log_signs_nothing_new_but_serves_what_it_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path()).expect("open");
    append_n(&log, 5).await;
    let before = log.latest_checkpoint().expect("checkpoint");
    let mut halted = log.halted();
    assert!(halted.borrow_and_update().is_none());

    log.halt("witness w1 holds size 9, this log has 5".into());
    log.halt("a second reason is not kept".into());
    assert_eq!(
        halted.borrow().as_deref(),
        Some("witness w1 holds size 9, this log has 5")
    );
    match log.append("tester", b"more".to_vec()).await {
        Err(AppendError::Log(LogError::Halted(why))) => assert!(why.contains("size 9"), "{why}"),
        other => panic!("append after halt: {other:?}"),
    }
    assert_eq!(log.size(), 5);
    // The checkpoint already signed is still served; a new signature over an older size is not.
    assert_eq!(log.latest_checkpoint().expect("latest"), before);
    assert!(matches!(log.checkpoint_at(3), Err(LogError::Halted(_))));
    log.shutdown().await.expect("shutdown");
}
