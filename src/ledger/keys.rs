//! Key layout of the ledger's state (under the log's index prefix, which the log adds).
//!
//! This is only what validating a write needs, plus the records reads are answered from; each
//! write puts a fixed number of these keys (at most three) in its group's batch, whatever the
//! size of the claim, the number of its evidence or the number of claims citing a source.
//! Everything that only serves queries (words, kinds, statuses, places, event times) is in the
//! derived query index (`crate::index`), which follows the log instead of being written here.
//!
//! | key                                   | value                                          |
//! |---------------------------------------|------------------------------------------------|
//! | `s/` id                               | source record (GetSourceResponse: the source with its current grade, and that latest grade only) |
//! | `g/` id 0x00 be64(index)              | one grade of the source (GradeRecord), logged at `index` |
//! | `c/` id                               | the claim as logged (Claim, with index and time) |
//! | `n/` claim id 0x00 be64(index)        | one item on the claim, logged at `index`: a tag byte (`e` evidence, `v` verdict, `x` retraction) ‖ the message |
//! | `q/` claim id                         | be64(index of the claim's retraction)           |
//! | `e/` evidence id                      | claim id                                       |
//! | `r/` [principal 0x00] request id      | digest(32) be64(index) (see `scoped_request_id`) |
//! | `layout`                              | [`LAYOUT`]: the version of this layout          |
//!
//! A claim's record is its `c/` key and its `n/` range, read in log order; a source's grade as
//! of an earlier size is the last `g/` key below it.

pub const SOURCE: &[u8] = b"s/";
pub const GRADE: &[u8] = b"g/";
pub const CLAIM: &[u8] = b"c/";
pub const ITEM: &[u8] = b"n/";
pub const RETRACTED: &[u8] = b"q/";
pub const EVIDENCE: &[u8] = b"e/";
pub const REQUEST: &[u8] = b"r/";
pub const LAYOUT_KEY: &[u8] = b"layout";

/// The version of this layout, kept under [`LAYOUT_KEY`]. A data directory written with another
/// layout is rebuilt from its log when it is opened (`ledger::layout`).
pub const LAYOUT: &[u8] = b"2";

/// Tags of the items on a claim (`n/` values).
pub const ITEM_EVIDENCE: u8 = b'e';
pub const ITEM_VERDICT: u8 = b'v';
pub const ITEM_RETRACTION: u8 = b'x';

pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The prefix of a string-keyed bucket: `tag` ‖ s ‖ 0x00.
pub fn bucket(tag: &[u8], s: &str) -> Vec<u8> {
    join(&[tag, s.as_bytes(), &[0]])
}

/// The key of something logged at `index` in a string-keyed bucket.
pub fn at(tag: &[u8], s: &str, index: u64) -> Vec<u8> {
    join(&[&bucket(tag, s), &index.to_be_bytes()])
}

/// The log index at the end of a bucket key.
pub fn trailing_index(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[start..].try_into().ok()?))
}
