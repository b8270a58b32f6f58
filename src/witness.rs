//! Witnesses (SPEC §3, C2SP `tlog-witness` and `tlog-cosignature`).
//!
//! A log's own checkpoint file cannot catch a data directory restored from a backup, nor a log
//! that shows different histories to different people. A witness can: it remembers, for each
//! log it follows, the latest checkpoint it cosigned, and cosigns a new one only if a
//! consistency proof shows the new tree extends that one. A client that requires cosignatures
//! from witnesses it trusts knows the log showed it the same history it showed them.
//!
//! - [`cosignature`]: the Ed25519 `cosignature/v1` format, signer and verifier.
//! - [`Witness`] (here): the witness's key, its name and the logs it trusts, opened from its
//!   data directory.
//! - `request`: the `add-checkpoint` request body (old size, proof lines, signed checkpoint)
//!   parsed into a typed request at the edge.
//! - `add`: the checks of `add-checkpoint` and the cosignature ([`Witness::add_checkpoint`],
//!   [`AddError`]).
//! - [`submit`]: the log's side: submitting checkpoints to witnesses, keeping the cosigned
//!   checkpoint, halting the log on a witness's proof of a fork or a rollback.
//! - `state`: the latest cosigned checkpoint of each log, one small file per origin, replaced
//!   atomically and durably before a cosignature is returned.
//! - `server`: the HTTP/1.1 endpoint ([`serve`]), its limits, and the one place where an
//!   [`AddError`] becomes an HTTP status.
//!
//! **Invariant: a witness never cosigns a tree smaller than, or conflicting with, one it
//! cosigned before**, across restarts. The check of the stored state and its update happen
//! under one lock per origin, and the new state is on disk before the cosignature leaves.

mod add;
pub mod cosignature;
mod request;
mod server;
mod state;
pub mod submit;

pub use add::AddError;
pub use server::serve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use signed_note::{StandardVerifier, Verifier as _};

use state::Cosigned;

/// File name of the lock a running witness holds in its data directory.
pub const LOCK_FILE: &str = "witness.lock";

/// Takes the directory's lock, or says another witness holds it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, WitnessError> {
    use fs2::FileExt;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WitnessError::io(&path, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(WitnessError::InUse(dir.to_path_buf()))
        }
        Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {
            Err(WitnessError::InUse(dir.to_path_buf()))
        }
        Err(e) => Err(WitnessError::io(&path, e)),
    }
}

/// File name of the witness's signing key in its data directory.
pub const KEY_FILE: &str = "witness.key";

/// Why a witness could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A secret file others can read (the message says how to fix it).
    #[error("{0}")]
    Insecure(String),
    #[error("{} is not a witness key (base64 of a 32-byte Ed25519 seed)", .0.display())]
    CorruptKey(PathBuf),
    #[error(
        "the witness name {0:?} is not a valid signed-note key name (non-empty, no spaces or '+')"
    )]
    Name(String),
    #[error("the verifier key of log {origin:?} is malformed ({reason}); a log's key is origin+hash+base64 as `claimledger serve` prints it")]
    LogKey { origin: String, reason: String },
    #[error("the verifier key for origin {origin:?} is named {name:?}: a log's key is named after its origin")]
    LogKeyName { origin: String, name: String },
    #[error("log {origin:?} is configured twice with the same key")]
    DuplicateLogKey { origin: String },
    #[error("no log to witness: give at least one origin and verifier key")]
    NoLogs,
    /// Another witness process has this directory open.
    #[error("{} is in use by another witness process (it holds {LOCK_FILE})", .0.display())]
    InUse(PathBuf),
    /// A state file that cannot be read back as what this witness wrote.
    #[error("the witness state file {} {reason}", path.display())]
    CorruptState { path: PathBuf, reason: String },
}

impl WitnessError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        WitnessError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One log the witness follows: the keys it trusts for the origin, and what it last cosigned.
struct Followed {
    keys: Vec<StandardVerifier>,
    /// The latest cosigned checkpoint (`None` until the first), or why this log is stopped.
    /// Held for the whole check-and-update of one request, so two requests cannot interleave
    /// (the rollback race of tlog-witness).
    state: Mutex<Result<Option<Cosigned>, String>>,
}

/// A witness: its name and key, its data directory, and the logs it follows.
pub struct Witness {
    dir: PathBuf,
    /// `witness.lock`, locked exclusively while this witness is open: two processes on one
    /// directory would each keep their own view of the state, and one could cosign a tree the
    /// other's state no longer allows.
    _lock: std::fs::File,
    name: String,
    key: SigningKey,
    key_id: u32,
    logs: HashMap<String, Followed>,
}

impl Witness {
    /// Opens the witness in `dir` (created if missing): loads its key `witness.key`, or creates
    /// it on first use, and the latest cosigned checkpoint of each of `logs`, given as
    /// `(origin, the log's signed-note verifier key)`.
    ///
    /// A log may be given more than once with different keys (a key rotation): a checkpoint
    /// signed by any of them is accepted.
    pub fn open(
        dir: &Path,
        name: &str,
        logs: Vec<(String, String)>,
    ) -> Result<Witness, WitnessError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(WitnessError::Name(name.to_string()));
        }
        if logs.is_empty() {
            return Err(WitnessError::NoLogs);
        }
        let mut keys: HashMap<String, Vec<StandardVerifier>> = HashMap::new();
        for (origin, vkey) in logs {
            let verifier =
                StandardVerifier::new(vkey.trim()).map_err(|e| WitnessError::LogKey {
                    origin: origin.clone(),
                    reason: e.to_string(),
                })?;
            if verifier.name() != origin {
                return Err(WitnessError::LogKeyName {
                    origin,
                    name: verifier.name().to_string(),
                });
            }
            let known = keys.entry(origin.clone()).or_default();
            // signed_note refuses a note whose (name, key ID) matches two verifiers, so a
            // repeated key would make every checkpoint of that log fail.
            if known.iter().any(|k| k.key_id() == verifier.key_id()) {
                return Err(WitnessError::DuplicateLogKey { origin });
            }
            known.push(verifier);
        }

        std::fs::create_dir_all(dir).map_err(|e| WitnessError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let key_id = cosignature::key_id(name, &key.verifying_key());
        let mut followed = HashMap::new();
        for (origin, keys) in keys {
            let last = state::load(dir, &origin, name, &key)?;
            followed.insert(
                origin,
                Followed {
                    keys,
                    state: Mutex::new(Ok(last)),
                },
            );
        }
        Ok(Witness {
            dir: dir.to_path_buf(),
            _lock: lock,
            name: name.to_string(),
            key,
            key_id,
            logs: followed,
        })
    }

    /// The witness's verifier key, `name+hash+base64(0x04 ‖ public key)`: what a log or a
    /// client configures to check this witness's cosignatures.
    pub fn verifier_key(&self) -> String {
        cosignature::verifier_key(&self.name, &self.key.verifying_key())
    }

    /// The witness's name (the key name of its cosignatures).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size and root of the latest checkpoint cosigned for `origin`, if any (`None` also
    /// for an origin this witness does not follow).
    pub fn cosigned(&self, origin: &str) -> Option<(u64, tlog_tiles::Hash)> {
        let log = self.logs.get(origin)?;
        let state = lock(&log.state);
        match &*state {
            Ok(Some(c)) => Some((c.size, c.root)),
            _ => None,
        }
    }
}

/// Locks a log's state. A panic while it was held cannot have left it half-updated (the new
/// state is assigned in one step, after it is durable), so a poisoned lock is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Loads the witness key, or creates it if there is none. The key is refused if others can read
/// it: anyone who can read it can cosign in the witness's name.
fn load_or_create_key(path: &Path) -> Result<SigningKey, WitnessError> {
    crate::files::load_or_create_key(path, "the witness's signing key").map_err(|e| match e {
        crate::files::KeyFileError::Insecure(m) => WitnessError::Insecure(m),
        crate::files::KeyFileError::Corrupt(p) => WitnessError::CorruptKey(p),
        crate::files::KeyFileError::Io(p, e) => WitnessError::io(&p, e),
    })
}
