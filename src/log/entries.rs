//! A sled log's entries, kept in two append-only files in `DATA_DIR/entries/` rather than in
//! sled.
//!
//! Entries are written once, in order, and never change, but sled 0.34 treats each as a key
//! of its B-tree: it writes ~6 KB to disk per SubmitClaim (BENCHMARKS.md), and an audit reads the
//! log back through its pages. Here a group's entries are one `write` to each file, and an audit
//! or a bundle reads them back in order with a few large `pread`s.
//!
//! - `data`: the packed values (stored hashes ‖ entry bytes, [`super::entry::pack`]) back to
//!   back;
//! - `ends`: one be64 per entry, the offset in `data` where it ends: entry `i` is
//!   `data[ends[i-1]..ends[i]]`. They are also kept in memory (8 bytes an entry).
//!
//! **Durability.** A group is written to both files and both are fdatasynced before sled
//! commits the group's state and its size (`kv::SledKv`). sled's size is therefore
//! the committed size: the files may hold more (a group written before a crash and never
//! acknowledged), which opening ignores and the next append overwrites, and never less unless
//! they were damaged or removed: then the log refuses to open, and the offline audit
//! (`claimledger verify`) fails at the first entry missing. Nothing is ever cut off the files at
//! open: when sled itself lost acknowledged entries (the checkpoint file says so, and opening
//! refuses), they are still here for whoever restores the directory, until the operator
//! chooses `claimledger recover --accept-loss`: the log then continues from sled's size and
//! its next appends overwrite them.
//!
//! **Integrity.** The files carry no checksum of their own: every entry read is checked
//! against the leaf hash stored with it (`store::entry_part`), and the audit re-hashes all.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

use super::error::LogError;
use super::kv::Val;
use super::store::SyncFailure;

/// The directory of the entry files, in the data directory.
pub const DIR: &str = "entries";
/// The packed entries, back to back.
pub const DATA: &str = "data";
/// The end offset of each entry in [`DATA`], be64.
pub const ENDS: &str = "ends";

/// How much an in-order read fetches at once.
const CHUNK: u64 = 1 << 20;

/// The entry files of one data directory.
pub(crate) struct EntryFiles {
    dir: PathBuf,
    data_path: PathBuf,
    ends_path: PathBuf,
    data: File,
    ends_file: File,
    /// The end offset of each committed entry (each one readers may be given).
    ends: RwLock<Vec<u64>>,
}

impl EntryFiles {
    /// Opens (creating them if missing) the entry files of the data directory `data_dir`,
    /// keeping the longest prefix of `ends` that is consistent with `data` (offsets that never
    /// decrease and lie within it).
    pub fn open(data_dir: &Path) -> Result<EntryFiles, LogError> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| LogError::io(path, e))
        };
        let data_path = dir.join(DATA);
        let ends_path = dir.join(ENDS);
        let data = open(&data_path)?;
        let ends_file = open(&ends_path)?;
        // The files' names must be durable before any group is: synced at every open, so one
        // created by an open that crashed before it synced is synced by the next.
        crate::files::sync_dir(&dir).map_err(|e| LogError::io(&dir, e))?;
        crate::files::sync_dir(data_dir).map_err(|e| LogError::io(data_dir, e))?;
        let data_len = data
            .metadata()
            .map_err(|e| LogError::io(&data_path, e))?
            .len();
        let raw = std::fs::read(&ends_path).map_err(|e| LogError::io(&ends_path, e))?;
        let mut ends = Vec::with_capacity(raw.len() / 8);
        let mut prev = 0;
        for c in raw.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            let end = u64::from_be_bytes(b);
            // Entries are never empty. Ends of an uncommitted group that a shorter committed one
            // did not overwrite may pass (they increase, within `data`); the caller hides
            // everything beyond sled's size.
            if end <= prev || end > data_len {
                break;
            }
            ends.push(end);
            prev = end;
        }
        Ok(EntryFiles {
            dir,
            data_path,
            ends_path,
            data,
            ends_file,
            ends: RwLock::new(ends),
        })
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entries are, for messages.
    pub fn describe(&self) -> String {
        self.data_path.display().to_string()
    }

    /// How many entries the files hold (as far as they are consistent).
    pub fn count(&self) -> u64 {
        self.ends
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }

    /// Keeps only the first `n` entries visible: what lies beyond is not committed (sled's size
    /// says so) and is overwritten by the next append. The files are not shortened.
    pub fn keep(&self, n: u64) {
        let mut ends = self.ends.write().unwrap_or_else(PoisonError::into_inner);
        if (ends.len() as u64) > n {
            ends.truncate(n as usize);
        }
    }

    /// Where entry `index` lies in `data`, if it is there.
    fn span(&self, index: u64) -> Option<(u64, u64)> {
        let ends = self.ends.read().unwrap_or_else(PoisonError::into_inner);
        let i = usize::try_from(index).ok()?;
        let end = *ends.get(i)?;
        let start = if i == 0 { 0 } else { ends[i - 1] };
        Some((start, end))
    }

    fn read_at(&self, start: u64, len: u64) -> Result<Bytes, LogError> {
        let len = usize::try_from(len)
            .map_err(|_| LogError::Corrupt(format!("{}: span too long", self.describe())))?;
        let mut buf = vec![0u8; len];
        self.data
            .read_exact_at(&mut buf, start)
            .map_err(|e| LogError::io(&self.data_path, e))?;
        Ok(Bytes::from(buf))
    }

    /// The packed value of entry `index`.
    pub fn get(&self, index: u64) -> Result<Option<Val>, LogError> {
        let Some((start, end)) = self.span(index) else {
            return Ok(None);
        };
        Ok(Some(Val::Bytes(self.read_at(start, end - start)?)))
    }

    /// The packed values of entries `[start, end)` (those present), in order, read a chunk of
    /// about a MiB at a time.
    pub fn range(&self, start: u64, end: u64) -> Range<'_> {
        Range {
            files: self,
            next: start,
            end,
            chunk: Bytes::new(),
            chunk_at: 0,
        }
    }

    /// Appends the packed entries `entries` (indexes following the last entry) and makes them
    /// durable. Every failure is final: after a failed write or fdatasync what the files hold
    /// is not known, and the caller must not commit the group. One caller at a time: the log's
    /// writer thread, or the move out of sled on open, before the writer starts. The entries
    /// are readable as soon as it returns, before sled commits them: readers cut at the
    /// published size (`Log::entry`, `Log::entries`), not at what the files hold.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), SyncFailure> {
        let fail = |path: &Path, e: std::io::Error| SyncFailure::Final(LogError::io(path, e));
        if entries.is_empty() {
            return Ok(());
        }
        let (count, start) = {
            let ends = self.ends.read().unwrap_or_else(PoisonError::into_inner);
            (ends.len() as u64, ends.last().copied().unwrap_or(0))
        };
        let total: usize = entries.iter().map(|(_, p)| p.len()).sum();
        let mut data = Vec::with_capacity(total);
        let mut new_ends = Vec::with_capacity(entries.len());
        let mut raw_ends = Vec::with_capacity(entries.len() * 8);
        let mut end = start;
        for (k, (index, packed)) in entries.iter().enumerate() {
            if *index != count + k as u64 {
                return Err(SyncFailure::Final(LogError::Internal(format!(
                    "entry {index} appended after {} entries",
                    count + k as u64
                ))));
            }
            // An empty value would end where the last one did, and opening would stop at it
            // (end offsets must increase): a packed entry is never empty, so one read from an
            // old directory's sled key that is must not be moved.
            if packed.is_empty() {
                return Err(SyncFailure::Final(LogError::Tampered {
                    index: *index,
                    reason: "stored entry is empty".into(),
                }));
            }
            data.extend_from_slice(packed);
            end += packed.len() as u64;
            new_ends.push(end);
            raw_ends.extend_from_slice(&end.to_be_bytes());
        }
        self.data
            .write_all_at(&data, start)
            .map_err(|e| fail(&self.data_path, e))?;
        self.ends_file
            .write_all_at(&raw_ends, count * 8)
            .map_err(|e| fail(&self.ends_path, e))?;
        self.data
            .sync_data()
            .map_err(|e| fail(&self.data_path, e))?;
        self.ends_file
            .sync_data()
            .map_err(|e| fail(&self.ends_path, e))?;
        self.ends
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(&new_ends);
        Ok(())
    }
}

/// Entries in order, from [`EntryFiles::range`].
pub(crate) struct Range<'a> {
    files: &'a EntryFiles,
    next: u64,
    end: u64,
    /// The last chunk read, and where in `data` it starts.
    chunk: Bytes,
    chunk_at: u64,
}

impl Iterator for Range<'_> {
    type Item = Result<(u64, Val), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let index = self.next;
        let (start, end) = self.files.span(index)?;
        self.next += 1;
        let chunk_end = self.chunk_at + self.chunk.len() as u64;
        if start < self.chunk_at || end > chunk_end {
            // Read on to the end of the range or a MiB further, whichever comes first, and at
            // least this whole entry.
            let last = self.end.min(self.files.count()).saturating_sub(1);
            let range_end = self.files.span(last).map_or(end, |(_, e)| e);
            let len = range_end.min(start + CHUNK).max(end) - start;
            match self.files.read_at(start, len) {
                Ok(b) => {
                    self.chunk = b;
                    self.chunk_at = start;
                }
                Err(e) => {
                    // One error ends the range.
                    self.next = self.end;
                    return Some(Err(e));
                }
            }
        }
        let at = (start - self.chunk_at) as usize;
        let len = (end - start) as usize;
        Some(Ok((index, Val::Bytes(self.chunk.slice(at..at + len)))))
    }
}
