//! The claims ledger: the domain's state kept on top of the log.
//!
//! Every change is a log entry whose body is a `claimledger.v1.Change`. From those entries the
//! ledger derives sled indexes (records per source and claim, and lookup indexes by kind,
//! status, claimant, place, event time and words) so reads never scan the log. The indexes are
//! written by [`apply::LedgerApply`] inside the log's writer, in the same atomic batch as the
//! entry they derive from, and can be rebuilt from the log alone (`claimledger reindex`:
//! `log::Offline::reindex` with [`LedgerApply`]).
//!
//! - [`keys`]: the index key layout.
//! - [`apply`]: validation against current state, idempotency, and index writes.
//! - [`read`]: records, statuses (now or as of an earlier size) and list queries.
//! - [`status`]: a claim's status from its record as of a size (shared by `read` and `apply`).
//! - [`terms`]: the words a claim is indexed and matched by (shared by `apply` and `read`).
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

use sha2::{Digest, Sha256};

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
