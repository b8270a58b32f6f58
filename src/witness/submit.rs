//! The log's side of witnessing (SPEC §3 "Witnesses", C2SP `tlog-witness`): submitting the
//! log's checkpoints to its witnesses, keeping the latest checkpoint a quorum of them
//! cosigned, and stopping the log when a witness has seen a tree this log is not.
//!
//! One background task ([`Submitter::run`]) follows the log's size and works in **rounds**: a
//! round takes the latest checkpoint and sends it to every witness that has not cosigned it
//! yet, all at once. Groups committed while a round runs are not sent one by one; the next
//! round simply takes the newer checkpoint, so the cost is one request per witness per round
//! whatever the write rate.
//!
//! Per witness the submitter remembers the size it last cosigned. It starts unknown (`old 0`);
//! a 409 tells the witness's size and the request is sent again with the consistency proof
//! from there. What a witness says can prove that this log's history is not the one it
//! showed before:
//! - a cosigned size larger than the log (a data directory restored from an older copy),
//! - a 409 at the log's own size (the same size with another root: a fork),
//! - a 422 for a proof from a size the log has (the witness holds another root there).
//!
//! Then the log is halted ([`Log::halt`]): it signs and appends nothing more and health is
//! NOT_SERVING, with a reason naming the witness and both sizes. Failing to reach a witness is
//! not evidence of anything: it is logged and retried with backoff.
//!
//! The pieces: [`config`] (the flags), `http` (the `add-checkpoint` request), [`cosigned`] (the
//! combined note, its check and its file).

pub mod config;
pub mod cosigned;
mod http;

pub use config::{ConfigError, WitnessConfig, Witnessing};
pub use cosigned::Cosigned;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use signed_note::{Note, Signature};
use tokio::sync::watch;
use tokio::time::Instant;

use self::http::{Answer, WitnessClient};
use crate::log::{Log, SignedCheckpoint};

/// How long one `add-checkpoint` request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `serve` waits for the first round before it starts listening anyway.
pub const FIRST_ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait before a failing witness is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The latest cosigned checkpoint, as the API reads it.
#[derive(Clone)]
pub struct CosignedView {
    rx: watch::Receiver<Option<Arc<Cosigned>>>,
    quorum: usize,
}

impl CosignedView {
    /// The latest checkpoint that reached the quorum, if any yet.
    pub fn latest(&self) -> Option<Arc<Cosigned>> {
        self.rx.borrow().clone()
    }

    /// How many witnesses must cosign a checkpoint.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Waits until a checkpoint of at least `size` entries is cosigned (tests, benchmarks).
    pub async fn wait_for(&self, size: u64) -> Option<Arc<Cosigned>> {
        let mut rx = self.rx.clone();
        let got = rx
            .wait_for(|c| c.as_ref().is_some_and(|c| c.size >= size))
            .await
            .ok()?;
        got.clone()
    }
}

/// One witness as the submitter sees it.
struct Peer {
    cfg: WitnessConfig,
    /// The size the witness last cosigned for this log, as far as we know.
    known: Option<u64>,
    /// Its cosignature of the checkpoint of this size (the latest it gave us).
    cosig: Option<(u64, Signature)>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Peer {
    /// Whether we hold its cosignature of the checkpoint of `size` entries.
    fn has_cosigned(&self, size: u64) -> bool {
        self.cosig.as_ref().is_some_and(|(s, _)| *s == size)
    }
}

/// How one witness's part of a round ended.
enum Outcome {
    Cosigned(Signature),
    /// The witness holds a size beyond this round's checkpoint that the log has: the next
    /// round's checkpoint is newer.
    Ahead,
    /// Unreachable, a timeout, a refusal that proves nothing about the log: retried later.
    Failed(String),
    /// Evidence that this log's history is not the one the witness cosigned.
    Fork(String),
}

/// How a round ended.
pub struct RoundReport {
    /// Witnesses that could not be reached or refused, with why.
    pub failed: Vec<String>,
    /// Set when a witness proved a fork or a rollback and the log was halted.
    pub halted: Option<String>,
    /// The size cosigned by the quorum after the round, if any.
    pub cosigned: Option<u64>,
}

/// Submits the log's checkpoints to its witnesses. Made by [`Submitter::new`], which also
/// hands out the view the API reads; then [`Submitter::first_round`] and [`Submitter::run`].
pub struct Submitter {
    log: Log,
    dir: PathBuf,
    peers: Vec<Peer>,
    quorum: usize,
    client: WitnessClient,
    tx: watch::Sender<Option<Arc<Cosigned>>>,
    halted: bool,
    /// The configured witnesses' keys, to check a cosigned checkpoint another process of a
    /// shared log stored.
    verifiers: Vec<crate::witness::cosignature::CosignatureVerifier>,
}

impl Submitter {
    /// Sets up the submitter for `log` (whose data directory is `dir`) and loads the cosigned
    /// checkpoint kept there, if it still verifies with the log's key and reaches the quorum
    /// of the configured witnesses.
    ///
    /// A stored cosigned checkpoint is itself evidence of what the witnesses hold: if it is
    /// larger than the log, or has another root at its size, the log is halted at once,
    /// before any witness is asked.
    pub fn new(log: Log, dir: &Path, witnessing: Witnessing) -> (Submitter, CosignedView) {
        let quorum = witnessing.quorum();
        let log_key = log.checkpointer().verifier_key().to_string();
        let (tx, rx) = watch::channel(None);
        let mut s = Submitter {
            peers: witnessing
                .witnesses()
                .iter()
                .map(|cfg| Peer {
                    cfg: cfg.clone(),
                    known: None,
                    cosig: None,
                    failures: 0,
                    retry_at: None,
                })
                .collect(),
            log,
            dir: dir.to_path_buf(),
            quorum,
            client: WitnessClient::new(REQUEST_TIMEOUT),
            tx,
            halted: false,
            verifiers: witnessing.verifiers(),
        };
        match cosigned::load(dir, &log_key, &witnessing.verifiers(), quorum) {
            cosigned::Stored::None => {}
            cosigned::Stored::Unusable(why) => {
                tracing::warn!(%why, "the stored cosigned checkpoint is not served");
            }
            cosigned::Stored::Valid(c) => s.adopt_stored(c),
        }
        (s, CosignedView { rx, quorum })
    }

    fn adopt_stored(&mut self, c: Cosigned) {
        let have = self.have();
        let file = self.dir.join(cosigned::FILE);
        let names = c
            .cosigners
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        if c.size > have {
            self.halt(format!(
                "{} holds a checkpoint of size {} cosigned by {names}, but this log has only \
                 {have} entries: the data directory was restored from an older copy or lost \
                 entries; refusing to sign",
                file.display(),
                c.size
            ));
            return;
        }
        match self.log.root_at(c.size) {
            Ok(root) if root == c.root => {
                tracing::info!(size = c.size, cosigners = %names, "serving the stored cosigned checkpoint");
                self.tx.send_replace(Some(Arc::new(c)));
            }
            Ok(_) => self.halt(format!(
                "{} holds a checkpoint of size {} cosigned by {names} whose root differs from \
                 this log's at that size: the log forked; refusing to sign",
                file.display(),
                c.size
            )),
            Err(e) => tracing::warn!(error = %e, "cannot compare the stored cosigned checkpoint"),
        }
    }

    /// How many entries the log has, as evidence against a witness's size: with a shared
    /// log, what its store holds (this process may not have published all of it yet).
    fn have(&self) -> u64 {
        have(&self.log)
    }

    /// Whether another process of a shared log signs its checkpoints now: then that process
    /// talks to the witnesses, and this one serves the cosigned checkpoint it stores.
    fn follows(&self) -> bool {
        self.log.shared() && !self.log.sequencing()
    }

    /// Serves the cosigned checkpoint the sequencer of a shared log stored, once it checks
    /// (the log's signature, the quorum of this process's witnesses) and this process has
    /// published its size with the same root.
    fn adopt_from_store(&mut self) {
        let note = match self.log.stored_cosigned() {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored cosigned checkpoint");
                return;
            }
        };
        if self.tx.borrow().as_ref().is_some_and(|c| c.note == note) {
            // Served already: nothing to check again (this runs every FOLLOW_EVERY).
            return;
        }
        let log_key = self.log.checkpointer().verifier_key().to_string();
        let c = match cosigned::parse(note.as_bytes(), &log_key, &self.verifiers, self.quorum) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "the stored cosigned checkpoint is not served");
                return;
            }
        };
        let better = match self.tx.borrow().as_ref() {
            None => true,
            Some(p) => {
                p.size < c.size || (p.size == c.size && p.cosigners.len() < c.cosigners.len())
            }
        };
        if !better || c.size > self.log.size() {
            // Not newer, or not published here yet (the next look finds it).
            return;
        }
        match self.log.root_at(c.size) {
            Ok(root) if root == c.root => {}
            Ok(_) => {
                // Signed by the log's key and cosigned by the quorum, with another root than
                // the one this process reads at that size: what it reads (a replica, say) is
                // not the history the witnesses hold.
                self.halt(format!(
                    "the cosigned checkpoint of size {} stored in the database (cosigned by {}) \
                     has another root than this log's at that size: the log forked; refusing \
                     to sign",
                    c.size,
                    c.cosigners
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the stored cosigned checkpoint");
                return;
            }
        }
        if let Err(e) = cosigned::persist(&self.dir, &c) {
            tracing::warn!(error = %e, "cannot store the cosigned checkpoint");
        }
        self.tx.send_replace(Some(Arc::new(c)));
    }

    /// Whether a witness's evidence halted the log.
    pub fn halted(&self) -> bool {
        self.halted
    }

    fn halt(&mut self, reason: String) {
        // `Log::halt` logs the reason.
        self.log.halt(reason);
        self.halted = true;
    }

    /// Runs one round now, bounded by `within`: `serve` calls it before it listens, so a
    /// restored copy of the data directory is caught before it signs anything new.
    pub async fn first_round(&mut self, within: Duration) -> RoundReport {
        if self.halted {
            return RoundReport {
                failed: vec![],
                halted: Some("halted by the stored cosigned checkpoint".into()),
                cosigned: self.tx.borrow().as_ref().map(|c| c.size),
            };
        }
        match tokio::time::timeout(within, self.round()).await {
            Ok(r) => r,
            Err(_) => {
                let size = self.log.size();
                let failed = self
                    .peers
                    .iter()
                    .filter(|p| !p.has_cosigned(size))
                    .map(|p| format!("{}: no answer within {within:?}", p.cfg))
                    .collect();
                RoundReport {
                    failed,
                    halted: None,
                    cosigned: self.tx.borrow().as_ref().map(|c| c.size),
                }
            }
        }
    }

    /// Follows the log until it closes, `closing` becomes true, or a witness proves a fork.
    pub async fn run(mut self, mut closing: watch::Receiver<bool>) {
        while !self.halted && !*closing.borrow() {
            let size = self.log.size();
            if self.follows() {
                self.adopt_from_store();
                let log = self.log.clone();
                tokio::select! {
                    changed = closing.changed() => if changed.is_err() { return },
                    grew = log.wait_beyond(size) => if grew.is_none() { return },
                    // The sequencer stores the cosigned checkpoint a little after the size.
                    _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                continue;
            }
            let now = Instant::now();
            let behind = |p: &&Peer| !p.has_cosigned(size);
            if self
                .peers
                .iter()
                .filter(behind)
                .any(|p| p.retry_at.is_none_or(|t| t <= now))
            {
                self.round().await;
                continue;
            }
            // Everyone due has cosigned this size: wait for a new one, or for a failed
            // witness's next try.
            let retry = self
                .peers
                .iter()
                .filter(behind)
                .filter_map(|p| p.retry_at)
                .min();
            let log = self.log.clone();
            tokio::select! {
                changed = closing.changed() => if changed.is_err() { return },
                grew = log.wait_beyond(size) => if grew.is_none() { return },
                _ = sleep_until(retry) => {}
            }
        }
    }

    /// Sends the latest checkpoint to every witness that is due, concurrently, and publishes
    /// it as soon as the quorum has cosigned it.
    async fn round(&mut self) -> RoundReport {
        let mut report = RoundReport {
            failed: vec![],
            halted: None,
            cosigned: None,
        };
        if self.follows() {
            self.adopt_from_store();
            report.cosigned = self.tx.borrow().as_ref().map(|c| c.size);
            return report;
        }
        let cp = match self.log.latest_checkpoint() {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint to submit to the witnesses");
                // Try again in a moment rather than spin.
                tokio::time::sleep(Duration::from_secs(1)).await;
                report
                    .failed
                    .push(format!("reading the latest checkpoint: {e}"));
                return report;
            }
        };
        let body = match Note::from_bytes(cp.note.as_bytes()) {
            Ok(n) => n.text().to_vec(),
            Err(e) => {
                report.failed.push(format!("the log's own checkpoint: {e}"));
                return report;
            }
        };
        let now = Instant::now();
        // The requests own clones (cheap handles), so the peers can be updated and the
        // checkpoint published while the slower witnesses are still answering.
        let (client, log) = (self.client.clone(), self.log.clone());
        let (client, log, body) = (&client, &log, &body);
        let cp = &cp;
        let mut answers: FuturesUnordered<_> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.has_cosigned(cp.size))
            .filter(|(_, p)| p.retry_at.is_none_or(|t| t <= now))
            .map(|(i, p)| {
                let (cfg, known) = (p.cfg.clone(), p.known);
                async move {
                    let (known, outcome) = submit(client, log, &cfg, known, cp, body).await;
                    (i, known, outcome)
                }
            })
            .collect();
        // Once the quorum has cosigned this checkpoint, a slow witness gets a short grace
        // and is then left for the next round (which learns its size from a 409 if it did
        // cosign), so one slow witness does not hold back the checkpoints the others cosign.
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let next = match deadline {
                None => answers.next().await,
                Some(d) => match tokio::time::timeout_at(d, answers.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::debug!(
                            waiting = answers.len(),
                            "quorum reached; not waiting for slower witnesses"
                        );
                        break;
                    }
                },
            };
            let Some((i, known, outcome)) = next else {
                break;
            };
            let p = &mut self.peers[i];
            p.known = known;
            match outcome {
                Outcome::Cosigned(sig) => {
                    p.cosig = Some((cp.size, sig));
                    p.failures = 0;
                    p.retry_at = None;
                }
                Outcome::Ahead => {
                    p.failures = 0;
                    p.retry_at = None;
                }
                Outcome::Failed(why) => {
                    p.failures = p.failures.saturating_add(1);
                    let wait = backoff(p.failures);
                    p.retry_at = Some(Instant::now() + wait);
                    tracing::warn!(witness = %p.cfg, error = %why, retry_in = ?wait, "witness did not cosign");
                    report.failed.push(format!("{}: {why}", p.cfg));
                }
                Outcome::Fork(reason) => {
                    self.halt(reason.clone());
                    report.halted = Some(reason);
                    return report;
                }
            }
            self.publish_if_quorum(cp).await;
            let reached = self.tx.borrow().as_ref().is_some_and(|c| c.size == cp.size);
            if reached && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + SLOW_WITNESS_GRACE);
            }
        }
        report.cosigned = self.tx.borrow().as_ref().map(|c| c.size);
        report
    }

    /// Publishes (and stores) `cp` with every cosignature of it, once the quorum has it and it
    /// adds something to what is published.
    async fn publish_if_quorum(&mut self, cp: &SignedCheckpoint) {
        let sigs: Vec<(String, Signature)> = self
            .peers
            .iter()
            .filter_map(|p| match &p.cosig {
                Some((size, sig)) if *size == cp.size => {
                    Some((p.cfg.verifier().name().to_string(), sig.clone()))
                }
                _ => None,
            })
            .collect();
        if sigs.len() < self.quorum {
            return;
        }
        let better = match self.tx.borrow().as_ref() {
            None => true,
            Some(c) => c.size < cp.size || (c.size == cp.size && c.cosigners.len() < sigs.len()),
        };
        if !better {
            return;
        }
        let log_key = self.log.checkpointer().verifier_key().to_string();
        let c = match cosigned::combine(&cp.note, &log_key, cp.size, cp.root, &sigs) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(error = %e, "cannot combine the cosignatures");
                return;
            }
        };
        // Served from memory at once; the file only lets a restart serve it before its first
        // round, so failing to write it is worth a warning, not withholding the checkpoint.
        let (dir, stored) = (self.dir.clone(), c.clone());
        match tokio::task::spawn_blocking(move || cosigned::persist(&dir, &stored)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot store the cosigned checkpoint"),
            Err(e) => tracing::warn!(error = %e, "cannot store the cosigned checkpoint"),
        }
        if self.log.shared() {
            let (log, stored) = (self.log.clone(), c.clone());
            match tokio::task::spawn_blocking(move || {
                log.store_cosigned(stored.size, stored.cosigners.len(), &stored.note)
            })
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot share the cosigned checkpoint"),
                Err(e) => tracing::warn!(error = %e, "cannot share the cosigned checkpoint"),
            }
        }
        tracing::debug!(
            size = c.size,
            cosigners = c.cosigners.len(),
            "checkpoint cosigned"
        );
        self.tx.send_replace(Some(c));
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How often a process that does not sign a shared log looks for a newer cosigned checkpoint.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// See [`Submitter::have`].
fn have(log: &Log) -> u64 {
    if log.shared() {
        match log.stored_size() {
            Ok(n) => return n.max(log.size()),
            Err(e) => tracing::warn!(error = %e, "cannot read the log's stored size"),
        }
    }
    log.size()
}

/// How long a round waits for the witnesses still answering once the quorum has cosigned.
const SLOW_WITNESS_GRACE: Duration = Duration::from_millis(500);

/// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// One witness's part of a round: submits `cp` from the size it is believed to hold, learns
/// its real size from a 409 and tries again. Returns what it now knows of the witness's size
/// and how it ended.
async fn submit(
    client: &WitnessClient,
    log: &Log,
    w: &WitnessConfig,
    mut known: Option<u64>,
    cp: &SignedCheckpoint,
    body: &[u8],
) -> (Option<u64>, Outcome) {
    // The size we believe, the size a 409 tells, and one more in case the witness moved on
    // between the two (another submitter of the same log).
    for _ in 0..3 {
        let old = known.unwrap_or(0);
        if old > cp.size {
            let have = have(log);
            if old > have {
                return (known, Outcome::Fork(rolled_back(w, old, have)));
            }
            return (known, Outcome::Ahead);
        }
        let proof = if old == 0 || old == cp.size {
            Vec::new()
        } else {
            match log.consistency_proof(old, cp.size) {
                Ok(p) => p,
                Err(e) => {
                    let why = format!("consistency proof {old} → {}: {e}", cp.size);
                    return (known, Outcome::Failed(why));
                }
            }
        };
        let request = http::request_body(old, &proof, &cp.note);
        let answer = match client.add_checkpoint(w.add_checkpoint_uri(), request).await {
            Ok(a) => a,
            Err(e) => return (known, Outcome::Failed(e)),
        };
        match answer {
            Answer::Cosigned(lines) => {
                known = Some(cp.size);
                return match cosignature_in(w, body, &lines) {
                    Some(sig) => (known, Outcome::Cosigned(sig)),
                    None => (
                        known,
                        Outcome::Failed(format!(
                            "answered 200 without a valid cosignature by {}",
                            w.verifier().verifier_key()
                        )),
                    ),
                };
            }
            // Sent at the witness's own size: a 409 means another root there, whether or not
            // the answer repeats the size.
            Answer::Conflict(Ok(n)) if n == old && n == cp.size => {
                return (Some(n), Outcome::Fork(forked_at(w, n, log.size())));
            }
            Answer::Conflict(Err(_)) if known == Some(old) && old == cp.size && old > 0 => {
                return (known, Outcome::Fork(forked_at(w, old, log.size())));
            }
            Answer::Conflict(Ok(n)) => {
                let have = have(log);
                if n > have {
                    return (Some(n), Outcome::Fork(rolled_back(w, n, have)));
                }
                if n == old {
                    let why = format!("answered 409 with size {n}, the size it was sent");
                    return (Some(n), Outcome::Failed(why));
                }
                if known.is_some_and(|k| n < k) {
                    tracing::warn!(witness = %w, was = ?known, now = n, "the witness went back to a smaller size of this log (its state was reset?)");
                }
                known = Some(n);
            }
            Answer::Conflict(Err(text)) => {
                let why = format!("answered 409 without its size (text/x.tlog.size): {text}");
                return (None, Outcome::Failed(why));
            }
            Answer::Inconsistent if old > 0 => {
                return (
                    known,
                    Outcome::Fork(inconsistent_at(w, old, cp.size, log.size())),
                );
            }
            Answer::Inconsistent => {
                let why = "answered 422 to a checkpoint sent without a proof".to_string();
                return (known, Outcome::Failed(why));
            }
            Answer::Refused(code, text) => {
                let hint = match code.as_u16() {
                    403 => " (the witness does not trust this log's key: add it with --log ORIGIN=VERIFIER_KEY there)",
                    404 => " (the witness does not know this log's origin)",
                    _ => "",
                };
                return (known, Outcome::Failed(format!("{code}{hint}: {text}")));
            }
        }
    }
    let why = "its size kept changing while it was asked".to_string();
    (known, Outcome::Failed(why))
}

/// The witness's cosignature in a 200 answer: a line of its key that verifies over the
/// checkpoint body. Lines of other keys are ignored, as the spec asks.
fn cosignature_in(w: &WitnessConfig, body: &[u8], lines: &[u8]) -> Option<Signature> {
    lines
        .split(|b| *b == b'\n')
        .filter_map(|line| Signature::from_bytes(line).ok())
        .find(|sig| w.verifier().owns(sig) && w.verifier().check(body, sig.signature()).is_some())
}

fn rolled_back(w: &WitnessConfig, theirs: u64, have: u64) -> String {
    format!(
        "{w} has cosigned size {theirs} but this log has only {have} entries: the data \
         directory was restored from an older copy or the log forked; refusing to sign"
    )
}

fn forked_at(w: &WitnessConfig, size: u64, have: u64) -> String {
    format!(
        "{w} has cosigned a different tree of size {size} than this log's (this log has \
         {have} entries, with another root at size {size}): the log forked, e.g. two copies \
         of the data directory were written to; refusing to sign"
    )
}

fn inconsistent_at(w: &WitnessConfig, theirs: u64, sent: u64, have: u64) -> String {
    format!(
        "{w} has cosigned size {theirs} with a root that is not this log's at size {theirs} \
         (it refused the consistency proof {theirs} → {sent}; this log has {have} entries): \
         the log forked, e.g. a restored copy was written to; refusing to sign"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(60), MAX_BACKOFF);
    }
}
