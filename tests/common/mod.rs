//! Shared helpers of the end-to-end tests: a real claimledger server on a loopback port over a
//! temporary sled directory, client constructors, builders for requests, the demo-data import,
//! offline verification of receipts and checkpoints as an auditor would do it, and a runner for
//! the real `claimledger` binary.

#![allow(dead_code)]

pub mod pg;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use claimledger::pb;
use claimledger::pb::claim_service_client::ClaimServiceClient;
use claimledger::pb::log_service_client::LogServiceClient;
use claimledger::pb::source_service_client::SourceServiceClient;
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{check_record, Checkpoint, Hash};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

/// Where the test servers of a test keep their log: sled in the test's directory (the default),
/// or a PostgreSQL database of the test process's own cluster ([`pg::cluster`]), one database
/// per directory, so a server restarted on the same directory finds its log again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Sled,
    Postgres,
}

tokio::task_local! {
    /// The store of the test running in this task (set by [`both_stores!`]).
    pub static STORE: Store;
}

/// The store the current test runs against.
pub fn current_store() -> Store {
    STORE.try_with(|s| *s).unwrap_or(Store::Sled)
}

/// Runs a test twice, as `NAME::sled` against sled and `NAME::postgres` against PostgreSQL:
/// the same body, the same assertions (`cargo test NAME` runs both). The test keeps its own
/// `#[tokio::test]` attribute.
#[macro_export]
macro_rules! both_stores {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn sled() {
                $crate::common::STORE
                    .scope($crate::common::Store::Sled, async $body)
                    .await
            }

            $(#[$attr])*
            async fn postgres() {
                $crate::common::STORE
                    .scope($crate::common::Store::Postgres, async $body)
                    .await
            }
        }
    };
}

/// A domain hook that keeps each entry's body as state, as the ledger keeps each claim: large
/// entries make large state values in sled, which then holds about as much as the entry files.
pub struct KeepBodies;

impl claimledger::log::Apply for KeepBodies {
    fn apply(
        &self,
        ctx: &mut claimledger::log::Ctx<'_>,
        meta: &claimledger::log::EntryMeta,
        body: &[u8],
    ) -> Result<(), claimledger::log::Rejection> {
        ctx.put(&meta.index.to_be_bytes(), body.to_vec());
        Ok(())
    }
}

/// The log options of a test server on `dir` for the current test's store.
pub fn log_options(dir: &Path) -> claimledger::log::Options {
    let postgres = match current_store() {
        Store::Sled => None,
        Store::Postgres => {
            let cluster = pg::cluster().unwrap_or_else(|e| panic!("start PostgreSQL: {e}"));
            Some(
                cluster
                    .database_for(dir)
                    .unwrap_or_else(|e| panic!("create the test database: {e}")),
            )
        }
    };
    claimledger::log::Options {
        postgres,
        ..claimledger::log::Options::default()
    }
}

/// A claimledger server running in this process on 127.0.0.1:<free port>.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Opens (or reopens) the log in `dir` and serves it; every caller is `anonymous`.
    pub async fn start(dir: &Path) -> TestServer {
        Self::start_with_auth(dir, claimledger::api::auth::Auth::default()).await
    }

    /// Like [`TestServer::start`], with bearer tokens mapped to principals.
    pub async fn start_with_auth(dir: &Path, auth: claimledger::api::auth::Auth) -> TestServer {
        Self::start_with(dir, auth, Arc::new(claimledger::ledger::LedgerApply)).await
    }

    /// Like [`TestServer::start`], with another [`claimledger::log::Apply`] hook (one that
    /// wraps `LedgerApply` to observe it, for example).
    pub async fn start_with_apply(
        dir: &Path,
        apply: Arc<dyn claimledger::log::Apply>,
    ) -> TestServer {
        Self::start_with(dir, claimledger::api::auth::Auth::default(), apply).await
    }

    /// Like [`TestServer::start`], with the log opened with `options` (a given database, say),
    /// whatever the current test's store.
    pub async fn start_with_options(dir: &Path, options: claimledger::log::Options) -> TestServer {
        Self::start_opened(
            dir,
            claimledger::api::auth::Auth::default(),
            Arc::new(claimledger::ledger::LedgerApply),
            options,
        )
        .await
    }

    async fn start_with(
        dir: &Path,
        auth: claimledger::api::auth::Auth,
        apply: Arc<dyn claimledger::log::Apply>,
    ) -> TestServer {
        Self::start_opened(dir, auth, apply, log_options(dir)).await
    }

    async fn start_opened(
        dir: &Path,
        auth: claimledger::api::auth::Auth,
        apply: Arc<dyn claimledger::log::Apply>,
        options: claimledger::log::Options,
    ) -> TestServer {
        // sled releases its file lock from a background thread after the last handle drops,
        // so a restart right after `stop` may briefly find the directory still locked.
        let mut tries = 0;
        let log = loop {
            match claimledger::log::Log::open(dir, options.clone(), apply.clone()) {
                Ok(log) => break log,
                Err(e) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("open the log: {e}"),
            }
        };
        let ctx = claimledger::api::Ctx::open(log).expect("open the query index");
        let (listener, addr) = claimledger::api::server::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(claimledger::api::server::serve(
            ctx,
            listener,
            auth,
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            dir: dir.to_path_buf(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// The address as a `--server` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the test server")
    }

    pub async fn sources(&self) -> SourceServiceClient<Channel> {
        SourceServiceClient::new(self.channel().await)
    }

    pub async fn claims(&self) -> ClaimServiceClient<Channel> {
        ClaimServiceClient::new(self.channel().await)
    }

    pub async fn logs(&self) -> LogServiceClient<Channel> {
        LogServiceClient::new(self.channel().await)
    }

    pub async fn clients(&self) -> Clients {
        let ch = self.channel().await;
        Clients {
            sources: SourceServiceClient::new(ch.clone()),
            claims: ClaimServiceClient::new(ch.clone()),
            log: LogServiceClient::new(ch),
        }
    }

    /// Graceful shutdown: health NOT_SERVING, in-flight calls finish, the writer drains. When
    /// this returns the data directory can be reopened.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await
                .expect("server task panicked")
                .expect("server returned an error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A test that fails before stop() still ends its server.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The three service clients on one channel.
#[derive(Clone)]
pub struct Clients {
    pub sources: SourceServiceClient<Channel>,
    pub claims: ClaimServiceClient<Channel>,
    pub log: LogServiceClient<Channel>,
}

impl Clients {
    /// The current log size.
    pub async fn size(&mut self) -> u64 {
        self.log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("GetCheckpoint")
            .into_inner()
            .size
    }

    /// Waits (ListClaims' `min_size`) until the query index covers the log's current size;
    /// returns the first page of every claim.
    pub async fn list_when_indexed(&mut self) -> pb::ListClaimsResponse {
        let size = self.size().await;
        let listed = self
            .claims
            .list_claims(pb::ListClaimsRequest {
                min_size: size,
                ..Default::default()
            })
            .await
            .expect("ListClaims")
            .into_inner();
        assert!(
            listed.indexed_size >= size,
            "indexed {listed:?}, log {size}"
        );
        listed
    }

    pub async fn verifier_key(&mut self) -> String {
        self.log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("GetCheckpoint")
            .into_inner()
            .verifier_key
    }

    /// Registers `s` with request id `src-<id>`.
    pub async fn register(&mut self, s: pb::Source) -> pb::RegisterSourceResponse {
        let id = s.id.clone();
        self.sources
            .register_source(pb::RegisterSourceRequest {
                request_id: format!("src-{id}"),
                source: Some(s),
            })
            .await
            .unwrap_or_else(|e| panic!("RegisterSource {id}: {e}"))
            .into_inner()
    }

    pub async fn submit(&mut self, request_id: &str, c: pb::Claim) -> pb::SubmitClaimResponse {
        self.claims
            .submit_claim(pb::SubmitClaimRequest {
                request_id: request_id.into(),
                claim: Some(c),
            })
            .await
            .unwrap_or_else(|e| panic!("SubmitClaim {request_id}: {e}"))
            .into_inner()
    }

    pub async fn add_evidence(
        &mut self,
        request_id: &str,
        claim_id: &str,
        e: pb::Evidence,
    ) -> pb::AddEvidenceResponse {
        self.claims
            .add_evidence(pb::AddEvidenceRequest {
                request_id: request_id.into(),
                claim_id: claim_id.into(),
                evidence: Some(e),
            })
            .await
            .unwrap_or_else(|e| panic!("AddEvidence {request_id}: {e}"))
            .into_inner()
    }

    /// The claim's record (GetClaim), which must exist.
    pub async fn record(&mut self, claim_id: &str) -> pb::GetClaimResponse {
        self.claims
            .get_claim(pb::GetClaimRequest {
                id: claim_id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetClaim {claim_id}: {e}"))
            .into_inner()
    }

    pub async fn status(&mut self, claim_id: &str) -> pb::GetClaimStatusResponse {
        self.status_at(claim_id, 0).await
    }

    pub async fn status_at(&mut self, claim_id: &str, as_of: u64) -> pb::GetClaimStatusResponse {
        self.claims
            .get_claim_status(pb::GetClaimStatusRequest {
                claim_id: claim_id.into(),
                as_of_size: as_of,
                with_proof: false,
            })
            .await
            .unwrap_or_else(|e| panic!("GetClaimStatus {claim_id}@{as_of}: {e}"))
            .into_inner()
    }
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

/// A source with its own cluster unless `cluster` is given.
pub fn source(
    id: &str,
    side: &str,
    role: pb::Role,
    grade: pb::Reliability,
    cluster: &str,
) -> pb::Source {
    pb::Source {
        id: id.into(),
        name: format!("Test source {id}"),
        kind: pb::SourceKind::Other as i32,
        side: side.into(),
        role: role as i32,
        cluster: cluster.into(),
        reliability: grade as i32,
        registered_index: 0,
    }
}

/// A minimal asserted-fact claim.
pub fn claim(kind: pb::ClaimKind, claimant: &str, summary: &str) -> pb::Claim {
    pb::Claim {
        kind: kind as i32,
        modality: pb::Modality::AssertedFact as i32,
        summary: summary.into(),
        text: format!("{summary} (full text)"),
        claimant_id: claimant.into(),
        ..Default::default()
    }
}

/// A media report without a chain (its origin is its own source).
pub fn evidence(source_id: &str, stance: pb::Stance, credibility: u32) -> pb::Evidence {
    pb::Evidence {
        source_id: source_id.into(),
        stance: stance as i32,
        kind: pb::EvidenceKind::MediaReport as i32,
        url: format!("https://example.org/{source_id}"),
        credibility,
        ..Default::default()
    }
}

pub fn ts(seconds: i64) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp { seconds, nanos: 0 }
}

// ---------------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------------

/// Asserts `r` failed with `code` and that the message names `needle` (a field, usually), and
/// returns the status for further checks.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) -> tonic::Status {
    match r {
        Ok(v) => panic!("expected {code:?} naming {needle:?}, got Ok({v:?})"),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "expected {code:?} naming {needle:?}, got {:?}: {}",
                s.code(),
                s.message()
            );
            assert!(
                s.message().contains(needle),
                "{code:?} message {:?} does not name {needle:?}",
                s.message()
            );
            s
        }
    }
}

pub fn status_of(r: &pb::GetClaimStatusResponse) -> pb::Status {
    pb::Status::try_from(r.status).expect("known status")
}

pub fn computed_of(r: &pb::GetClaimStatusResponse) -> pb::Status {
    pb::Status::try_from(r.computed_status).expect("known status")
}

pub fn hash(b: &[u8]) -> Hash {
    Hash(b.try_into().expect("a 32-byte hash"))
}

/// The checkpoint body of a signed note: the text before the blank line, newline included.
pub fn checkpoint_body(note: &str) -> &str {
    let blank = note.find("\n\n").expect("a signed note has a blank line");
    &note[..blank + 1]
}

/// Verifies the note's signature with `verifier_key` and parses its checkpoint.
pub fn verify_note(note: &str, verifier_key: &str) -> Checkpoint {
    let verifier = StandardVerifier::new(verifier_key).expect("verifier key parses");
    let parsed = Note::from_bytes(note.as_bytes()).expect("note parses");
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .expect("checkpoint signature verifies");
    let body = checkpoint_body(note);
    assert_eq!(parsed.text(), body.as_bytes(), "signed text is the body");
    Checkpoint::from_bytes(body.as_bytes()).expect("checkpoint parses")
}

/// Verifies a write receipt offline: the signature, that the checkpoint covers the entry, and
/// the inclusion proof against the checkpoint's root. Returns the checkpoint.
pub fn verify_receipt(r: &pb::Receipt, verifier_key: &str) -> Checkpoint {
    let cp = verify_note(&r.checkpoint, verifier_key);
    assert_eq!(
        cp.size(),
        r.tree_size,
        "receipt tree_size is the checkpoint's"
    );
    assert!(r.index < cp.size(), "checkpoint covers the entry");
    let proof: Vec<Hash> = r.inclusion_proof.iter().map(|h| hash(h)).collect();
    check_record(&proof, cp.size(), *cp.hash(), r.index, hash(&r.leaf_hash))
        .unwrap_or_else(|e| panic!("receipt for entry {} does not verify: {e}", r.index));
    cp
}

// ---------------------------------------------------------------------------------------------
// The demo data set
// ---------------------------------------------------------------------------------------------

/// What importing `examples/article.jsonl` produced.
#[derive(Default)]
pub struct Imported {
    /// Claim line request_id → server-assigned claim id.
    pub claims: HashMap<String, String>,
    /// Evidence line request_id → server-assigned evidence id.
    pub evidence: HashMap<String, String>,
    /// The receipt of every line, in order.
    pub receipts: Vec<pb::Receipt>,
}

impl Imported {
    pub fn claim(&self, request_id: &str) -> &str {
        self.claims
            .get(request_id)
            .unwrap_or_else(|| panic!("no claim line {request_id}"))
    }
}

pub fn article_lines() -> Vec<pb::ImportLine> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/article.jsonl");
    std::fs::read_to_string(path)
        .expect("read examples/article.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<pb::ImportLine>(l).expect("an ImportLine"))
        .collect()
}

/// Sends every line of the demo data set, as `claimledger import` does: sources with request id
/// `src-<id>`, and `@request_id` claim references resolved to the ids the server assigned.
pub async fn import_article(c: &mut Clients) -> Imported {
    let mut out = Imported::default();
    for line in article_lines() {
        let resolve = |out: &Imported, id: &str| -> String {
            match id.strip_prefix('@') {
                Some(rid) => out.claim(rid).to_string(),
                None => id.to_string(),
            }
        };
        let receipt = if let Some(s) = line.source {
            c.register(s).await.receipt
        } else if let Some(req) = line.grade {
            c.sources
                .grade_source(req)
                .await
                .expect("GradeSource")
                .into_inner()
                .receipt
        } else if let Some(req) = line.claim {
            let rid = req.request_id.clone();
            let resp = c.claims.submit_claim(req).await.expect("SubmitClaim");
            let resp = resp.into_inner();
            out.claims
                .insert(rid, resp.claim.expect("claim in response").id);
            resp.receipt
        } else if let Some(mut req) = line.evidence {
            req.claim_id = resolve(&out, &req.claim_id);
            let rid = req.request_id.clone();
            let resp = c
                .claims
                .add_evidence(req)
                .await
                .unwrap_or_else(|e| panic!("AddEvidence {rid}: {e}"))
                .into_inner();
            out.evidence
                .insert(rid, resp.evidence.expect("evidence in response").id);
            resp.receipt
        } else if let Some(mut req) = line.verdict {
            req.claim_id = resolve(&out, &req.claim_id);
            c.claims
                .record_verdict(req)
                .await
                .expect("RecordVerdict")
                .into_inner()
                .receipt
        } else if let Some(mut req) = line.retraction {
            req.claim_id = resolve(&out, &req.claim_id);
            c.claims
                .retract_claim(req)
                .await
                .expect("RetractClaim")
                .into_inner()
                .receipt
        } else {
            panic!("an empty import line");
        };
        out.receipts
            .push(receipt.expect("every write returns a receipt"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

/// What a run of the `claimledger` binary printed.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// The stdout of a run that must have succeeded.
    pub fn stdout(self) -> String {
        assert!(self.ok, "claimledger failed: {}", self.stderr);
        self.stdout
    }
}

/// Runs the real `claimledger` binary with `args` (without `CLAIMLEDGER_*` from the caller's
/// environment), asynchronously so an in-process server keeps serving.
pub async fn cli(args: &[&str]) -> CliRun {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimledger"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CLAIMLEDGER_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run the claimledger binary");
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Access (SPEC §7)
// ---------------------------------------------------------------------------------------------

/// `msg` as a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    as_caller(msg, Some(token))
}

/// `msg` as a request with a bearer token, or without one (`anonymous`) when `token` is `None`.
pub fn as_caller<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        let value = format!("Bearer {t}")
            .parse()
            .expect("a token a header can carry");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// A principal from its name, comma-separated roles and the clusters it is bound to.
pub fn principal(name: &str, roles: &str, clusters: &[&str]) -> claimledger::api::auth::Principal {
    claimledger::api::auth::Principal {
        name: name.into(),
        roles: claimledger::api::auth::tokens::parse_roles(roles).expect("known roles"),
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
    }
}

/// One tokens-file entry: `(token, principal, comma-separated roles, clusters)`.
pub type TokenEntry<'a> = (&'a str, &'a str, &'a str, &'a [&'a str]);

/// The text of a tokens file holding `entries`.
pub fn tokens_text(entries: &[TokenEntry<'_>]) -> String {
    entries
        .iter()
        .map(|(token, name, roles, clusters)| {
            claimledger::api::auth::tokens::line_for(token, &principal(name, roles, clusters))
                + "\n"
        })
        .collect()
}

/// The authentication a server with a tokens file holding `entries` uses.
pub fn token_auth(entries: &[TokenEntry<'_>]) -> claimledger::api::auth::Auth {
    let tokens = claimledger::api::auth::Tokens::parse(&tokens_text(entries))
        .expect("the tokens file parses");
    claimledger::api::auth::Auth::Tokens(Arc::new(tokens))
}

/// Sets a file's permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `contents` to `path` readable only by its owner, as secrets must be.
pub fn write_private(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    chmod(path, 0o600);
}

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

pub const BIN: &str = env!("CARGO_BIN_EXE_claimledger");

/// What a finished command did.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion; a command still running after `limit` is killed and fails the
/// test (a `serve` that should have refused to start, say).
pub fn run_bounded(cmd: &mut std::process::Command, limit: std::time::Duration) -> Finished {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll the child") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}; stderr:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Runs `claimledger ARGS…` to completion within 60 s.
pub fn claimledger<I, S>(args: I) -> Finished
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_bounded(
        std::process::Command::new(BIN).args(args),
        std::time::Duration::from_secs(60),
    )
}

/// A `claimledger serve` process, stopped with SIGTERM.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://ADDR` or `https://ADDR`, as the server announced it.
    pub url: String,
    /// Its stderr lines, read by a thread so the server never blocks on a full pipe.
    lines: std::sync::mpsc::Receiver<String>,
    stopped: bool,
}

impl ServeProcess {
    /// The server's process id (for signals, `prlimit` and `/proc`).
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// Starts `claimledger serve ARGS…` and waits (at most 30 s) for its listening line.
    pub fn start<I, S>(args: I) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Self::start_with_env(args, &[])
    }

    /// [`ServeProcess::start`] with extra environment variables (a failpoint, say).
    pub fn start_with_env<I, S>(args: I, env: &[(&str, &str)]) -> ServeProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(BIN)
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start claimledger serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("claimledger listening on ") {
                        break u.trim().to_string();
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "serve did not announce its address ({status:?}); stderr:\n{}",
                        seen.join("\n")
                    );
                }
            }
        };
        ServeProcess {
            child,
            url,
            lines,
            stopped: false,
        }
    }

    /// The stderr lines printed since the listening line (or the last call).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits (at most `limit`) for the process to exit by itself, and returns how it ended.
    pub fn wait_exit(mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        self.stopped = true;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("poll serve") {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("serve did not exit within {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `host:port` of the listening socket.
    pub fn addr(&self) -> &str {
        self.url.split_once("://").map_or(&self.url, |(_, a)| a)
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit; returns the stderr lines not read
    /// before (`stderr_lines`), to its end.
    pub fn stop(mut self) -> Vec<String> {
        self.stopped = true;
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM to serve");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll serve") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("serve did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // The reader thread ends at the end of stderr, which the process's exit brings.
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(10)) {
            rest.push(line);
        }
        assert!(
            status.success(),
            "serve exited with {status} after SIGTERM; stderr:\n{}",
            rest.join("\n")
        );
        rest
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        // A test that fails before stop() still ends its server.
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies a (stopped) data directory, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// What an HTTP GET got back.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The body as text (it must be UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    /// A header's value as text, or "" when it is missing.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// GETs `path` from the server at `addr` over plain HTTP/1.1, with extra request `headers`.
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Empty::new()).expect("a request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .unwrap_or_else(|_| panic!("GET {path} timed out"))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: reading the body: {e}"))
        .to_bytes()
        .to_vec();
    HttpAnswer {
        status,
        headers,
        body,
    }
}

/// GETs `path` from the server at `addr` over plain HTTP/1.1.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpAnswer {
    http_get_with(addr, path, &[]).await
}

/// RFC 6962 leaf hash of an entry's bytes, computed independently of the server.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 Merkle tree hash of the given leaf hashes, computed independently of the server.
pub fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    use sha2::Digest;
    match leaves.len() {
        0 => sha2::Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let mut h = sha2::Sha256::new();
            h.update([1u8]);
            h.update(tree_root(&leaves[..k]));
            h.update(tree_root(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// The hashes of a proof as received.
pub fn hashes(v: &[Vec<u8>]) -> Vec<Hash> {
    v.iter().map(|h| hash(h)).collect()
}

/// The three clients on a channel to `url` (a `claimledger serve` process).
pub async fn connect(url: &str) -> Clients {
    let ch = Channel::from_shared(url.to_string())
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    Clients {
        sources: SourceServiceClient::new(ch.clone()),
        claims: ClaimServiceClient::new(ch.clone()),
        log: LogServiceClient::new(ch),
    }
}

/// Entries `[start, end)` as GetEntries streams them.
pub async fn entries(c: &mut Clients, start: u64, end: u64) -> Vec<pb::LogEntry> {
    let mut stream = c
        .log
        .get_entries(pb::GetEntriesRequest { start, end })
        .await
        .expect("GetEntries")
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = futures::StreamExt::next(&mut stream).await {
        out.push(e.expect("an entry"));
    }
    out
}
