//! The claims ledger: the domain's state kept on top of the log.
//!
//! Every change is a log entry whose body is a `claimledger.v1.Change`. From those entries the
//! ledger keeps the state that validating a write needs and that records are read from
//! (sources and their grades, claims and the items on them, evidence ids, idempotency keys), a
//! fixed few keys per write. It is written by [`apply::LedgerApply`] inside the log's writer, in
//! the same atomic batch as the entry it derives from, and can be rebuilt from the log alone
//! (`claimledger reindex`: `log::Offline::reindex` with [`LedgerApply`]). Queries over claims
//! are the derived index's (`crate::index`).
//!
//! - [`keys`]: the key layout.
//! - [`apply`]: validation against current state, idempotency, and state writes.
//! - [`read`]: records, statuses (now or as of an earlier size), and listing sources.
//! - [`status`]: a claim's status from its record as of a size (shared by `read` and the
//!   query index).
//! - [`terms`]: the text a claim is found by (for the query index).
//! - [`error`]: the domain errors the API maps to gRPC codes.

pub mod apply;
pub mod error;
pub mod keys;
pub mod read;
pub mod status;
pub mod terms;

pub use apply::LedgerApply;
pub use error::LedgerError;
pub use read::Reader;

use std::path::Path;

use sha2::{Digest, Sha256};

/// Whether the open log's ledger state is in an earlier layout than [`keys::LAYOUT`] (see
/// [`upgrade_layout`]).
pub fn needs_upgrade(log: &crate::log::Log) -> Result<bool, crate::log::LogError> {
    if log.size() == 0 {
        return Ok(false);
    }
    let layout = log.indexes().get(keys::LAYOUT_KEY)?;
    Ok(layout.as_deref() != Some(keys::LAYOUT))
}

/// Brings the ledger state of the data directory `dir` to this version's layout
/// ([`keys::LAYOUT`]): a log written with an earlier layout has its state rebuilt from the log
/// (which changes no entry). Returns the entries re-applied, if it had to. A directory without a
/// log yet needs nothing.
pub fn upgrade_layout(
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<u64>, crate::log::LogError> {
    if !dir.join("sled").exists() {
        return Ok(None);
    }
    let offline = crate::log::Offline::open(dir)?;
    if offline.size()? == 0 {
        return Ok(None);
    }
    let layout = offline.indexes().get(keys::LAYOUT_KEY)?;
    if layout.as_deref() == Some(keys::LAYOUT) {
        return Ok(None);
    }
    offline.reindex(&LedgerApply, progress).map(Some)
}

/// A server-assigned id: `prefix` and 16 hex digits (64 bits) of SHA-256 over the request id. Stable for
/// a retried request, short and URL-safe.
pub fn derive_id(prefix: &str, request_id: &str) -> String {
    let d = Sha256::digest(format!("claimledger-id\0{prefix}\0{request_id}").as_bytes());
    let mut id = String::with_capacity(prefix.len() + 13);
    id.push_str(prefix);
    id.push('-');
    for b in &d[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The actor of entries written without a named principal.
pub const ANONYMOUS: &str = "anonymous";

/// A request id as the principal's own: idempotency keys and ids derived from request ids are
/// scoped to the principal that sent them (SPEC §7), so another principal reusing an id neither
/// collides with it nor learns anything from it. `anonymous` keeps the bare id, which is how
/// logs written before this scoping keyed their requests; a named principal's id is prefixed
/// with its name and a NUL, which neither a request id nor a principal name can contain, so the
/// two forms never meet.
pub fn scoped_request_id(actor: &str, request_id: &str) -> String {
    if actor == ANONYMOUS {
        request_id.to_string()
    } else {
        format!("{actor}\0{request_id}")
    }
}
