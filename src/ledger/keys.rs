//! Key layout of the domain indexes (under the log's index prefix, which the log adds).
//!
//! | key                                   | value                          |
//! |---------------------------------------|--------------------------------|
//! | `s/` id                               | source record (GetSourceResponse) |
//! | `c/` id                               | claim record (GetClaimResponse)   |
//! | `o/` be64(claim index)                | claim id (claims in log order) |
//! | `k/` be32(kind) be64(claim index)     | claim id                       |
//! | `a/` claimant 0x00 be64(claim index)  | claim id                       |
//! | `t/` be32(status) be64(claim index)   | claim id (status when last changed) |
//! | `p/` word 0x00 be64(claim index)      | claim id (place words)         |
//! | `w/` word 0x00 be64(claim index)      | claim id (summary, text, tag words) |
//! | `v/` ordered(start) be64(claim index) | claim id (event time start)    |
//! | `vspan`                               | be64: longest event span seen, seconds |
//! | `r/` [principal 0x00] request id      | digest(32) be64(index) (see `scoped_request_id`) |
//! | `e/` evidence id                      | claim id                       |
//! | `i/` source id 0x00 claim id          | empty (claims that cite a source) |
//!
//! Every lookup index ends with the claim's log index, so each lists claims in log order, and a
//! page token ("after claim index N") resumes any of them without duplicates or gaps while new
//! claims (always at higher indexes) keep arriving.

pub const SOURCE: &[u8] = b"s/";
pub const CLAIM: &[u8] = b"c/";
pub const ORDER: &[u8] = b"o/";
pub const KIND: &[u8] = b"k/";
pub const CLAIMANT: &[u8] = b"a/";
pub const STATUS: &[u8] = b"t/";
pub const PLACE: &[u8] = b"p/";
pub const WORD: &[u8] = b"w/";
pub const EVENT: &[u8] = b"v/";
pub const EVENT_SPAN: &[u8] = b"vspan";
pub const REQUEST: &[u8] = b"r/";
pub const EVIDENCE: &[u8] = b"e/";
pub const CITES: &[u8] = b"i/";

pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The prefix of a string-keyed index bucket: `tag` ‖ s ‖ 0x00.
pub fn bucket(tag: &[u8], s: &str) -> Vec<u8> {
    join(&[tag, s.as_bytes(), &[0]])
}

/// The prefix of an enum-keyed index bucket: `tag` ‖ be32(v).
pub fn enum_bucket(tag: &[u8], v: i32) -> Vec<u8> {
    join(&[tag, &(v as u32).to_be_bytes()])
}

/// A signed time as bytes that sort in time order.
pub fn ordered_time(seconds: i64) -> [u8; 8] {
    ((seconds as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`ordered_time`].
pub fn time_of(ordered: &[u8]) -> Option<i64> {
    let raw = u64::from_be_bytes(ordered.get(..8)?.try_into().ok()?);
    Some((raw ^ (1 << 63)) as i64)
}

/// The claim log index at the end of an index key.
pub fn trailing_index(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}
