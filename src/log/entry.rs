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
