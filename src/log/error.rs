//! Errors of the log layer. Callers tell them apart (the API maps them to gRPC codes in one
//! place, `api::error`).

use std::path::Path;

use super::apply::Rejection;

/// What can go wrong in the log engine.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A proof, root or checkpoint was asked for beyond the current tree.
    #[error("size {requested} is beyond the tree (current size {size})")]
    OutOfRange { requested: u64, size: u64 },
    /// An argument that can never be valid (e.g. an index not below the tree size asked about).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The stored log does not match its signed checkpoint, or an entry fails verification.
    #[error("log verification failed at index {index}: {reason}")]
    Tampered { index: u64, reason: String },
    /// sled's size is below that of the checkpoint kept outside it: sled lost acknowledged
    /// groups (it recovers from damage by dropping what follows), its state and size with them.
    #[error(
        "{file} holds a signed checkpoint of {committed} entries, but sled holds only {stored}: \
         entries {stored} to {last} ({missing} acknowledged entries) are missing from it. \
         Restore the data directory from a copy taken at size {committed} or later, or run \
         `claimledger recover` to see what continuing without them would lose",
        last = .committed - 1,
        missing = .committed - .stored
    )]
    Shrunk {
        file: String,
        committed: u64,
        stored: u64,
    },
    /// The tree sled holds has another root, at the size of the checkpoint kept outside it,
    /// than that checkpoint: the stored history is not the one acknowledged.
    #[error(
        "the tree sled holds ({stored} entries) has another root at size {size} than the \
         signed checkpoint in {file}: the stored history differs from the acknowledged one"
    )]
    Diverged {
        file: String,
        size: u64,
        stored: u64,
    },
    /// A storage file that cannot be read (sled failed on it); `index` is the first entry that
    /// could not be read, when known.
    #[error("{file} cannot be read{}: {reason}", .index.map(|i| format!(" (from index {i})")).unwrap_or_default())]
    Unreadable {
        file: String,
        index: Option<u64>,
        reason: String,
    },
    /// A directory without the log's `sled/` in it.
    #[error(
        "{0} is not a claimledger data directory (it has no sled/); a log kept in PostgreSQL \
         (serve --store postgres://…) is audited by a running server: claimledger log verify \
         --server URL"
    )]
    NotADataDirectory(String),
    /// Stored state that cannot be read as what it must be (not tied to one entry).
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    /// A signed checkpoint does not verify (wrong key, origin, signature or text).
    #[error("checkpoint does not verify: {0}")]
    Unverified(String),
    /// The data directory was created with another origin.
    #[error("data directory has origin {stored:?}, but {requested:?} was asked for")]
    OriginMismatch { stored: String, requested: String },
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// PostgreSQL failed or cannot be reached (the URL without its password, and the reason).
    #[error("PostgreSQL: {0}")]
    Database(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A secret file (the signing key) that others can read.
    #[error("{0}")]
    Insecure(String),
    /// An entry larger than the log takes.
    #[error("{0}")]
    TooLarge(String),
    /// Storage is failing in a way that may pass (say, no free file descriptor): the request
    /// was not acknowledged and may be retried with the same request id.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The log refuses to sign anything new (see `Log::halt`): its history conflicts with one
    /// a witness holds.
    #[error("the log is halted and signs nothing new: {0}")]
    Halted(String),
    #[error("the log is closed")]
    Closed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl LogError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The domain layer refused the entry (validation against current state, a duplicate
    /// request); nothing was written.
    #[error(transparent)]
    Rejected(Rejection),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// An error's text followed by its causes' ("error performing TLS handshake: invalid peer
/// certificate: UnknownIssuer"): tokio-postgres and tonic name only the outermost step.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
