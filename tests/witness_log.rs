//! The log's side of witnessing, end to end: `claimledger serve --witness URL=KEY` against
//! real witnesses (in-process `claimledger::witness::{Witness, serve}` on loopback ports, and
//! the real `claimledger witness` binary), checked as an outsider would:
//! - the cosigned checkpoint GetCheckpoint serves verifies with the log's key and with each
//!   witness's key, by a cosignature check written here from C2SP tlog-cosignature (key ID,
//!   timestamp, Ed25519 over `cosignature/v1\ntime T\n` + body), not by the crate's own;
//! - a quorum of 2 of 3 serves a cosigned checkpoint while one witness is down, and the third
//!   cosigns once it is back;
//! - a data directory restored from an older copy is refused at start (health NOT_SERVING,
//!   writes FAILED_PRECONDITION naming the witness and both sizes) and signs nothing new;
//! - two copies of one log (same key and origin) written differently: the second is refused
//!   by the witness and halts itself, at the same size (409) and from a larger size (422);
//! - `claimledger log checkpoint --witness-key …` succeeds with the right keys and fails with
//!   a wrong one;
//! - two processes sharing a PostgreSQL log and its witness both serve the latest cosigned
//!   checkpoint under writes to both, also after the lead moves while one was paused, and
//!   neither halts.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use claimledger::pb;
use claimledger::pb::claim_service_client::ClaimServiceClient;
use claimledger::pb::log_service_client::LogServiceClient;
use claimledger::pb::source_service_client::SourceServiceClient;
use claimledger::witness::Witness;
use common::{http_get, verify_note, write_private, Clients, ServeProcess};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ORIGIN: &str = "witnessed.example/log";

/// Gives a new data directory a log key of our choosing, so the witnesses can be configured
/// with the log's verifier key before the log first starts. Returns the verifier key.
fn new_log_dir(dir: &Path, seed: u8) -> String {
    std::fs::create_dir_all(dir).expect("mkdir");
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.to_bytes());
    write_private(&dir.join("log.key"), &format!("{b64}\n"));
    signed_note::new_ed25519_verifier_key(ORIGIN, &key.verifying_key())
}

/// A witness served in this process.
struct LocalWitness {
    url: String,
    vkey: String,
    witness: Arc<Witness>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalWitness {
    async fn start(dir: &Path, name: &str, log_vkey: &str) -> LocalWitness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::start_on(listener, dir, name, log_vkey)
    }

    fn start_on(
        listener: tokio::net::TcpListener,
        dir: &Path,
        name: &str,
        log_vkey: &str,
    ) -> LocalWitness {
        let addr = listener.local_addr().expect("addr");
        let witness = Arc::new(
            Witness::open(dir, name, vec![(ORIGIN.to_string(), log_vkey.to_string())])
                .expect("open the witness"),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(claimledger::witness::serve(
            listener,
            witness.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        LocalWitness {
            url: format!("http://{addr}"),
            vkey: witness.verifier_key(),
            witness,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// `--witness` flag value.
    fn flag(&self) -> String {
        format!("{}={}", self.url, self.vkey)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.expect("witness task").expect("witness serve");
        }
    }
}

impl Drop for LocalWitness {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts `claimledger serve` on `dir` with `witnesses` (flag values) and extra flags, off
/// the runtime's threads (start-up waits for the witnesses, which run on this runtime).
async fn serve(dir: &Path, witnesses: &[String], extra: &[&str]) -> ServeProcess {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--origin".into(),
        ORIGIN.into(),
    ];
    for w in witnesses {
        args.push("--witness".into());
        args.push(w.clone());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || ServeProcess::start(args))
        .await
        .expect("start serve")
}

/// Stops a serve process off the runtime's threads.
async fn stop(srv: ServeProcess) {
    tokio::task::spawn_blocking(move || srv.stop())
        .await
        .expect("stop serve");
}

async fn channel(srv: &ServeProcess) -> Channel {
    Channel::from_shared(srv.url.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn clients(srv: &ServeProcess) -> Clients {
    let ch = channel(srv).await;
    Clients {
        sources: SourceServiceClient::new(ch.clone()),
        claims: ClaimServiceClient::new(ch.clone()),
        log: LogServiceClient::new(ch),
    }
}

/// Writes `n` entries (one source registration each, ids `{prefix}-{i}`).
async fn write(c: &mut Clients, prefix: &str, n: usize) {
    for i in 0..n {
        c.register(common::source(
            &format!("{prefix}-{i}"),
            "UA",
            pb::Role::NonParty,
            pb::Reliability::B,
            "",
        ))
        .await;
    }
}

async fn checkpoint(c: &mut Clients) -> pb::GetCheckpointResponse {
    c.log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("GetCheckpoint")
        .into_inner()
}

/// Polls GetCheckpoint until `done` holds (at most 20 s).
async fn wait_checkpoint(
    c: &mut Clients,
    what: &str,
    done: impl Fn(&pb::GetCheckpointResponse) -> bool,
) -> pb::GetCheckpointResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = checkpoint(c).await;
        if done(&r) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {} (size {}, cosigned size {}, latest {})",
            "not so after 20 s",
            r.size,
            r.cosigned_size,
            r.cosigned_is_latest
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The witness key's name and Ed25519 public key, parsed from its verifier key by the spec:
/// `name+hex(key ID)+base64(0x04 ‖ key)`.
fn witness_public_key(vkey: &str) -> (String, u32, VerifyingKey) {
    let mut parts = vkey.splitn(3, '+');
    let name = parts.next().expect("name").to_string();
    let id = u32::from_str_radix(parts.next().expect("id"), 16).expect("hex id");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(parts.next().expect("key"))
        .expect("base64");
    assert_eq!(raw[0], 0x04, "an Ed25519 cosignature/v1 key");
    let key = VerifyingKey::from_bytes(&raw[1..].try_into().expect("32 bytes")).expect("key");
    // The key ID is SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4].
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(&raw);
    let computed = u32::from_be_bytes(h.finalize()[..4].try_into().expect("4 bytes"));
    assert_eq!(id, computed, "the key ID in the verifier key");
    (name, id, key)
}

/// Checks `note` carries a valid cosignature/v1 line by the witness of `vkey`, written from
/// C2SP tlog-cosignature; returns its timestamp.
fn check_cosignature(note: &str, vkey: &str) -> Option<u64> {
    let (name, id, key) = witness_public_key(vkey);
    let (body, sigs) = note.split_once("\n\n").expect("a signed note");
    let body = format!("{body}\n");
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix("— ") else {
            continue;
        };
        let Some((n, b64)) = rest.split_once(' ') else {
            continue;
        };
        if n != name {
            continue;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 signature");
        if raw.len() != 4 + 8 + 64 || u32::from_be_bytes(raw[..4].try_into().ok()?) != id {
            continue;
        }
        let ts = u64::from_be_bytes(raw[4..12].try_into().ok()?);
        let sig = Signature::from_slice(&raw[12..]).ok()?;
        let msg = format!("cosignature/v1\ntime {ts}\n{body}");
        if key.verify_strict(msg.as_bytes(), &sig).is_ok() {
            return Some(ts);
        }
    }
    None
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Checks a GetCheckpoint answer's cosigned note against the log's key and the witnesses
/// that must have cosigned it; asserts the others did not.
fn assert_cosigned_by(r: &pb::GetCheckpointResponse, log_vkey: &str, by: &[&str], not_by: &[&str]) {
    assert!(!r.cosigned_note.is_empty(), "a cosigned note is served");
    let cp = verify_note(&r.cosigned_note, log_vkey);
    assert_eq!(
        cp.size(),
        r.cosigned_size,
        "cosigned_size is the note's size"
    );
    assert_eq!(cp.origin(), ORIGIN);
    for k in by {
        let ts = check_cosignature(&r.cosigned_note, k)
            .unwrap_or_else(|| panic!("no valid cosignature by {k} on\n{}", r.cosigned_note));
        assert!(
            ts.abs_diff(now_secs()) < 300,
            "a cosignature of now, not {ts}"
        );
    }
    for k in not_by {
        assert!(
            check_cosignature(&r.cosigned_note, k).is_none(),
            "{k} did not cosign"
        );
    }
}

async fn health(srv: &ServeProcess) -> ServingStatus {
    let mut h = HealthClient::new(channel(srv).await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("Health/Check")
        .into_inner();
    ServingStatus::try_from(r.status).expect("a known status")
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn replace_dir(dir: &Path, with: &Path) {
    std::fs::remove_dir_all(dir).expect("remove");
    common::copy_dir(with, dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_witness_cosigns_the_latest_checkpoint() {
    let tmp = temp();
    let data = tmp.path().join("log");
    let log_vkey = new_log_dir(&data, 1);
    let w = LocalWitness::start(&tmp.path().join("w1"), "w1.example", &log_vkey).await;
    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    // Writes in parallel, so groups commit while rounds run.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            write(&mut c, &format!("t{t}"), 10).await
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let r = wait_checkpoint(&mut c, "cosigned", |r| r.cosigned_is_latest).await;
    assert_eq!(r.size, 40);
    assert_eq!(r.cosigned_size, 40);
    assert_eq!(r.witness_quorum, 1);
    assert_cosigned_by(&r, &log_vkey, &[&w.vkey], &[]);
    // The cosigned note is the log's note with the cosignature added.
    assert!(r.cosigned_note.starts_with(&r.note), "{}", r.cosigned_note);
    // The explorer's dashboard and /metrics show it too.
    let addr: std::net::SocketAddr = srv.addr().parse().expect("an address");
    let dash: serde_json::Value =
        serde_json::from_slice(&http_get(addr, "/index.json").await.body).expect("JSON");
    assert_eq!(dash["cosigned"]["size"], 40, "{dash}");
    assert_eq!(dash["cosigned"]["quorum"], 1);
    assert_eq!(dash["cosigned"]["note"], r.cosigned_note.as_str());
    assert_eq!(dash["cosigned"]["cosigners"][0]["name"], "w1.example");
    let page = http_get(addr, "/").await.text();
    assert!(
        page.contains("w1.example"),
        "the dashboard names the cosigner"
    );
    let metrics = http_get(addr, "/metrics").await.text();
    assert!(
        metrics.contains("\nclaimledger_witness_cosigned_size 40\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nclaimledger_witness_quorum 1\n"),
        "{metrics}"
    );
    // The witness holds what the log serves as cosigned.
    let (size, _) = w
        .witness
        .cosigned(ORIGIN)
        .expect("the witness follows the log");
    assert_eq!(size, 40);

    // A restart serves the stored cosigned checkpoint, and catches up after more writes.
    stop(srv).await;
    assert!(data.join("checkpoint.cosigned").exists());
    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    assert_eq!(checkpoint(&mut c).await.cosigned_size, 40);
    write(&mut c, "more", 3).await;
    let r = wait_checkpoint(&mut c, "cosigned again", |r| r.cosigned_is_latest).await;
    assert_eq!(r.cosigned_size, 43);
    assert_cosigned_by(&r, &log_vkey, &[&w.vkey], &[]);
    stop(srv).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_two_of_three_and_the_cli_checks_cosignatures() {
    let tmp = temp();
    let data = tmp.path().join("log");
    let log_vkey = new_log_dir(&data, 2);
    let w1 = LocalWitness::start(&tmp.path().join("w1"), "w1.example", &log_vkey).await;
    let w2 = LocalWitness::start(&tmp.path().join("w2"), "w2.example", &log_vkey).await;
    // The third is down at first: its port is reserved, then closed.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let w3_addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let w3_dir = tmp.path().join("w3");
    let w3_vkey = Witness::open(
        &w3_dir,
        "w3.example",
        vec![(ORIGIN.to_string(), log_vkey.clone())],
    )
    .expect("w3 key")
    .verifier_key();
    let w3_flag = format!("http://{w3_addr}={w3_vkey}");
    let srv = serve(
        &data,
        &[w1.flag(), w2.flag(), w3_flag],
        &["--witness-quorum", "2"],
    )
    .await;
    let mut c = clients(&srv).await;
    write(&mut c, "a", 12).await;
    let r = wait_checkpoint(&mut c, "cosigned by two", |r| r.cosigned_is_latest).await;
    assert_eq!((r.size, r.witness_quorum), (12, 2));
    assert_cosigned_by(&r, &log_vkey, &[&w1.vkey, &w2.vkey], &[&w3_vkey]);

    // The CLI checks the same with the keys it is given.
    let server = srv.url.clone();
    let ok = common::cli(&[
        "log",
        "checkpoint",
        "--server",
        &server,
        "--verifier-key",
        &log_vkey,
        "--witness-key",
        &w1.vkey,
        "--witness-key",
        &w2.vkey,
    ])
    .await
    .stdout();
    assert!(
        ok.contains("cosigned checkpoint: size 12, the latest"),
        "{ok}"
    );
    assert!(ok.contains("cosigned by w1.example at 20"), "{ok}");
    assert!(ok.contains("cosigned by w2.example at 20"), "{ok}");
    let missing = common::cli(&[
        "log",
        "checkpoint",
        "--server",
        &server,
        "--witness-key",
        &w1.vkey,
        "--witness-key",
        &w3_vkey,
    ])
    .await;
    assert!(!missing.ok, "w3 has not cosigned: {}", missing.stdout);
    assert!(
        missing
            .stderr
            .contains("no valid cosignature by w3.example"),
        "{}",
        missing.stderr
    );
    // A key of another witness under a configured name: its cosignature does not verify.
    let impostor = Witness::open(
        &tmp.path().join("impostor"),
        "w1.example",
        vec![(ORIGIN.to_string(), log_vkey.clone())],
    )
    .expect("impostor")
    .verifier_key();
    let wrong = common::cli(&[
        "log",
        "checkpoint",
        "--server",
        &server,
        "--witness-key",
        &impostor,
    ])
    .await;
    assert!(
        !wrong.ok && wrong.stderr.contains("no valid cosignature by w1.example"),
        "{}",
        wrong.stderr
    );
    // The wrong log key fails too.
    let other_log = new_log_dir(&tmp.path().join("other"), 9);
    let bad_log = common::cli(&[
        "log",
        "checkpoint",
        "--server",
        &server,
        "--verifier-key",
        &other_log,
    ])
    .await;
    assert!(!bad_log.ok, "{}", bad_log.stdout);

    // Receipts say whether their checkpoint is cosigned.
    let out = common::cli(&[
        "source",
        "register",
        "late",
        "--server",
        &server,
        "--name",
        "Late",
        "--kind",
        "other",
        "--side",
        "UA",
        "--role",
        "non-party",
    ])
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("checkpoint size 13 (not yet cosigned; latest cosigned size 12)")
            || out.stdout.contains("checkpoint size 13 is cosigned"),
        "{}",
        out.stdout
    );

    // w3 comes back on its port: it cosigns too once its retry comes.
    let listener = tokio::net::TcpListener::bind(w3_addr)
        .await
        .expect("rebind w3's port");
    let w3 = LocalWitness::start_on(listener, &w3_dir, "w3.example", &log_vkey);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let r = loop {
        let r = checkpoint(&mut c).await;
        if r.cosigned_is_latest && check_cosignature(&r.cosigned_note, &w3_vkey).is_some() {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "w3 never cosigned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_cosigned_by(&r, &log_vkey, &[&w1.vkey, &w2.vkey, &w3.vkey], &[]);
    // Stop one: writes go on and the other two keep the quorum.
    w2.stop().await;
    write(&mut c, "b", 5).await;
    let r = wait_checkpoint(&mut c, "cosigned without w2", |r| r.cosigned_is_latest).await;
    assert_eq!(r.size, 18);
    assert_cosigned_by(&r, &log_vkey, &[&w1.vkey, &w3.vkey], &[]);
    stop(srv).await;
    w1.stop().await;
    w3.stop().await;
}

/// The error a write gets from a halted log.
/// The log is halted: health NOT_SERVING, and a write refused with FAILED_PRECONDITION whose
/// message names every one of `parts`.
async fn assert_halted(srv: &ServeProcess, c: &mut Clients, parts: &[&str]) {
    assert_eq!(health(srv).await, ServingStatus::NotServing);
    let e = refused_write(c).await;
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    for part in parts {
        assert!(e.message().contains(part), "{part:?} in {:?}", e.message());
    }
}

async fn refused_write(c: &mut Clients) -> tonic::Status {
    c.sources
        .register_source(pb::RegisterSourceRequest {
            request_id: "after-halt".into(),
            source: Some(common::source(
                "after-halt",
                "UA",
                pb::Role::NonParty,
                pb::Reliability::B,
                "",
            )),
        })
        .await
        .expect_err("a halted log refuses writes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_is_refused_before_it_signs() {
    let tmp = temp();
    let data = tmp.path().join("log");
    let backup = tmp.path().join("backup");
    let log_vkey = new_log_dir(&data, 3);
    let w = LocalWitness::start(&tmp.path().join("w1"), "w1.example", &log_vkey).await;
    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "a", 20).await;
    wait_checkpoint(&mut c, "cosigned at 20", |r| r.cosigned_is_latest).await;
    stop(srv).await;
    common::copy_dir(&data, &backup);

    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "b", 20).await;
    let r = wait_checkpoint(&mut c, "cosigned at 40", |r| r.cosigned_is_latest).await;
    assert_eq!(r.cosigned_size, 40);
    stop(srv).await;

    // The operator restores the copy taken at 20.
    replace_dir(&data, &backup);
    let before = std::fs::read_to_string(data.join("checkpoint")).expect("the copy's file");
    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    assert_halted(
        &srv,
        &mut c,
        &["w1.example", &w.url, "cosigned size 40", "only 20 entries"],
    )
    .await;
    // Nothing new is signed: the served checkpoint is the copy's, the witness still at 40.
    let r = checkpoint(&mut c).await;
    assert_eq!(r.size, 20);
    assert_eq!(
        std::fs::read_to_string(data.join("checkpoint")).expect("file"),
        before
    );
    assert_eq!(w.witness.cosigned(ORIGIN).map(|(s, _)| s), Some(40));
    stop(srv).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_one_log_are_a_fork_the_witness_refuses() {
    let tmp = temp();
    let a = tmp.path().join("a");
    let log_vkey = new_log_dir(&a, 4);
    let w = LocalWitness::start(&tmp.path().join("w1"), "w1.example", &log_vkey).await;
    // The common history, cosigned.
    let srv = serve(&a, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "common", 5).await;
    wait_checkpoint(&mut c, "cosigned at 5", |r| r.cosigned_is_latest).await;
    stop(srv).await;
    let b = tmp.path().join("b");
    let b2 = tmp.path().join("b2");
    common::copy_dir(&a, &b);
    common::copy_dir(&a, &b2);

    // Copy a goes on with the witness to size 10.
    let srv = serve(&a, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "a", 5).await;
    wait_checkpoint(&mut c, "a cosigned at 10", |r| r.cosigned_is_latest).await;
    stop(srv).await;

    // Copy b is written without witnesses to the same size, with other entries …
    let srv = serve(&b, &[], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "b", 5).await;
    stop(srv).await;
    // … and then shown to the witness: same size, another root.
    let srv = serve(&b, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    assert_halted(
        &srv,
        &mut c,
        &[
            "w1.example",
            &w.url,
            "different tree of size 10",
            "10 entries",
        ],
    )
    .await;
    assert_eq!(
        checkpoint(&mut c).await.cosigned_size,
        5,
        "b's own cosigned 5 stays"
    );
    stop(srv).await;

    // Copy b2 goes further than a: the witness cannot check the proof from its size 10.
    let srv = serve(&b2, &[], &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "b2", 8).await;
    stop(srv).await;
    let srv = serve(&b2, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    assert_halted(
        &srv,
        &mut c,
        &[
            "w1.example",
            "cosigned size 10 with a root that is not this log's",
            "13 entries",
        ],
    )
    .await;
    // The witness kept a's history.
    let (size, root) = w.witness.cosigned(ORIGIN).expect("follows");
    assert_eq!(size, 10);
    let r = {
        let srv = serve(&a, &[w.flag()], &[]).await;
        let mut c = clients(&srv).await;
        let r = checkpoint(&mut c).await;
        assert_eq!(health(&srv).await, ServingStatus::Serving);
        stop(srv).await;
        r
    };
    assert_eq!(r.root_hash, root.0.to_vec());
    w.stop().await;
}

/// The README's setup with the real `claimledger witness` binary: a log with two local
/// witness processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_witness_processes() {
    let tmp = temp();
    let data = tmp.path().join("log");
    let log_vkey = new_log_dir(&data, 5);
    let mut witnesses = Vec::new();
    for name in ["w1.example", "w2.example"] {
        witnesses.push(WitnessProcess::start(&tmp.path().join(name), name, &log_vkey).await);
    }
    let flags: Vec<String> = witnesses.iter().map(|w| w.flag()).collect();
    let srv = serve(&data, &flags, &[]).await;
    let mut c = clients(&srv).await;
    write(&mut c, "x", 7).await;
    let r = wait_checkpoint(&mut c, "cosigned by both", |r| r.cosigned_is_latest).await;
    assert_cosigned_by(
        &r,
        &log_vkey,
        &[&witnesses[0].vkey, &witnesses[1].vkey],
        &[],
    );
    let out = common::cli(&[
        "log",
        "checkpoint",
        "--server",
        &srv.url,
        "--witness-key",
        &witnesses[0].vkey,
        "--witness-key",
        &witnesses[1].vkey,
    ])
    .await
    .stdout();
    assert!(out.contains("cosigned by w2.example"), "{out}");
    stop(srv).await;
}

/// A `claimledger witness` process.
struct WitnessProcess {
    child: tokio::process::Child,
    url: String,
    vkey: String,
}

impl WitnessProcess {
    async fn start(dir: &Path, name: &str, log_vkey: &str) -> WitnessProcess {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(common::BIN)
            .args(["witness", "--data-dir"])
            .arg(dir)
            .args(["--addr", "127.0.0.1:0", "--name", name, "--log"])
            .arg(format!("{ORIGIN}={log_vkey}"))
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start claimledger witness");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (mut vkey, mut url) = (None, None);
        let mut seen = Vec::new();
        while url.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("the witness starts")
                .expect("read stderr")
                .unwrap_or_else(|| panic!("the witness exited: {}", seen.join("\n")));
            if let Some(k) = line.strip_prefix("witness verifier key: ") {
                vkey = Some(k.trim().to_string());
            }
            if let Some(u) = line.strip_prefix("claimledger witness listening on ") {
                url = Some(u.trim().to_string());
            }
            seen.push(line);
        }
        // Keep draining so the witness never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        WitnessProcess {
            child,
            url: url.unwrap_or_default(),
            vkey: vkey.expect("the witness printed its verifier key"),
        }
    }

    fn flag(&self) -> String {
        format!("{}={}", self.url, self.vkey)
    }
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_status_proof_says_what_the_witnesses_vouch_for() {
    let tmp = temp();
    let data = tmp.path().join("log");
    let log_vkey = new_log_dir(&data, 7);
    let w = LocalWitness::start(&tmp.path().join("w1"), "w1.example", &log_vkey).await;
    let srv = serve(&data, &[w.flag()], &[]).await;
    let mut c = clients(&srv).await;
    c.register(common::source(
        "ua-mod",
        "UA",
        pb::Role::Party,
        pb::Reliability::B,
        "",
    ))
    .await;
    let early = c
        .submit(
            "early",
            common::claim(pb::ClaimKind::Other, "ua-mod", "Early claim"),
        )
        .await
        .claim
        .expect("claim")
        .id;
    let r = wait_checkpoint(&mut c, "cosigned", |r| r.cosigned_is_latest).await;
    let cosigned = r.cosigned_size;

    // The witness goes away; the log goes on, and its newer checkpoints are not cosigned.
    let wkey = w.vkey.clone();
    w.stop().await;
    write(&mut c, "later", 3).await;
    let late = c
        .submit(
            "late",
            common::claim(pb::ClaimKind::Other, "ua-mod", "Late claim"),
        )
        .await
        .claim
        .expect("claim")
        .id;
    let status = |id: String| {
        let server = srv.url.clone();
        let (log_vkey, wkey) = (log_vkey.clone(), wkey.clone());
        async move {
            common::cli(&[
                "claim",
                "status",
                &id,
                "--proof",
                "--server",
                &server,
                "--verifier-key",
                &log_vkey,
                "--witness-key",
                &wkey,
            ])
            .await
            .stdout()
        }
    };
    // The early claim's entries are in the cosigned tree: proven against it as well.
    let out = status(early).await;
    assert!(
        out.contains(&format!(
            "entries also proven against the cosigned checkpoint of size {cosigned}"
        )),
        "{out}"
    );
    // The late claim is beyond it: said plainly.
    let out = status(late).await;
    assert!(
        out.contains(&format!(
            "not yet cosigned; latest cosigned size {cosigned} does not cover every entry"
        )),
        "{out}"
    );
    stop(srv).await;
}

/// Two `serve` processes sharing one PostgreSQL log, each with the same witness: the follower
/// publishes sizes a little after the sequencer, so the witness often holds a larger size of
/// the log than the follower has published. That is the log moving on, not a rollback: the
/// follower keeps serving, and both end up serving the same cosigned checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_postgres_log_share_its_witness() {
    let tmp = temp();
    let url = common::pg::cluster()
        .and_then(|c| c.database_for(tmp.path()))
        .unwrap_or_else(|e| panic!("the test PostgreSQL: {e}"));
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let log_vkey = new_log_dir(&dir_a, 9);
    std::fs::create_dir_all(&dir_b).expect("mkdir");
    std::fs::copy(dir_a.join("log.key"), dir_b.join("log.key")).expect("copy the key");
    let w = LocalWitness::start(&tmp.path().join("w"), "w.example", &log_vkey).await;
    let a = serve(&dir_a, &[w.flag()], &["--store", &url]).await;
    let mut ca = clients(&a).await;
    write(&mut ca, "first", 1).await;
    let b = serve(&dir_b, &[w.flag()], &["--store", &url]).await;
    let mut cb = clients(&b).await;

    // Rounds of writes through both (B forwards to A), each followed by both serving the
    // cosigned latest checkpoint.
    let mut size = 1;
    for round in 0..5 {
        let mut tasks = Vec::new();
        for t in 0..4 {
            let mut c = if t % 2 == 0 { ca.clone() } else { cb.clone() };
            tasks.push(tokio::spawn(async move {
                write(&mut c, &format!("r{round}-t{t}"), 5).await
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        size += 20;
        for (c, who) in [(&mut ca, "A"), (&mut cb, "B")] {
            let r = wait_checkpoint(c, &format!("{who} cosigned at {size}"), |r| {
                r.size == size && r.cosigned_is_latest
            })
            .await;
            assert_cosigned_by(&r, &log_vkey, &[&w.vkey], &[]);
        }
        assert_eq!(health(&a).await, ServingStatus::Serving, "A");
        assert_eq!(health(&b).await, ServingStatus::Serving, "B");
    }

    // A paused while B takes over (A's session ended) and the witness cosigns beyond what A
    // has: once resumed, A still believes it leads for a moment, and a witness ahead of it is
    // the log moving on, not a rollback. A is not halted, and serves the latest cosigned.
    let signal = |p: &ServeProcess, sig| {
        // SAFETY: kill(2) on our own child process with a valid signal.
        assert_eq!(unsafe { libc::kill(p.pid(), sig) }, 0);
    };
    signal(&a, libc::SIGSTOP);
    let pg = common::pg::cluster().unwrap_or_else(|e| panic!("{e}"));
    let db = url.rsplit('/').next().expect("a database name");
    pg.psql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'claimledger-sequencer' AND datname = current_database()",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut taken = false;
    for i in 0..200 {
        let r = cb
            .sources
            .register_source(pb::RegisterSourceRequest {
                request_id: format!("takeover-{i}"),
                source: Some(common::source(
                    &format!("takeover-{i}"),
                    "UA",
                    pb::Role::NonParty,
                    pb::Reliability::B,
                    "",
                )),
            })
            .await;
        if r.is_ok() {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(taken, "B takes the lead while A is paused");
    write(&mut cb, "by-b", 5).await;
    size += 6;
    let r = wait_checkpoint(&mut cb, "B cosigned after taking over", |r| {
        r.size == size && r.cosigned_is_latest
    })
    .await;
    assert_cosigned_by(&r, &log_vkey, &[&w.vkey], &[]);
    signal(&a, libc::SIGCONT);
    wait_checkpoint(&mut ca, "A, resumed, serves the latest cosigned", |r| {
        r.size == size && r.cosigned_is_latest
    })
    .await;
    assert_eq!(health(&a).await, ServingStatus::Serving, "A is not halted");
    stop(b).await;
    stop(a).await;
    w.stop().await;
}
