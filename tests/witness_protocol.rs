//! The witness (`claimledger witness`, C2SP tlog-witness) over real HTTP on `127.0.0.1:0`:
//! every answer of `add-checkpoint` (200, 409 with the cosigned size, 409 for a fork at the
//! same size, 404, 403, 400, 422, 413), the cosignature checked by a verifier written here from
//! tlog-cosignature (not the crate's), the state across restarts of the library and of the
//! real binary (SIGKILL included), the rollback race, and the refusals at start-up.
//!
//! The log being witnessed is an RFC 6962 tree kept in memory with `tlog_tiles`, its
//! checkpoints signed by `claimledger::log::Checkpointer` as a real log signs them.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use claimledger::log::Checkpointer;
use claimledger::witness::{Witness, WitnessError};
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tlog_tiles::{Hash, HashReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ORIGIN: &str = "example.org/claimledger-test";
const NAME: &str = "witness.example.org/w1";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// A log to witness
// ---------------------------------------------------------------------------------------------

/// An RFC 6962 tree in memory (Go sumdb's stored hashes) and the log key that signs it.
struct TestLog {
    cp: Checkpointer,
    /// Entries are `"<salt> <index>"`: two logs with different salts are forks of each other.
    salt: String,
    stored: Vec<Hash>,
    size: u64,
}

struct Stored<'a>(&'a [Hash]);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl TestLog {
    /// A log of `origin` signed with the key of seed `[seed; 32]`.
    fn new(origin: &str, seed: u8, salt: &str) -> TestLog {
        TestLog {
            cp: Checkpointer::from_key(origin, SigningKey::from_bytes(&[seed; 32])),
            salt: salt.to_string(),
            stored: Vec::new(),
            size: 0,
        }
    }

    /// The log the witnesses in these tests trust.
    fn trusted() -> TestLog {
        TestLog::new(ORIGIN, 1, "main")
    }

    fn vkey(&self) -> String {
        self.cp.verifier_key().to_string()
    }

    fn grow_to(&mut self, n: u64) {
        while self.size < n {
            let data = format!("{} {}", self.salt, self.size);
            let hashes =
                tlog_tiles::stored_hashes(self.size, data.as_bytes(), &Stored(&self.stored))
                    .expect("stored hashes");
            self.stored.extend(hashes);
            self.size += 1;
        }
    }

    fn root(&mut self, n: u64) -> Hash {
        self.grow_to(n);
        tlog_tiles::tree_hash(n, &Stored(&self.stored)).expect("tree hash")
    }

    /// The RFC 6962 consistency proof from `old` to `new` (empty from 0).
    fn proof(&mut self, old: u64, new: u64) -> Vec<Hash> {
        self.grow_to(new);
        if old == 0 {
            return Vec::new();
        }
        tlog_tiles::prove_tree(new, old, &Stored(&self.stored)).expect("consistency proof")
    }

    /// The signed checkpoint note of size `n`.
    fn note(&mut self, n: u64) -> String {
        let root = self.root(n);
        self.cp.sign(n, root).expect("sign").note
    }

    /// A correct `add-checkpoint` body from `old` to `new`.
    fn request(&mut self, old: u64, new: u64) -> Vec<u8> {
        let proof = self.proof(old, new);
        let note = self.note(new);
        body(old, &proof, &note)
    }
}

/// An `add-checkpoint` body: `old N`, one base64 line per proof hash, an empty line, the note.
fn body(old: u64, proof: &[Hash], note: &str) -> Vec<u8> {
    let mut b = format!("old {old}\n");
    for h in proof {
        b.push_str(&B64.encode(h.0));
        b.push('\n');
    }
    b.push('\n');
    b.push_str(note);
    b.into_bytes()
}

/// The checkpoint body of a note: its text up to and including the blank line's newline.
fn checkpoint_body(note: &str) -> &str {
    let i = note.rfind("\n\n").expect("a note has a blank line");
    &note[..=i]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// An independent cosignature verifier, from C2SP tlog-cosignature and signed-note
// ---------------------------------------------------------------------------------------------

/// Checks that `reply` is exactly one Ed25519 cosignature/v1 line from the witness whose
/// verifier key is `vkey`, over `checkpoint`; returns its timestamp. Written from the specs,
/// with ed25519-dalek and sha2 only.
fn verify_cosignature(reply: &str, vkey: &str, checkpoint: &str) -> u64 {
    // The verifier key: name+hex(key ID)+base64(0x04 ‖ 32-byte Ed25519 public key).
    let mut parts = vkey.splitn(3, '+');
    let (name, id_hex, key_b64) = (
        parts.next().expect("name"),
        parts.next().expect("key id"),
        parts.next().expect("key"),
    );
    let key = B64.decode(key_b64).expect("base64 key");
    assert_eq!(key.len(), 33, "type byte and 32-byte key");
    assert_eq!(key[0], 0x04, "cosignature/v1 keys have type 0x04");
    let public: [u8; 32] = key[1..].try_into().expect("32 bytes");
    // Key ID = SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4].
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x04]);
    h.update(public);
    let id: [u8; 4] = h.finalize()[..4].try_into().expect("4 bytes");
    assert_eq!(
        id_hex,
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );

    // The line: "— <name> base64(key ID ‖ u64 BE timestamp ‖ 64-byte signature)\n".
    let line = reply
        .strip_suffix('\n')
        .expect("a signature line ends in a newline");
    assert!(!line.contains('\n'), "one line: {reply:?}");
    let line = line
        .strip_prefix("\u{2014} ")
        .expect("a signature line starts with an em dash and a space");
    let (line_name, sig_b64) = line.split_once(' ').expect("name and signature");
    assert_eq!(line_name, name);
    let sig = B64.decode(sig_b64).expect("base64 signature");
    assert_eq!(sig.len(), 4 + 8 + 64);
    assert_eq!(sig[..4], id, "the key ID");
    let timestamp = u64::from_be_bytes(sig[4..12].try_into().expect("8 bytes"));
    assert!(timestamp < 1 << 63);

    // The signed message: "cosignature/v1\ntime <decimal>\n" then the checkpoint body.
    let message = format!("cosignature/v1\ntime {timestamp}\n{checkpoint}");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("an Ed25519 key");
    let signature = ed25519_dalek::Signature::from_slice(&sig[12..]).expect("64 bytes");
    vk.verify_strict(message.as_bytes(), &signature)
        .expect("the cosignature verifies");
    timestamp
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

/// Sends one HTTP/1.1 request on a new connection and reads the whole answer.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the witness");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("send the head");
    s.write_all(body).await.expect("send the body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .expect("read the answer");
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut content_type = String::new();
    for l in lines {
        let (k, v) = l.split_once(':').expect("a header");
        let k = k.to_ascii_lowercase();
        assert_ne!(k, "transfer-encoding", "answers are sent with a length");
        if k == "content-type" {
            content_type = v.trim().to_string();
        }
    }
    Reply {
        status,
        content_type,
        body: body.to_string(),
    }
}

/// A witness served in this process on 127.0.0.1:<free port>.
struct Running {
    addr: SocketAddr,
    witness: Arc<Witness>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(dir: &Path, logs: &[&TestLog]) -> Running {
        let logs = logs.iter().map(|l| (l.cp.origin().to_string(), l.vkey()));
        let witness = Arc::new(Witness::open(dir, NAME, logs.collect()).expect("open the witness"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(claimledger::witness::serve(
            listener,
            witness.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            addr,
            witness,
            stop,
            task,
        }
    }

    async fn add(&self, body: &[u8]) -> Reply {
        http(self.addr, "POST", "/add-checkpoint", body).await
    }

    /// Cosigns `old → new` of `log`, which must succeed; checks the cosignature independently
    /// and returns it.
    async fn cosign(&self, log: &mut TestLog, old: u64, new: u64) -> String {
        let before = now();
        let r = self.add(&log.request(old, new)).await;
        assert_eq!(r.status, 200, "{old} → {new}: {r:?}");
        let note = log.note(new);
        let ts = verify_cosignature(
            &r.body,
            &self.witness.verifier_key(),
            checkpoint_body(&note),
        );
        assert!(
            (before..=now()).contains(&ts),
            "the timestamp {ts} is the time of signing"
        );
        assert_eq!(
            self.witness.cosigned(ORIGIN),
            Some((new, log.root(new))),
            "the witness's state follows"
        );
        r.body
    }

    /// Shuts the server down and drops the witness, so its directory can be opened again.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the server task")
            .expect("the server ends cleanly");
        drop(self.witness);
    }
}

/// Asserts a 409 that carries the cosigned size as tlog-witness requires.
fn assert_size_conflict(r: &Reply, size: u64) {
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.content_type, "text/x.tlog.size");
    assert_eq!(r.body, format!("{size}\n"));
}

/// The witness's state files in `dir`.
fn state_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read the witness dir")
        .map(|e| e.expect("a dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "checkpoint"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 200
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_growing_log_is_cosigned_and_each_cosignature_verifies_independently() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    let mut old = 0;
    for new in [1, 2, 3, 4, 7, 8, 9, 16, 17, 31, 32, 100, 1000] {
        w.cosign(&mut log, old, new).await;
        old = new;
    }
    // The same checkpoint again (old = size = cosigned size, same root) is cosigned again.
    w.cosign(&mut log, 1000, 1000).await;

    // The state is one private file holding the cosigned checkpoint, this witness's
    // cosignature on it included.
    let files = state_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).expect("read the state");
    assert!(text.starts_with(checkpoint_body(&log.note(1000))), "{text}");
    assert!(text.contains(&format!("\n\u{2014} {NAME} ")), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0])
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    w.stop().await;
}

#[tokio::test]
async fn an_empty_tree_is_cosigned_only_with_the_empty_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    let bogus = log.cp.sign(0, Hash([7; 32])).expect("sign").note;
    let r = w.add(&body(0, &[], &bogus)).await;
    assert_eq!(r.status, 422, "{r:?}");
    w.cosign(&mut log, 0, 0).await;
    w.cosign(&mut log, 0, 5).await;
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 409
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_old_size_other_than_the_cosigned_one_is_409_with_that_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    // Nothing cosigned yet: the witness's size is 0.
    assert_size_conflict(&w.add(&log.request(3, 5)).await, 0);
    w.cosign(&mut log, 0, 5).await;
    // A client that does not know starts from 0 and learns 5.
    assert_size_conflict(&w.add(&log.request(0, 9)).await, 5);
    assert_size_conflict(&w.add(&log.request(3, 9)).await, 5);
    assert_size_conflict(&w.add(&log.request(6, 9)).await, 5);
    w.cosign(&mut log, 5, 9).await;
    w.stop().await;
}

#[tokio::test]
async fn the_cosigned_size_with_another_root_is_409() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    // The same key signing another history: a fork.
    let mut fork = TestLog::new(ORIGIN, 1, "fork");
    let w = Running::start(dir.path(), &[&log]).await;
    w.cosign(&mut log, 0, 5).await;
    let r = w.add(&fork.request(5, 5)).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_ne!(
        r.content_type, "text/x.tlog.size",
        "not a size to retry from"
    );
    assert!(r.body.contains("different root"), "{r:?}");
    assert_eq!(w.witness.cosigned(ORIGIN), Some((5, log.root(5))));
    w.stop().await;
}

#[test]
fn concurrent_requests_from_one_size_never_roll_back_the_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let witness = Witness::open(dir.path(), NAME, vec![(ORIGIN.to_string(), log.vkey())])
        .expect("open the witness");
    const CLIENTS: u64 = 16;
    let mut size = 0;
    // Rounds of sixteen clients released at once, each proving a different larger tree from
    // the cosigned size: tlog-witness's race. Were the check and the update not one step, more
    // than one would pass the check and a smaller tree could land after a larger one.
    for _round in 0..8 {
        let bodies: Vec<(u64, Vec<u8>)> = (1..=CLIENTS)
            .map(|k| (size + k, log.request(size, size + k)))
            .collect();
        let start = std::sync::Barrier::new(CLIENTS as usize);
        let results: Vec<(u64, Result<String, claimledger::witness::AddError>)> =
            std::thread::scope(|s| {
                let handles: Vec<_> = bodies
                    .iter()
                    .map(|(n, b)| {
                        let (witness, start) = (&witness, &start);
                        s.spawn(move || {
                            start.wait();
                            (*n, witness.add_checkpoint(b))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("client thread"))
                    .collect()
            });
        let won: Vec<u64> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(
            won.len(),
            1,
            "exactly one request from {size} wins: {won:?}"
        );
        let winner = won[0];
        for (n, r) in &results {
            if *n != winner {
                assert_eq!(
                    r,
                    &Err(claimledger::witness::AddError::Conflict(winner)),
                    "{size} → {n}"
                );
            }
        }
        assert_eq!(witness.cosigned(ORIGIN), Some((winner, log.root(winner))));
        size = winner;
    }
    drop(witness);
    // What is on disk is what was cosigned last.
    let reopened =
        Witness::open(dir.path(), NAME, vec![(ORIGIN.to_string(), log.vkey())]).expect("reopen");
    assert_eq!(reopened.cosigned(ORIGIN), Some((size, log.root(size))));
}

// ---------------------------------------------------------------------------------------------
// 404, 403
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_checkpoint_of_an_unknown_origin_is_404() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let mut other = TestLog::new("example.org/not-witnessed", 2, "main");
    let w = Running::start(dir.path(), &[&log]).await;
    let r = w.add(&other.request(0, 3)).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("example.org/not-witnessed"), "{r:?}");
    w.stop().await;
}

#[tokio::test]
async fn a_checkpoint_without_a_valid_trusted_signature_is_403() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    // Same origin and tree, another key: its signatures are unknown and ignored.
    let mut impostor = TestLog::new(ORIGIN, 9, "main");
    let w = Running::start(dir.path(), &[&log]).await;

    let r = w.add(&impostor.request(0, 4)).await;
    assert_eq!(r.status, 403, "{r:?}");

    // The trusted key's signature over another body: the note is refused.
    let note = log.note(4);
    let tampered = note.replacen("\n4\n", "\n5\n", 1);
    assert_ne!(tampered, note);
    let r = w.add(&body(0, &[], &tampered)).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(w.witness.cosigned(ORIGIN), None);

    // An unknown key's signature beside the trusted one is ignored, not a refusal.
    let extra = impostor.note(4);
    let extra_line = &extra[checkpoint_body(&extra).len() + 1..];
    let both = format!("{note}{extra_line}");
    let r = w.add(&body(0, &[], &both)).await;
    assert_eq!(r.status, 200, "{r:?}");
    verify_cosignature(&r.body, &w.witness.verifier_key(), checkpoint_body(&note));
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 400, 413, 404 and 405 for other requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_and_an_old_size_beyond_the_checkpoint_are_400() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    w.cosign(&mut log, 0, 4).await;
    let note = log.note(8);
    let proof = log.proof(4, 8);
    let good = body(4, &proof, &note);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not the protocol", b"hello\n".to_vec()),
        ("old > size", body(9, &[], &note)),
        ("leading zero", [b"old 04".as_slice(), &good[5..]].concat()),
        ("no blank line", format!("old 4\n{note}").into_bytes()),
        ("no checkpoint", b"old 4\n\n".to_vec()),
        (
            "not a note",
            b"old 4\n\nexample.org/claimledger-test\n8\n".to_vec(),
        ),
        (
            "a proof line not base64",
            format!("old 4\n%%%%\n\n{note}").into_bytes(),
        ),
        (
            "not a checkpoint",
            body(4, &proof, &note.replacen("\n8\n", "\neight\n", 1)),
        ),
        ("64 proof lines", body(4, &vec![Hash([1; 32]); 64], &note)),
        (
            "control characters",
            body(4, &proof, &note.replacen('\n', "\r\n", 1)),
        ),
    ];
    for (what, b) in bad {
        let r = w.add(&b).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
    }
    // Nothing was stored by the refusals.
    assert_eq!(w.witness.cosigned(ORIGIN), Some((4, log.root(4))));
    assert_eq!(w.add(&good).await.status, 200);
    w.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_other_paths_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    // Exactly one byte over the limit, all of it sent, so the answer is not lost to a reset.
    let big = vec![b'a'; 64 * 1024 + 1];
    let r = w.add(&big).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(
        http(w.addr, "GET", "/add-checkpoint", b"").await.status,
        405
    );
    assert_eq!(http(w.addr, "GET", "/", b"").await.status, 404);
    assert_eq!(
        http(w.addr, "POST", "/add-checkpoint/x", b"").await.status,
        404
    );
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 422
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_consistency_proof_that_does_not_verify_is_422() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let mut fork = TestLog::new(ORIGIN, 1, "fork");
    let w = Running::start(dir.path(), &[&log]).await;

    // From 0 the proof must be empty.
    let r = w.add(&body(0, &[Hash([1; 32])], &log.note(5))).await;
    assert_eq!(r.status, 422, "{r:?}");
    w.cosign(&mut log, 0, 5).await;

    let note = log.note(13);
    let proof = log.proof(5, 13);
    let mut flipped = proof.clone();
    flipped[0].0[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit", body(5, &flipped, &note)),
        ("no proof", body(5, &[], &note)),
        ("a hash too few", body(5, &proof[1..], &note)),
        (
            "a hash too many",
            body(5, &[proof.clone(), vec![proof[0]]].concat(), &note),
        ),
        (
            "the proof of another size",
            body(5, &log.proof(4, 13), &note),
        ),
        // The fork proves its own history, not the one the witness cosigned.
        ("a fork's own proof", fork.request(5, 13)),
    ];
    for (what, b) in cases {
        let r = w.add(&b).await;
        assert_eq!(r.status, 422, "{what}: {r:?}");
    }
    assert_eq!(w.witness.cosigned(ORIGIN), Some((5, log.root(5))));
    w.cosign(&mut log, 5, 13).await;
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reopened_witness_keeps_its_state_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    let vkey = w.witness.verifier_key();
    w.cosign(&mut log, 0, 6).await;
    w.cosign(&mut log, 6, 20).await;
    w.stop().await;

    let w = Running::start(dir.path(), &[&log]).await;
    assert_eq!(w.witness.verifier_key(), vkey, "the same key");
    assert_eq!(w.witness.cosigned(ORIGIN), Some((20, log.root(20))));
    assert_size_conflict(&w.add(&log.request(0, 25)).await, 20);
    // A smaller tree is refused whichever old size it claims.
    assert_size_conflict(&w.add(&log.request(6, 12)).await, 20);
    assert_size_conflict(&w.add(&log.request(12, 12)).await, 20);
    assert_eq!(w.add(&body(20, &[], &log.note(12))).await.status, 400);
    w.cosign(&mut log, 20, 25).await;
    w.stop().await;
}

#[tokio::test]
async fn a_damaged_or_edited_state_file_is_an_error_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let w = Running::start(dir.path(), &[&log]).await;
    w.cosign(&mut log, 0, 8).await;
    w.stop().await;
    let [file] = state_files(dir.path()).try_into().expect("one state file");
    let good = std::fs::read_to_string(&file).expect("read");
    let logs = || vec![(ORIGIN.to_string(), log.vkey())];

    // Rolled back by hand: the body no longer matches the witness's own cosignature.
    let edited = good.replacen("\n8\n", "\n3\n", 1);
    assert_ne!(edited, good);
    for (what, contents) in [
        ("edited", edited.as_str()),
        ("garbage", "not a note at all\n"),
        ("empty", ""),
        ("truncated", &good[..good.len() - 10]),
    ] {
        std::fs::write(&file, contents).expect("write");
        let err = match Witness::open(dir.path(), NAME, logs()) {
            Ok(_) => panic!("{what}: a damaged state file was accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(err, WitnessError::CorruptState { .. }),
            "{what}: {err}"
        );
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{what}: the error names the file: {err}"
        );
    }
    // The witness may be renamed: its key still vouches for its history.
    std::fs::write(&file, &good).expect("write");
    let renamed = Witness::open(dir.path(), "witness.example.org/renamed", logs())
        .expect("a renamed witness opens");
    assert_eq!(renamed.cosigned(ORIGIN), Some((8, log.root(8))));
}

// ---------------------------------------------------------------------------------------------
// Start-up refusals
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_names_and_log_keys_are_refused_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let other = TestLog::new("example.org/other", 2, "main");
    let open = |name: &str, logs: Vec<(String, String)>| Witness::open(dir.path(), name, logs);
    let ok = || vec![(ORIGIN.to_string(), log.vkey())];

    assert!(matches!(
        open("has space", ok()),
        Err(WitnessError::Name(_))
    ));
    assert!(matches!(open("a+b", ok()), Err(WitnessError::Name(_))));
    assert!(matches!(open(NAME, vec![]), Err(WitnessError::NoLogs)));
    let malformed = open(NAME, vec![(ORIGIN.into(), "nonsense".into())]);
    assert!(
        matches!(&malformed, Err(WitnessError::LogKey { origin, .. }) if origin == ORIGIN),
        "{:?}",
        malformed.err()
    );
    // A witness cosignature key (type 0x04) is not a log key.
    let cosigner = claimledger::witness::cosignature::verifier_key(
        ORIGIN,
        &SigningKey::from_bytes(&[3; 32]).verifying_key(),
    );
    assert!(matches!(
        open(NAME, vec![(ORIGIN.into(), cosigner)]),
        Err(WitnessError::LogKey { .. })
    ));
    let misnamed = open(NAME, vec![(ORIGIN.into(), other.vkey())]);
    match misnamed {
        Err(e @ WitnessError::LogKeyName { .. }) => {
            assert!(e.to_string().contains("example.org/other"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(matches!(
        open(NAME, vec![ok()[0].clone(), ok()[0].clone()]),
        Err(WitnessError::DuplicateLogKey { .. })
    ));
    // Nothing was created by the refusals.
    assert!(!dir.path().join("witness.key").exists());
    // Two keys for one log (a rotation) are fine.
    let rotated = TestLog::new(ORIGIN, 4, "main");
    open(NAME, vec![ok()[0].clone(), (ORIGIN.into(), rotated.vkey())]).expect("two keys");
}

#[test]
fn a_witness_key_others_can_read_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let logs = || vec![(ORIGIN.to_string(), log.vkey())];
    // One witness at a time holds the directory: each open below follows a closed one.
    let first = Witness::open(dir.path(), NAME, logs())
        .expect("creates its key")
        .verifier_key();
    let key = dir.path().join("witness.key");
    common::chmod(&key, 0o644);
    let err = match Witness::open(dir.path(), NAME, logs()) {
        Ok(_) => panic!("a readable key was used"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("chmod 600"), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    common::chmod(&key, 0o600);
    let again = Witness::open(dir.path(), NAME, logs())
        .expect("opens once private")
        .verifier_key();
    assert_eq!(again, first);
    std::fs::write(&key, "not a key\n").expect("write");
    assert!(matches!(
        Witness::open(dir.path(), NAME, logs()),
        Err(WitnessError::CorruptKey(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// A `claimledger witness` process.
struct WitnessProcess {
    child: std::process::Child,
    addr: SocketAddr,
    vkey: String,
}

impl WitnessProcess {
    /// Starts `claimledger witness` on `dir` for `log` and waits (at most 30 s) for its lines.
    fn start(dir: &Path, log: &TestLog) -> WitnessProcess {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(common::BIN)
            .args([
                "witness",
                "--addr",
                "127.0.0.1:0",
                "--name",
                NAME,
                "--data-dir",
            ])
            .arg(dir)
            .arg("--log")
            .arg(format!("{ORIGIN}={}", log.vkey()))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start claimledger witness");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut vkey = None;
        let mut seen = Vec::new();
        let addr = loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the witness did not start; stderr:\n{}", seen.join("\n"));
                }
            };
            if let Some(k) = line.strip_prefix("witness verifier key: ") {
                vkey = Some(k.to_string());
            }
            if let Some(a) = line.strip_prefix("claimledger witness listening on http://") {
                break a.parse().expect("a socket address");
            }
            seen.push(line);
        };
        WitnessProcess {
            child,
            addr,
            vkey: vkey.expect("the verifier key is printed before the address"),
        }
    }

    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then the exit status (at most 30 s).
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with the pid of our own child and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("poll") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_cosigns_and_keeps_its_state_across_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut log = TestLog::trusted();
    let p = WitnessProcess::start(dir.path(), &log);
    assert!(p.vkey.starts_with(&format!("{NAME}+")), "{}", p.vkey);
    assert_ne!(p.addr.port(), 0, "the real port is printed");
    let add = |addr, b: Vec<u8>| async move { http(addr, "POST", "/add-checkpoint", &b).await };

    let r = add(p.addr, log.request(0, 3)).await;
    assert_eq!(r.status, 200, "{r:?}");
    verify_cosignature(&r.body, &p.vkey, checkpoint_body(&log.note(3)));
    let r = add(p.addr, log.request(3, 11)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let vkey = p.vkey.clone();
    p.kill();

    let p = WitnessProcess::start(dir.path(), &log);
    assert_eq!(p.vkey, vkey, "the same key after a restart");
    assert_size_conflict(&add(p.addr, log.request(0, 12)).await, 11);
    assert_size_conflict(&add(p.addr, log.request(3, 7)).await, 11);
    let r = add(p.addr, log.request(11, 12)).await;
    assert_eq!(r.status, 200, "{r:?}");
    verify_cosignature(&r.body, &vkey, checkpoint_body(&log.note(12)));
    let status = p.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the witness cleanly: {status}"
    );
}

#[test]
fn the_binary_refuses_bad_arguments_and_a_readable_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let d = dir.path().to_str().expect("a UTF-8 path");
    let good_log = format!("{ORIGIN}={}", log.vkey());

    let r = common::claimledger(["witness", "--data-dir", d, "--log", "no-equals-sign"]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("ORIGIN=VERIFIER_KEY"), "{}", r.stderr);
    let r = common::claimledger(["witness", "--data-dir", d]);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--log"), "{}", r.stderr);
    let r = common::claimledger([
        "witness",
        "--data-dir",
        d,
        "--log",
        &format!("example.org/other={}", log.vkey()),
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("named after its origin"), "{}", r.stderr);

    let key = dir.path().join("witness.key");
    common::write_private(&key, &format!("{}\n", B64.encode([5u8; 32])));
    common::chmod(&key, 0o644);
    let r = common::claimledger([
        "witness",
        "--data-dir",
        d,
        "--addr",
        "127.0.0.1:0",
        "--log",
        &good_log,
    ]);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&key.display().to_string()),
        "{}",
        r.stderr
    );
}

#[test]
fn a_second_witness_on_the_same_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = TestLog::trusted();
    let logs = || vec![(ORIGIN.to_string(), log.vkey())];
    let first = Witness::open(dir.path(), NAME, logs()).expect("open");
    match Witness::open(dir.path(), NAME, logs()) {
        Err(e) => assert!(
            e.to_string().contains("in use by another witness process"),
            "{e}"
        ),
        Ok(_) => panic!("two witnesses opened one directory"),
    }
    drop(first);
    Witness::open(dir.path(), NAME, logs()).expect("open again once the first is gone");
}
