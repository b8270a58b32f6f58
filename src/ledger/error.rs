//! Errors of the ledger, told apart by callers and mapped to gRPC codes in `api::error`.

use crate::claims::validate::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A field is missing or malformed.
    #[error("invalid {0}")]
    InvalidArgument(#[from] FieldError),
    /// An id names nothing.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already, or a request id was reused for different content.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The same request was already logged at `index`: idempotent replay, nothing written.
    #[error("request already logged at index {index}")]
    Duplicate { index: u64 },
    /// A stored record cannot be decoded.
    #[error("corrupt index: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
}

pub(crate) fn not_found(what: &str, id: &str) -> LedgerError {
    LedgerError::NotFound(format!("{what} {id:?} not found"))
}
