//! History that cannot silently shrink (SPEC §3, issue 7): the latest checkpoint kept outside
//! sled, storage failures named instead of panics, the explicit `recover`, a crash between the
//! sled commit and the checkpoint file, and a halted log signing nothing.
//!
//! The damage is real: bits flipped in sled's own data file of a log written through the real
//! engine, then opened through the library and through the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use claimledger::log::checkpoint_file;
use claimledger::log::{AppendError, Log, LogError, NoApply, Offline, Options};
use claimledger::pb;
use common::{claimledger, KeepBodies, ServeProcess};

fn open(dir: &Path) -> Result<Log, LogError> {
    Log::open(dir, Options::default(), Arc::new(KeepBodies))
}

/// Writes `n` entries of about `len` bytes each, a few at a time (so groups form), and closes
/// the log. Returns the last receipt's checkpoint size.
async fn write_log(dir: &Path, n: usize, len: usize) -> u64 {
    let log = open(dir).expect("open");
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let log = log.clone();
                let body = format!("entry {i} {}", "x".repeat(len)).into_bytes();
                tokio::spawn(async move { log.append("tester", body).await.expect("append") })
            })
            .collect();
        for t in tasks {
            last = last.max(t.await.expect("join").checkpoint.size);
        }
    }
    log.shutdown().await.expect("shutdown");
    drop(log);
    last
}

fn flip_bit(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[offset as usize] ^= 0x10;
    std::fs::write(file, bytes).expect("write");
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("sled").join("db")
}

/// How sled itself sees a data directory, bypassing everything claimledger checks.
enum SledSees {
    Size(u64),
    Unreadable(String),
}

fn sled_sees(dir: &Path) -> SledSees {
    match Offline::open(dir) {
        Ok(offline) => SledSees::Size(offline.size().expect("size")),
        Err(e @ LogError::Unreadable { .. }) => SledSees::Unreadable(e.to_string()),
        Err(e) => panic!("opening the store: {e}"),
    }
}

/// A copy of `orig` with one bit of sled's data file flipped, at the first offset from
/// `offsets` for which `wanted` holds of what sled then sees.
fn damaged_copy(
    orig: &Path,
    work: &Path,
    offsets: impl Iterator<Item = u64>,
    wanted: impl Fn(&SledSees) -> bool,
) -> (PathBuf, u64) {
    for (n, off) in offsets.enumerate() {
        let dir = work.join(format!("try-{n}"));
        common::copy_dir(orig, &dir);
        flip_bit(&db_file(&dir), off);
        let seen = sled_sees(&dir);
        // sled's recovery may have rewritten the copy: start the real checks from a fresh one.
        std::fs::remove_dir_all(&dir).expect("rm");
        if wanted(&seen) {
            let dir = work.join(format!("damaged-{n}"));
            common::copy_dir(orig, &dir);
            flip_bit(&db_file(&dir), off);
            return (dir, off);
        }
    }
    panic!("no offset gave the damage this test needs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_that_makes_sled_drop_its_last_groups_is_refused_with_the_missing_sizes() {
    let work = tempfile::tempdir().expect("tempdir");
    let orig = work.path().join("orig");
    let acknowledged = write_log(&orig, 40, 200).await;
    assert_eq!(acknowledged, 40);
    let len = std::fs::metadata(db_file(&orig)).expect("db").len();
    // A bit a little before the middle of the file: sled then recovers by dropping everything
    // after it (the finding), so its own view is a shorter, valid-looking log.
    let (dir, off) = damaged_copy(
        &orig,
        work.path(),
        (len / 3..len).step_by(509),
        |seen| matches!(seen, SledSees::Size(s) if *s > 0 && *s < 40),
    );

    let err = open(&dir).err().expect("a shortened log must not open");
    let LogError::Shrunk {
        committed, stored, ..
    } = &err
    else {
        panic!("bit at {off}: expected Shrunk, got {err}");
    };
    assert_eq!(*committed, 40);
    assert!(*stored < 40);
    let msg = err.to_string();
    assert!(msg.contains("40 entries"), "{msg}");
    assert!(
        msg.contains(&format!("entries {stored} to 39")),
        "the message names what is missing: {msg}"
    );

    // The offline audit says the same and fails (exit 2), naming the first missing index.
    let out = claimledger(["verify", "--data-dir", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("FAILED at index {stored}: ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("40 entries"), "{}", out.stdout);

    // `serve` refuses to start, exit 1, with the same message.
    let out = claimledger([
        "serve",
        "--data-dir",
        dir.to_str().expect("utf-8"),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("entries {stored} to 39")),
        "{}",
        out.stderr
    );

    // Recovery is explicit: a dry run changes nothing and says what would be lost.
    let d = dir.to_str().expect("utf-8");
    let dry = claimledger(["recover", "--data-dir", d]);
    assert_eq!(dry.status.code(), Some(1), "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains(&format!("({} entries) are lost", 40 - stored)),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("Nothing was changed"), "{}", dry.stdout);
    assert!(matches!(open(&dir), Err(LogError::Shrunk { .. })));

    let done = claimledger(["recover", "--data-dir", d, "--accept-loss"]);
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    assert!(dir.join("checkpoint.superseded-40").exists());
    let log = open(&dir).expect("opens after an explicit recovery");
    assert_eq!(log.size(), *stored);
    log.append("tester", b"after recovery".to_vec())
        .await
        .expect("appends go on");
    log.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_that_makes_sled_panic_is_a_named_error_without_a_stack_trace() {
    let work = tempfile::tempdir().expect("tempdir");
    let orig = work.path().join("orig");
    // Several of sled's 512 KiB segments: the damage that makes sled 0.34 panic on open
    // ("tried to serialize Uninitialized") lies in its last segment.
    write_log(&orig, 600, 2000).await;
    let len = std::fs::metadata(db_file(&orig)).expect("db").len();
    let (dir, off) = damaged_copy(
        &orig,
        work.path(),
        (0..len).rev().step_by(4093),
        |seen| matches!(seen, SledSees::Unreadable(m) if m.contains("cannot be read")),
    );
    let db = db_file(&dir).display().to_string();

    match open(&dir) {
        Err(e @ LogError::Unreadable { .. }) => {
            assert!(e.to_string().contains(&db), "bit at {off}: {e}");
        }
        Err(e) => panic!("bit at {off}: expected Unreadable, got {e}"),
        Ok(_) => panic!("bit at {off}: a damaged log opened"),
    }

    let d = dir.to_str().expect("utf-8");
    for args in [
        vec!["verify", "--data-dir", d],
        vec!["serve", "--data-dir", d, "--addr", "127.0.0.1:0"],
    ] {
        let out = claimledger(&args);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {all}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains(&format!("{db} cannot be read")),
            "{args:?}: {all}"
        );
        assert!(!all.contains("panicked"), "{args:?} printed a panic: {all}");
        assert!(!all.contains("stack backtrace"), "{args:?}: {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_file_follows_every_commit_and_a_deleted_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A new directory gets the file at once (the empty tree), before any write.
    let log = open(dir.path()).expect("open");
    let cp = log.checkpointer();
    let file = checkpoint_file::read(dir.path(), cp)
        .expect("read")
        .expect("a file");
    assert_eq!(file.size, 0);
    for i in 0..5u64 {
        let r = log
            .append("tester", format!("e{i}").into_bytes())
            .await
            .expect("append");
        // The receipt's checkpoint is on disk outside sled before the receipt arrives.
        let file = checkpoint_file::read(dir.path(), cp)
            .expect("read")
            .expect("a file");
        assert_eq!(file, r.checkpoint);
    }
    log.shutdown().await.expect("shutdown");
    drop(log);

    std::fs::remove_file(checkpoint_file::path(dir.path())).expect("rm");
    let err = open(dir.path()).err().expect("refused without its file");
    assert!(err.to_string().contains("is missing"), "{err}");
    let d = dir.path().to_str().expect("utf-8");
    let out = claimledger(["verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert!(out.stdout.contains("is missing"), "{}", out.stdout);

    let done = claimledger(["recover", "--data-dir", d, "--accept-loss"]);
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    assert_eq!(open(dir.path()).expect("open").size(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_file_with_another_root_at_its_size_is_refused() {
    let work = tempfile::tempdir().expect("tempdir");
    let a = work.path().join("a");
    write_log(&a, 6, 10).await;
    // Same key, another history: copy the directory at size 6, then append different entries
    // to each copy. Copy a's checkpoint file (size 8) into b: same size, other root.
    let b = work.path().join("b");
    common::copy_dir(&a, &b);
    for (dir, tag) in [(&a, "a"), (&b, "b")] {
        let log = open(dir).expect("open");
        for i in 0..2 {
            log.append("tester", format!("{tag}{i}").into_bytes())
                .await
                .expect("append");
        }
        log.shutdown().await.expect("shutdown");
    }
    std::fs::copy(checkpoint_file::path(&a), checkpoint_file::path(&b)).expect("copy");
    match open(&b) {
        Err(LogError::Diverged { size, stored, .. }) => assert_eq!((size, stored), (8, 8)),
        Err(e) => panic!("expected Diverged, got {e}"),
        Ok(_) => panic!("a log with another history than its checkpoint file opened"),
    }
    let out = claimledger(["verify", "--data-dir", b.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert!(
        out.stdout.contains("another root at size 8"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_crash_between_the_sled_commit_and_the_checkpoint_file_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The failpoint aborts the process (as kill -9 would) once a commit reaching size 11 is
    // durable in sled, before the checkpoint file is written.
    let server = ServeProcess::start_with_env(
        ["--data-dir", d, "--addr", "127.0.0.1:0"],
        &[("CLAIMLEDGER_FAILPOINT", "crash-before-checkpoint-file:11")],
    );
    let url = server.url.clone();
    let receipts = rt.block_on(async {
        let mut c = claimledger::pb::source_service_client::SourceServiceClient::connect(url)
            .await
            .expect("connect");
        let mut receipts = Vec::new();
        for i in 0..11 {
            let req = pb::RegisterSourceRequest {
                source: Some(common::source(
                    &format!("s{i}"),
                    "",
                    pb::Role::Party,
                    pb::Reliability::B,
                    "",
                )),
                request_id: format!("r{i}"),
            };
            match c.register_source(req).await {
                Ok(r) => receipts.push(r.into_inner().receipt.expect("receipt")),
                Err(e) => {
                    assert_eq!(i, 10, "only the 11th write meets the failpoint: {e}");
                }
            }
        }
        receipts
    });
    assert_eq!(receipts.len(), 10, "ten writes acknowledged");
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the failpoint aborts: {status}");

    // On disk: sled has the unacknowledged 11th entry, the file still the 10th checkpoint.
    let offline = Offline::open(dir.path()).expect("open offline");
    assert_eq!(offline.size().expect("size"), 11);
    drop(offline);
    let note = checkpoint_file::latest_note(dir.path())
        .expect("read")
        .expect("a file");
    assert_eq!(note, receipts[9].checkpoint);

    // Restart: nothing acknowledged is lost, and file and sled agree again.
    let server = ServeProcess::start(["--data-dir", d, "--addr", "127.0.0.1:0"]);
    let url = server.url.clone();
    let latest = rt.block_on(async {
        let mut l = claimledger::pb::log_service_client::LogServiceClient::connect(url)
            .await
            .expect("connect");
        l.get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("checkpoint")
            .into_inner()
    });
    assert_eq!(latest.size, 11);
    let note = checkpoint_file::latest_note(dir.path())
        .expect("read")
        .expect("a file");
    assert_eq!(note, latest.note, "the file caught up with sled on open");
    for r in &receipts {
        common::verify_receipt(r, &latest.verifier_key);
    }
    server.stop();
    let out = claimledger(["verify", "--data-dir", d]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_log_signs_nothing_new_but_serves_what_it_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path()).expect("open");
    for i in 0..5 {
        log.append("tester", format!("entry {i}").into_bytes())
            .await
            .expect("append");
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_that_lost_everything_is_refused_under_the_logs_own_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        origin: Some("review.example/log".into()),
        ..Options::default()
    };
    let log = Log::open(dir.path(), opts.clone(), Arc::new(NoApply)).expect("open");
    for i in 0..3 {
        log.append("tester", format!("e{i}").into_bytes())
            .await
            .expect("append");
    }
    log.shutdown().await.expect("shutdown");
    drop(log);
    // sled's directory emptied: no entries and no origin left in it.
    std::fs::remove_dir_all(dir.path().join("sled")).expect("rm");
    std::fs::create_dir(dir.path().join("sled")).expect("mkdir");

    // The checkpoint file's origin is used to check it: the error is the missing entries,
    // not a signature "from another key" under a default origin.
    let d = dir.path().to_str().expect("utf-8");
    let out = claimledger(["verify", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAILED at index 0: ") && out.stdout.contains("entries 0 to 2"),
        "{}",
        out.stdout
    );
    match Log::open(dir.path(), opts.clone(), Arc::new(NoApply)) {
        Err(LogError::Shrunk {
            committed, stored, ..
        }) => assert_eq!((committed, stored), (3, 0)),
        Err(e) => panic!("expected Shrunk, got {e}"),
        Ok(_) => panic!("an emptied sled opened"),
    }
    // Nothing above wrote a default origin into sled: the log's own origin still opens it.
    let dry = claimledger(["recover", "--data-dir", d]);
    assert!(
        dry.stdout.contains("(3 entries) are lost"),
        "{}",
        dry.stdout
    );
    let done = claimledger(["recover", "--data-dir", d, "--accept-loss"]);
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    let log = Log::open(dir.path(), opts, Arc::new(NoApply)).expect("open after recovery");
    assert_eq!(log.checkpointer().origin(), "review.example/log");
    assert_eq!(log.size(), 0);
    log.shutdown().await.expect("shutdown");
}

/// Flips a byte inside the note of each of the checkpoint file's slots in `which`.
fn tear_slots(dir: &Path, which: &[usize]) {
    let path = checkpoint_file::path(dir);
    let mut bytes = std::fs::read(&path).expect("read");
    for &slot in which {
        // Past the slot's header line: a byte of the note itself.
        let start = slot * checkpoint_file::SLOT;
        // A slot never written yet (all zeros) has nothing to tear.
        if let Some(nl) = bytes[start..start + checkpoint_file::SLOT]
            .iter()
            .position(|&c| c == b'\n')
        {
            bytes[start + nl + 3] ^= 0x01;
        }
    }
    std::fs::write(&path, &bytes).expect("write");
}

/// The slot the newest note is in.
fn newest_slot(dir: &Path) -> usize {
    let bytes = std::fs::read(checkpoint_file::path(dir)).expect("read");
    let seq = |slot: usize| -> u64 {
        let b = &bytes[slot * checkpoint_file::SLOT..];
        let header = std::str::from_utf8(&b[..b.iter().position(|&c| c == b'\n').expect("nl")])
            .expect("utf-8");
        header
            .split(' ')
            .find_map(|f| f.strip_prefix("seq="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    usize::from(seq(1) > seq(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_slot_falls_back_to_the_other_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 12, 10).await;
    // A crash in the middle of writing the newest slot: it no longer hashes right, and the
    // older slot (the previous group's checkpoint) is read instead.
    tear_slots(dir.path(), &[newest_slot(dir.path())]);
    let log = open(dir.path()).expect("opens from the other slot");
    assert_eq!(log.size(), 12);
    let cp = log.checkpointer();
    let file = checkpoint_file::read(dir.path(), cp)
        .expect("read")
        .expect("file");
    assert_eq!(file.size, 12, "open wrote the current checkpoint back");
    log.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_file_is_refused_and_recover_replaces_it_keeping_a_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_log(dir.path(), 4, 10).await;
    tear_slots(dir.path(), &[0, 1]);
    let damaged = std::fs::read(checkpoint_file::path(dir.path())).expect("read");

    let err = open(dir.path())
        .err()
        .expect("a file with no whole checkpoint is refused");
    assert!(err.to_string().contains("holds no"), "{err}");
    let d = dir.path().to_str().expect("utf-8");
    let done = claimledger(["recover", "--data-dir", d, "--accept-loss"]);
    assert!(done.status.success(), "{}{}", done.stdout, done.stderr);
    assert!(done.stdout.contains("cannot be known"), "{}", done.stdout);
    let kept = dir.path().join("checkpoint.superseded-damaged");
    assert_eq!(std::fs::read(kept).expect("kept"), damaged);
    assert_eq!(open(dir.path()).expect("open").size(), 4);
}
