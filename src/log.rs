//! The verifiable append-only log: the heart of claimledger (SPEC §3).
//!
//! Everything here is storage and cryptography; there is no gRPC in this module. The pieces:
//!
//! - [`entry`]: the stored entry envelope (index, prev hash, time, actor, body bytes). The exact
//!   bytes are hashed and served, never re-encoded.
//! - `store`: the sled key layout, reads of entries and stored hashes, the RFC 6962 tree in Go
//!   sumdb's stored-hash-index order, and proofs.
//! - [`checkpoint`]: the Ed25519 key kept in the data directory and C2SP signed checkpoints.
//! - [`checkpoint_file`]: the latest signed checkpoint kept outside sled, so a sled that lost
//!   acknowledged history is refused instead of served shorter.
//! - `writer`: the single writer task that owns every append and commits groups atomically
//!   and durably before acknowledging them.
//! - [`apply`]: the hook through which the domain layer writes its indexes in the same atomic
//!   batch as the entries they derive from.
//! - [`verify`]: the full audit.
//! - [`offline`]: a data directory without a writer, for `verify`, `reindex` and `recover`.
//!
//! [`Log`] ties them together: open (with the start-up check), append, read, prove, tail.

pub mod apply;
pub mod checkpoint;
pub mod checkpoint_file;
pub mod entries;
pub mod entry;
mod error;
mod follow;
pub(crate) mod guard;
pub(crate) mod kv;
mod marks;
pub mod migrate;
pub mod offline;
mod store;
pub mod verify;
mod writer;

pub use apply::{Apply, Ctx, IndexView, NoApply, Rejection};
pub use checkpoint::{Checkpointer, SignedCheckpoint};
pub use entry::{EntryMeta, Envelope};
pub use error::{with_causes, AppendError, LogError};
pub use kv::Val;
pub use offline::{Offline, Recovered, Recovery};
use store::Store;
pub use store::{leaf_hash, CACHE_BYTES};
pub use verify::{VerifyProgress, VerifyReport};
pub use writer::{Receipt, FAILPOINT_ENV};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tlog_tiles::Hash;
use tokio::sync::{mpsc, oneshot, watch};

/// Runs `f`, which reads `store`: a sled panic inside it (sled panics on some damaged data)
/// becomes [`LogError::Unreadable`] naming sled's file, and prints nothing.
pub(crate) fn guarded<T>(
    store: &Store,
    f: impl FnOnce() -> Result<T, LogError>,
) -> Result<T, LogError> {
    guard::catch(f).map_err(|panic| LogError::Unreadable {
        file: store.describe(),
        index: None,
        reason: format!("sled failed reading it: {panic}"),
    })?
}

/// Options for [`Log::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The checkpoint origin (first line of every checkpoint, and the signing key's name). `None`
    /// keeps the origin the directory was created with, or the default for a new directory.
    pub origin: Option<String>,
    /// How many appends may wait for the writer before callers are made to wait.
    pub queue_capacity: usize,
    /// The most entries the writer commits in one group.
    pub max_group: usize,
    /// Whether opening re-hashes every entry (full leaf check) in addition to the O(log n)
    /// stored-root check. On by default: a flipped byte in any entry is caught before serving.
    pub rehash_on_open: bool,
    /// Whether the latest checkpoint is also kept in a file outside sled ([`checkpoint_file`])
    /// and checked on open. On by default; turning it off gives up catching a sled that lost
    /// acknowledged history, and exists only to measure what the file costs.
    pub external_checkpoint: bool,
    /// Where the log is kept: `None` for sled in the data directory (the default), or a
    /// `postgres://` URL (`log::kv::postgres`); the data directory then holds only the signing key
    /// and the query index. The checkpoint file outside sled is a sled matter and not kept.
    pub postgres: Option<String>,
    /// With PostgreSQL: the URL other processes forward writes to while this one sequences
    /// (`api::forward`). `None`: writes sent to others while this one leads are refused there.
    pub advertise: Option<String>,
    /// With PostgreSQL: a streaming replica of the database to read the log from
    /// (`serve --read-store`). While another process sequences, such a process shows only
    /// what the replica has and forwards writes; when none does, it takes the lead and reads
    /// the primary until the replica has caught up with what it committed.
    pub read_postgres: Option<String>,
}

/// The largest entry, in bytes: what a C2SP tlog-tiles entry bundle can hold (a 16-bit length
/// prefix per entry). Large material goes into a log by URL and `content_sha256`, not inline.
pub const MAX_ENTRY: usize = 65_535;

/// Room for the envelope around the body and the actor: index (≤ 11 bytes), previous hash (34),
/// time (≤ 24), and the actor's and body's tags and lengths (≤ 8).
const ENVELOPE_SLACK: usize = 80;

/// The metadata key under which a log kept in PostgreSQL records its verifier key.
pub(crate) const META_VERIFIER_KEY: &[u8] = b"mverifier-key";

/// The origin of a data directory created without one.
pub const DEFAULT_ORIGIN: &str = "claimledger.example/log";

impl Default for Options {
    fn default() -> Self {
        Options {
            origin: None,
            queue_capacity: 4096,
            max_group: 1024,
            rehash_on_open: true,
            external_checkpoint: true,
            postgres: None,
            advertise: None,
            read_postgres: None,
        }
    }
}

/// What the writer measures, read by `/metrics` (cheap lock-free histograms).
#[derive(Clone, Debug)]
pub struct WriterMetrics {
    /// Entries per group the writer commits.
    pub group_size: Histogram,
    /// Seconds a group's durable commit took (`Kv::commit`: on sled the entry files' write and
    /// fdatasyncs, then sled's batch, flush and fdatasync; on PostgreSQL the transaction).
    pub sync_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            group_size: Histogram::new([
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
            sync_seconds: Histogram::new(exponential_buckets(0.000_125, 2.0, 14)),
        }
    }
}

/// What the writer's queue carries.
pub(crate) enum Msg {
    Append(AppendRequest),
    /// Commit everything queued so far, refuse anything later, and exit.
    Stop,
    /// The checkpoint file of the group of this size is written (from the writer's own
    /// checkpoint-file thread, so an idle writer wakes for it as it would for a request).
    FileWritten(u64),
}

/// A request to append one entry.
pub(crate) struct AppendRequest {
    pub actor: String,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<Receipt, AppendError>>,
}

/// The open log. Cheap to clone; all clones share the one writer task.
#[derive(Clone)]
pub struct Log {
    store: Store,
    checkpointer: Arc<Checkpointer>,
    tx: mpsc::Sender<Msg>,
    size_rx: watch::Receiver<u64>,
    failed_rx: watch::Receiver<Option<String>>,
    /// Set once, by [`Log::halt`]; never cleared while the process runs.
    halt_tx: Arc<watch::Sender<Option<String>>>,
    /// The checkpoint of the latest published size, set by the writer just before it
    /// publishes the size: served without reading sled, and by a halted log too.
    published: Arc<std::sync::RwLock<SignedCheckpoint>>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    dir: Arc<PathBuf>,
    metrics: WriterMetrics,
}

impl Log {
    /// Opens (or creates) the log in `dir`, checks it, and starts the writer.
    ///
    /// The start-up check recomputes the root from the stored hashes and compares it with the
    /// last signed checkpoint (and its signature); with [`Options::rehash_on_open`] it also
    /// re-hashes every entry. On a mismatch it refuses with [`LogError::Tampered`] naming the
    /// first bad index. A sled holding less than the checkpoint kept outside it is refused with
    /// [`LogError::Shrunk`] (or [`LogError::Diverged`] for another root at its size), and a file
    /// sled cannot read with [`LogError::Unreadable`], never a panic.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: Options,
        apply: Arc<dyn Apply>,
    ) -> Result<Log, LogError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let mut opts = opts;
        let store = match &opts.postgres {
            None => {
                let store = Store::open(&dir)?;
                if let Some(e) = store.kv().missing_entries() {
                    return Err(e);
                }
                store
            }
            Some(url) => {
                opts.external_checkpoint = false;
                let kv = kv::postgres::PgKv::open(
                    url,
                    opts.advertise.clone(),
                    opts.read_postgres.as_deref(),
                )?;
                Store::over(&dir, kv::Kv::Postgres(Arc::new(kv)))
            }
        };
        // Everything below reads sled, which panics on some damaged data.
        guarded(&store, || {
            Self::open_store(&dir, store.clone(), opts, apply)
        })
    }

    fn open_store(
        dir: &Path,
        store: Store,
        opts: Options,
        apply: Arc<dyn Apply>,
    ) -> Result<Log, LogError> {
        let dir = dir.to_path_buf();
        let recorded = checkpoint_file::origin(&dir)?;
        let origin = store.settle_origin(opts.origin.as_deref(), recorded.as_deref())?;
        // Only a log with nothing in it yet, anywhere, may get a new key.
        // (A database another process opened first has its key recorded: that one is needed.)
        let fresh = store.size()? == 0
            && !store.has_checkpoint()?
            && !checkpoint_file::path(&dir).exists()
            && !store.kv().contains(META_VERIFIER_KEY)?;
        let checkpointer = Arc::new(if fresh {
            Checkpointer::load_or_create(&dir, &origin)?
        } else {
            Checkpointer::load(&dir, &origin)?
        });
        if let Some(pg) = store.kv().postgres() {
            // Processes sharing a database must sign with one key: the first to open an empty
            // database records its verifier key, and every other must hold the same key.
            let recorded =
                pg.settle_meta(META_VERIFIER_KEY, checkpointer.verifier_key().as_bytes())?;
            if recorded != checkpointer.verifier_key().as_bytes() {
                return Err(LogError::Unverified(format!(
                    "{}/log.key is not the key of the log in {} (its verifier key is {}); copy \
                     log.key from a data directory of a process serving this log",
                    dir.display(),
                    pg.describe(),
                    String::from_utf8_lossy(&recorded)
                )));
            }
        }
        let external = opts.external_checkpoint;
        let outside = if external {
            checkpoint_file::read(&dir, &checkpointer)?
        } else {
            None
        };
        if external {
            checkpoint_file::check_size(&dir, &store, outside.as_ref())?;
        }
        store.startup_check(&checkpointer, opts.rehash_on_open)?;
        // Read again, as one: with PostgreSQL another process may have committed since the check
        // (its checkpoint is then verified too).
        let (size, stored) = store.head()?;
        let signed = match stored {
            Some(s) => {
                checkpointer.verify(s.note.as_bytes())?;
                s
            }
            None => checkpointer.sign(size, store.root_at(size, size)?)?,
        };
        if external {
            checkpoint_file::check_root(&dir, &store, outside.as_ref())?;
            checkpoint_file::settle(&dir, &store, outside.as_ref(), &signed)?;
        }
        let published = Arc::new(std::sync::RwLock::new(signed));

        let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
        let metrics = WriterMetrics::default();
        let (size_tx, size_rx) = watch::channel(size);
        let size_tx = Arc::new(size_tx);
        if store.kv().postgres().is_some() {
            follow::spawn(
                store.clone(),
                checkpointer.clone(),
                published.clone(),
                Arc::downgrade(&size_tx),
            )?;
        }
        if store.kv().postgres().is_none() {
            // Only this process's writer changes a sled log's state.
            store.marks().arm(size);
        }
        let (failed_tx, failed_rx) = watch::channel(None);
        let (halt_tx, halt_rx) = watch::channel(None);
        let handle = writer::spawn(
            store.clone(),
            checkpointer.clone(),
            apply,
            rx,
            writer::Signals {
                size_tx,
                failed_tx,
                halt_rx,
                wake: tx.downgrade(),
                published: published.clone(),
                metrics: metrics.clone(),
            },
            writer::Settings {
                max_group: opts.max_group.max(1),
                external_checkpoint: external,
                crash_before_checkpoint_file: writer::failpoint(),
            },
        )?;
        Ok(Log {
            store,
            checkpointer,
            tx,
            size_rx,
            failed_rx,
            halt_tx: Arc::new(halt_tx),
            published,
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
            dir: Arc::new(dir),
            metrics,
        })
    }

    /// What the writer measures (group sizes, sync times).
    pub fn writer_metrics(&self) -> &WriterMetrics {
        &self.metrics
    }

    /// How many appends wait in the writer's queue.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Appends one entry body on behalf of `actor` and waits until it is durable. When the
    /// writer's queue is full this waits for room (backpressure).
    pub async fn append(&self, actor: &str, body: Vec<u8>) -> Result<Receipt, AppendError> {
        let bound = body.len() + actor.len() + ENVELOPE_SLACK;
        if bound > MAX_ENTRY {
            return Err(LogError::TooLarge(format!(
                "the entry would be about {bound} bytes, more than the {MAX_ENTRY} an entry may \
                 hold (a tlog-tiles entry bundle's limit); shorten the text or refer to large \
                 material by URL and content_sha256"
            ))
            .into());
        }
        let (reply, rx) = oneshot::channel();
        let req = AppendRequest {
            actor: actor.to_string(),
            body,
            reply,
        };
        self.tx
            .send(Msg::Append(req))
            .await
            .map_err(|_| AppendError::Log(LogError::Closed))?;
        rx.await.map_err(|_| AppendError::Log(LogError::Closed))?
    }

    /// Stops accepting appends, lets the writer commit everything already queued, and waits for
    /// it to finish. Every clone of this `Log` keeps working for reads; appends after this fail
    /// with [`LogError::Closed`].
    pub async fn shutdown(&self) -> Result<(), LogError> {
        // If the writer is already gone the send fails, which is fine: there is nothing to stop.
        let _ = self.tx.send(Msg::Stop).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            tokio::task::spawn_blocking(move || h.join())
                .await
                .map_err(|e| LogError::Internal(e.to_string()))?
                .map_err(|_| LogError::Internal("writer thread panicked".into()))?;
        }
        Ok(())
    }

    /// Why the writer cannot commit right now (`None` while it can). It is set while a commit
    /// is being retried, cleared when it succeeds, and its sender is dropped when the writer
    /// thread ends.
    pub fn writer_health(&self) -> watch::Receiver<Option<String>> {
        self.failed_rx.clone()
    }

    /// Stops this log from signing anything new, for good (until the process restarts): every
    /// later append fails with [`LogError::Halted`] and no new checkpoint is signed, while
    /// reads of what is already signed go on. For evidence that this history conflicts with
    /// one someone else holds (a witness that cosigned a larger tree, or another root at a size
    /// this log has): signing more would only extend the fork. The first reason is kept.
    pub fn halt(&self, reason: String) {
        self.halt_tx.send_if_modified(|h| {
            if h.is_some() {
                return false;
            }
            tracing::error!(%reason, "the log is halted: it signs nothing new");
            *h = Some(reason);
            true
        });
    }

    /// Why the log is halted ([`Log::halt`]), `None` while it is not; its changes can be
    /// awaited (health turns NOT_SERVING on it).
    pub fn halted(&self) -> watch::Receiver<Option<String>> {
        self.halt_tx.subscribe()
    }

    fn check_not_halted(&self) -> Result<(), LogError> {
        match &*self.halt_tx.borrow() {
            Some(why) => Err(LogError::Halted(why.clone())),
            None => Ok(()),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed tree size.
    pub fn size(&self) -> u64 {
        *self.size_rx.borrow()
    }

    /// The signer of checkpoints (origin and verifier key).
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// The latest published checkpoint: the one the writer signed for the group whose size it
    /// last published (kept in memory). sled's stored checkpoint may be ahead of it while a
    /// group is syncing or its checkpoint file is being written; that one is served only once
    /// the group is published.
    pub fn latest_checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        self.checkpoint_at(self.size())
    }

    /// The checkpoint for `size`: the published one, or for an earlier size one signed now over
    /// the root recomputed from stored hashes (refused while the log is halted).
    /// The size must not exceed the committed size.
    pub fn checkpoint_at(&self, size: u64) -> Result<SignedCheckpoint, LogError> {
        let current = self.size();
        if size > current {
            return Err(LogError::OutOfRange {
                requested: size,
                size: current,
            });
        }
        if let Ok(p) = self.published.read() {
            if p.size == size {
                return Ok(p.clone());
            }
        }
        // The stored one may be that of the size just published, or of a group in flight.
        if current > 0 {
            let latest = self.store.latest_checkpoint()?;
            if latest.size == size {
                return Ok(latest);
            }
        }
        // A halted log re-serves what it signed before but signs nothing new.
        self.check_not_halted()?;
        let root = self.store.root_at(size, current)?;
        self.checkpointer.sign(size, root)
    }

    /// Inclusion proof of entry `index` in the tree of `tree_size` entries.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, LogError> {
        self.store.inclusion_proof(index, tree_size, self.size())
    }

    /// The contents of a C2SP tlog-tiles tile of the published tree: for a hash tile the
    /// tile's hashes, concatenated; for a data tile the entry bundle, each entry as a 16-bit
    /// big-endian length and its exact bytes. `None` while the published tree is too small to
    /// hold the whole tile (at its width).
    pub fn tile(&self, tile: &tlog_tiles::Tile) -> Result<Option<Vec<u8>>, LogError> {
        let size = u128::from(self.size());
        let height = u32::from(tile.height());
        let width = u64::from(tile.width());
        let first = u128::from(tile.level_index()) << height;
        // The leaves the tile needs: its last hash covers 2^(height × level) leaves.
        let shift = height * u32::from(tile.level());
        if width == 0 || shift >= 64 || (first + u128::from(width)) << shift > size {
            return Ok(None);
        }
        if !tile.is_data() {
            let data = tile
                .read_data(&store::Reader(&self.store))
                .map_err(|e| LogError::Corrupt(format!("reading tile {}: {e}", tile.path())))?;
            return Ok(Some(data));
        }
        // `first + width` ≤ size, so both fit in u64.
        let start = tile.level_index() << height;
        let mut bundle = Vec::new();
        let mut next = start;
        for e in self.store.entries(start, start + width) {
            let (index, bytes) = e?;
            if index != next {
                return Err(LogError::Corrupt(format!("entry {next} is missing")));
            }
            let len = u16::try_from(bytes.len()).map_err(|_| {
                LogError::Internal(format!(
                    "entry {index} is {} bytes, more than an entry bundle holds ({MAX_ENTRY})",
                    bytes.len()
                ))
            })?;
            bundle.extend_from_slice(&len.to_be_bytes());
            bundle.extend_from_slice(&bytes);
            next += 1;
        }
        if next != start + width {
            return Err(LogError::Corrupt(format!("entry {next} is missing")));
        }
        Ok(Some(bundle))
    }

    /// Consistency proof from `old_size` to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, LogError> {
        self.store
            .consistency_proof(old_size, new_size, self.size())
    }

    /// The stored bytes of entry `index` (exactly what was hashed), if it is in the published
    /// tree. Entries of a group still syncing are not shown.
    pub fn entry(&self, index: u64) -> Result<Option<Val>, LogError> {
        if index >= self.size() {
            return Ok(None);
        }
        self.store.entry(index)
    }

    /// Entries `[start, end)` of the published tree, in order, with their indexes (`end` is cut
    /// to the published size).
    pub fn entries(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val), LogError>> + Send + '_ {
        self.store.entries(start, end.min(self.size()))
    }

    /// [`Log::entries`] with each entry's leaf hash, as checked when it was read.
    pub fn entries_with_leaf(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val, Hash), LogError>> + Send + '_ {
        self.store.entries_with_leaf(start, end.min(self.size()))
    }

    /// The leaf hash of published entry `index`.
    pub fn leaf_hash_at(&self, index: u64) -> Result<Hash, LogError> {
        let size = self.size();
        if index >= size {
            return Err(LogError::OutOfRange {
                requested: index,
                size,
            });
        }
        self.store.leaf_hash_at(index)
    }

    /// Whether other processes may append to this log too (it is kept in PostgreSQL).
    pub fn shared(&self) -> bool {
        self.store.kv().postgres().is_some()
    }

    /// Whether this process signs the log's new checkpoints: always with sled; with
    /// PostgreSQL, while it holds the sequencer's lead.
    pub fn sequencing(&self) -> bool {
        self.store.kv().postgres().is_none_or(|pg| pg.leading())
    }

    /// The size of the log in its store now: [`Log::size`] with sled; with PostgreSQL, the
    /// primary's head, which may be beyond what this process has published yet.
    pub fn stored_size(&self) -> Result<u64, LogError> {
        match self.store.kv().postgres() {
            Some(pg) => pg.primary_size(),
            None => Ok(self.size()),
        }
    }

    /// Keeps a cosigned checkpoint where the other processes of a shared log read it (a no-op
    /// with sled, which has no other processes).
    pub fn store_cosigned(&self, size: u64, cosigners: usize, note: &str) -> Result<(), LogError> {
        match self.store.kv().postgres() {
            Some(pg) => pg.store_cosigned(size, cosigners, note),
            None => Ok(()),
        }
    }

    /// The cosigned checkpoint kept by [`Log::store_cosigned`] (always `None` with sled).
    pub fn stored_cosigned(&self) -> Result<Option<String>, LogError> {
        match self.store.kv().postgres() {
            Some(pg) => pg.cosigned(),
            None => Ok(None),
        }
    }

    /// The URL of another process that sequences this log, to forward writes to; `None` when
    /// this process sequences or may take the lead (or the log is not shared).
    pub fn sequencer_elsewhere(&self) -> Result<Option<String>, LogError> {
        match self.store.kv().postgres() {
            Some(pg) => pg.sequencer_elsewhere(),
            None => Ok(None),
        }
    }

    /// Read access to the domain indexes (written by the writer through [`Apply`]).
    pub fn indexes(&self) -> IndexView {
        self.store.indexes()
    }

    /// The full audit of this log (the [`verify`] module), while it keeps serving.
    pub fn verify(
        &self,
        progress: &mut dyn FnMut(VerifyProgress),
    ) -> Result<VerifyReport, LogError> {
        verify::verify(&self.store, &self.checkpointer, progress)
    }

    /// The root hash of the tree at `size`.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        self.store.root_at(size, self.size())
    }

    /// Waits until the committed size exceeds `have`, or the log closes (returns `None`).
    pub async fn wait_beyond(&self, have: u64) -> Option<u64> {
        let mut rx = self.size_rx.clone();
        loop {
            let now = *rx.borrow_and_update();
            if now > have {
                return Some(now);
            }
            if rx.changed().await.is_err() {
                let now = *rx.borrow();
                return (now > have).then_some(now);
            }
        }
    }
}

/// Makes `checkpoint` the published one and its size the one readers see, unless a larger one
/// is published already (a follower and the writer may both publish; sizes only grow).
pub(crate) fn publish(
    published: &std::sync::RwLock<SignedCheckpoint>,
    size_tx: &watch::Sender<u64>,
    checkpoint: &SignedCheckpoint,
) {
    let Ok(mut p) = published.write() else {
        return;
    };
    if checkpoint.size < p.size {
        return;
    }
    *p = checkpoint.clone();
    size_tx.send_if_modified(|s| {
        let grew = checkpoint.size > *s;
        if grew {
            *s = checkpoint.size;
        }
        grew
    });
}
