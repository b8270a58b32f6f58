//! The latest signed checkpoint, kept outside sled (SPEC §3, "History never silently shrinks").
//!
//! sled 0.34 recovers from a damaged data file by dropping everything after the damage, and the
//! checkpoint stored inside sled goes with it: the log would come back shorter and still verify.
//! So the writer also keeps the latest checkpoint in `checkpoint`, a small file beside `sled/`,
//! replaced atomically ([`crate::files::replace`]) after each group's sled commit is durable and
//! before any receipt citing that checkpoint is sent. The file is therefore never ahead of sled
//! by anything acknowledged-and-lost-silently: it is either equal to sled's checkpoint or behind
//! it (a crash between the two writes), and [`check`] turns "sled is behind the file" into a
//! refusal naming what is missing.
//!
//! A marker key in sled (`m` ‖ `checkpoint-file`) says the directory has kept the file; a
//! directory made by an older version has no marker, and gets its file on first open.

use std::path::{Path, PathBuf};

use super::checkpoint::{verify_checkpoint, Checkpointer, SignedCheckpoint};
use super::error::LogError;
use super::store::Store;

/// File name of the checkpoint kept outside sled, in the data directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// Where the checkpoint file of the data directory `dir` is.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// The origin line of the checkpoint file (unverified: only to know which key and origin to
/// verify it with); `None` when there is no file.
pub fn origin(dir: &Path) -> Result<Option<String>, LogError> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(b) => {
            let line = b.split(|&c| c == b'\n').next().unwrap_or_default();
            match std::str::from_utf8(line) {
                Ok(o) if !o.is_empty() => Ok(Some(o.to_string())),
                _ => Err(LogError::Corrupt(format!(
                    "{} does not start with an origin line",
                    p.display()
                ))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(&p, e)),
    }
}

/// Reads and verifies the checkpoint file; `None` when there is none.
pub fn read(dir: &Path, cp: &Checkpointer) -> Result<Option<SignedCheckpoint>, LogError> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::io(&p, e)),
    };
    verify_checkpoint(&bytes, cp.verifier_key(), cp.origin())
        .map(Some)
        .map_err(|e| {
            LogError::Corrupt(format!(
                "{} is not a checkpoint signed by this log's key: {e}",
                p.display()
            ))
        })
}

/// Replaces the checkpoint file with `signed`, durably, and records that the directory keeps
/// it: for an operator's explicit recovery (`claimledger recover`), offline.
pub fn replace(dir: &Path, signed: &SignedCheckpoint, store: &Store) -> Result<(), LogError> {
    write(dir, signed)?;
    store.mark_checkpoint_file()
}

/// Replaces the checkpoint file with `signed`, durably.
pub(crate) fn write(dir: &Path, signed: &SignedCheckpoint) -> Result<(), LogError> {
    crate::files::replace(&path(dir), signed.note.as_bytes()).map_err(|(p, e)| LogError::io(&p, e))
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
    if outside.map(|f| f.size) != Some(signed.size) {
        if let Some(f) = outside {
            tracing::info!(
                file_size = f.size,
                size = signed.size,
                "the checkpoint file was behind sled (a crash between the two writes): updated"
            );
        }
        write(dir, signed)?;
    }
    store.mark_checkpoint_file()
}
