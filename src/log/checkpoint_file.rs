//! The latest signed checkpoint, kept outside sled (SPEC §3, "History never silently shrinks").
//!
//! sled 0.34 recovers from a damaged data file by dropping everything after the damage, and the
//! checkpoint stored inside sled goes with it: the log would come back shorter and still verify.
//! So the writer also keeps the latest checkpoint in `checkpoint`, a small file beside `sled/`,
//! written after each group's sled commit is durable and before any receipt citing that
//! checkpoint is sent. The file is therefore never behind what was acknowledged: it equals
//! sled's checkpoint, or is one group behind it after a crash between the two writes, and
//! `check_size` turns "sled is behind the file" into a refusal naming what is missing.
//!
//! **Format: two slots, replaced in place.** The file is created once, atomically
//! ([`crate::files::replace`]: temp file, fsync, rename, directory fsync), with two slots of
//! [`SLOT`] bytes. Each later checkpoint overwrites the older slot and is made durable with
//! `fdatasync`. A slot is a text header, `claimledger-checkpoint v1 seq=N len=L sha256=H`,
//! then the signed note (`L` bytes, SHA-256 `H`), then zero padding. A crash in the middle of a
//! write can tear only the slot being written; its hash then fails and the other slot (the
//! previous checkpoint, which covered everything acknowledged) is read. The file's size never
//! changes, so no metadata (and no directory) is written per group: measured on this machine an
//! in-place slot write with `fdatasync` took 77 µs, a replace by rename (two fsyncs) 334 µs
//! (BENCHMARKS.md).
//!
//! A marker key in sled (`m` ‖ `checkpoint-file`) says the directory has kept the file; a
//! directory made by an older version has no marker, and gets its file on first open.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::checkpoint::{verify_checkpoint, Checkpointer, SignedCheckpoint};
use super::error::LogError;
use super::store::Store;

/// File name of the checkpoint kept outside sled, in the data directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Bytes per slot (two slots make the file). A signed checkpoint note is a few hundred bytes.
pub const SLOT: usize = 4096;

const MAGIC: &str = "claimledger-checkpoint v1";

/// Where the checkpoint file of the data directory `dir` is.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// One slot that holds a whole note (its hash checks): the note is not yet verified.
struct Slot {
    seq: u64,
    note: String,
}

/// Parses a slot; `None` when it is empty, torn or not a slot.
fn parse_slot(b: &[u8]) -> Option<Slot> {
    let nl = b.iter().position(|&c| c == b'\n')?;
    let header = std::str::from_utf8(&b[..nl]).ok()?;
    let rest = header.strip_prefix(MAGIC)?.trim_start();
    let mut seq = None;
    let mut len = None;
    let mut hash = None;
    for field in rest.split(' ') {
        match field.split_once('=')? {
            ("seq", v) => seq = v.parse::<u64>().ok(),
            ("len", v) => len = v.parse::<usize>().ok(),
            ("sha256", v) => hash = Some(v.to_string()),
            _ => return None,
        }
    }
    let (seq, len, hash) = (seq?, len?, hash?);
    let note = b.get(nl + 1..nl + 1 + len)?;
    if hex(&Sha256::digest(note)) != hash {
        return None;
    }
    Some(Slot {
        seq,
        note: String::from_utf8(note.to_vec()).ok()?,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of a slot holding `note` with sequence number `seq`.
fn slot_bytes(seq: u64, note: &str) -> Result<Vec<u8>, LogError> {
    let mut v = format!(
        "{MAGIC} seq={seq} len={} sha256={}\n",
        note.len(),
        hex(&Sha256::digest(note.as_bytes()))
    )
    .into_bytes();
    v.extend_from_slice(note.as_bytes());
    if v.len() > SLOT {
        return Err(LogError::InvalidArgument(format!(
            "a checkpoint note of {} bytes does not fit the checkpoint file's {SLOT}-byte slot \
             (is the origin very long?)",
            note.len()
        )));
    }
    v.resize(SLOT, 0);
    Ok(v)
}

/// The slots of the file whose hashes check, newest first; `None` when there is no file.
fn slots(dir: &Path) -> Result<Option<Vec<Slot>>, LogError> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&p, e)),
    };
    let mut found: Vec<Slot> = bytes.chunks(SLOT).take(2).filter_map(parse_slot).collect();
    found.sort_by_key(|s| std::cmp::Reverse(s.seq));
    Ok(Some(found))
}

/// The newest whole note in the checkpoint file, unverified (for tests and tools that verify
/// it themselves); `None` when there is no file.
pub fn latest_note(dir: &Path) -> Result<Option<String>, LogError> {
    Ok(slots(dir)?
        .and_then(|s| s.into_iter().next())
        .map(|s| s.note))
}

/// The origin line of the checkpoint file's newest note (unverified: only to know which key and
/// origin to verify it with); `None` when there is no file.
pub fn origin(dir: &Path) -> Result<Option<String>, LogError> {
    let Some(slots) = slots(dir)? else {
        return Ok(None);
    };
    match slots.first().and_then(|s| s.note.lines().next()) {
        Some(o) if !o.is_empty() => Ok(Some(o.to_string())),
        _ => Err(LogError::Corrupt(format!(
            "{} holds no whole checkpoint",
            path(dir).display()
        ))),
    }
}

/// Reads the checkpoint file: its newest slot that is whole and signed by this log's key;
/// `None` when there is no file. A file with no such slot is [`LogError::Corrupt`].
pub fn read(dir: &Path, cp: &Checkpointer) -> Result<Option<SignedCheckpoint>, LogError> {
    let Some(slots) = slots(dir)? else {
        return Ok(None);
    };
    let mut why = "no whole slot".to_string();
    for s in slots {
        match verify_checkpoint(s.note.as_bytes(), cp.verifier_key(), cp.origin()) {
            Ok(signed) => return Ok(Some(signed)),
            Err(e) => why = e.to_string(),
        }
    }
    Err(LogError::Corrupt(format!(
        "{} holds no checkpoint signed by this log's key ({why})",
        path(dir).display()
    )))
}

/// Creates (or replaces) the checkpoint file holding `signed`, atomically and durably, and
/// records that the directory keeps it: on first open, and for an operator's explicit recovery
/// (`claimledger recover`), offline.
pub(crate) fn replace(
    dir: &Path,
    signed: &SignedCheckpoint,
    store: &Store,
) -> Result<(), LogError> {
    create(dir, signed)?;
    store.mark_checkpoint_file()
}

/// A new file: the checkpoint in slot 0 with sequence number 0, slot 1 empty. The slot of
/// sequence number `n` is always `n % 2`, so the next write goes to slot 1.
fn create(dir: &Path, signed: &SignedCheckpoint) -> Result<(), LogError> {
    let mut bytes = slot_bytes(0, &signed.note)?;
    bytes.resize(2 * SLOT, 0);
    crate::files::replace(&path(dir), &bytes).map_err(|(p, e)| LogError::io(&p, e))
}

/// The open checkpoint file, for the writer's checkpoint-file thread: each [`Slots::write`]
/// overwrites the older slot in place and fdatasyncs.
pub(crate) struct Slots {
    file: File,
    path: PathBuf,
    /// The sequence number of the newest slot.
    seq: u64,
}

impl Slots {
    /// Opens the file (which [`settle`] has made) for writing.
    pub(crate) fn open(dir: &Path) -> Result<Slots, LogError> {
        let p = path(dir);
        let seq = slots(dir)?
            .and_then(|s| s.first().map(|s| s.seq))
            .ok_or_else(|| LogError::Corrupt(format!("{} holds no whole slot", p.display())))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| LogError::io(&p, e))?;
        Ok(Slots { file, path: p, seq })
    }

    /// Writes `signed` into the older slot (never the newest, which must stay whole until this
    /// write is durable) and makes it durable.
    pub(crate) fn write(&mut self, signed: &SignedCheckpoint) -> Result<(), LogError> {
        use std::io::{Seek, SeekFrom, Write};
        let seq = self.seq + 1;
        let bytes = slot_bytes(seq, &signed.note)?;
        let at = (seq % 2) * SLOT as u64;
        self.file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.write_all(&bytes))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| LogError::io(&self.path, e))?;
        self.seq = seq;
        Ok(())
    }
}

/// Refuses a store that holds fewer entries than the checkpoint file says were committed, and
/// a store with no file where one was kept. Runs before the start-up check, which cannot see
/// what sled no longer has.
pub(crate) fn check_size(
    dir: &Path,
    store: &Store,
    outside: Option<&SignedCheckpoint>,
) -> Result<(), LogError> {
    let stored = store.size()?;
    match outside {
        Some(file) if file.size > stored => Err(LogError::Shrunk {
            file: path(dir).display().to_string(),
            committed: file.size,
            stored,
        }),
        Some(_) => Ok(()),
        None if store.keeps_checkpoint_file()? => Err(LogError::Corrupt(format!(
            "{} is missing, but this data directory keeps one (it holds the latest \
             checkpoint outside sled): without it a shortened log cannot be told from a whole \
             one. Restore the file, or run `claimledger recover --data-dir {}` to see what \
             continuing from sled's own checkpoint (size {stored}) means",
            path(dir).display(),
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Compares the root sled's stored hashes give at the file's size with the file's signed root.
/// Runs after the start-up check, so a bad stored hash is reported at its index first.
pub(crate) fn check_root(
    dir: &Path,
    store: &Store,
    outside: Option<&SignedCheckpoint>,
) -> Result<(), LogError> {
    let Some(file) = outside else {
        return Ok(());
    };
    let stored = store.size()?;
    let root = store.root_at(file.size, stored)?;
    if root != file.root {
        return Err(LogError::Diverged {
            file: path(dir).display().to_string(),
            size: file.size,
            stored,
        });
    }
    Ok(())
}

/// Brings the file up to sled's latest checkpoint when it is behind (a crash between the sled
/// commit and the file write, or a directory from before the file existed) and records that
/// the directory keeps the file. `signed` is the checkpoint at sled's current size.
pub(crate) fn settle(
    dir: &Path,
    store: &Store,
    outside: Option<&SignedCheckpoint>,
    signed: &SignedCheckpoint,
) -> Result<(), LogError> {
    match outside {
        None => create(dir, signed)?,
        Some(f) if f.size != signed.size => {
            tracing::info!(
                file_size = f.size,
                size = signed.size,
                "the checkpoint file was behind sled (a crash between the two writes): updated"
            );
            Slots::open(dir)?.write(signed)?;
        }
        Some(_) => {}
    }
    store.mark_checkpoint_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn signed(cp: &Checkpointer, size: u64) -> SignedCheckpoint {
        cp.sign(size, tlog_tiles::Hash([size as u8; 32]))
            .expect("sign")
    }

    #[test]
    fn each_write_keeps_the_newest_slot_whole_and_reads_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = Checkpointer::from_key("test.example/log", SigningKey::from_bytes(&[3; 32]));
        create(dir.path(), &signed(&cp, 0)).expect("create");
        let mut slots = Slots::open(dir.path()).expect("open");
        for size in 1..=5 {
            let before = std::fs::read(path(dir.path())).expect("read");
            slots.write(&signed(&cp, size)).expect("write");
            let after = std::fs::read(path(dir.path())).expect("read");
            // The slot holding the previous checkpoint is untouched by the write.
            let kept = ((size - 1) % 2) as usize * SLOT;
            assert_eq!(before[kept..kept + SLOT], after[kept..kept + SLOT]);
            assert_eq!(
                read(dir.path(), &cp).expect("read").expect("file").size,
                size
            );
        }
        // Reopened, it goes on from the newest sequence number.
        let mut slots = Slots::open(dir.path()).expect("reopen");
        slots.write(&signed(&cp, 6)).expect("write");
        assert_eq!(read(dir.path(), &cp).expect("read").expect("file").size, 6);
        assert_eq!(
            std::fs::metadata(path(dir.path())).expect("meta").len(),
            2 * SLOT as u64
        );
    }
}
