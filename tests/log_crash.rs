//! Crash test of the log engine: a child process appends in a loop and is killed with SIGKILL
//! at a random moment, several rounds on the same directory. After every kill the log must
//! open (start-up check), hold every entry whose append was acknowledged with the same leaf
//! hash, and pass the full offline audit.
//!
//! The child is this test binary itself, re-executed to run only the ignored test
//! `crash_child`, which does nothing unless `CLAIMLEDGER_CRASH_DIR` is set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use claimledger::log::leaf_hash;
use claimledger::log::{Log, NoApply, Options};

/// Shuts the log down and drops this handle (and with it the sled database), so the directory
/// can be opened again in this process.
async fn close(log: Log) {
    log.shutdown().await.expect("shutdown");
}

const DIR_VAR: &str = "CLAIMLEDGER_CRASH_DIR";
const ROUNDS: usize = 6;
const CHILD_TASKS: usize = 6;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A small xorshift generator, seeded from the clock (the seed is printed for reruns).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The child: appends from several tasks until killed, printing `index leafhash` for every
/// acknowledged append (after the acknowledgement, flushed at once).
#[test]
#[ignore = "run by crash_test_acknowledged_entries_survive_sigkill in a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Log::open(&dir, Options::default(), Arc::new(NoApply)).expect("child opens");
        let start = log.size();
        let tasks: Vec<_> = (0..CHILD_TASKS)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    // A bound so that an orphaned child cannot run forever.
                    for k in 0..200_000u64 {
                        let body = format!("start {start} task {t} append {k} ")
                            .repeat(1 + (k % 7) as usize)
                            .into_bytes();
                        let r = log.append("crash-test", body).await.expect("append");
                        let line = format!("{} {}\n", r.index, hex(&r.leaf_hash.0));
                        let mut out = std::io::stdout().lock();
                        out.write_all(line.as_bytes()).unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
}

/// Runs one child on `dir` until it has acknowledged at least one append, lets it run for
/// `delay` more, SIGKILLs it, and returns every complete `index leafhash` line it printed.
fn run_and_kill(dir: &Path, delay: Duration) -> Vec<(u64, String)> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut first = Some(first_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Only well-formed acknowledgement lines count: libtest prints its own lines, and
            // the kill may cut the last line short (a cut line lacks part of the hash).
            let mut parts = line.split(' ');
            let (Some(idx), Some(hash), None) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(idx) = idx.parse::<u64>() else {
                continue;
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            acks.push((idx, hash.to_string()));
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
        }
        acks
    });
    // Wait for the first acknowledgement (or for the child to end without one).
    let started = first_rx.recv().is_ok();
    if started {
        std::thread::sleep(delay);
    }
    // SIGKILL on Unix.
    let _ = child.kill();
    let status = child.wait().expect("wait for child");
    let acks = reader.join().expect("reader thread");
    assert!(
        started,
        "the child acknowledged nothing before exiting ({status})"
    );
    acks
}

#[test]
fn crash_test_acknowledged_entries_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed:#x}");
    let mut rng = Rng(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Every acknowledged entry over all rounds: index -> leaf hash.
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut last_size = 0;
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.between(50, 400));
        let acks = run_and_kill(dir.path(), delay);
        assert!(!acks.is_empty());
        for (idx, hash) in acks.iter() {
            if let Some(old) = acknowledged.insert(*idx, hash.clone()) {
                panic!("round {round}: index {idx} acknowledged twice ({old} and {hash})");
            }
        }

        let (size, report) = rt.block_on(async {
            let log = Log::open(dir.path(), Options::default(), Arc::new(NoApply))
                .unwrap_or_else(|e| panic!("round {round}: reopening after SIGKILL: {e}"));
            let size = log.size();
            for (idx, want) in &acknowledged {
                let bytes = log
                    .entry(*idx)
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged entry {idx} is lost"));
                assert_eq!(
                    &hex(&leaf_hash(&bytes).0),
                    want,
                    "round {round}: entry {idx} changed"
                );
            }
            let report = log.verify(&mut |_| {}).unwrap();
            close(log).await;
            (size, report)
        });
        assert!(report.ok(), "round {round}: verify failed: {report:?}");
        assert_eq!(report.checked, size);
        let max_ack = *acknowledged.keys().next_back().unwrap();
        assert!(
            size > max_ack,
            "round {round}: size {size} ≤ acked {max_ack}"
        );
        assert!(size >= last_size, "round {round}: the log shrank");
        eprintln!(
            "round {round}: killed after {} ms, {} acknowledged this round, size {size}",
            delay.as_millis(),
            acks.len()
        );
        last_size = size;
    }
}
