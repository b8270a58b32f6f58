//! The stored entry envelope.
//!
//! Its wire format is that of `claimledger.v1.Entry` in `proto/claimledger/v1/log.proto`: the
//! body field is declared there as the `Change` message and here as bytes, which protobuf encodes
//! identically. The log layer therefore never needs to understand the body, and auditors can
//! decode an entry with the published `.proto` files.

use pbjson_types::Timestamp;
use prost::Message;
use tlog_tiles::Hash;

/// One log entry as stored. `encode_to_vec` of this is what is hashed and served.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    /// Leaf hash of the previous entry; all zeros for index 0.
    #[prost(bytes = "vec", tag = "2")]
    pub prev_hash: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub recorded_at: Option<Timestamp>,
    #[prost(string, tag = "4")]
    pub actor: String,
    /// The domain layer's bytes (an encoded `claimledger.v1.Change`).
    #[prost(bytes = "vec", tag = "5")]
    pub body: Vec<u8>,
}

/// What the writer knows about an entry when it hands it to the domain layer.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    pub index: u64,
    pub leaf_hash: Hash,
    pub recorded_at: Timestamp,
    pub actor: String,
}

impl EntryMeta {
    /// The metadata of a decoded stored entry (used when rebuilding indexes).
    pub fn of(env: &Envelope, leaf_hash: Hash) -> EntryMeta {
        EntryMeta {
            index: env.index,
            leaf_hash,
            recorded_at: env.recorded_at.unwrap_or_default(),
            actor: env.actor.clone(),
        }
    }
}

/// The `prev_hash` of entry 0.
pub const ZERO_HASH: Hash = Hash([0; 32]);

/// The stored value of an entry: the stored hashes its append produced (its leaf hash, then
/// the root of every subtree it completed, in level order), then the entry's exact bytes:
///
/// ```text
/// count: u8 | count × 32-byte hash | entry bytes
/// ```
///
/// Keeping an entry's hashes in its own value means one sled key per entry instead of about
/// three, which is what sled's cost is proportional to; the bytes that are hashed and served
/// are still exactly the entry's, untouched.
pub fn pack(hashes: &[Hash], entry: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + hashes.len() * 32 + entry.len());
    // At most 1 + 64 hashes: one per level of a tree of up to 2^64 entries.
    v.push(hashes.len() as u8);
    for h in hashes {
        v.extend_from_slice(&h.0);
    }
    v.extend_from_slice(entry);
    v
}

/// Where the parts of a packed value are: `(hash count, offset of the entry bytes)`, or `None`
/// if the value is too short to hold what its count byte says.
pub fn unpack(v: &[u8]) -> Option<(usize, usize)> {
    let count = usize::from(*v.first()?);
    let entry_at = 1 + count * 32;
    (count >= 1 && v.len() >= entry_at).then_some((count, entry_at))
}

/// Hash number `i` of a packed value.
pub fn packed_hash(v: &[u8], i: usize) -> Option<Hash> {
    let (count, _) = unpack(v)?;
    if i >= count {
        return None;
    }
    let at = 1 + i * 32;
    Some(Hash(v.get(at..at + 32)?.try_into().ok()?))
}
