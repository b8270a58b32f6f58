//! The single writer: the only code that appends to the log (**Architecture Invariant**).
//!
//! It runs on its own OS thread because everything it does blocks (sled, fdatasync, signing).
//! Each round it takes every request waiting in its bounded queue (up to `max_group`), and for
//! the whole group:
//!
//! 1. builds each entry envelope (index, prev hash, time, actor, body), hashes it, and lets the
//!    domain layer validate it and stage its index writes ([`Apply`]); a refused entry takes no
//!    index and its caller gets the refusal;
//! 2. computes the stored hashes in sumdb order and the new root, and signs one checkpoint;
//! 3. appends the entries (each with its stored hashes) to the entry files and fdatasyncs them
//!    ([`super::entries`]), then writes domain indexes, size and checkpoint as one atomic sled
//!    batch, flushes, and fdatasyncs sled's data file (PostgreSQL: one transaction for all);
//! 4. hands the checkpoint to the checkpoint-file thread ([`checkpoint_file`]: temp file,
//!    fsync, rename, directory fsync), and goes on with the next group while it writes;
//! 5. once that file is written — after the next group's sled commit, if one was waiting —
//!    answers every request with its receipt (inclusion proof against that checkpoint) and
//!    publishes the new size to tails.
//!
//! So the file write of group N overlaps the work of group N+1, and a receipt's checkpoint is
//! always on disk outside sled before the receipt is sent.
//!
//! If the commit fails, every request of the group gets the error and the in-memory state is
//! left as it was, so nothing unacknowledged is ever reported as written. What happens next
//! depends on the failure ([`SyncFailure`]):
//! - one that cannot have lost anything (no file descriptor to open a blob file with, or the
//!   checkpoint file not written) leaves the group *pending*: applied in sled but not known
//!   durable (or not yet acknowledgeable). The writer retries the sync and the file every
//!   [`RETRY`] and refuses new groups with UNAVAILABLE meanwhile; once the sync succeeds the
//!   pending entries are published like any other, so a client retrying with the same request
//!   id gets the first receipt;
//! - one that may have (a failed apply, flush or fsync) stops the writer for good: health says
//!   why, and only a restart, with its start-up check, may append again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tlog_tiles::{Hash, HashReader};
use tokio::sync::{mpsc, watch};

use super::apply::{Apply, Ctx, Overlay, Rejection};
use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::checkpoint_file;
use super::entry::{pack, EntryMeta, Envelope, ZERO_HASH};
use super::error::{AppendError, LogError};
use super::kv::{GroupWrite, Lead};
use super::store::{self, leaf_hash, Store, SyncFailure};
use super::{AppendRequest, Msg};

/// What an append returns: where the entry is and the proof that it is there.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub index: u64,
    pub leaf_hash: Hash,
    /// A signed checkpoint whose size covers the entry.
    pub checkpoint: SignedCheckpoint,
    /// Inclusion proof of the entry against `checkpoint`.
    pub inclusion_proof: Vec<Hash>,
}

/// The writer's links to the rest of the process, besides its queue.
pub(crate) struct Signals {
    /// The committed size, published after each durable group.
    pub size_tx: Arc<watch::Sender<u64>>,
    /// Why the writer cannot commit (see `Writer::failed_tx`).
    pub failed_tx: watch::Sender<Option<String>>,
    /// Set by `Log::halt`.
    pub halt_rx: watch::Receiver<Option<String>>,
    /// The writer's own queue, for the checkpoint-file thread to wake it (weak, so the queue
    /// still closes when every `Log` is gone).
    pub wake: mpsc::WeakSender<Msg>,
    /// The checkpoint of the published size, replaced just before each publication.
    pub published: Arc<std::sync::RwLock<SignedCheckpoint>>,
    /// Where the writer records group sizes and sync times.
    pub metrics: super::WriterMetrics,
}

/// How the writer works.
pub(crate) struct Settings {
    pub max_group: usize,
    /// Keep the checkpoint file outside sled ([`checkpoint_file`]).
    pub external_checkpoint: bool,
    /// A failpoint for crash tests: abort the process (as kill -9 would stop it) right after
    /// the sled commit that reaches this size is durable, before the checkpoint file is written.
    pub crash_before_checkpoint_file: Option<u64>,
}

/// The environment variable that arms a crash failpoint; for tests only:
/// `crash-before-checkpoint-file:<size>` (the writer) or `indexer-abort-before-commit:<index>`
/// (the query indexer).
pub const FAILPOINT_ENV: &str = "CLAIMLEDGER_FAILPOINT";

/// Reads [`FAILPOINT_ENV`].
pub(crate) fn failpoint() -> Option<u64> {
    let v = std::env::var(FAILPOINT_ENV).ok()?;
    let size = v
        .strip_prefix("crash-before-checkpoint-file:")?
        .parse()
        .ok();
    if size.is_some() {
        tracing::warn!("{FAILPOINT_ENV}={v}: this process will abort on purpose (a crash test)");
    }
    size
}

pub(crate) fn spawn(
    store: Store,
    checkpointer: Arc<Checkpointer>,
    apply: Arc<dyn Apply>,
    rx: mpsc::Receiver<Msg>,
    signals: Signals,
    settings: Settings,
) -> Result<std::thread::JoinHandle<()>, LogError> {
    let size = store.size()?;
    let last = if size == 0 {
        ZERO_HASH
    } else {
        store.leaf_hash_at(size - 1)?
    };
    let store_dir = store.dir().to_path_buf();
    let mut w = Writer {
        store,
        checkpointer,
        apply,
        size,
        last,
        failed: None,
        pending: None,
        failed_tx: signals.failed_tx,
        halt_rx: signals.halt_rx,
        published: signals.published,
        metrics: signals.metrics,
        file: if settings.external_checkpoint {
            Some(FileWriter::spawn(store_dir, signals.wake)?)
        } else {
            None
        },
        crash_at: settings.crash_before_checkpoint_file,
    };
    let size_tx = signals.size_tx;
    std::thread::Builder::new()
        .name("claimledger-writer".into())
        .spawn(move || w.run(rx, size_tx, settings.max_group))
        .map_err(|e| LogError::Internal(format!("spawning the writer: {e}")))
}

struct Writer {
    store: Store,
    checkpointer: Arc<Checkpointer>,
    apply: Arc<dyn Apply>,
    /// Committed size and the leaf hash of the last committed entry.
    size: u64,
    last: Hash,
    /// Set when a commit failed: sled may then hold more than memory says, so the writer
    /// refuses all further appends rather than risk writing an index twice (as neon does on
    /// fsync failure, the process must restart and re-run the start-up check).
    failed: Option<String>,
    /// A group applied to sled whose sync failed in a way that may pass: its size, last leaf
    /// and checkpoint are adopted once a retried sync succeeds.
    pending: Option<Pending>,
    /// Tells the rest of the process (health checks) that the writer cannot commit (while
    /// pending) or has stopped working. It is dropped when the writer thread ends, for
    /// whatever reason.
    failed_tx: watch::Sender<Option<String>>,
    /// Set by `Log::halt`: checked before every group, so nothing is signed once it is.
    halt_rx: watch::Receiver<Option<String>>,
    /// Writes the checkpoint file outside sled, on its own thread (`None`: not kept).
    file: Option<FileWriter>,
    /// See [`Signals::published`].
    published: Arc<std::sync::RwLock<SignedCheckpoint>>,
    crash_at: Option<u64>,
    metrics: super::WriterMetrics,
}

/// The thread that replaces the checkpoint file, so that writing it for one group overlaps the
/// next group's work (validation, hashing, the sled commit and its fdatasync).
struct FileWriter {
    tx: std::sync::mpsc::Sender<(
        SignedCheckpoint,
        std::sync::mpsc::SyncSender<Result<(), LogError>>,
    )>,
}

impl FileWriter {
    fn spawn(dir: std::path::PathBuf, wake: mpsc::WeakSender<Msg>) -> Result<FileWriter, LogError> {
        let mut slots = checkpoint_file::Slots::open(&dir)?;
        let (tx, rx) = std::sync::mpsc::channel::<(
            SignedCheckpoint,
            std::sync::mpsc::SyncSender<Result<(), LogError>>,
        )>();
        std::thread::Builder::new()
            .name("claimledger-checkpoint-file".into())
            .spawn(move || {
                // Ends when the writer drops its sender.
                for (checkpoint, done) in rx {
                    let _ = done.send(slots.write(&checkpoint));
                    // The answer is already there for the writer to take; this only wakes it
                    // if it sleeps on its queue. A closed queue means it is stopping and
                    // takes the answer without being woken.
                    // Never blocking: with the queue full the writer is busy anyway, and it
                    // checks for a finished write before it sleeps (`InFlight::written`).
                    if let Some(tx) = wake.upgrade() {
                        let _ = tx.try_send(Msg::FileWritten(checkpoint.size));
                    }
                }
            })
            .map_err(|e| LogError::Internal(format!("spawning the checkpoint file writer: {e}")))?;
        Ok(FileWriter { tx })
    }

    /// Starts writing `checkpoint`; the answer arrives on the returned receiver.
    fn start(
        &self,
        checkpoint: SignedCheckpoint,
    ) -> std::sync::mpsc::Receiver<Result<(), LogError>> {
        let (done, rx) = std::sync::mpsc::sync_channel(1);
        if let Err(std::sync::mpsc::SendError((_, done))) = self.tx.send((checkpoint, done)) {
            let _ = done.send(Err(LogError::Internal(
                "the checkpoint file writer has stopped".into(),
            )));
        }
        rx
    }
}

/// A group durable in sled whose checkpoint file is being written: its callers are answered,
/// and its size published, once that write ends.
struct InFlight {
    size: u64,
    last: Hash,
    checkpoint: SignedCheckpoint,
    receipts: Vec<(Reply, Result<Receipt, AppendError>)>,
    refused: Vec<(Reply, Rejection)>,
    /// The answer of the checkpoint-file thread.
    file: Option<std::sync::mpsc::Receiver<Result<(), LogError>>>,
    /// That answer, once taken from `file`.
    written: Option<Result<(), LogError>>,
}

impl InFlight {
    /// Whether the checkpoint file write has ended (without waiting).
    fn written(&mut self) -> bool {
        if self.written.is_none() {
            if let Some(rx) = &self.file {
                match rx.try_recv() {
                    Ok(r) => self.written = Some(r),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        self.written = Some(Err(LogError::Internal(
                            "the checkpoint file writer has stopped".into(),
                        )))
                    }
                }
            }
        }
        self.written.is_some()
    }

    /// Whether the checkpoint file is already written, successfully (without waiting).
    fn written_ok(&mut self) -> bool {
        self.written() && matches!(self.written, Some(Ok(())))
    }

    /// Waits for the checkpoint file write to end.
    fn wait(&mut self) -> Result<(), LogError> {
        if let Some(r) = self.written.take() {
            return r;
        }
        match &self.file {
            None => Ok(()),
            Some(rx) => rx.recv().unwrap_or_else(|_| {
                Err(LogError::Internal(
                    "the checkpoint file writer has stopped".into(),
                ))
            }),
        }
    }
}

struct Pending {
    size: u64,
    last: Hash,
    /// The group's checkpoint, written to the checkpoint file once sled's sync succeeds.
    checkpoint: SignedCheckpoint,
    why: String,
}

/// How often a pending group's sync is retried.
const RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a commit failed.
enum CommitFailure {
    /// Applied but not known durable (or its checkpoint file not written), and a later try
    /// may make it so.
    Pending(LogError, Box<SignedCheckpoint>),
    /// Nothing more may be appended by this process.
    Final(LogError),
    /// Not acknowledged, and this process stepped down (PostgreSQL): the next group takes the
    /// lead again and starts from what the store holds.
    Lost(LogError),
}

/// The stored hashes a group works with: those it produced, and those it read from the store
/// (kept, since the group's proofs mostly need the same few older subtree roots again). Also
/// used by `migrate`, which builds groups the same way.
pub(crate) struct GroupReader {
    /// A handle of its own (cheap), so the writer may answer other groups while it is alive.
    store: Store,
    hashes: RefCell<HashMap<u64, Hash>>,
}

impl GroupReader {
    pub(crate) fn new(store: Store) -> Self {
        GroupReader {
            store,
            hashes: RefCell::new(HashMap::new()),
        }
    }

    pub(crate) fn stage(&self, index: u64, h: Hash) {
        self.hashes.borrow_mut().insert(index, h);
    }
}

impl HashReader for GroupReader {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(indexes.len());
        for i in indexes {
            let known = self.hashes.borrow().get(i).copied();
            match known {
                Some(h) => out.push(h),
                None => {
                    let h = store::Reader(&self.store).read_hashes(&[*i])?;
                    if let Some(h) = h.first() {
                        self.stage(*i, *h);
                    }
                    out.extend(h);
                }
            }
        }
        Ok(out)
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Receipt, AppendError>>;

struct Staged {
    reply: Reply,
    index: u64,
    leaf: Hash,
}

impl Writer {
    fn run(
        &mut self,
        mut rx: mpsc::Receiver<Msg>,
        size_tx: Arc<watch::Sender<u64>>,
        max_group: usize,
    ) {
        let mut group = Vec::with_capacity(max_group);
        let mut stopping = false;
        // The previous group, durable in sled, while its checkpoint file is being written.
        let mut inflight: Option<InFlight> = None;
        while !stopping {
            if self.pending.is_some() {
                self.retry_pending(&size_tx);
            }
            let next = if self.pending.is_some() {
                // Keep retrying while nothing arrives, so the writer recovers (and health turns
                // SERVING again) without waiting for a request.
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        std::thread::sleep(RETRY);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else if let Some(prev) = inflight.take_if(|f| f.written()) {
                self.finish(prev, None, &size_tx);
                continue;
            } else {
                // With a file write in flight this waits for whichever comes first: a request,
                // whose group then overlaps the write, or the write's end (`FileWritten`).
                rx.blocking_recv()
            };
            match next {
                Some(Msg::Append(first)) => group.push(first),
                Some(Msg::FileWritten(size)) => {
                    if let Some(prev) = inflight.take_if(|f| f.size == size) {
                        self.finish(prev, None, &size_tx);
                    }
                    continue;
                }
                Some(Msg::Stop) | None => stopping = true,
            }
            while group.len() < max_group && !stopping {
                match rx.try_recv() {
                    Ok(Msg::Append(r)) => group.push(r),
                    // The group in flight is finished by the next commit anyway.
                    Ok(Msg::FileWritten(_)) => {}
                    Ok(Msg::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            if stopping {
                // Refuse new sends, then commit whatever was already queued behind the stop.
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    if let Msg::Append(r) = m {
                        group.push(r);
                    }
                }
            }
            if !group.is_empty() {
                inflight = self.commit_group(std::mem::take(&mut group), inflight.take(), &size_tx);
            }
        }
        if let Some(prev) = inflight.take() {
            self.finish(prev, None, &size_tx);
        }
        // Every request that reached the queue has been answered.
    }

    /// Tries the pending group's sync (and its checkpoint file) again; on success publishes it.
    fn retry_pending(&mut self, size_tx: &watch::Sender<u64>) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        let synced = self
            .store
            .sync_classified()
            .and_then(|()| self.write_checkpoint_file(&p.checkpoint));
        match synced {
            Ok(()) => {
                tracing::info!(
                    size = p.size,
                    "storage recovered: the pending commit is durable"
                );
                self.size = p.size;
                self.last = p.last;
                self.publish(&p.checkpoint, size_tx);
                // A writer stopped for good stays unhealthy even if a pending group recovers.
                if self.failed.is_none() {
                    self.failed_tx.send_replace(None);
                }
            }
            Err(SyncFailure::Retry(e)) => {
                p.why = e.to_string();
                self.pending = Some(p);
            }
            Err(SyncFailure::Final(e) | SyncFailure::Lost(e)) => self.stop_for_good(e.to_string()),
        }
    }

    /// Makes `checkpoint`'s size the one readers see.
    fn publish(&self, checkpoint: &SignedCheckpoint, size_tx: &watch::Sender<u64>) {
        super::publish(&self.published, size_tx, checkpoint);
    }

    /// Continues from what the store holds (this process has just taken the lead): its size,
    /// last leaf hash and checkpoint, published at once.
    fn reload(&mut self, size_tx: &watch::Sender<u64>) -> Result<(), LogError> {
        let (size, stored) = self.store.head()?;
        self.last = if size == 0 {
            ZERO_HASH
        } else {
            self.store.leaf_hash_at(size - 1)?
        };
        self.size = size;
        if let Some(cp) = stored {
            self.checkpointer.verify(cp.note.as_bytes())?;
            self.publish(&cp, size_tx);
        }
        Ok(())
    }

    fn stop_for_good(&mut self, why: String) {
        tracing::error!(%why, "commit failed: the writer stops accepting appends");
        self.failed = Some(why.clone());
        self.failed_tx.send_replace(Some(why));
    }

    /// Ends `prev`: waits for its checkpoint file, then answers its callers and publishes its
    /// size. If the file could not be written the group becomes pending (its entries are
    /// durable in sled, so a later write of the file, or of a later group's, publishes them)
    /// unless `newer` — a later group already durable in sled — takes its place.
    /// Returns whether `prev` was published.
    fn finish(
        &mut self,
        prev: InFlight,
        newer: Option<&InFlight>,
        size_tx: &watch::Sender<u64>,
    ) -> bool {
        let mut prev = prev;
        match prev.wait() {
            Ok(()) => {
                self.publish(&prev.checkpoint, size_tx);
                for (reply, receipt) in prev.receipts {
                    let _ = reply.send(receipt);
                }
                answer_refused(prev.refused, Fate::Committed);
                true
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::warn!(error = %msg, "checkpoint file not written yet; retrying");
                self.failed_tx.send_replace(Some(format!(
                    "the checkpoint file is not written yet, retrying: {msg}"
                )));
                if newer.is_none() && self.pending.is_none() {
                    self.pending = Some(Pending {
                        size: prev.size,
                        last: prev.last,
                        checkpoint: prev.checkpoint,
                        why: msg.clone(),
                    });
                }
                for (reply, _) in prev.receipts {
                    let _ = reply.send(Err(LogError::Unavailable(format!(
                        "the commit is not durable yet ({msg}); retry with the same request_id"
                    ))
                    .into()));
                }
                answer_refused(prev.refused, Fate::Pending(&msg));
                false
            }
        }
    }

    /// Commits `group` to sled; then ends `prev` (whose checkpoint file was written meanwhile)
    /// and starts this group's checkpoint file, returned as the new group in flight.
    fn commit_group(
        &mut self,
        group: Vec<AppendRequest>,
        prev: Option<InFlight>,
        size_tx: &watch::Sender<u64>,
    ) -> Option<InFlight> {
        let halted = self.halt_rx.borrow().clone();
        let refusal = if let Some(why) = halted {
            Some(AppendError::from(LogError::Halted(why)))
        } else if let Some(why) = &self.failed {
            Some(
                LogError::Internal(format!(
                    "the log stopped accepting writes after a failed commit: {why}"
                ))
                .into(),
            )
        } else {
            self.pending.as_ref().map(|p| {
                LogError::Unavailable(format!(
                    "storage is failing ({}); retry with the same request_id",
                    p.why
                ))
                .into()
            })
        };
        if let Some(refusal) = refusal {
            if let Some(prev) = prev {
                self.finish(prev, None, size_tx);
            }
            for req in group {
                let _ = req.reply.send(Err(clone_refusal(&refusal)));
            }
            return None;
        }
        // With PostgreSQL only one process sequences; the one that takes over continues from
        // what the store holds, which other processes may have extended.
        let lead = match self.store.kv().lead() {
            Ok(Lead::Continue) => Ok(()),
            Ok(Lead::Took) => self.reload(size_tx),
            Ok(Lead::Follower(why)) => Err(LogError::Unavailable(why)),
            Err(e) => Err(LogError::Unavailable(format!(
                "cannot take the sequencer's lead: {e}; retry"
            ))),
        };
        if let Err(e) = lead {
            if let Some(prev) = prev {
                self.finish(prev, None, size_tx);
            }
            let refusal = AppendError::from(e);
            for req in group {
                let _ = req.reply.send(Err(clone_refusal(&refusal)));
            }
            return None;
        }
        if self.store.kv().prefetches() {
            // One round trip for the state the group's validation reads, instead of one each.
            let keys: Vec<Vec<u8>> = group
                .iter()
                .flat_map(|r| self.apply.reads(&r.actor, &r.body))
                .map(|k| super::apply::full_key(&k))
                .collect();
            if let Err(e) = self.store.kv().prefetch(keys) {
                // Validation reads them one by one then, and fails there if the store does.
                tracing::debug!(error = %e, "prefetching the group's state failed");
            }
        }
        let mut entries: Vec<(u64, Vec<u8>)> = Vec::with_capacity(group.len());
        let mut overlay = Overlay::new();
        let reader = GroupReader::new(self.store.clone());
        let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
        // Refusals are judged against this group's uncommitted entries too (a retry of a request
        // earlier in the group is a Duplicate of an index not yet committed), so they are
        // answered only once the group's fate is known.
        let mut refused: Vec<(Reply, Rejection)> = Vec::new();
        let mut size = self.size;
        let mut last = self.last;
        let now = now();

        for req in group {
            let env = Envelope {
                index: size,
                prev_hash: last.0.to_vec(),
                recorded_at: Some(now),
                actor: req.actor,
                body: req.body,
            };
            let bytes = env.encode_to_vec();
            if bytes.len() > super::MAX_ENTRY {
                // `Log::append` bounds the envelope from above, so this is only a backstop.
                let _ = req.reply.send(Err(LogError::TooLarge(format!(
                    "the entry would be {} bytes, more than the {} an entry may hold",
                    bytes.len(),
                    super::MAX_ENTRY
                ))
                .into()));
                continue;
            }
            let leaf = leaf_hash(&bytes);
            let meta = EntryMeta {
                index: size,
                leaf_hash: leaf,
                recorded_at: now,
                actor: env.actor,
            };
            let mut ctx = Ctx::new(&self.store, &overlay);
            if let Err(e) = self.apply.apply(&mut ctx, &meta, &env.body) {
                refused.push((req.reply, e));
                continue;
            }
            // Before the group is committed and its size published (`marks`).
            for &slot in ctx.touched() {
                self.store.marks().touch(slot, size);
            }
            let writes = ctx.into_writes();
            let hashes = match tlog_tiles::stored_hashes_for_record_hash(size, leaf, &reader) {
                Ok(h) => h,
                Err(e) => {
                    let _ = req
                        .reply
                        .send(Err(LogError::Corrupt(format!("stored hashes: {e}")).into()));
                    continue;
                }
            };
            overlay.extend(writes);
            let first = tlog_tiles::stored_hash_index(0, size);
            for (i, h) in hashes.iter().enumerate() {
                reader.stage(first + i as u64, *h);
            }
            entries.push((size, pack(&hashes, &bytes)));
            staged.push(Staged {
                reply: req.reply,
                index: size,
                leaf,
            });
            size += 1;
            last = leaf;
        }
        if staged.is_empty() {
            // Nothing to commit; the refusals rest on committed state (or on `prev`, which is
            // durable in sled), so they are answered once `prev` is.
            let published = prev.is_none_or(|p| self.finish(p, None, size_tx));
            let fate = if published {
                Fate::Committed
            } else {
                Fate::Pending("the previous group is not durable yet")
            };
            answer_refused(refused, fate);
            return None;
        }

        // If the previous group's file is already written, answer it now rather than after this
        // group's sled commit.
        let mut prev = prev;
        if let Some(p) = prev.take_if(|p| p.written_ok()) {
            self.finish(p, None, size_tx);
        }
        self.metrics.group_size.observe(staged.len() as f64);
        let result = self.commit(entries, overlay, &reader, size);
        match result {
            Err(CommitFailure::Pending(e, checkpoint)) => {
                // The group before this one is durable in sled whatever happens here.
                if let Some(prev) = prev {
                    self.finish(prev, None, size_tx);
                }
                let msg = e.to_string();
                tracing::warn!(error = %msg, "commit not durable yet; retrying");
                self.failed_tx
                    .send_replace(Some(format!("commit not durable yet, retrying: {msg}")));
                self.pending = Some(Pending {
                    size,
                    last,
                    checkpoint: *checkpoint,
                    why: msg.clone(),
                });
                for s in staged {
                    let _ = s.reply.send(Err(LogError::Unavailable(format!(
                        "the commit is not durable yet ({msg}); retry with the same request_id"
                    ))
                    .into()));
                }
                answer_refused(refused, Fate::Pending(&msg));
                None
            }
            Err(CommitFailure::Lost(e)) => {
                if let Some(prev) = prev {
                    self.finish(prev, None, size_tx);
                }
                let msg = e.to_string();
                tracing::warn!(error = %msg, "group not committed; stepping down");
                for s in staged {
                    let _ = s.reply.send(Err(LogError::Unavailable(format!(
                        "the commit did not complete ({msg}); retry with the same request_id"
                    ))
                    .into()));
                }
                answer_refused(refused, Fate::Pending(&msg));
                None
            }
            Err(CommitFailure::Final(e)) => {
                if let Some(prev) = prev {
                    self.finish(prev, None, size_tx);
                }
                let msg = e.to_string();
                self.stop_for_good(msg.clone());
                for s in staged {
                    let _ = s.reply.send(Err(
                        LogError::Internal(format!("commit failed: {msg}")).into()
                    ));
                }
                answer_refused(refused, Fate::Failed(&msg));
                None
            }
            Ok(checkpoint) => {
                self.size = size;
                self.last = last;
                // The proofs are built from the group's hashes, not re-read from sled: they are
                // the values just committed.
                let receipts = staged
                    .into_iter()
                    .map(|s| {
                        let receipt = tlog_tiles::prove_record(size, s.index, &reader)
                            .map_err(|e| LogError::Corrupt(format!("proof: {e}")))
                            .map(|inclusion_proof| Receipt {
                                index: s.index,
                                leaf_hash: s.leaf,
                                checkpoint: checkpoint.clone(),
                                inclusion_proof,
                            })
                            .map_err(AppendError::from);
                        (s.reply, receipt)
                    })
                    .collect();
                let mut current = InFlight {
                    size,
                    last,
                    checkpoint: checkpoint.clone(),
                    receipts,
                    refused,
                    file: None,
                    written: None,
                };
                if let Some(prev) = prev {
                    if !self.finish(prev, Some(&current), size_tx) {
                        // The file for the group before failed: this group is durable in sled
                        // and covers it, so it becomes the pending one, its callers told to
                        // retry, and the retry writes its checkpoint file.
                        let why = "the checkpoint file of the previous group failed".to_string();
                        self.pending = Some(Pending {
                            size,
                            last,
                            checkpoint,
                            why: why.clone(),
                        });
                        for (reply, _) in current.receipts {
                            let _ = reply.send(Err(LogError::Unavailable(format!(
                                "the commit is not durable yet ({why}); retry with the same \
                                 request_id"
                            ))
                            .into()));
                        }
                        answer_refused(current.refused, Fate::Pending(&why));
                        return None;
                    }
                }
                if self.crash_at.is_some_and(|at| size >= at) {
                    tracing::error!(
                        size,
                        "failpoint: aborting between the sled commit and the checkpoint file"
                    );
                    std::process::abort();
                }
                match &self.file {
                    Some(f) => {
                        current.file = Some(f.start(checkpoint));
                        Some(current)
                    }
                    // No file to wait for: answer at once.
                    None => {
                        self.finish(current, None, size_tx);
                        None
                    }
                }
            }
        }
    }

    /// Signs the group's checkpoint and commits the group to the store, durably.
    fn commit(
        &self,
        entries: Vec<(u64, Vec<u8>)>,
        overlay: Overlay,
        reader: &GroupReader,
        size: u64,
    ) -> Result<SignedCheckpoint, CommitFailure> {
        let root = tlog_tiles::tree_hash(size, reader)
            .map_err(|e| CommitFailure::Final(LogError::Corrupt(format!("tree hash: {e}"))))?;
        let checkpoint = self
            .checkpointer
            .sign(size, root)
            .map_err(CommitFailure::Final)?;
        let started = std::time::Instant::now();
        let synced = self.store.kv().commit(GroupWrite {
            prev_size: self.size,
            entries,
            state: overlay,
            checkpoint: checkpoint.clone(),
        });
        self.metrics
            .sync_seconds
            .observe(started.elapsed().as_secs_f64());
        match synced {
            Ok(()) => Ok(checkpoint),
            Err(SyncFailure::Retry(e)) => Err(CommitFailure::Pending(e, Box::new(checkpoint))),
            Err(SyncFailure::Lost(e)) => Err(CommitFailure::Lost(e)),
            Err(SyncFailure::Final(e)) => Err(CommitFailure::Final(e)),
        }
    }

    /// Writes the checkpoint file outside sled and waits for it (the retry of a pending group).
    /// Every failure may be retried: a failed write leaves the slot it wrote torn at worst, the
    /// other slot whole, and the sled commit before it is already durable.
    fn write_checkpoint_file(&self, checkpoint: &SignedCheckpoint) -> Result<(), SyncFailure> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        f.start(checkpoint.clone())
            .recv()
            .unwrap_or_else(|_| {
                Err(LogError::Internal(
                    "the checkpoint file writer has stopped".into(),
                ))
            })
            .map_err(SyncFailure::Retry)
    }
}

/// The same refusal for every request of a group refused as a whole.
fn clone_refusal(e: &AppendError) -> AppendError {
    match e {
        AppendError::Log(LogError::Halted(why)) => LogError::Halted(why.clone()).into(),
        AppendError::Log(LogError::Unavailable(why)) => LogError::Unavailable(why.clone()).into(),
        AppendError::Log(LogError::Internal(why)) => LogError::Internal(why.clone()).into(),
        other => LogError::Internal(other.to_string()).into(),
    }
}

/// How a group ended, for the requests the domain layer refused in it.
enum Fate<'a> {
    /// Committed and published: the refusals stand.
    Committed,
    /// Not published yet, and a retry may succeed (a pending group): their refusal may rest on
    /// entries not yet acknowledged, so they are told to retry, as the group's own callers are.
    Pending(&'a str),
    /// Failed for good: their refusal may rest on entries that were never written.
    Failed(&'a str),
}

/// Answers the requests the domain layer refused, once their group's fate is known.
fn answer_refused(refused: Vec<(Reply, Rejection)>, fate: Fate<'_>) {
    for (reply, e) in refused {
        let answer = match fate {
            Fate::Committed => AppendError::Rejected(e),
            Fate::Pending(msg) => LogError::Unavailable(format!(
                "the commit is not durable yet ({msg}); retry with the same request_id"
            ))
            .into(),
            Fate::Failed(msg) => LogError::Internal(format!("commit failed: {msg}")).into(),
        };
        let _ = reply.send(Err(answer));
    }
}

fn now() -> pbjson_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
