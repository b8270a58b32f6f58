//! The sled layout of the log, and everything computed from it: roots and proofs.
//!
//! One sled tree holds everything, so that one `apply_batch` commits a whole group atomically
//! (a sled batch covers a single tree). Keys, by first byte:
//!
//! | key                              | value                         | written by        |
//! |----------------------------------|-------------------------------|-------------------|
//! | `e` ‖ be64(index)                | stored hashes ‖ entry bytes   | writer            |
//! | `l` ‖ leaf hash                  | be64(index)                   | writer            |
//! | `m` ‖ `size`                     | be64(tree size)               | writer            |
//! | `m` ‖ `checkpoint`               | latest signed checkpoint note | writer            |
//! | `m` ‖ `origin`                   | the checkpoint origin         | first open        |
//! | `m` ‖ `checkpoint-file`          | `1`: the dir keeps `checkpoint` | open            |
//! | `x` ‖ …                          | domain indexes                | writer, via Apply |
//!
//! Stored hashes follow Go's `sumdb/tlog` "stored hash index" order: appending entry `n`
//! produces `1 + trailing_ones(n)` hashes at consecutive stored indexes starting at
//! `stored_hash_index(0, n)` (its leaf hash, then each subtree it completes). They are kept in
//! entry `n`'s own value ([`super::entry::pack`]), so stored hash `i` = (level `l`, node `k`)
//! is hash `l` of entry `(k + 1)·2^l − 1`, the entry that completed that subtree. An append
//! writes one key for its entry and hashes (plus its leaf-hash index key), and any root or proof
//! reads O(log n) values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};
use tlog_tiles::{Hash, HashReader};

use super::apply::IndexView;
use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::entry::{packed_hash, unpack};
use super::error::LogError;
use super::DEFAULT_ORIGIN;

pub(crate) const ENTRY: u8 = b'e';
pub(crate) const META_SIZE: &[u8] = b"msize";
pub(crate) const META_CHECKPOINT: &[u8] = b"mcheckpoint";
pub(crate) const META_ORIGIN: &[u8] = b"morigin";
pub(crate) const META_CHECKPOINT_FILE: &[u8] = b"mcheckpoint-file";

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

/// sled's page cache. Scans (the audit, the start-up re-hash) fill it whatever its size, so it
/// bounds the server's memory; the hot data (the tail of the log, the ledger's sources, the
/// upper tree levels kept separately below) is far smaller than a million-entry log.
pub const CACHE_BYTES: u64 = 96 * 1024 * 1024;

/// Stored hashes at this level and above (subtrees of 8+ entries, one per 8 entries) are
/// kept in memory once read: every proof and root needs a handful of them, they never change,
/// and reading one from sled means fetching a whole entry value.
const CACHED_LEVEL: u8 = 3;

/// How long [`Store::open`] waits for sled's lock on its data file, and how often it tries.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether sled failed to open because another handle holds the lock on its data file.
fn is_lock_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// The log's storage. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The data directory (sled lives in its `sled/`).
    dir: Arc<PathBuf>,
    db: sled::Db,
    tree: sled::Tree,
    data_file: Arc<PathBuf>,
    /// sled's data file, opened once and kept for fdatasync: opening it per commit made every
    /// commit fail once the process ran out of file descriptors.
    data: Arc<std::fs::File>,
    upper: Arc<RwLock<HashMap<u64, Hash>>>,
    /// sled blob files already fsynced (see [`Store::sync`]).
    synced_blobs: Arc<Mutex<std::collections::HashSet<std::ffi::OsString>>>,
}

/// Why [`Store::sync_classified`] failed.
#[derive(Debug)]
pub(crate) enum SyncFailure {
    /// Nothing was lost; the same sync may succeed once the cause (no free file descriptor,
    /// no memory) goes away.
    Retry(LogError),
    /// Durability of what was applied cannot be known any more.
    Final(LogError),
}

impl SyncFailure {
    pub(crate) fn into_error(self) -> LogError {
        match self {
            SyncFailure::Retry(e) | SyncFailure::Final(e) => e,
        }
    }
}

impl Store {
    /// Opens the sled database under `dir/sled`.
    pub fn open(dir: &Path) -> Result<Store, LogError> {
        let path = dir.join("sled");
        let unreadable = |reason: String| LogError::Unreadable {
            file: path.join("db").display().to_string(),
            index: None,
            reason,
        };
        // sled panics on some damaged files rather than returning an error.
        let open = || {
            super::guard::catch(|| {
                sled::Config::new()
                    .path(&path)
                    .cache_capacity(CACHE_BYTES)
                    .mode(sled::Mode::HighThroughput)
                    .open()
            })
            .map_err(|panic| unreadable(format!("sled failed opening it: {panic}")))
        };
        // sled locks its data file while a handle is open, and after the last handle of a
        // database closed its I/O threads may hold the file for a few more milliseconds: a
        // reopen right after a close (tests, an offline command right after a stop) waits a
        // little for the lock before saying the directory is in use.
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            match open()? {
                Err(sled::Error::Io(e)) if is_lock_busy(&e) && waited < LOCK_WAIT => {
                    std::thread::sleep(LOCK_RETRY);
                    waited += LOCK_RETRY;
                }
                Err(sled::Error::Io(e)) if is_lock_busy(&e) => {
                    return Err(LogError::Io {
                        path: path.display().to_string(),
                        source: std::io::Error::new(
                            e.kind(),
                            "in use by another process (sled holds a lock on its data file)",
                        ),
                    })
                }
                Err(sled::Error::Io(e)) => return Err(LogError::io(&path, e)),
                Err(e) => return Err(unreadable(format!("sled cannot open it: {e}"))),
                Ok(db) => break db,
            }
        };
        let tree: sled::Tree = (*db).clone();
        // sled 0.34 keeps all pages in one file, `db`, inside its directory, and never replaces
        // it, so this handle stays the file sled writes.
        let data_file = path.join("db");
        let data = std::fs::File::open(&data_file).map_err(|e| LogError::io(&data_file, e))?;
        Ok(Store {
            dir: Arc::new(dir.to_path_buf()),
            db,
            tree,
            data_file: Arc::new(data_file),
            data: Arc::new(data),
            upper: Arc::new(RwLock::new(HashMap::new())),
            synced_blobs: Arc::new(Mutex::new(std::collections::HashSet::new())),
        })
    }

    /// sled's data file (for naming it in errors).
    pub fn data_file(&self) -> &Path {
        &self.data_file
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this directory has kept the checkpoint file outside sled (see
    /// [`super::checkpoint_file`]).
    pub(crate) fn keeps_checkpoint_file(&self) -> Result<bool, LogError> {
        Ok(self.tree.contains_key(META_CHECKPOINT_FILE)?)
    }

    /// Records, durably, that this directory keeps the checkpoint file.
    pub(crate) fn mark_checkpoint_file(&self) -> Result<(), LogError> {
        if !self.keeps_checkpoint_file()? {
            self.tree.insert(META_CHECKPOINT_FILE, &b"1"[..])?;
            self.sync()?;
        }
        Ok(())
    }

    /// The one sled tree (the writer's batches, the offline `reindex`).
    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// Read-only access to the domain indexes.
    pub fn indexes(&self) -> IndexView {
        IndexView::new(self.tree.clone())
    }

    /// Makes everything applied so far durable: sled's flush, then an fdatasync of its data
    /// file (sled 0.34's flush uses sync_file_range, which does not reach the disk; sled #1452).
    ///
    /// sled also writes any log message larger than a quarter segment (~128 KiB: a big value,
    /// or a whole node when it rewrites one) to its own file under `blobs/`, without fsync, and
    /// skips a missing blob on recovery. So every blob file not yet synced is fsynced too,
    /// then the directory.
    pub fn sync(&self) -> Result<(), LogError> {
        self.sync_classified().map_err(SyncFailure::into_error)
    }

    /// [`Store::sync`], telling a failure that may be retried from one that may not.
    ///
    /// A failed flush or fsync is final: after a failed fsync Linux may have dropped the dirty
    /// pages, so a later fsync that succeeds proves nothing (the "fsyncgate" lesson that neon
    /// and PostgreSQL follow). A failure to *open* or list a blob file (out of file
    /// descriptors or memory) happens before any fsync of it, and leaves its pages intact, so
    /// trying again later is sound.
    pub(crate) fn sync_classified(&self) -> Result<(), SyncFailure> {
        self.db.flush().map_err(|e| SyncFailure::Final(e.into()))?;
        self.data
            .sync_data()
            .map_err(|e| SyncFailure::Final(LogError::io(&self.data_file, e)))?;
        self.sync_blobs()
    }

    fn sync_blobs(&self) -> Result<(), SyncFailure> {
        let retry = |path: &Path, e: std::io::Error| SyncFailure::Retry(LogError::io(path, e));
        let fatal = |path: &Path, e: std::io::Error| SyncFailure::Final(LogError::io(path, e));
        let Some(dir) = self.data_file.parent().map(|d| d.join("blobs")) else {
            return Ok(());
        };
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(retry(&dir, e)),
        };
        let mut synced = self
            .synced_blobs
            .lock()
            .map_err(|_| SyncFailure::Final(LogError::Internal("blob set lock poisoned".into())))?;
        let mut present = std::collections::HashSet::new();
        let mut new = false;
        for item in listing {
            let item = item.map_err(|e| retry(&dir, e))?;
            let name = item.file_name();
            if !synced.contains(&name) {
                let path = item.path();
                match std::fs::File::open(&path) {
                    Ok(f) => f.sync_all().map_err(|e| fatal(&path, e))?,
                    // sled removes blobs it no longer needs; one gone since the listing is fine.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(retry(&path, e)),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            let d = std::fs::File::open(&dir).map_err(|e| retry(&dir, e))?;
            d.sync_all().map_err(|e| fatal(&dir, e))?;
        }
        *synced = present;
        Ok(())
    }

    /// The origin recorded in sled, if any (read only).
    pub fn stored_origin(&self) -> Result<Option<String>, LogError> {
        Ok(self
            .tree
            .get(META_ORIGIN)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Settles the origin on open: the one stored in sled; else the one of the checkpoint kept
    /// outside sled (`outside`: a sled that lost everything must still be checked against that
    /// file under its own origin, not a default one); else the requested one on a new directory.
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
                    self.tree.insert(META_ORIGIN, s.as_bytes())?;
                    self.sync()?;
                }
                Ok(s.to_string())
            }
            (None, r) => {
                let origin = r.unwrap_or(DEFAULT_ORIGIN).to_string();
                self.tree.insert(META_ORIGIN, origin.as_bytes())?;
                self.sync()?;
                Ok(origin)
            }
        }
    }

    /// The committed tree size.
    pub fn size(&self) -> Result<u64, LogError> {
        match self.tree.get(META_SIZE)? {
            None => Ok(0),
            Some(v) => be64(&v).ok_or_else(|| LogError::Corrupt("tree size".into())),
        }
    }

    /// Whether any checkpoint was ever committed.
    pub fn has_checkpoint(&self) -> Result<bool, LogError> {
        Ok(self.tree.contains_key(META_CHECKPOINT)?)
    }

    /// The latest signed checkpoint as committed with the last group.
    pub fn latest_checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        let note = self
            .tree
            .get(META_CHECKPOINT)?
            .ok_or_else(|| LogError::Corrupt("no checkpoint stored".into()))?;
        let text = String::from_utf8(note.to_vec())
            .map_err(|_| LogError::Corrupt("checkpoint is not UTF-8".into()))?;
        let body = text.split("\n\n").next().unwrap_or_default();
        let cp = tlog_tiles::Checkpoint::from_bytes(format!("{body}\n").as_bytes())
            .map_err(|_| LogError::Corrupt("stored checkpoint is malformed".into()))?;
        Ok(SignedCheckpoint {
            size: cp.size(),
            root: *cp.hash(),
            note: text,
        })
    }

    /// The stored bytes of entry `index` (exactly what was hashed).
    pub fn entry(&self, index: u64) -> Result<Option<sled::IVec>, LogError> {
        match self.tree.get(key(ENTRY, index))? {
            None => Ok(None),
            Some(v) => entry_part(index, v).map(Some),
        }
    }

    /// Packed entry values `[start, end)` in order, with their indexes (for the audit).
    pub(crate) fn packed(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), LogError>> + '_ {
        self.tree
            .range(key(ENTRY, start)..key(ENTRY, end))
            .map(|kv| {
                let (k, v) = kv?;
                let idx = be64(&k[1..]).ok_or_else(|| LogError::Corrupt("entry key".into()))?;
                Ok((idx, v))
            })
    }

    /// Entries `[start, end)` in order, with their indexes.
    pub fn entries(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), LogError>> + '_ {
        self.packed(start, end)
            .map(|kv| kv.and_then(|(i, v)| Ok((i, entry_part(i, v)?))))
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
            .tree
            .get(key(ENTRY, n))?
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
        let size = self.size()?;
        if size == 0 && self.tree.get(META_CHECKPOINT)?.is_none() {
            return Ok(());
        }
        let stored = self.latest_checkpoint()?;
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

/// Reads stored hashes for `tlog_tiles`.
pub(crate) struct Reader<'a>(pub &'a Store);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .read(indexes)
            .map_err(|e| tlog_tiles::Error::InvalidInput(e.to_string()))
    }
}

/// The entry bytes of a packed value.
fn entry_part(index: u64, v: sled::IVec) -> Result<sled::IVec, LogError> {
    let (_, at) = unpack(&v).ok_or_else(|| LogError::Tampered {
        index,
        reason: "stored entry is malformed".into(),
    })?;
    Ok(v.subslice(at, v.len() - at))
}

fn proof_error(e: tlog_tiles::Error) -> LogError {
    LogError::Corrupt(format!("reading the tree: {e}"))
}
