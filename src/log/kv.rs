//! The storage boundary: the ordered key-value space the log is kept in, and the two engines
//! that hold it — sled in the data directory (the default) and PostgreSQL (`kv::postgres`).
//!
//! Everything above this module (`store`: roots and proofs; `apply`: the ledger's state; the
//! writer; the audit) sees the entries by index ([`Kv::entry`], [`Kv::entries`]: stored hashes
//! ‖ entry) and one sorted map of byte keys, the layout `store` documents (`m…` → log metadata,
//! `x` ‖ … → ledger state), and writes them only in two ways: a whole group at once ([`GroupWrite`], atomic and durable when
//! [`Kv::commit`] returns), or one metadata key made durable at open. So the log's invariants
//! (one tree size per answer, nothing shown before it is durable, receipts only after commit)
//! rest on two promises each engine keeps: a committed group is all there or not at all, and
//! `commit` returns only once it is durable.
//!
//! On sled the entries are in files of their own ([`super::entries`]), written and made durable
//! before the group's sled batch, whose size is the committed one. PostgreSQL keeps them, and
//! the same keys, in tables of their own (entries by index, ledger state,
//! metadata, and a one-row head with the size, the checkpoint and the writer's epoch), and
//! adds what a shared database needs: one sequencer at a time, fenced by the epoch
//! ([`Kv::lead`]).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::apply::Overlay;
use super::checkpoint::SignedCheckpoint;
use super::entries::EntryFiles;
use super::error::LogError;
use super::store::{be64, key, SyncFailure, ENTRY, META_ENTRY_FILES, META_SIZE};

pub(crate) mod postgres;

/// A stored value (or key): sled's own buffer, shared without a copy, or bytes read from
/// PostgreSQL.
#[derive(Clone, Debug)]
pub enum Val {
    Sled(sled::IVec),
    Bytes(bytes::Bytes),
}

impl Deref for Val {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Val::Sled(v) => v,
            Val::Bytes(b) => b,
        }
    }
}

impl AsRef<[u8]> for Val {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq<[u8]> for Val {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl Val {
    /// `len` bytes from `at`, sharing the buffer.
    pub fn subslice(&self, at: usize, len: usize) -> Val {
        match self {
            Val::Sled(v) => Val::Sled(v.subslice(at, len)),
            Val::Bytes(b) => Val::Bytes(b.slice(at..at + len)),
        }
    }
}

/// Keys and values in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<(Val, Val), LogError>> + Send + 'a>;

/// Entries in index order: the index and the packed value.
pub type EntryIter<'a> = Box<dyn Iterator<Item = Result<(u64, Val), LogError>> + Send + 'a>;

/// One group of entries, written at once: its entries (packed: stored hashes ‖ entry bytes),
/// the ledger state it changes (full keys, `None` removes), and the new size with its signed
/// checkpoint. `prev_size` is the size it extends, which PostgreSQL's fence checks.
pub(crate) struct GroupWrite {
    pub prev_size: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
    pub state: Overlay,
    pub checkpoint: SignedCheckpoint,
}

/// What [`Kv::lead`] found: whether this process may sequence the next group, and from where.
pub(crate) enum Lead {
    /// Go on from the size the writer knows.
    Continue,
    /// This process has just become the sequencer: go on from the stored size (another
    /// process may have appended since this one last did).
    Took,
    /// Another process sequences: refuse the group (with why).
    Follower(String),
}

/// The engine holding the log. Cheap to clone.
#[derive(Clone)]
pub(crate) enum Kv {
    Sled(SledKv),
    Postgres(Arc<postgres::PgKv>),
}

impl Kv {
    /// Where the log is, for messages: sled's data file or the database (without password).
    pub fn describe(&self) -> String {
        match self {
            Kv::Sled(s) => s.data_file.display().to_string(),
            Kv::Postgres(p) => p.describe(),
        }
    }

    /// The PostgreSQL engine, if that is the one.
    pub fn postgres(&self) -> Option<&postgres::PgKv> {
        match self {
            Kv::Sled(_) => None,
            Kv::Postgres(p) => Some(p),
        }
    }

    /// The sled tree, for the offline commands that work on a data directory only.
    pub fn sled_tree(&self) -> Option<&sled::Tree> {
        match self {
            Kv::Sled(s) => Some(&s.tree),
            Kv::Postgres(_) => None,
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Val>, LogError> {
        match self {
            Kv::Sled(s) => Ok(s.tree.get(key)?.map(Val::Sled)),
            Kv::Postgres(p) => p.get(key),
        }
    }

    /// The packed value of entry `index` (stored hashes ‖ entry bytes): from the entry files
    /// beside sled, or PostgreSQL's entry table.
    pub fn entry(&self, index: u64) -> Result<Option<Val>, LogError> {
        match self {
            Kv::Sled(s) => s.entries.get(index),
            Kv::Postgres(p) => p.get(&key(ENTRY, index)),
        }
    }

    /// The packed values of entries `[start, end)`, in order, with their indexes.
    pub fn entries(&self, start: u64, end: u64) -> EntryIter<'_> {
        match self {
            Kv::Sled(s) => Box::new(s.entries.range(start, end)),
            Kv::Postgres(p) => Box::new(
                p.range(&key(ENTRY, start), &key(ENTRY, end.max(start)))
                    .map(|kv| {
                        let (k, v) = kv?;
                        let idx =
                            be64(&k[1..]).ok_or_else(|| LogError::Corrupt("entry key".into()))?;
                        Ok((idx, v))
                    }),
            ),
        }
    }

    /// Why the log must not open for writing: the entry files held fewer entries than sled's
    /// size when they were opened (they were shortened, or lost). The offline audit still
    /// runs, and fails at the first missing entry.
    pub fn missing_entries(&self) -> Option<LogError> {
        match self {
            Kv::Sled(s) => s
                .short
                .map(|(count, size)| missing_entries(s.entries.dir(), count, size)),
            Kv::Postgres(_) => None,
        }
    }

    /// Whether [`Kv::prefetch`] saves anything (a read costs a round trip).
    pub fn prefetches(&self) -> bool {
        matches!(self, Kv::Postgres(_))
    }

    /// Reads `keys` (full state keys) in one go where that is cheaper than one by one, so the
    /// writer's validation finds them without a round trip each; a no-op on sled.
    pub fn prefetch(&self, keys: Vec<Vec<u8>>) -> Result<(), LogError> {
        match self {
            Kv::Sled(_) => Ok(()),
            Kv::Postgres(p) => p.prefetch(keys),
        }
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, LogError> {
        Ok(self.get(key)?.is_some())
    }

    /// Keys in `[start, end)`, in order.
    pub fn range(&self, start: &[u8], end: &[u8]) -> KvIter<'_> {
        match self {
            Kv::Sled(s) => Box::new(s.tree.range(start.to_vec()..end.to_vec()).map(|kv| {
                kv.map(|(k, v)| (Val::Sled(k), Val::Sled(v)))
                    .map_err(Into::into)
            })),
            Kv::Postgres(p) => p.range(start, end),
        }
    }

    /// The last key in `[start, end)`.
    pub fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Val, Val)>, LogError> {
        match self {
            Kv::Sled(s) => Ok(s
                .tree
                .range(start.to_vec()..end.to_vec())
                .next_back()
                .transpose()?
                .map(|(k, v)| (Val::Sled(k), Val::Sled(v)))),
            Kv::Postgres(p) => p.last_in(start, end),
        }
    }

    /// Writes one metadata key (`m…`) and makes it durable: the origin, the checkpoint file's
    /// marker. Not for entries or state, which only groups write.
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        match self {
            Kv::Sled(s) => {
                s.tree.insert(key, value)?;
                s.sync()
            }
            Kv::Postgres(p) => p.put_meta(key, value),
        }
    }

    /// Whether this process may sequence the next group (see [`Lead`]). sled's data directory
    /// is locked by the one process that opened it, which therefore always leads.
    pub fn lead(&self) -> Result<Lead, LogError> {
        match self {
            Kv::Sled(_) => Ok(Lead::Continue),
            Kv::Postgres(p) => p.lead(),
        }
    }

    /// Writes a group atomically and returns once it is durable. A [`SyncFailure::Retry`] is a
    /// group whose durability is not known yet but may be made sure by [`Kv::sync`] (sled); a
    /// [`SyncFailure::Final`] one whose fate cannot be known by this process.
    pub fn commit(&self, group: GroupWrite) -> Result<(), SyncFailure> {
        match self {
            Kv::Sled(s) => s.commit(group),
            Kv::Postgres(p) => p.commit(group),
        }
    }

    /// Makes everything written so far durable (a no-op where every commit already is).
    pub fn sync_classified(&self) -> Result<(), SyncFailure> {
        match self {
            Kv::Sled(s) => s.sync_classified(),
            Kv::Postgres(_) => Ok(()),
        }
    }
}

/// The refusal of entry files that hold `count` of the log's `size` entries.
fn missing_entries(dir: &Path, count: u64, size: u64) -> LogError {
    LogError::Corrupt(format!(
        "{} holds {count} entries, but sled says the log has {size}: entries {count} to {} are \
         missing. Restore the data directory from a copy",
        dir.display(),
        size - 1
    ))
}

/// How many entries a data directory from before the entry files moves out of sled at once.
const MOVE_GROUP: usize = 16_384;

/// How long [`SledKv::open`] waits for sled's lock on its data file, and how often it tries.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether sled failed to open because another handle holds the lock on its data file.
fn is_lock_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// sled in `DATA_DIR/sled`, one tree, so that one batch commits a whole group's state and
/// size; the entries themselves in the append-only files of [`super::entries`], written and
/// made durable before that batch.
#[derive(Clone)]
pub(crate) struct SledKv {
    db: sled::Db,
    tree: sled::Tree,
    entries: Arc<EntryFiles>,
    /// The entry files' count and sled's size at open, when the files held fewer entries:
    /// [`Kv::missing_entries`].
    short: Option<(u64, u64)>,
    data_file: Arc<PathBuf>,
    /// sled's data file, opened once and kept for fdatasync: opening it per commit made every
    /// commit fail once the process ran out of file descriptors.
    data: Arc<std::fs::File>,
    /// sled blob files already fsynced (see [`SledKv::sync`]).
    synced_blobs: Arc<Mutex<std::collections::HashSet<std::ffi::OsString>>>,
}

impl SledKv {
    /// Opens the sled database under `dir/sled`, with a page cache of `cache` bytes.
    pub fn open(dir: &Path, cache: u64) -> Result<SledKv, LogError> {
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
                    .cache_capacity(cache)
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
        // sled panics on some damaged data rather than returning an error.
        fn guard<T>(
            r: Result<Result<T, LogError>, String>,
            unreadable: &dyn Fn(String) -> LogError,
        ) -> Result<T, LogError> {
            r.map_err(|panic| unreadable(format!("sled failed reading it: {panic}")))?
        }
        let (size, moved) = guard(
            super::guard::catch(|| {
                let size = match tree.get(META_SIZE)? {
                    None => 0,
                    Some(v) => be64(&v).ok_or_else(|| LogError::Corrupt("tree size".into()))?,
                };
                Ok((size, tree.contains_key(META_ENTRY_FILES)?))
            }),
            &unreadable,
        )?;
        if moved && size > 0 && !dir.join(super::entries::DIR).is_dir() {
            return Err(missing_entries(&dir.join(super::entries::DIR), 0, size));
        }
        let mut kv = SledKv {
            db,
            tree,
            entries: Arc::new(EntryFiles::open(dir)?),
            short: None,
            data_file: Arc::new(data_file),
            data: Arc::new(data),
            synced_blobs: Arc::new(Mutex::new(std::collections::HashSet::new())),
        };
        guard(
            super::guard::catch(|| kv.settle_entries(size, moved)),
            &unreadable,
        )?;
        let count = kv.entries.count();
        if count < size {
            kv.short = Some((count, size));
        }
        Ok(kv)
    }

    /// Makes the entry files agree with sled's committed size: a directory from before them
    /// has its entries moved out of sled (once, crash-safe: the marker key is written, durably,
    /// only once the files hold every committed entry, and sled's copies are removed after
    /// it); then what the files hold beyond that size is hidden, to be overwritten. Files
    /// holding fewer entries are left as they are: the log refuses to open
    /// ([`Kv::missing_entries`]) and the audit names the first one missing.
    fn settle_entries(&self, size: u64, moved: bool) -> Result<(), LogError> {
        let first = key(ENTRY, 0);
        let after = [ENTRY + 1];
        if !moved {
            self.entries.keep(0);
            let mut group = Vec::new();
            let mut next = 0;
            for kv in self.tree.range(&first[..]..&after[..]) {
                let (k, v) = kv?;
                let index = be64(&k[1..]).ok_or_else(|| LogError::Corrupt("entry key".into()))?;
                if index >= size {
                    break;
                }
                if index != next {
                    break;
                }
                group.push((index, v.to_vec()));
                next += 1;
                if group.len() == MOVE_GROUP {
                    self.entries
                        .append(&group)
                        .map_err(SyncFailure::into_error)?;
                    group.clear();
                }
            }
            self.entries
                .append(&group)
                .map_err(SyncFailure::into_error)?;
            if next < size {
                // Nothing is moved (the marker is not written and sled keeps its entries): the
                // refusal names the first entry missing.
                return Err(LogError::Tampered {
                    index: next,
                    reason: "stored entry missing".into(),
                });
            }
            self.tree.insert(META_ENTRY_FILES, &b"1"[..])?;
            self.sync()?;
        }
        // sled's own copies, once the files hold them (also what a crash in the middle of
        // removing them left).
        let mut removed = false;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for k in self
                .tree
                .range(&first[..]..&after[..])
                .keys()
                .take(MOVE_GROUP)
            {
                batch.remove(k?);
                n += 1;
            }
            if n == 0 {
                break;
            }
            self.tree.apply_batch(batch)?;
            removed = true;
        }
        if removed {
            self.sync()?;
        }
        self.entries.keep(size);
        Ok(())
    }

    fn commit(&self, group: GroupWrite) -> Result<(), SyncFailure> {
        // The entries first, durably: sled's size, committed below, must never count an entry
        // the files may not hold.
        self.entries.append(&group.entries)?;
        let mut batch = sled::Batch::default();
        for (k, v) in group.state {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(
            super::store::META_SIZE,
            &group.checkpoint.size.to_be_bytes()[..],
        );
        batch.insert(
            super::store::META_CHECKPOINT,
            group.checkpoint.note.as_bytes(),
        );
        self.tree
            .apply_batch(batch)
            .map_err(|e| SyncFailure::Final(e.into()))?;
        self.sync_classified()
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

    /// [`SledKv::sync`], telling a failure that may be retried from one that may not.
    ///
    /// A failed flush or fsync is final: after a failed fsync Linux may have dropped the dirty
    /// pages, so a later fsync that succeeds proves nothing (the "fsyncgate" lesson that neon
    /// and PostgreSQL follow). A failure to *open* or list a blob file (out of file
    /// descriptors or memory) happens before any fsync of it, and leaves its pages intact, so
    /// trying again later is sound.
    pub fn sync_classified(&self) -> Result<(), SyncFailure> {
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
}
