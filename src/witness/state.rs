//! The latest checkpoint a witness cosigned for each log, kept across restarts.
//!
//! One file per origin in the data directory, `log-<hex SHA-256 of the origin>.checkpoint`:
//! hashing the origin gives a safe, fixed-length file name whatever characters the origin has
//! (`/`, `..`, anything), and the origin itself is the first line of the file. The file holds
//! the cosigned checkpoint as a signed note: the checkpoint body, a blank line, the log's
//! signatures that verified, and the witness's own cosignature. So the file is evidence anyone
//! can check, and the witness can check it too: on open it must parse, name the right origin,
//! and carry a valid cosignature from the witness's key, or the witness refuses to start. A
//! damaged file is never taken for "nothing cosigned yet", which would let the log roll back.
//!
//! Files are replaced with [`crate::files::replace`] (temporary file, fsync, rename, directory
//! fsync) before the cosignature is returned, as tlog-witness requires.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use signed_note::{Note, Signature};
use tlog_tiles::{Checkpoint, Hash};

use super::cosignature::{self, CosignatureVerifier};
use super::WitnessError;

/// A checkpoint the witness cosigned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cosigned {
    pub size: u64,
    pub root: Hash,
}

/// The state file of `origin` in `dir`.
pub(crate) fn path(dir: &Path, origin: &str) -> PathBuf {
    let digest = Sha256::digest(origin.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("log-{hex}.checkpoint"))
}

/// Loads the latest cosigned checkpoint of `origin`, or `None` if the witness never cosigned
/// one. Anything else than a missing file or a checkpoint this witness cosigned is an error.
pub(crate) fn load(
    dir: &Path,
    origin: &str,
    name: &str,
    key: &SigningKey,
) -> Result<Option<Cosigned>, WitnessError> {
    let path = path(dir, origin);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(WitnessError::io(&path, e)),
    };
    let corrupt = |reason: String| WitnessError::CorruptState {
        path: path.clone(),
        reason,
    };
    let note =
        Note::from_bytes(&bytes).map_err(|e| corrupt(format!("is not a signed note ({e})")))?;
    let cp = Checkpoint::from_bytes(note.text())
        .map_err(|e| corrupt(format!("does not hold a checkpoint ({e})")))?;
    if cp.origin() != origin {
        return Err(corrupt(format!(
            "holds a checkpoint of {:?}, not of {origin:?}",
            cp.origin()
        )));
    }
    if !cosigned_by(&bytes, note.text(), key) {
        return Err(corrupt(format!(
            "carries no valid cosignature of this witness's key ({name} or an earlier name of \
             it): it was changed, or {} was replaced",
            super::KEY_FILE
        )));
    }
    Ok(Some(Cosigned {
        size: cp.size(),
        root: *cp.hash(),
    }))
}

/// Whether the note `bytes` (with body `text`) carries a valid cosignature of `key` under any
/// name: renaming a witness keeps its key and its history, so the name is not checked here.
fn cosigned_by(bytes: &[u8], text: &[u8], key: &SigningKey) -> bool {
    let vk = key.verifying_key();
    // Note::from_bytes has already checked the note is UTF-8 with a signature block.
    let Some((_, sigs)) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.rsplit_once("\n\n"))
    else {
        return false;
    };
    sigs.lines().any(|line| {
        let Ok(sig) = Signature::from_bytes(line.as_bytes()) else {
            return false;
        };
        if sig.id() != cosignature::key_id(sig.name(), &vk) {
            return false;
        }
        CosignatureVerifier::new(&cosignature::verifier_key(sig.name(), &vk))
            .is_ok_and(|v| v.check(text, sig.signature()).is_some())
    })
}

/// Makes `note` (the cosigned checkpoint of `origin`) the stored state, durably. The error
/// names the file that failed.
pub(crate) fn store(dir: &Path, origin: &str, note: &[u8]) -> Result<(), String> {
    crate::files::replace(&path(dir, origin), note)
        .map_err(|(p, e)| format!("writing the witness state {}: {e}", p.display()))
}
