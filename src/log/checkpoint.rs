//! The log's Ed25519 key and C2SP signed checkpoints.
//!
//! A checkpoint is C2SP `tlog-checkpoint` text (origin, decimal size, base64 root) signed as a
//! C2SP `signed-note`. The key's name is the origin, so the verifier key string is
//! `origin+keyhash+base64`, exactly what Go's `sumdb/note` and the `signed_note` crate take.
//!
//! The key is created on first open as `log.key` in the data directory: 32 random bytes of seed,
//! base64, mode 0600, replaced atomically ([`crate::files::load_or_create_key`], which a
//! witness's key uses too), so a crash never leaves a half-written key.

use std::path::Path;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use super::error::LogError;
use crate::files::KeyFileError;

/// File name of the signing key in the data directory.
pub const KEY_FILE: &str = "log.key";

/// A checkpoint and the signed note that carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The full signed note text (checkpoint body, blank line, signature lines).
    pub note: String,
}

/// Signs checkpoints with the data directory's key.
pub struct Checkpointer {
    origin: String,
    key: SigningKey,
    key_id: u32,
    verifier_key: String,
}

impl Checkpointer {
    /// Loads the key of an existing log from `dir`; a missing key is an error, never replaced.
    pub fn load(dir: &Path, origin: &str) -> Result<Checkpointer, LogError> {
        if !dir.join(KEY_FILE).exists() {
            return Err(LogError::Corrupt(format!(
                "the signing key {} is missing; a log's key is never replaced",
                dir.join(KEY_FILE).display()
            )));
        }
        Self::load_or_create(dir, origin)
    }

    /// Loads the key from `dir`, or creates it on first use.
    pub fn load_or_create(dir: &Path, origin: &str) -> Result<Checkpointer, LogError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(LogError::InvalidArgument(format!(
                "origin {origin:?} is not a valid signed-note key name (non-empty, no spaces or '+')"
            )));
        }
        let key = crate::files::load_or_create_key(&dir.join(KEY_FILE), "the log's signing key")
            .map_err(|e| match e {
                KeyFileError::Insecure(m) => LogError::Insecure(m),
                KeyFileError::Corrupt(p) => {
                    LogError::Corrupt(format!("{} is not a key", p.display()))
                }
                KeyFileError::Io(p, e) => LogError::io(&p, e),
            })?;
        Ok(Self::from_key(origin, key))
    }

    /// A checkpointer for a key held in memory (tests and benchmarks).
    pub fn from_key(origin: &str, key: SigningKey) -> Checkpointer {
        let vk = key.verifying_key();
        let key_id = signed_note::key_id(origin, &encoded_public_key(&vk));
        Checkpointer {
            origin: origin.to_string(),
            key_id,
            verifier_key: signed_note::new_ed25519_verifier_key(origin, &vk),
            key,
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The `origin+keyhash+base64` verifier key.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Signs the checkpoint for a tree of `size` entries with root `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<SignedCheckpoint, LogError> {
        let body = Checkpoint::new(&self.origin, size, root, "")
            .map_err(|e| LogError::Internal(e.to_string()))?
            .to_bytes();
        let mut note = Note::new(&body, &[]).map_err(|e| LogError::Internal(e.to_string()))?;
        note.add_sigs(&[self])
            .map_err(|e| LogError::Internal(e.to_string()))?;
        let note =
            String::from_utf8(note.to_bytes()).map_err(|e| LogError::Internal(e.to_string()))?;
        Ok(SignedCheckpoint { size, root, note })
    }

    /// Verifies a signed checkpoint note against this log's key and origin.
    pub fn verify(&self, note: &[u8]) -> Result<SignedCheckpoint, LogError> {
        verify_checkpoint(note, &self.verifier_key, &self.origin)
    }
}

impl signed_note::Signer for Checkpointer {
    fn name(&self) -> &str {
        &self.origin
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// Verifies a signed checkpoint with a verifier key, as an auditor would.
pub fn verify_checkpoint(
    note: &[u8],
    verifier_key: &str,
    origin: &str,
) -> Result<SignedCheckpoint, LogError> {
    let bad = LogError::Unverified;
    let verifier = StandardVerifier::new(verifier_key).map_err(|e| bad(e.to_string()))?;
    let parsed = Note::from_bytes(note).map_err(|e| bad(e.to_string()))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| bad(e.to_string()))?;
    let cp = Checkpoint::from_bytes(parsed.text()).map_err(|e| bad(e.to_string()))?;
    if cp.origin() != origin {
        return Err(bad(format!(
            "origin {:?}, expected {origin:?}",
            cp.origin()
        )));
    }
    Ok(SignedCheckpoint {
        size: cp.size(),
        root: *cp.hash(),
        note: String::from_utf8_lossy(note).into_owned(),
    })
}

fn encoded_public_key(vk: &VerifyingKey) -> Vec<u8> {
    // Algorithm byte 0x01 (Ed25519) followed by the key, as C2SP signed-note defines.
    let mut v = vec![0x01];
    v.extend_from_slice(vk.as_bytes());
    v
}
