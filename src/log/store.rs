//! The key layout of the log, and everything computed from it: roots and proofs. The entries
//! and keys live in [`super::kv`]: on sled the entries in their own files ([`super::entries`])
//! and the keys in one sled tree (so that one `apply_batch` commits a whole group's keys
//! atomically), or PostgreSQL's tables, which keep the same entries and keys. Keys, by first
//! byte:
//!
//! | key                              | value                         | written by        |
//! |----------------------------------|-------------------------------|-------------------|
//! | (entry `index`)                  | stored hashes ‖ entry bytes   | writer            |
//! | `e` ‖ be64(index)                | the same, in sled directories from before the entry files (moved out on open) | writer, before |
//! | `l` ‖ leaf hash                  | be64(index), from before the derived index; no longer written or read | writer, before |
//! | `m` ‖ `size`                     | be64(tree size)               | writer            |
//! | `m` ‖ `checkpoint`               | latest signed checkpoint note | writer            |
//! | `m` ‖ `origin`                   | the checkpoint origin         | first open        |
//! | `m` ‖ `checkpoint-file`          | `1`: the dir keeps `checkpoint` | open            |
//! | `m` ‖ `entry-files`              | `1`: the entries are in `entries/` | open         |
//! | `x` ‖ …                          | domain indexes                | writer, via Apply |
//!
//! Stored hashes follow Go's `sumdb/tlog` "stored hash index" order: appending entry `n`
//! produces `1 + trailing_ones(n)` hashes at consecutive stored indexes starting at
//! `stored_hash_index(0, n)` (its leaf hash, then each subtree it completes). They are kept in
//! entry `n`'s own value ([`super::entry::pack`]), so stored hash `i` = (level `l`, node `k`)
//! is hash `l` of entry `(k + 1)·2^l − 1`, the entry that completed that subtree. An append
//! writes its entry with its hashes, and any root or proof reads O(log n) entries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tlog_tiles::{Hash, HashReader};

use super::apply::IndexView;
use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::entry::{packed_hash, unpack};
use super::error::LogError;
use super::kv::{Kv, SledKv, Val};
use super::marks::Marks;
use super::DEFAULT_ORIGIN;

pub(crate) const ENTRY: u8 = b'e';
pub(crate) const META_SIZE: &[u8] = b"msize";
pub(crate) const META_CHECKPOINT: &[u8] = b"mcheckpoint";
pub(crate) const META_ORIGIN: &[u8] = b"morigin";
pub(crate) const META_CHECKPOINT_FILE: &[u8] = b"mcheckpoint-file";
pub(crate) const META_ENTRY_FILES: &[u8] = b"mentry-files";

pub(crate) fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

pub(crate) fn be64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// sled's page cache. It holds the ledger's state only (the entries are in their own files,
/// read through the kernel's page cache), and reads of claims fill it whatever its size, so it
/// bounds the server's memory. With 24 MiB a server of 1.0–1.2 million claims held 224–227 MiB
/// after writes and then reads (peak 240–241), against 270–276 MiB (peak 288–289) with 48 MiB,
/// at the same call rates within the machine's noise (BENCHMARKS.md, "The entries in files of
/// their own").
pub const CACHE_BYTES: u64 = 24 * 1024 * 1024;

/// Stored hashes at this level and above (subtrees of 8+ entries, one per 8 entries) are
/// kept in memory once read: every proof and root needs a handful of them, they never change,
/// and reading one means reading a whole entry value from the entry files.
const CACHED_LEVEL: u8 = 3;

/// The log's storage: the key space of [`super::kv`], and everything computed from it. Cheap
/// to clone.
#[derive(Clone)]
pub struct Store {
    /// The data directory (the signing key, the query index; sled in its `sled/`).
    dir: Arc<PathBuf>,
    kv: Kv,
    upper: Arc<RwLock<HashMap<u64, Hash>>>,
    /// What the writer's entries touched, for readers that keep answers (`super::marks`).
    marks: Arc<Marks>,
}

/// Why [`Kv::commit`] or [`Store::sync_classified`] failed.
#[derive(Debug)]
pub(crate) enum SyncFailure {
    /// Nothing was lost; the same sync may succeed once the cause (no free file descriptor,
    /// no memory) goes away.
    Retry(LogError),
    /// Durability of what was applied cannot be known any more.
    Final(LogError),
    /// Not acknowledged, and this process no longer sequences (PostgreSQL: fenced, or the
    /// connection failed): the group may or may not be stored, and the next group starts from
    /// what the store holds.
    Lost(LogError),
}

impl SyncFailure {
    pub(crate) fn into_error(self) -> LogError {
        match self {
            SyncFailure::Retry(e) | SyncFailure::Final(e) | SyncFailure::Lost(e) => e,
        }
    }
}

impl Store {
    /// Opens the sled database under `dir/sled`.
    pub fn open(dir: &Path) -> Result<Store, LogError> {
        Ok(Self::over(dir, Kv::Sled(SledKv::open(dir, CACHE_BYTES)?)))
    }

    /// The log kept by `kv`, with its data directory `dir`.
    pub(crate) fn over(dir: &Path, kv: Kv) -> Store {
        Store {
            dir: Arc::new(dir.to_path_buf()),
            kv,
            upper: Arc::new(RwLock::new(HashMap::new())),
            marks: Arc::new(Marks::new()),
        }
    }

    pub(crate) fn marks(&self) -> &Marks {
        &self.marks
    }

    /// Where the log is kept, for messages: sled's data file, or the database.
    pub fn describe(&self) -> String {
        self.kv.describe()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine.
    pub(crate) fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Whether this directory has kept the checkpoint file outside sled (see
    /// [`super::checkpoint_file`]).
    pub(crate) fn keeps_checkpoint_file(&self) -> Result<bool, LogError> {
        self.kv.contains(META_CHECKPOINT_FILE)
    }

    /// Records, durably, that this directory keeps the checkpoint file.
    pub(crate) fn mark_checkpoint_file(&self) -> Result<(), LogError> {
        if !self.keeps_checkpoint_file()? {
            self.kv.put_meta(META_CHECKPOINT_FILE, b"1")?;
        }
        Ok(())
    }

    /// Read-only access to the domain indexes.
    pub fn indexes(&self) -> IndexView {
        IndexView::new(self.clone())
    }

    /// Makes everything applied so far durable (see [`SledKv::sync`]).
    pub fn sync(&self) -> Result<(), LogError> {
        self.sync_classified().map_err(SyncFailure::into_error)
    }

    /// [`Store::sync`], telling a failure that may be retried from one that may not.
    pub(crate) fn sync_classified(&self) -> Result<(), SyncFailure> {
        self.kv.sync_classified()
    }

    /// The origin recorded in the store, if any (read only).
    pub fn stored_origin(&self) -> Result<Option<String>, LogError> {
        Ok(self
            .kv
            .get(META_ORIGIN)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Settles the origin on open: the one stored; else the one of the checkpoint kept outside
    /// sled (`outside`: a sled that lost everything must still be checked against that file
    /// under its own origin, not a default one); else the requested one on a new log.
    pub fn settle_origin(
        &self,
        requested: Option<&str>,
        outside: Option<&str>,
    ) -> Result<String, LogError> {
        let stored = self.stored_origin()?;
        match (stored.as_deref().or(outside), requested) {
            (Some(s), Some(r)) if s != r => Err(LogError::OriginMismatch {
                stored: s.to_string(),
                requested: r.to_string(),
            }),
            (Some(s), _) => {
                if stored.is_none() {
                    self.kv.put_meta(META_ORIGIN, s.as_bytes())?;
                }
                Ok(s.to_string())
            }
            (None, r) => {
                let origin = r.unwrap_or(DEFAULT_ORIGIN).to_string();
                self.kv.put_meta(META_ORIGIN, origin.as_bytes())?;
                Ok(origin)
            }
        }
    }

    /// The committed tree size.
    pub fn size(&self) -> Result<u64, LogError> {
        match self.kv.get(META_SIZE)? {
            None => Ok(0),
            Some(v) => be64(&v).ok_or_else(|| LogError::Corrupt("tree size".into())),
        }
    }

    /// Whether any checkpoint was ever committed.
    pub fn has_checkpoint(&self) -> Result<bool, LogError> {
        self.kv.contains(META_CHECKPOINT)
    }

    /// The committed size and the checkpoint committed with it, read together: with
    /// PostgreSQL another process may commit between two separate reads.
    pub fn head(&self) -> Result<(u64, Option<SignedCheckpoint>), LogError> {
        if let Some(pg) = self.kv.postgres() {
            let (size, note) = pg.head()?;
            return Ok((size, note.map(parse_checkpoint).transpose()?));
        }
        let size = self.size()?;
        let cp = if self.has_checkpoint()? {
            Some(self.latest_checkpoint()?)
        } else {
            None
        };
        Ok((size, cp))
    }

    /// The latest signed checkpoint as committed with the last group.
    pub fn latest_checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        let note = self
            .kv
            .get(META_CHECKPOINT)?
            .ok_or_else(|| LogError::Corrupt("no checkpoint stored".into()))?;
        let text = String::from_utf8(note.to_vec())
            .map_err(|_| LogError::Corrupt("checkpoint is not UTF-8".into()))?;
        parse_checkpoint(text)
    }

    /// The stored bytes of entry `index` (exactly what was hashed). Not cut to the published
    /// size: during a commit the entry files already hold the group being committed
    /// (`Log::entry` cuts).
    pub fn entry(&self, index: u64) -> Result<Option<Val>, LogError> {
        match self.kv.entry(index)? {
            None => Ok(None),
            Some(v) => entry_part(index, v).map(|(bytes, _)| Some(bytes)),
        }
    }

    /// Packed entry values `[start, end)` in order, with their indexes (for the audit).
    pub(crate) fn packed(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val), LogError>> + Send + '_ {
        self.kv.entries(start, end)
    }

    /// Entries `[start, end)` in order, with their indexes.
    pub fn entries(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val), LogError>> + Send + '_ {
        self.entries_with_leaf(start, end)
            .map(|e| e.map(|(i, bytes, _)| (i, bytes)))
    }

    /// Entries `[start, end)` in order, with their indexes and leaf hashes (each entry is
    /// hashed once, to check it, and that hash is the one given).
    pub fn entries_with_leaf(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val, Hash), LogError>> + Send + '_ {
        self.packed(start, end).map(|kv| {
            let (i, v) = kv?;
            let (bytes, leaf) = entry_part(i, v)?;
            Ok((i, bytes, leaf))
        })
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash_at(&self, index: u64) -> Result<Hash, LogError> {
        let idx = tlog_tiles::stored_hash_index(0, index);
        let mut v = self.read(&[idx])?;
        v.pop()
            .ok_or_else(|| LogError::Corrupt(format!("no leaf hash for {index}")))
    }

    fn read(&self, indexes: &[u64]) -> Result<Vec<Hash>, LogError> {
        indexes.iter().map(|&i| self.read_one(i)).collect()
    }

    fn read_one(&self, i: u64) -> Result<Hash, LogError> {
        let (level, k) = tlog_tiles::split_stored_hash_index(i);
        let cached = level >= CACHED_LEVEL;
        if cached {
            if let Some(h) = self.upper.read().ok().and_then(|m| m.get(&i).copied()) {
                return Ok(h);
            }
        }
        // The subtree (level, k) is completed by its last leaf, which stored its hash.
        let n = (k + 1)
            .checked_shl(u32::from(level))
            .and_then(|x| x.checked_sub(1))
            .ok_or_else(|| LogError::Corrupt(format!("stored hash {i} out of range")))?;
        let v = self
            .kv
            .entry(n)?
            .ok_or_else(|| LogError::Corrupt(format!("stored hash {i} missing")))?;
        let h = packed_hash(&v, usize::from(level)).ok_or_else(|| LogError::Tampered {
            index: n,
            reason: "stored entry is malformed".into(),
        })?;
        if cached {
            if let Ok(mut m) = self.upper.write() {
                m.insert(i, h);
            }
        }
        Ok(h)
    }

    fn check_size(&self, size: u64, current: u64) -> Result<(), LogError> {
        if size > current {
            return Err(LogError::OutOfRange {
                requested: size,
                size: current,
            });
        }
        Ok(())
    }

    /// The root of the tree at `size` (≤ `current`), from stored hashes.
    pub fn root_at(&self, size: u64, current: u64) -> Result<Hash, LogError> {
        self.check_size(size, current)?;
        tlog_tiles::tree_hash(size, &Reader(self)).map_err(proof_error)
    }

    /// Inclusion proof for entry `index` in the tree of `tree_size` entries.
    pub fn inclusion_proof(
        &self,
        index: u64,
        tree_size: u64,
        current: u64,
    ) -> Result<Vec<Hash>, LogError> {
        self.check_size(tree_size, current)?;
        if index >= tree_size {
            return Err(LogError::OutOfRange {
                requested: index,
                size: tree_size,
            });
        }
        tlog_tiles::prove_record(tree_size, index, &Reader(self)).map_err(proof_error)
    }

    /// Consistency proof from `old` to `new` entries.
    pub fn consistency_proof(
        &self,
        old: u64,
        new: u64,
        current: u64,
    ) -> Result<Vec<Hash>, LogError> {
        self.check_size(old, current)?;
        self.check_size(new, current)?;
        if old > new {
            return Err(LogError::InvalidArgument(format!(
                "old size {old} is larger than new size {new}"
            )));
        }
        if old == 0 || old == new {
            // RFC 9162 §2.1.4: the proof between equal sizes, or from the empty tree, is empty.
            return Ok(Vec::new());
        }
        tlog_tiles::prove_tree(new, old, &Reader(self)).map_err(proof_error)
    }

    /// The start-up check: the stored root must match the last signed checkpoint, whose
    /// signature must verify; with `rehash`, every entry is re-hashed and the tree rebuilt from
    /// the entries must match too. A mismatch names the first bad index.
    pub(crate) fn startup_check(&self, cp: &Checkpointer, rehash: bool) -> Result<(), LogError> {
        let (size, stored) = self.head()?;
        let Some(stored) = stored else {
            if size == 0 {
                return Ok(());
            }
            return Err(LogError::Corrupt(format!(
                "{size} entries are stored but no checkpoint"
            )));
        };
        cp.verify(stored.note.as_bytes())?;
        if stored.size != size {
            return Err(LogError::Corrupt(format!(
                "checkpoint size {} differs from stored size {size}",
                stored.size
            )));
        }
        let root = self.root_at(size, size);
        let quick_ok = matches!(&root, Ok(r) if *r == stored.root);
        if quick_ok && !rehash {
            return Ok(());
        }
        // Re-hash everything (or find what differs): the full audit names the first bad index.
        let report = super::verify::verify_sled(self, cp)?;
        match report.first_bad_index {
            Some(index) => Err(LogError::Tampered {
                index,
                reason: report.error,
            }),
            None if report.ok() && quick_ok => Ok(()),
            None => Err(LogError::Corrupt(format!(
                "stored root does not match the signed checkpoint: {}",
                if report.error.is_empty() {
                    "stored subtree hashes differ"
                } else {
                    &report.error
                }
            ))),
        }
    }
}

/// A stored checkpoint note as a [`SignedCheckpoint`] (its signature is checked by callers
/// that need to: the start-up check, followers).
fn parse_checkpoint(text: String) -> Result<SignedCheckpoint, LogError> {
    let body = text.split("\n\n").next().unwrap_or_default();
    let cp = tlog_tiles::Checkpoint::from_bytes(format!("{body}\n").as_bytes())
        .map_err(|_| LogError::Corrupt("stored checkpoint is malformed".into()))?;
    Ok(SignedCheckpoint {
        size: cp.size(),
        root: *cp.hash(),
        note: text,
    })
}

/// Reads stored hashes for `tlog_tiles`.
pub(crate) struct Reader<'a>(pub &'a Store);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .read(indexes)
            .map_err(|e| tlog_tiles::Error::InvalidInput(e.to_string()))
    }
}

/// The entry bytes of a packed value, checked against the leaf hash stored with them: the
/// entry files carry no checksum of their own, so a changed byte in `data`, or a changed end
/// offset in `ends` that still looks in order, is refused here instead of served (the audit
/// reads the packed values itself, and hashes them once).
fn entry_part(index: u64, v: Val) -> Result<(Val, Hash), LogError> {
    let tampered = |reason: &str| LogError::Tampered {
        index,
        reason: reason.into(),
    };
    let (_, at) = unpack(&v).ok_or_else(|| tampered("stored entry is malformed"))?;
    let bytes = v.subslice(at, v.len() - at);
    let leaf = leaf_hash(&bytes);
    if packed_hash(&v, 0) != Some(leaf) {
        return Err(tampered(
            "stored entry does not match its leaf hash (the entries were changed or damaged)",
        ));
    }
    Ok((bytes, leaf))
}

fn proof_error(e: tlog_tiles::Error) -> LogError {
    LogError::Corrupt(format!("reading the tree: {e}"))
}
