//! Several `claimledger serve` processes sharing one PostgreSQL database (`--store
//! postgres://…`): one sequences (the one whose writer holds the sequencer's advisory lock),
//! the others follow the stored head and either refuse writes with UNAVAILABLE or forward them
//! to the sequencer (the tests accept both, and find the sequencer by its lock in PostgreSQL,
//! never by who answered). These tests run the real binary against the test process's own
//! PostgreSQL ([`common::pg::cluster`]) and check what a client and an auditor can see:
//!
//! 1. concurrent writes spread over two processes make one history (every receipt verifies
//!    against the final checkpoint, no gap, no duplicate, both processes agree);
//! 2. killing the leader again and again loses nothing that was acknowledged and never forks
//!    (the failover times are printed: run with `--nocapture`);
//! 3. a stale leader (paused while its database session was ended) is fenced and steps down;
//! 4. a leader whose epoch was bumped behind its back is fenced, writes nothing, and takes the
//!    lead again on the retry without a gap;
//! 5. a process can start (or restart) while another one commits;
//! 6. a resumed stale leader that is only read from follows the head;
//! 7. a follower takes over from a dead leader although another log on the same PostgreSQL
//!    server (another database) has a live leader;
//! 8. while the sequencer lives, a write sent to a follower is forwarded to it and answered
//!    with its receipt, never refused;
//! 9. a process reading from a streaming replica (`--read-store`) never shows a size the
//!    primary has not committed and signed, stays consistent while the replica is paused,
//!    catches up, and forwards writes; with no sequencer left it takes the lead and serves
//!    what it appended although its replica lags;
//! 10. a process without the log's key, or with another log's, is refused and makes no key;
//! 11. a follower's reads (served from the state it cached) show each write another process
//!     commits once the follower publishes its size.
//!
//! Every process is killed (SIGKILL) when its [`Node`] guard drops, also when a test panics.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claimledger::pb;
use common::*;
use futures::StreamExt;
use prost::Message;
use tlog_tiles::{check_record, check_tree, Hash};
use tonic::Code;

/// How long one write may keep being retried before the test fails.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// How long one call may take before it counts as failed (a paused or dead process).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two attempts of a write.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The key of the sequencer's advisory lock (src/log/kv/postgres.rs `SEQUENCER_LOCK`).
const SEQUENCER_LOCK: i64 = 0x636c_6169_6d73_6571;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A `claimledger serve --store postgres://…` process, killed with SIGKILL when dropped (also
/// when the test panics; then its stderr is printed).
struct Node {
    name: &'static str,
    dir: PathBuf,
    store: String,
    proc: Option<ServeProcess>,
    url: String,
    /// More `serve` flags (`--read-store …`).
    extra: Vec<String>,
}

impl Node {
    /// Starts `serve` on `dir` (created if missing) and waits for its listening line.
    async fn start(name: &'static str, dir: &Path, store: &str) -> Node {
        Self::start_with(name, dir, store, Vec::new()).await
    }

    /// [`Node::start`] with more `serve` flags.
    async fn start_with(name: &'static str, dir: &Path, store: &str, extra: Vec<String>) -> Node {
        let mut node = Node {
            name,
            dir: dir.to_path_buf(),
            store: store.to_string(),
            proc: None,
            url: String::new(),
            extra,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        if let Err(e) = self.try_spawn().await {
            panic!("{} did not start: {e}", self.name);
        }
    }

    /// Restarts a killed process on the same data directory (same key), on a new port.
    async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Starts `serve`; `Err` with what it printed if it does not come up
    /// (`ServeProcess::start` panics then, on its own thread; the panic is caught here).
    async fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.proc.is_none(), "{} is already running", self.name);
        let mut args: Vec<String> = vec![
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            self.store.clone(),
        ];
        args.extend(self.extra.iter().cloned());
        // ServeProcess::start blocks (at most 30 s) reading the child's stderr.
        match tokio::task::spawn_blocking(move || ServeProcess::start(args)).await {
            Ok(p) => {
                self.url = p.url.clone();
                self.proc = Some(p);
                Ok(())
            }
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                Err(payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "serve did not start".into()))
            }
            Err(e) => panic!("the task starting serve: {e}"),
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.proc
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
            .pid()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with the pid of our own (unreaped) child and a valid signal.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "signal {sig} to {}", self.name);
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            // SAFETY: as in `signal`; the child is reaped by ServeProcess's drop below.
            unsafe { libc::kill(p.pid(), libc::SIGKILL) };
            // ServeProcess's drop sends SIGKILL too (harmless) and waits for the child.
            drop(p);
        }
    }

    async fn clients(&self) -> Clients {
        connect(&self.url).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            if std::thread::panicking() {
                eprintln!(
                    "--- stderr of {} ({}) ---\n{}",
                    self.name,
                    self.url,
                    p.stderr_lines().join("\n")
                );
            }
            // SAFETY: as in `signal`. SIGKILL also ends a process stopped with SIGSTOP.
            unsafe { libc::kill(p.pid(), libc::SIGKILL) };
            drop(p);
        }
    }
}

/// A fresh database of the test process's PostgreSQL, and its URL.
fn database(name: &str) -> String {
    let pg = pg::cluster().unwrap_or_else(|e| panic!("start PostgreSQL: {e}"));
    pg.create_database(name)
        .unwrap_or_else(|e| panic!("create database {name}: {e}"))
}

/// Runs `sql` in `db` (psql blocks, so off the async worker).
fn psql(db: &str, sql: &str) -> String {
    tokio::task::block_in_place(|| {
        let pg = pg::cluster().unwrap_or_else(|e| panic!("start PostgreSQL: {e}"));
        pg.psql(db, sql)
            .unwrap_or_else(|e| panic!("psql {db} {sql:?}: {e}"))
    })
}

fn psql_i64(db: &str, sql: &str) -> i64 {
    let out = psql(db, sql);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("psql {sql:?} printed {out:?}: {e}"))
}

/// The `FROM … WHERE …` of the session of `db` holding the sequencer lock (its 64-bit key is
/// classid ‖ objid in pg_locks). Found by the lock, not by the name: every process's writer
/// connection is named `claimledger-sequencer`, also one that tried to lead and did not.
fn lock_holder(db: &str) -> String {
    format!(
        "FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {} AND l.objid = {} \
         AND l.objsubid = 1 AND s.datname = '{db}'",
        SEQUENCER_LOCK >> 32,
        SEQUENCER_LOCK & 0xffff_ffff
    )
}

/// Ends the session holding the sequencer lock (as a partition, or PostgreSQL's keepalive,
/// would) and waits until the lock is free: pg_terminate_backend only signals the backend.
fn terminate_sequencer_session(db: &str) {
    let holder = lock_holder(db);
    let out = psql(db, &format!("SELECT pg_terminate_backend(l.pid) {holder}"));
    assert_eq!(
        out, "t",
        "one session held the sequencer lock and was terminated"
    );
    let started = Instant::now();
    while psql_i64(db, &format!("SELECT count(*) {holder}")) != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the terminated session still holds the sequencer lock after 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The inode of the TCP socket bound to 127.0.0.1:`port` on this machine.
fn socket_inode(port: u16) -> Option<String> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(9).is_some_and(|i| *i != "0") {
                return Some(f[9].to_string());
            }
        }
    }
    None
}

/// Which of `nodes` sequences now: PostgreSQL names the client port of the session holding
/// the lock, and the process owning the socket bound to that port is found in /proc. `None`
/// while nobody holds it.
fn sequencer_node(db: &str, nodes: &[Node]) -> Option<usize> {
    let port = psql(db, &format!("SELECT s.client_port {}", lock_holder(db)));
    if port.is_empty() {
        return None;
    }
    let port: u16 = port
        .parse()
        .unwrap_or_else(|e| panic!("client_port {port:?}: {e}"));
    let inode = socket_inode(port)?;
    let target = format!("socket:[{inode}]");
    nodes.iter().position(|n| {
        n.proc.is_some()
            && std::fs::read_dir(format!("/proc/{}/fd", n.pid()))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| l.to_string_lossy() == target.as_str())
                })
    })
}

/// Starts the first process on an empty database (it creates `log.key`), copies the key into
/// the data directories of the others, and starts them.
async fn start_nodes(names: &[&'static str], root: &Path, store: &str) -> Vec<Node> {
    let first = Node::start(names[0], &root.join(names[0]), store).await;
    let key = first.dir.join("log.key");
    assert!(key.exists(), "the first process created {}", key.display());
    let mut nodes = vec![first];
    for name in &names[1..] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(&key, dir.join("log.key")).expect("copy log.key");
        nodes.push(Node::start(name, &dir, store).await);
    }
    nodes
}

// ---------------------------------------------------------------------------------------------
// Clients and writes
// ---------------------------------------------------------------------------------------------

/// RegisterSource `id` with request id `req-<id>`.
fn register_request(id: &str) -> pb::RegisterSourceRequest {
    pb::RegisterSourceRequest {
        request_id: format!("req-{id}"),
        source: Some(source(id, "", pb::Role::NonParty, pb::Reliability::B, "")),
    }
}

/// One attempt of a write, bounded by [`CALL_TIMEOUT`] (a timeout is DEADLINE_EXCEEDED).
async fn try_write(
    c: &mut Clients,
    req: &pb::RegisterSourceRequest,
) -> Result<pb::Receipt, tonic::Status> {
    match tokio::time::timeout(CALL_TIMEOUT, c.sources.register_source(req.clone())).await {
        Ok(Ok(r)) => Ok(r
            .into_inner()
            .receipt
            .expect("RegisterSource returns a receipt")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {CALL_TIMEOUT:?}"
        ))),
    }
}

/// `req` to `c`, retried (the same request id) while the answer is one a write to a process
/// taking over may get, at most [`WRITE_DEADLINE`]; panics with `what` otherwise.
async fn write_retrying(
    c: &mut Clients,
    req: &pb::RegisterSourceRequest,
    what: &str,
) -> pb::Receipt {
    let started = Instant::now();
    loop {
        match try_write(c, req).await {
            Ok(r) => return r,
            Err(s) if retryable(s.code()) && started.elapsed() < WRITE_DEADLINE => {
                tokio::time::sleep(RETRY_PAUSE).await
            }
            Err(s) => panic!("{what}: {:?} {}", s.code(), s.message()),
        }
    }
}

/// An acknowledged write.
#[derive(Clone, Debug)]
struct Acked {
    request_id: String,
    receipt: pb::Receipt,
    /// The process that acknowledged it.
    by: String,
    at: Instant,
}

/// Sends `req` to `targets[first]`; on UNAVAILABLE retries the same request (same request id)
/// on the next target, then the next…, pausing briefly, for at most [`WRITE_DEADLINE`]. Any
/// other error fails the test. Returns the acknowledgement and how many refusals it took.
async fn write_until_acked(
    targets: &mut [(String, Clients)],
    first: usize,
    req: &pb::RegisterSourceRequest,
) -> (Acked, usize) {
    let started = Instant::now();
    let mut refusals = 0;
    loop {
        let i = (first + refusals) % targets.len();
        let (name, c) = &mut targets[i];
        match try_write(c, req).await {
            Ok(receipt) => {
                let acked = Acked {
                    request_id: req.request_id.clone(),
                    receipt,
                    by: name.clone(),
                    at: Instant::now(),
                };
                return (acked, refusals);
            }
            Err(s) if s.code() == Code::Unavailable => {
                refusals += 1;
                assert!(
                    started.elapsed() < WRITE_DEADLINE,
                    "{} not acknowledged within {WRITE_DEADLINE:?} ({refusals} refusals; the \
                     last from {name}: {})",
                    req.request_id,
                    s.message()
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(s) => panic!(
                "{} to {name}: {:?} {} (only UNAVAILABLE may be retried)",
                req.request_id,
                s.code(),
                s.message()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What an auditor checks
// ---------------------------------------------------------------------------------------------

async fn checkpoint(c: &mut Clients) -> pb::GetCheckpointResponse {
    tokio::time::timeout(
        CALL_TIMEOUT,
        c.log.get_checkpoint(pb::GetCheckpointRequest {}),
    )
    .await
    .expect("GetCheckpoint answers")
    .expect("GetCheckpoint")
    .into_inner()
}

/// VerifyLog's final message, which must say ok.
async fn verify_log_ok(c: &mut Clients, who: &str, size: u64) {
    let mut stream = c
        .log
        .verify_log(pb::VerifyLogRequest {})
        .await
        .unwrap_or_else(|e| panic!("VerifyLog on {who}: {e}"))
        .into_inner();
    let mut last = None;
    while let Some(m) = stream.next().await {
        last = Some(m.unwrap_or_else(|e| panic!("VerifyLog on {who}: {e}")));
    }
    let last = last.unwrap_or_else(|| panic!("VerifyLog on {who} sent nothing"));
    assert!(last.done && last.ok, "VerifyLog on {who}: {last:?}");
    assert_eq!(last.first_bad_index, None, "VerifyLog on {who}");
    assert_eq!(last.checked, size, "VerifyLog on {who} checked every entry");
}

/// Waits (at most `limit`) until `c` serves the checkpoint `note`; returns how long it took.
async fn wait_for_checkpoint(c: &mut Clients, who: &str, note: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let cp = checkpoint(c).await;
        if cp.note == note {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{who} still serves size {} after {limit:?}; the log is at\n{note}",
            cp.size
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks, against `c`'s latest checkpoint, that the log is one history holding every
/// acknowledged write exactly once:
/// - the entries 0..size are all there, each with its leaf hash, hash-chained, and their tree
///   is the signed root (computed here, independently of the server);
/// - no request id is in the log twice, and no two acknowledgements name the same index;
/// - every receipt verifies offline, names the entry of its request, and has an inclusion
///   proof at the final size;
/// - from every acknowledged checkpoint (size and root as signed in the receipt) there is a
///   consistency proof to the final checkpoint: no acknowledgement was on a fork.
///
/// Returns the final checkpoint.
async fn check_one_history(
    c: &mut Clients,
    vk: &str,
    acked: &[Acked],
) -> pb::GetCheckpointResponse {
    let fin = checkpoint(c).await;
    let fin_cp = verify_note(&fin.note, vk);
    assert_eq!(fin_cp.size(), fin.size);
    let root = *fin_cp.hash();

    // The entries: no gap, leaf hashes, the hash chain, the root.
    let all = entries(c, 0, fin.size).await;
    assert_eq!(
        all.len() as u64,
        fin.size,
        "GetEntries 0..{} has a gap",
        fin.size
    );
    let mut prev = [0u8; 32];
    let mut leaves = Vec::with_capacity(all.len());
    let mut in_log: HashMap<String, u64> = HashMap::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.index, i as u64, "GetEntries out of order or with a gap");
        let leaf = leaf_hash(&e.data);
        assert_eq!(e.leaf_hash, leaf.to_vec(), "leaf hash of entry {i}");
        let entry = pb::Entry::decode(&e.data[..]).expect("an Entry");
        assert_eq!(entry.index, i as u64, "entry {i} names its index");
        assert_eq!(entry.prev_hash, prev.to_vec(), "hash chain at entry {i}");
        let change = entry.body.expect("a Change body");
        if let Some(j) = in_log.insert(change.request_id.clone(), i as u64) {
            panic!(
                "request {} is in the log twice: entries {j} and {i}",
                change.request_id
            );
        }
        prev = leaf;
        leaves.push(leaf);
    }
    assert_eq!(
        tree_root(&leaves),
        root.0,
        "the signed root is the entries' tree"
    );

    // The receipts.
    let mut indexes = HashSet::new();
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    for a in acked {
        let r = &a.receipt;
        let cp = verify_receipt(r, vk);
        assert!(
            indexes.insert(r.index),
            "two acknowledgements name index {} ({} by {})",
            r.index,
            a.request_id,
            a.by
        );
        assert_eq!(
            in_log.get(&a.request_id),
            Some(&r.index),
            "{} (acknowledged by {} at index {}) is not at that index in the final log",
            a.request_id,
            a.by,
            r.index
        );
        assert!(r.index < fin.size);
        assert_eq!(r.leaf_hash, all[r.index as usize].leaf_hash);
        if let Some(other) = roots.insert(cp.size(), *cp.hash()) {
            assert_eq!(
                other,
                *cp.hash(),
                "two signed checkpoints of size {} with different roots: a fork",
                cp.size()
            );
        }
        let p = c
            .log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::Index(r.index)),
                tree_size: fin.size,
            })
            .await
            .expect("GetInclusionProof")
            .into_inner();
        assert_eq!(p.tree_size, fin.size);
        assert_eq!(p.root_hash, root.0.to_vec());
        check_record(
            &hashes(&p.hashes),
            fin.size,
            root,
            r.index,
            hash(&r.leaf_hash),
        )
        .unwrap_or_else(|e| {
            panic!(
                "entry {} ({}) is not in the final tree of size {}: {e}",
                r.index, a.request_id, fin.size
            )
        });
    }

    // No fork: every acknowledged checkpoint is a prefix of the final one.
    for (&size, &old_root) in &roots {
        if size == fin.size {
            assert_eq!(
                old_root, root,
                "a checkpoint of the final size, another root"
            );
            continue;
        }
        let p = c
            .log
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                old_size: size,
                new_size: fin.size,
            })
            .await
            .expect("GetConsistencyProof")
            .into_inner();
        check_tree(&hashes(&p.hashes), fin.size, root, size, old_root).unwrap_or_else(|e| {
            panic!(
                "the acknowledged checkpoint of size {size} is not a prefix of the final one \
                 (size {}): {e}",
                fin.size
            )
        });
    }
    fin
}

// ---------------------------------------------------------------------------------------------
// 1. Two processes, one history
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_history_under_concurrent_writes() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let store = database("sp_two_processes");
    let nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let mut b = nodes[1].clients().await;
    let vk = a.verifier_key().await;
    assert_eq!(b.verifier_key().await, vk, "both sign with the same key");

    const TASKS: usize = 4;
    const WRITES: usize = 25;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut targets = vec![("A".to_string(), a.clone()), ("B".to_string(), b.clone())];
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut refusals = 0;
            for i in 0..WRITES {
                let req = register_request(&format!("t{t}-{i}"));
                // Alternately to A and to B.
                let (acked, n) = write_until_acked(&mut targets, (t + i) % 2, &req).await;
                refusals += n;
                out.push(acked);
            }
            (out, refusals)
        }));
    }
    let mut acked = Vec::new();
    let mut refusals = 0;
    for t in tasks {
        let (out, n) = t.await.expect("a writer task panicked");
        acked.extend(out);
        refusals += n;
    }
    let by_a = acked.iter().filter(|x| x.by == "A").count();
    eprintln!(
        "{} writes acknowledged ({by_a} by A, {} by B), {refusals} UNAVAILABLE refusals retried",
        acked.len(),
        acked.len() - by_a
    );
    assert_eq!(acked.len(), TASKS * WRITES);

    // Which process sequenced, as PostgreSQL says: a follower may have forwarded writes to
    // it, so the process that answered a write is not necessarily the one that sequenced it.
    let leader = tokio::task::block_in_place(|| sequencer_node("sp_two_processes", &nodes))
        .expect("one of A and B holds the sequencer lock");
    let (lead, follow) = if leader == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    eprintln!("{} sequences", nodes[leader].name);
    let fin = check_one_history(lead, &vk, &acked).await;
    assert_eq!(
        fin.size,
        (TASKS * WRITES) as u64,
        "every write once, nothing else"
    );
    assert_eq!(
        psql_i64("sp_two_processes", "SELECT tree_size FROM head"),
        fin.size as i64
    );
    assert_eq!(
        psql_i64("sp_two_processes", "SELECT count(*) FROM entries"),
        fin.size as i64
    );

    // The follower catches up, and serves the same history.
    let took = wait_for_checkpoint(follow, "the follower", &fin.note, Duration::from_secs(2)).await;
    eprintln!("the follower served the final checkpoint after {took:?}");
    let fin_b = check_one_history(follow, &vk, &acked).await;
    assert_eq!(fin_b.note, fin.note);
    verify_log_ok(&mut a, "A", fin.size).await;
    verify_log_ok(&mut b, "B", fin.size).await;
    drop(nodes);
    eprintln!("two_processes_one_history: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 2. Killing the leader
// ---------------------------------------------------------------------------------------------

/// What the writers of test 2 share with the test: where to write, what was acknowledged.
#[derive(Default)]
struct Board {
    /// By slot: the process's name and clients, `None` while it is dead.
    targets: Vec<Option<(String, Clients)>>,
    acked: Vec<(usize, Acked)>,
    /// The slot that acknowledged last: the leader as far as clients can tell.
    last_acker: Option<usize>,
    /// Failed attempts by error code.
    errors: BTreeMap<String, usize>,
}

/// Codes a write to a process being killed or to a follower may get; it is then retried.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Writes `w<t>-<i>` one after the other until `stop`, each retried (same request id) on the
/// live processes, the last acknowledging one first.
async fn writer(t: usize, board: Arc<Mutex<Board>>, stop: Arc<AtomicBool>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let req = register_request(&format!("w{t}-{i}"));
        let started = Instant::now();
        let mut attempt = 0usize;
        loop {
            let pick = {
                let b = board.lock().unwrap();
                let alive: Vec<usize> = (0..b.targets.len())
                    .filter(|&s| b.targets[s].is_some())
                    .collect();
                let first = b.last_acker.filter(|l| alive.contains(l));
                let order: Vec<usize> = first
                    .into_iter()
                    .chain(alive.iter().copied().filter(|&s| Some(s) != first))
                    .collect();
                if order.is_empty() {
                    None
                } else {
                    let s = order[attempt % order.len()];
                    b.targets[s].clone().map(|(name, c)| (s, name, c))
                }
            };
            attempt += 1;
            let Some((slot, name, mut c)) = pick else {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            match try_write(&mut c, &req).await {
                Ok(receipt) => {
                    let mut b = board.lock().unwrap();
                    b.acked.push((
                        slot,
                        Acked {
                            request_id: req.request_id.clone(),
                            receipt,
                            by: name,
                            at: Instant::now(),
                        },
                    ));
                    b.last_acker = Some(slot);
                    break;
                }
                Err(s) if retryable(s.code()) => {
                    *board
                        .lock()
                        .unwrap()
                        .errors
                        .entry(format!("{:?}", s.code()))
                        .or_default() += 1;
                    assert!(
                        started.elapsed() < WRITE_DEADLINE,
                        "{} not acknowledged within {WRITE_DEADLINE:?}; the last error from \
                         {name}: {:?} {}",
                        req.request_id,
                        s.code(),
                        s.message()
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(s) => panic!(
                    "{} to {name}: {:?} {} (not a refusal to retry)",
                    req.request_id,
                    s.code(),
                    s.message()
                ),
            }
        }
        i += 1;
    }
}

/// Waits (at most `limit`) until `cond` holds on the board.
async fn wait_board(
    board: &Mutex<Board>,
    what: &str,
    limit: Duration,
    cond: impl Fn(&Board) -> bool,
) {
    let started = Instant::now();
    loop {
        if cond(&board.lock().unwrap()) {
            return;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_repeatedly_loses_nothing_acknowledged() {
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let store = database("sp_kill_leader");
    let mut nodes = start_nodes(&["A", "B", "C"], root.path(), &store).await;
    let vk = nodes[0].clients().await.verifier_key().await;

    let board = Arc::new(Mutex::new(Board::default()));
    for n in &nodes {
        let c = n.clients().await;
        board
            .lock()
            .unwrap()
            .targets
            .push(Some((n.name.to_string(), c)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|t| tokio::spawn(writer(t, board.clone(), stop.clone())))
        .collect();

    const ROUNDS: usize = 3;
    const BETWEEN: usize = 15;
    let mut failovers = Vec::new();
    for round in 1..=ROUNDS {
        // Some acknowledged writes since the last round, then kill whoever acknowledged last.
        let base = board.lock().unwrap().acked.len();
        wait_board(
            &board,
            "writes acknowledged",
            Duration::from_secs(20),
            |b| b.acked.len() >= base + BETWEEN,
        )
        .await;
        // The leader: the process holding the sequencer lock (not necessarily the one that
        // answered last, if followers forward writes).
        let leader = tokio::task::block_in_place(|| {
            let started = Instant::now();
            loop {
                if let Some(l) = sequencer_node("sp_kill_leader", &nodes) {
                    return l;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "no process holds the sequencer lock while writes go on"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let size_at_kill = {
            let mut b = board.lock().unwrap();
            // No new attempt goes to it from now on.
            b.targets[leader] = None;
            let size = b.acked.iter().map(|(_, a)| a.receipt.tree_size).max();
            size.unwrap_or(0)
        };
        let kill_at = Instant::now();
        nodes[leader].kill();
        let name = nodes[leader].name;
        wait_board(
            &board,
            &format!("a write acknowledged after {name} was killed"),
            Duration::from_secs(20),
            |b| b.acked.iter().any(|(s, a)| *s != leader && a.at > kill_at),
        )
        .await;
        let (took, by, size) = {
            let b = board.lock().unwrap();
            let (_, first) = b
                .acked
                .iter()
                .filter(|(s, a)| *s != leader && a.at > kill_at)
                .min_by_key(|(_, a)| a.at)
                .unwrap();
            (
                first.at - kill_at,
                first.by.clone(),
                first.receipt.tree_size,
            )
        };
        eprintln!(
            "round {round}: killed leader {name} at size {size_at_kill}; failover time \
             {took:?} (first acknowledged write by {by}, tree size {size})"
        );
        failovers.push(took);
        // Back as a follower, on the same data directory and key.
        nodes[leader].restart().await;
        let c = nodes[leader].clients().await;
        board.lock().unwrap().targets[leader] = Some((name.to_string(), c));
    }
    let base = board.lock().unwrap().acked.len();
    wait_board(
        &board,
        "writes after the last round",
        Duration::from_secs(20),
        |b| b.acked.len() >= base + BETWEEN,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("a writer panicked");
    }
    let (acked, errors) = {
        let b = board.lock().unwrap();
        let acked: Vec<Acked> = b.acked.iter().map(|(_, a)| a.clone()).collect();
        (acked, b.errors.clone())
    };
    let leader = tokio::task::block_in_place(|| sequencer_node("sp_kill_leader", &nodes))
        .expect("a process sequences at the end");
    eprintln!(
        "{} writes acknowledged; failed attempts retried: {errors:?}; failover times: \
         {failovers:?}",
        acked.len()
    );

    let mut lead = nodes[leader].clients().await;
    let fin = check_one_history(&mut lead, &vk, &acked).await;
    assert_eq!(
        fin.size,
        acked.len() as u64,
        "the log holds exactly the acknowledged writes (each retried until acknowledged)"
    );
    for n in &nodes {
        let mut c = n.clients().await;
        let took = wait_for_checkpoint(&mut c, n.name, &fin.note, Duration::from_secs(2)).await;
        eprintln!("{} served the final checkpoint after {took:?}", n.name);
        verify_log_ok(&mut c, n.name, fin.size).await;
    }
    drop(nodes);
    eprintln!("killing_the_leader: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. A stale leader
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_is_fenced_and_steps_down() {
    let started = Instant::now();
    const DB: &str = "sp_stale_leader";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let mut b = nodes[1].clients().await;
    let vk = a.verifier_key().await;
    let mut acked = Vec::new();

    // A leads.
    for i in 0..3 {
        let req = register_request(&format!("a-{i}"));
        let r = try_write(&mut a, &req).await.expect("A takes the lead");
        acked.push(Acked {
            request_id: req.request_id,
            receipt: r,
            by: "A".into(),
            at: Instant::now(),
        });
    }
    // B does not sequence while A leads: it refuses the write, or forwards it to A.
    let req = register_request("b-while-a-leads");
    match try_write(&mut b, &req).await {
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Ok(r) => {
            eprintln!("B forwarded a write while A led: index {}", r.index);
            acked.push(Acked {
                request_id: req.request_id,
                receipt: r,
                by: "B (forwarded)".into(),
                at: Instant::now(),
            });
        }
    }
    let holder = lock_holder(DB);
    assert_eq!(
        psql(DB, &format!("SELECT s.application_name {holder}")),
        "claimledger-sequencer",
        "one session holds the sequencer lock, a writer connection"
    );
    assert_eq!(
        tokio::task::block_in_place(|| sequencer_node(DB, &nodes)),
        Some(0),
        "A holds the sequencer lock"
    );
    let named = psql_i64(
        DB,
        &format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'claimledger-sequencer' AND datname = '{DB}'"
        ),
    );
    eprintln!("sessions named claimledger-sequencer: {named} (one holds the lock)");
    let epoch_a = psql_i64(DB, "SELECT writer_epoch FROM head");
    let size_a = psql_i64(DB, "SELECT tree_size FROM head") as u64;
    assert_eq!(size_a, acked.len() as u64);

    // A pauses; its session ends (a partition, or PostgreSQL's keepalive, would do it).
    nodes[0].signal(libc::SIGSTOP);
    tokio::task::block_in_place(|| terminate_sequencer_session(DB));

    // B takes over.
    let mut targets = vec![("B".to_string(), b.clone())];
    let t0 = Instant::now();
    let (first, refusals) = write_until_acked(&mut targets, 0, &register_request("b-0")).await;
    eprintln!(
        "B acknowledged its first write {:?} after A's session ended ({refusals} refusals)",
        t0.elapsed()
    );
    assert_eq!(
        first.receipt.index, size_a,
        "B continues from the stored head"
    );
    acked.push(first);
    let epoch_b = psql_i64(DB, "SELECT writer_epoch FROM head");
    assert!(
        epoch_b > epoch_a,
        "B took a higher epoch ({epoch_a} -> {epoch_b})"
    );
    for i in 1..4 {
        let req = register_request(&format!("b-{i}"));
        let r = try_write(&mut b, &req).await.expect("B leads");
        acked.push(Acked {
            request_id: req.request_id,
            receipt: r,
            by: "B".into(),
            at: Instant::now(),
        });
    }
    let size_b = psql_i64(DB, "SELECT tree_size FROM head");
    assert_eq!(size_b as u64, size_a + 4);

    // A resumes, still believing it leads. What does it serve before it is written to?
    nodes[0].signal(libc::SIGCONT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stale = checkpoint(&mut a).await;
    eprintln!(
        "A, 500 ms after SIGCONT and before any write to it, serves size {} (the log is at \
         {size_b})",
        stale.size
    );

    // A write to A is not sequenced by A: A finds it does not lead any more (its session is
    // gone), and either refuses the write or forwards it to B. Nothing forks either way.
    let req = register_request("after-resume");
    let answer = try_write(&mut a, &req).await;
    assert_eq!(
        psql_i64(DB, "SELECT writer_epoch FROM head"),
        epoch_b,
        "A took no epoch"
    );
    let r = match answer {
        Ok(r) => {
            eprintln!("A forwarded the write to B: index {}", r.index);
            assert_eq!(
                psql_i64(DB, "SELECT tree_size FROM head"),
                size_b + 1,
                "one entry, sequenced by B"
            );
            assert_eq!(r.index, size_b as u64, "at the next index after B's");
            // The same request sent to B again is the same entry, not a second one.
            let again = try_write(&mut b, &req).await.expect("B answers the retry");
            assert_eq!(again.index, r.index, "a retry is the same entry");
            Acked {
                request_id: req.request_id.clone(),
                receipt: r,
                by: "B (forwarded by A)".into(),
                at: Instant::now(),
            }
        }
        Err(s) => {
            eprintln!("A refused the write: {:?} {}", s.code(), s.message());
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
            assert_eq!(
                psql_i64(DB, "SELECT tree_size FROM head"),
                size_b,
                "A wrote nothing"
            );
            // The same request, retried on B (then A, …), is acknowledged once, at the next
            // index.
            let mut targets = vec![("B".to_string(), b.clone()), ("A".to_string(), a.clone())];
            let (r, _) = write_until_acked(&mut targets, 0, &req).await;
            assert_eq!(r.by, "B");
            r
        }
    };
    assert_eq!(r.receipt.index, size_b as u64);
    acked.push(r);
    // A follows now: it refuses writes, or forwards them to B, which sequences them.
    let req = register_request("a-late");
    match try_write(&mut a, &req).await {
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Ok(r) => {
            eprintln!("A forwarded a write to B: index {}", r.index);
            assert_eq!(r.index, size_b as u64 + 1);
            acked.push(Acked {
                request_id: req.request_id,
                receipt: r,
                by: "A (forwarded)".into(),
                at: Instant::now(),
            });
        }
    }
    assert_eq!(
        tokio::task::block_in_place(|| sequencer_node(DB, &nodes)),
        Some(1),
        "B holds the sequencer lock"
    );
    assert_eq!(psql_i64(DB, "SELECT writer_epoch FROM head"), epoch_b);

    let fin = check_one_history(&mut b, &vk, &acked).await;
    assert_eq!(fin.size, acked.len() as u64);
    let took = wait_for_checkpoint(
        &mut a,
        "A (stepped down)",
        &fin.note,
        Duration::from_secs(2),
    )
    .await;
    eprintln!("A served B's final checkpoint {took:?} after it was written");
    let fin_a = check_one_history(&mut a, &vk, &acked).await;
    assert_eq!(fin_a.note, fin.note);
    verify_log_ok(&mut a, "A", fin.size).await;
    verify_log_ok(&mut b, "B", fin.size).await;
    drop(nodes);
    eprintln!("a_stale_leader: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 4. A bumped epoch
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bumped_epoch_fences_the_leader() {
    let started = Instant::now();
    const DB: &str = "sp_bumped_epoch";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let nodes = start_nodes(&["A"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let vk = a.verifier_key().await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let req = register_request(&format!("a-{i}"));
        let r = try_write(&mut a, &req).await.expect("A leads");
        acked.push(Acked {
            request_id: req.request_id,
            receipt: r,
            by: "A".into(),
            at: Instant::now(),
        });
    }
    let size = psql_i64(DB, "SELECT tree_size FROM head");
    assert_eq!(size, 3);
    let epoch = psql_i64(DB, "SELECT writer_epoch FROM head");
    psql(DB, "UPDATE head SET writer_epoch = writer_epoch + 1");

    // Fenced: refused, and nothing written.
    let req = register_request("fenced");
    match try_write(&mut a, &req).await {
        Ok(r) => panic!(
            "A acknowledged {} at index {} after its epoch was taken",
            req.request_id, r.index
        ),
        Err(s) => {
            eprintln!("the fenced write: {:?} {}", s.code(), s.message());
            assert_eq!(s.code(), Code::Unavailable, "{s:?}");
        }
    }
    assert_eq!(psql_i64(DB, "SELECT tree_size FROM head"), size);
    assert_eq!(psql_i64(DB, "SELECT count(*) FROM entries"), size);
    assert_eq!(
        psql_i64(DB, "SELECT count(*) FROM checkpoints WHERE tree_size > 3"),
        0
    );
    assert_eq!(checkpoint(&mut a).await.size, size as u64);

    // The retry (same request id) is acknowledged at the old size: no gap, no duplicate.
    let mut targets = vec![("A".to_string(), a.clone())];
    let (r, refusals) = write_until_acked(&mut targets, 0, &req).await;
    eprintln!("the retry was acknowledged after {refusals} more refusals");
    assert_eq!(r.receipt.index, size as u64, "the retry takes the old size");
    acked.push(r);
    let epoch_now = psql_i64(DB, "SELECT writer_epoch FROM head");
    assert!(
        epoch_now > epoch + 1,
        "A took the lead again with a new epoch ({epoch} -> bumped {} -> {epoch_now})",
        epoch + 1
    );
    // Once more: the same answer, not a new entry.
    let (again, _) = write_until_acked(&mut targets, 0, &req).await;
    assert_eq!(
        again.receipt.index, size as u64,
        "the same request, the same index"
    );
    let req = register_request("after");
    let (r, _) = write_until_acked(&mut targets, 0, &req).await;
    assert_eq!(r.receipt.index, size as u64 + 1);
    acked.push(r);

    let fin = check_one_history(&mut a, &vk, &acked).await;
    assert_eq!(fin.size, 5);
    assert_eq!(psql_i64(DB, "SELECT tree_size FROM head"), 5);
    verify_log_ok(&mut a, "A", fin.size).await;
    drop(nodes);
    eprintln!("a_bumped_epoch: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 5. Starting a process while another one writes
// ---------------------------------------------------------------------------------------------

/// A process may join (start, or restart after a crash) while another one sequences and
/// commits: its start-up check must not take the log for corrupt because a group was committed
/// between two of its reads of the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_starts_while_another_one_writes() {
    let started = Instant::now();
    const DB: &str = "sp_start_while_writing";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let mut nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let vk = a.verifier_key().await;
    nodes[1].kill();

    // A leads; two writers keep it committing.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (c, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let req = register_request(&format!("s{t}-{i}"));
                    let mut targets = vec![("A".to_string(), c.clone())];
                    let (acked, _) = write_until_acked(&mut targets, 0, &req).await;
                    out.push(acked);
                    i += 1;
                }
                out
            })
        })
        .collect();

    const STARTS: usize = 25;
    let mut failures = Vec::new();
    for n in 1..=STARTS {
        let size = psql_i64(DB, "SELECT tree_size FROM head");
        match nodes[1].try_spawn().await {
            Ok(()) => nodes[1].kill(),
            Err(e) => {
                eprintln!("start {n} of B (log at size {size}) failed: {e}");
                failures.push(format!("start {n} at size {size}: {e}"));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("a writer panicked"));
    }
    let fin = check_one_history(&mut a, &vk, &acked).await;
    eprintln!(
        "{STARTS} starts of B while A wrote {} entries: {} failed",
        fin.size,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {STARTS} starts of a process failed while another one wrote:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(nodes);
    eprintln!(
        "a_process_starts_while_another_one_writes: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. A resumed stale leader follows without being written to
// ---------------------------------------------------------------------------------------------

/// A leader paused while its session was ended (its lock lost) must, once it runs again, notice
/// it does not sequence any more and follow the head: a process that is only read from must not
/// serve its old checkpoint for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_stale_leader_follows_without_being_written_to() {
    let started = Instant::now();
    const DB: &str = "sp_stale_reads";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let b = nodes[1].clients().await;
    for i in 0..3 {
        try_write(&mut a, &register_request(&format!("a-{i}")))
            .await
            .expect("A takes the lead");
    }
    assert_eq!(
        tokio::task::block_in_place(|| sequencer_node(DB, &nodes)),
        Some(0),
        "A holds the sequencer lock"
    );
    nodes[0].signal(libc::SIGSTOP);
    tokio::task::block_in_place(|| terminate_sequencer_session(DB));
    let mut targets = vec![("B".to_string(), b.clone())];
    for i in 0..4 {
        write_until_acked(&mut targets, 0, &register_request(&format!("b-{i}"))).await;
    }
    let mut b = b;
    let fin = checkpoint(&mut b).await;
    assert_eq!(fin.size, 7);
    nodes[0].signal(libc::SIGCONT);
    // Only reads from now on.
    let took = wait_for_checkpoint(
        &mut a,
        "A (resumed, only read)",
        &fin.note,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("the resumed A served B's checkpoint after {took:?}");
    drop(nodes);
    eprintln!("a_resumed_stale_leader_follows: {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 7. Another log on the same PostgreSQL server
// ---------------------------------------------------------------------------------------------

/// Two logs in two databases of one PostgreSQL server each have their sequencer, holding the
/// advisory lock of the same key in its own database. When the leader of one log dies, a
/// follower of that log must take over: the other log's leader must not pass for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_over_while_another_log_on_the_server_has_a_leader() {
    let started = Instant::now();
    const DB: &str = "sp_two_logs_y";
    let root = tempfile::tempdir().unwrap();
    // Log X: one process, which leads (and keeps its lock for the whole test).
    let other = database("sp_two_logs_x");
    let x = start_nodes(&["X"], &root.path().join("x"), &other).await;
    let mut xc = x[0].clients().await;
    try_write(&mut xc, &register_request("x-0"))
        .await
        .expect("X leads its own log");
    assert_eq!(
        psql_i64(
            "sp_two_logs_x",
            &format!("SELECT count(*) {}", lock_holder("sp_two_logs_x"))
        ),
        1,
        "X holds the sequencer lock of its database"
    );

    // Log Y: A leads, then dies.
    let store = database(DB);
    let mut nodes = start_nodes(&["A", "B"], &root.path().join("y"), &store).await;
    let mut a = nodes[0].clients().await;
    let vk = a.verifier_key().await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let req = register_request(&format!("a-{i}"));
        let r = try_write(&mut a, &req).await.expect("A leads");
        acked.push(Acked {
            request_id: req.request_id,
            receipt: r,
            by: "A".into(),
            at: Instant::now(),
        });
    }
    nodes[0].kill();
    let holder = lock_holder(DB);
    let t0 = Instant::now();
    while psql_i64(DB, &format!("SELECT count(*) {holder}")) != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "A's session outlived A"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // B takes over.
    let mut b = nodes[1].clients().await;
    let req = register_request("b-0");
    let t0 = Instant::now();
    let mut last = None;
    let receipt = loop {
        match try_write(&mut b, &req).await {
            Ok(r) => break r,
            Err(s) if s.code() == Code::Unavailable => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "B did not take over within 10 s of A's death, while X leads the other \
                     log of the server; B's last answer: {:?} {}",
                    s.code(),
                    s.message()
                );
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => panic!("B: {:?} {}", s.code(), s.message()),
        }
    };
    eprintln!(
        "B took over {:?} after A's session ended (last refusal: {:?})",
        t0.elapsed(),
        last.map(|s| s.message().to_string())
    );
    assert_eq!(receipt.index, 3, "B continues from the stored head");
    acked.push(Acked {
        request_id: req.request_id,
        receipt,
        by: "B".into(),
        at: Instant::now(),
    });
    let fin = check_one_history(&mut b, &vk, &acked).await;
    assert_eq!(fin.size, 4);
    drop(nodes);
    drop(x);
    eprintln!("two_logs: {:?}", started.elapsed());
}

/// 8. A write sent to a process that does not sequence is forwarded to the one that does: the
/// client gets the sequencer's receipt, never a refusal, while the sequencer lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_follower_is_forwarded_to_the_sequencer() {
    const DB: &str = "sp_forwarded";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut a = nodes[0].clients().await;
    let mut b = nodes[1].clients().await;
    let vk = a.verifier_key().await;

    // A takes the lead with the first write.
    let first = register_request("fw-a");
    let r = try_write(&mut a, &first).await.expect("A takes the lead");
    let mut acked = vec![Acked {
        request_id: first.request_id.clone(),
        receipt: r,
        by: "A".into(),
        at: Instant::now(),
    }];
    let epoch = psql_i64(DB, "SELECT writer_epoch FROM head");

    // Every write to B is acknowledged at once, with A's receipts, in order.
    for i in 0..10 {
        let req = register_request(&format!("fw-b{i}"));
        let r = try_write(&mut b, &req).await.unwrap_or_else(|s| {
            panic!(
                "B refused {}: {:?} {}",
                req.request_id,
                s.code(),
                s.message()
            )
        });
        assert_eq!(r.index, i + 1, "the next index, sequenced by A");
        verify_receipt(&r, &vk);
        // A retry of the same request through A is the same entry.
        let again = try_write(&mut a, &req).await.expect("A answers the retry");
        assert_eq!(again.index, r.index);
        acked.push(Acked {
            request_id: req.request_id.clone(),
            receipt: r,
            by: "B (forwarded)".into(),
            at: Instant::now(),
        });
    }
    assert_eq!(
        tokio::task::block_in_place(|| sequencer_node(DB, &nodes)),
        Some(0),
        "A still holds the sequencer lock"
    );
    assert_eq!(
        psql_i64(DB, "SELECT writer_epoch FROM head"),
        epoch,
        "B never took the lead"
    );
    let fin = check_one_history(&mut a, &vk, &acked).await;
    assert_eq!(fin.size, 11);
    wait_for_checkpoint(&mut b, "B", &fin.note, Duration::from_secs(2)).await;
}

/// 9. A process reading the log from a streaming replica never runs ahead of the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_reading_a_replica_never_runs_ahead_of_the_primary() {
    const DB: &str = "sp_replica";
    let root = tempfile::tempdir().unwrap();
    let store = database(DB);
    let a = Node::start("A", &root.path().join("A"), &store).await;
    let mut ca = a.clients().await;
    let vk = ca.verifier_key().await;
    let first = register_request("rep-0");
    let r0 = try_write(&mut ca, &first).await.expect("A takes the lead");

    // The replica is made from the primary now, and follows it.
    let replica = tokio::task::block_in_place(|| {
        pg::cluster()
            .unwrap_or_else(|e| panic!("{e}"))
            .start_replica()
            .unwrap_or_else(|e| panic!("start a replica: {e}"))
    });
    let dir_r = root.path().join("R");
    std::fs::create_dir_all(&dir_r).unwrap();
    std::fs::copy(a.dir.join("log.key"), dir_r.join("log.key")).unwrap();
    let r = Node::start_with(
        "R",
        &dir_r,
        &store,
        vec!["--read-store".into(), replica.url(DB)],
    )
    .await;
    let mut cr = r.clients().await;
    let mut acked = vec![Acked {
        request_id: first.request_id.clone(),
        receipt: r0,
        by: "A".into(),
        at: Instant::now(),
    }];

    // Under writes (to both: R forwards), what R serves is never beyond the primary's head, and
    // every checkpoint it serves is signed by the log.
    for i in 1..=30 {
        let req = register_request(&format!("rep-{i}"));
        let target = if i % 2 == 0 { &mut ca } else { &mut cr };
        let rec = try_write(target, &req)
            .await
            .unwrap_or_else(|s| panic!("{}: {:?} {}", req.request_id, s.code(), s.message()));
        acked.push(Acked {
            request_id: req.request_id.clone(),
            receipt: rec,
            by: if i % 2 == 0 {
                "A".into()
            } else {
                "R (forwarded)".into()
            },
            at: Instant::now(),
        });
        let seen = checkpoint(&mut cr).await;
        let primary = tokio::task::block_in_place(|| psql_i64(DB, "SELECT tree_size FROM head"));
        assert!(
            seen.size as i64 <= primary,
            "R serves size {} while the primary holds {primary}",
            seen.size
        );
        verify_note(&seen.note, &vk);
    }

    // With the replica's replay paused, R stays where the replica is, consistently, while the
    // primary moves on.
    replica
        .psql(DB, "SELECT pg_wal_replay_pause()")
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = checkpoint(&mut cr).await;
    for i in 31..=40 {
        let req = register_request(&format!("rep-{i}"));
        let rec = try_write(&mut ca, &req).await.expect("A appends");
        acked.push(Acked {
            request_id: req.request_id.clone(),
            receipt: rec,
            by: "A".into(),
            at: Instant::now(),
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = checkpoint(&mut cr).await;
    assert_eq!(
        still.size, held.size,
        "R does not move while its replica is paused"
    );
    let primary = tokio::task::block_in_place(|| psql_i64(DB, "SELECT tree_size FROM head"));
    assert!(primary as u64 > still.size, "the primary moved on");
    // What R serves at its size is whole: every entry up to it, hashing to its checkpoint.
    let got = entries(&mut cr, 0, still.size).await;
    assert_eq!(got.len() as u64, still.size);
    let leaves: Vec<[u8; 32]> = got.iter().map(|e| leaf_hash(&e.data)).collect();
    assert_eq!(
        tree_root(&leaves).to_vec(),
        still.root_hash,
        "R's entries make R's signed root"
    );

    // Resumed, R catches up with the primary.
    replica
        .psql(DB, "SELECT pg_wal_replay_resume()")
        .unwrap_or_else(|e| panic!("{e}"));
    let fin = check_one_history(&mut ca, &vk, &acked).await;
    wait_for_checkpoint(&mut cr, "R", &fin.note, Duration::from_secs(5)).await;
    assert_eq!(
        tokio::task::block_in_place(|| sequencer_node(DB, std::slice::from_ref(&a))),
        Some(0),
        "A sequenced everything"
    );

    // With A gone and the replica paused again, R takes the lead: it validates and appends on
    // the primary, and what it acknowledges it serves at once, although its replica lags.
    let mut a = a;
    a.kill();
    replica
        .psql(DB, "SELECT pg_wal_replay_pause()")
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 41..=45 {
        let req = register_request(&format!("rep-{i}"));
        // A's session may take a moment to end: until then R is told to retry.
        let rec = write_retrying(&mut cr, &req, "R takes the lead").await;
        let served = checkpoint(&mut cr).await;
        assert!(
            served.size >= rec.tree_size,
            "R acknowledged size {} and serves {}",
            rec.tree_size,
            served.size
        );
        acked.push(Acked {
            request_id: req.request_id.clone(),
            receipt: rec,
            by: "R".into(),
            at: Instant::now(),
        });
    }
    let behind: i64 = replica
        .psql(DB, "SELECT tree_size FROM head")
        .unwrap_or_else(|e| panic!("{e}"))
        .parse()
        .expect("a size");
    assert!(
        (behind as u64) < checkpoint(&mut cr).await.size,
        "the replica lags what R appended"
    );
    // Everything R acknowledged is readable from it, whole (the entries, the records).
    let fin = check_one_history(&mut cr, &vk, &acked).await;
    assert_eq!(fin.size, 46);
    let again = try_write(&mut cr, &register_request("rep-41"))
        .await
        .expect("a retry of an acknowledged write");
    assert_eq!(
        again.index, acked[41].receipt.index,
        "the retry is answered, not appended"
    );

    // R loses the lead (its session ended) and A, back, takes it: R follows again, and while
    // its replica still lags what R committed, what R serves stays whole.
    tokio::task::block_in_place(|| terminate_sequencer_session(DB));
    a.restart().await;
    let mut ca = a.clients().await;
    let req = register_request("rep-46");
    let rec = write_retrying(&mut ca, &req, "A takes the lead back").await;
    acked.push(Acked {
        request_id: req.request_id.clone(),
        receipt: rec,
        by: "A".into(),
        at: Instant::now(),
    });
    let held = checkpoint(&mut cr).await;
    assert!(held.size >= 46, "R still serves what it appended");
    let got = entries(&mut cr, 0, held.size).await;
    assert_eq!(
        got.len() as u64,
        held.size,
        "R serves every entry up to its size"
    );
    let leaves: Vec<[u8; 32]> = got.iter().map(|e| leaf_hash(&e.data)).collect();
    assert_eq!(tree_root(&leaves).to_vec(), held.root_hash);

    replica
        .psql(DB, "SELECT pg_wal_replay_resume()")
        .unwrap_or_else(|e| panic!("{e}"));
    let fin = check_one_history(&mut ca, &vk, &acked).await;
    assert_eq!(fin.size, 47);
    wait_for_checkpoint(&mut cr, "R", &fin.note, Duration::from_secs(5)).await;
}

/// 10. A process without the log's key cannot join: with no key it makes none, and with another
/// key it is refused at open, before it serves anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_the_logs_key_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = database("sp_keys");
    let _a = Node::start("A", &root.path().join("A"), &store).await;

    // No key: refused, and no key of its own made.
    let dir_b = root.path().join("B");
    let mut b = Node {
        name: "B",
        dir: dir_b.clone(),
        store: store.clone(),
        proc: None,
        url: String::new(),
        extra: Vec::new(),
    };
    let err = b.try_spawn().await.expect_err("B has no key");
    assert!(err.contains("log.key"), "{err}");
    assert!(!dir_b.join("log.key").exists(), "B made no key of its own");

    // Another log's key: refused, naming the key the database records.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = Node::start("X", other.path(), &database("sp_keys_other")).await;
    std::fs::create_dir_all(&dir_b).unwrap();
    std::fs::copy(elsewhere.dir.join("log.key"), dir_b.join("log.key")).unwrap();
    let err = b.try_spawn().await.expect_err("B holds another log's key");
    assert!(err.contains("is not the key of the log"), "{err}");
}

/// 11. A follower answers reads from what it cached of the state, and every write another
/// process commits shows there once the follower publishes its size: a source first absent,
/// then registered, then regraded again and again, read through B between A's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_reads_show_each_write_once_it_has_published_it() {
    let root = tempfile::tempdir().unwrap();
    let store = database("sp_follower_reads");
    let nodes = start_nodes(&["A", "B"], root.path(), &store).await;
    let mut ca = nodes[0].clients().await;
    let mut cb = nodes[1].clients().await;
    try_write(&mut ca, &register_request("lead"))
        .await
        .expect("A takes the lead");
    let get = |c: &mut Clients| {
        let mut s = c.sources.clone();
        async move {
            s.get_source(pb::GetSourceRequest {
                id: "s-read".into(),
            })
            .await
            .map(|r| r.into_inner())
        }
    };
    // Absent, read through B (and kept as absent), then registered through A.
    for _ in 0..3 {
        let e = get(&mut cb).await.expect_err("not registered yet");
        assert_eq!(e.code(), Code::NotFound);
    }
    let rec = try_write(&mut ca, &register_request("s-read"))
        .await
        .expect("register through A");
    let wait_for = |c: &mut Clients, size: u64| {
        let mut c = c.clone();
        async move {
            let started = Instant::now();
            while checkpoint(&mut c).await.size < size {
                assert!(started.elapsed() < Duration::from_secs(5), "B follows");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(&mut cb, rec.tree_size).await;
    let got = get(&mut cb).await.expect("B finds the source A registered");
    assert_eq!(got.grades.len(), 1);

    // Regraded through A, read through B before and after each grade.
    let grades = [
        pb::Reliability::A,
        pb::Reliability::E,
        pb::Reliability::C,
        pb::Reliability::F,
    ];
    for (i, g) in grades.into_iter().enumerate() {
        for _ in 0..3 {
            get(&mut cb).await.expect("GetSource through B");
        }
        let r = ca
            .sources
            .grade_source(pb::GradeSourceRequest {
                request_id: format!("grade-{i}"),
                source_id: "s-read".into(),
                reliability: g as i32,
                rationale: format!("grade {i}"),
            })
            .await
            .expect("grade through A")
            .into_inner();
        let size = r.receipt.expect("a receipt").tree_size;
        wait_for(&mut cb, size).await;
        let got = get(&mut cb).await.expect("GetSource through B");
        let source = got.source.expect("a source");
        assert_eq!(
            source.reliability, g as i32,
            "B shows grade {i} once it serves size {size}"
        );
        assert_eq!(got.grades.len(), i + 2);
    }
}
