//! The full audit of a log directory: what `claimledger verify` and the VerifyLog RPC run.
//!
//! In one pass over the entries in index order it decodes each envelope, checks its index and
//! its `prev_hash` link, re-hashes its exact bytes, rebuilds the RFC 6962 tree with a compact
//! stack of subtree roots, and compares every hash this produces with the stored hashes kept in
//! the same entry's value (an entry stores the hashes its append produced).
//! At the end it compares the rebuilt root with the signed checkpoint and checks the signature,
//! and compares the tree with the checkpoint kept outside sled ([`super::checkpoint_file`]): a
//! sled holding fewer entries than that checkpoint, or another root at its size, fails.
//! The first disagreement is reported with the index of the entry it belongs to.

use prost::Message;
use tlog_tiles::Hash;

use super::checkpoint::Checkpointer;
use super::checkpoint_file;
use super::entry::{packed_hash, unpack, Envelope, ZERO_HASH};
use super::error::LogError;
use super::store::{leaf_hash, Store};

/// Progress of a running audit.
#[derive(Debug, Clone, Copy)]
pub struct VerifyProgress {
    pub checked: u64,
    pub total: u64,
}

/// The result of an audit.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub size: u64,
    pub checked: u64,
    pub root: Option<Hash>,
    pub first_bad_index: Option<u64>,
    /// Empty when everything verified.
    pub error: String,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.first_bad_index.is_none() && self.error.is_empty()
    }
}

/// How often progress is reported.
const PROGRESS_EVERY: u64 = 1 << 16;

fn node(l: &Hash, r: &Hash) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l.0);
    h.update(r.0);
    Hash(h.finalize().into())
}

/// A compact Merkle range: the roots of the complete subtrees covering `[0, n)`, largest first.
#[derive(Default)]
pub(crate) struct Compact {
    stack: Vec<Hash>,
    n: u64,
}

impl Compact {
    /// Adds a leaf; `out` receives the hashes sumdb stores for it (leaf first, then every
    /// subtree it completes), in stored-hash-index order.
    pub(crate) fn push(&mut self, leaf: Hash, out: &mut Vec<Hash>) {
        out.clear();
        out.push(leaf);
        let mut h = leaf;
        let mut n = self.n;
        while n & 1 == 1 {
            // A trailing one bit means a complete left sibling of the same height is waiting.
            let left = self.stack.pop().unwrap_or(ZERO_HASH);
            h = node(&left, &h);
            out.push(h);
            n >>= 1;
        }
        self.stack.push(h);
        self.n += 1;
    }

    /// The RFC 6962 root of the leaves pushed so far.
    pub(crate) fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(mut acc) = it.next().copied() else {
            return tlog_tiles::EMPTY_HASH;
        };
        for left in it {
            acc = node(left, &acc);
        }
        acc
    }
}

/// Runs the full audit, calling `progress` every 65,536 entries and at the end.
///
/// sled panics on some damaged data: such a panic while reading entry `i` is reported as the
/// first bad index `i`, one elsewhere as [`LogError::Unreadable`]; neither prints anything.
pub(crate) fn verify(
    store: &Store,
    cp: &Checkpointer,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Result<VerifyReport, LogError> {
    super::guarded(store, || audit(store, cp, progress, true))
}

/// [`verify`] without the comparison with the checkpoint file: for the start-up check (which
/// makes that comparison itself, before and after, with errors of its own) and for `recover`
/// (which must know whether what sled holds is sound before it makes it the history).
pub(crate) fn verify_sled(store: &Store, cp: &Checkpointer) -> Result<VerifyReport, LogError> {
    super::guarded(store, || audit(store, cp, &mut |_| {}, false))
}

fn audit(
    store: &Store,
    cp: &Checkpointer,
    progress: &mut dyn FnMut(VerifyProgress),
    with_file: bool,
) -> Result<VerifyReport, LogError> {
    // The checkpoint kept outside sled is read first: the writer replaces it only after sled's
    // commit, so read before sled's own checkpoint it is never ahead of it in a live log.
    let outside = match with_file
        .then(|| checkpoint_file::read(store.dir(), cp))
        .transpose()
    {
        Ok(f) => f.flatten(),
        Err(e) => {
            return Ok(VerifyReport {
                size: store.size()?,
                checked: 0,
                root: None,
                first_bad_index: None,
                error: e.to_string(),
            })
        }
    };
    let file_missing = with_file && outside.is_none() && store.keeps_checkpoint_file()?;
    // Audit exactly the tree of the latest signed checkpoint, so a server that keeps appending
    // during the audit does not make it compare entries and a checkpoint of different sizes.
    let signed = if store.size()? == 0 {
        None
    } else {
        Some(store.latest_checkpoint()?)
    };
    let size = signed.as_ref().map_or(0, |s| s.size);
    let mut report = VerifyReport {
        size,
        checked: 0,
        root: None,
        first_bad_index: None,
        error: String::new(),
    };
    let fail = |mut r: VerifyReport, index: u64, why: String| {
        r.first_bad_index = Some(index);
        r.error = why;
        Ok(r)
    };

    let outside_size = outside.as_ref().map(|f| f.size);
    let mut outside_root = (outside_size == Some(0)).then_some(tlog_tiles::EMPTY_HASH);
    let mut c = Compact::default();
    let mut produced = Vec::new();
    let mut prev = ZERO_HASH;
    let mut entries = store.packed(0, size);
    for i in 0..size {
        let next = match super::guard::catch(|| entries.next()) {
            Ok(next) => next,
            Err(panic) => {
                let file = store.describe();
                return fail(
                    report,
                    i,
                    format!("{file} cannot be read: sled failed: {panic}"),
                );
            }
        };
        let packed = match next {
            Some(Ok((idx, v))) if idx == i => v,
            Some(Ok(_)) | None => return fail(report, i, "entry missing".into()),
            Some(Err(e)) => return fail(report, i, format!("reading entry: {e}")),
        };
        let Some((count, at)) = unpack(&packed) else {
            return fail(report, i, "stored entry is malformed".into());
        };
        let bytes = &packed[at..];
        let env = match Envelope::decode(bytes) {
            Ok(env) => env,
            Err(e) => return fail(report, i, format!("entry does not decode: {e}")),
        };
        if env.index != i {
            return fail(report, i, format!("entry says index {}", env.index));
        }
        if env.prev_hash[..] != prev.0[..] {
            return fail(
                report,
                i,
                "prev_hash does not match the previous entry".into(),
            );
        }
        let leaf = leaf_hash(bytes);
        c.push(leaf, &mut produced);
        if count != produced.len() {
            return fail(
                report,
                i,
                format!("stores {count} hashes, its append makes {}", produced.len()),
            );
        }
        for (k, want) in produced.iter().enumerate() {
            if packed_hash(&packed, k).as_ref() != Some(want) {
                let what = if k == 0 {
                    "entry bytes do not match the stored leaf hash".to_string()
                } else {
                    let idx = tlog_tiles::stored_hash_index(0, i) + k as u64;
                    format!("stored tree hash {idx} does not match the entries")
                };
                return fail(report, i, what);
            }
        }
        prev = leaf;
        report.checked = i + 1;
        if outside_size == Some(report.checked) {
            outside_root = Some(c.root());
        }
        if report.checked % PROGRESS_EVERY == 0 {
            progress(VerifyProgress {
                checked: report.checked,
                total: size,
            });
        }
    }
    let root = c.root();
    report.root = Some(root);
    progress(VerifyProgress {
        checked: report.checked,
        total: size,
    });
    if let Some(file) = &outside {
        let path = checkpoint_file::path(store.dir()).display().to_string();
        if file.size > size {
            report.first_bad_index = Some(size);
            report.error = LogError::Shrunk {
                file: path,
                committed: file.size,
                stored: size,
            }
            .to_string();
            return Ok(report);
        }
        if outside_root != Some(file.root) {
            report.error = LogError::Diverged {
                file: path,
                size: file.size,
                stored: size,
            }
            .to_string();
            return Ok(report);
        }
    } else if file_missing {
        report.error = format!(
            "{} is missing, but this data directory keeps one: a shortened log cannot be \
             told from a whole one without it",
            checkpoint_file::path(store.dir()).display()
        );
        return Ok(report);
    }
    let Some(signed) = signed else {
        return Ok(report);
    };
    if let Err(e) = cp.verify(signed.note.as_bytes()) {
        report.error = format!("checkpoint signature: {e}");
    } else if store.size()? < signed.size {
        report.error = format!(
            "the stored tree size {} is below the checkpoint's {}",
            store.size()?,
            signed.size
        );
    } else if signed.root != root {
        report.error = "rebuilt root differs from the signed checkpoint".into();
    }
    Ok(report)
}
