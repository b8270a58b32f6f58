//! The full audit of a log directory: what `claimledger verify` and the VerifyLog RPC run.
//!
//! In one pass over the entries in index order it decodes each envelope, checks its index and
//! its `prev_hash` link, re-hashes its exact bytes, rebuilds the RFC 6962 tree with a compact
//! stack of subtree roots, and compares every hash this produces with the stored hashes kept in
//! the same entry's value (an entry stores the hashes its append produced). A long log on sled
//! is read in two halves at once, joined at the end (`scan_all`).
//! At the end it compares the rebuilt root with the signed checkpoint and checks the signature,
//! and compares the tree with the checkpoint kept outside sled ([`super::checkpoint_file`]): a
//! sled holding fewer entries than that checkpoint, or another root at its size, fails.
//! The first disagreement is reported with the index of the entry it belongs to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
}

/// What the scan of a whole log found.
struct Whole {
    /// Entries checked before the first disagreement (all of them without one).
    checked: u64,
    /// The first disagreement: the entry's index and why.
    bad: Option<(u64, String)>,
    /// The rebuilt root.
    root: Hash,
    /// The rebuilt root at the size asked for (the checkpoint file's), if reached.
    root_at: Option<Hash>,
}

/// Logs at least this long are scanned by two threads.
const SPLIT_FROM: u64 = 1 << 12;

/// Scans the entries `[0, size)`, rebuilding the tree and checking every stored hash.
///
/// A long log on sled is scanned in two halves at once, one per core (both read the entry
/// files): `[0, m)` and `[m, size)` with `m` the
/// largest power of two below `size`, so the first half is one complete subtree and the second
/// is no longer than it. The second half's tree is rebuilt relative to `m`; only its link to
/// the first (the `prev_hash` of entry `m`) and, if `size` is `2m`, the hash that joins the two
/// subtrees are checked once both are done.
fn scan_all(
    store: &Store,
    size: u64,
    root_at: Option<u64>,
    progress: &mut dyn FnMut(VerifyProgress),
) -> Whole {
    let split = size >= SPLIT_FROM
        && matches!(store.kv(), super::kv::Kv::Sled(_))
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    if !split {
        let a = scan(store, 0, size, root_at, None, &mut |n| {
            progress(VerifyProgress {
                checked: n,
                total: size,
            })
        });
        return Whole {
            checked: a.checked,
            root: root_of(&a.compact.stack),
            root_at: a.root_at.as_deref().map(root_of),
            bad: a.bad,
        };
    }
    let m = 1u64 << (63 - (size - 1).leading_zeros());
    // How far the second half is, for progress.
    let done_b = AtomicU64::new(0);
    // Set when the first half fails: the second half's findings no longer matter.
    let stop = AtomicBool::new(false);
    let (a, b) = std::thread::scope(|s| {
        // sled's panics on damaged data are caught inside `scan`; any other is caught on the
        // thread it happens on (`guard::catch` keeps it from printing) and raised again here.
        let second = std::thread::Builder::new()
            .name("claimledger-verify".into())
            .spawn_scoped(s, || {
                super::guard::catch(|| {
                    scan(store, m, size, root_at, Some(&stop), &mut |n| {
                        done_b.store(n, Ordering::Relaxed)
                    })
                })
            });
        let a = scan(store, 0, m, root_at, None, &mut |n| {
            progress(VerifyProgress {
                checked: n + done_b.load(Ordering::Relaxed),
                total: size,
            })
        });
        if a.bad.is_some() {
            stop.store(true, Ordering::Relaxed);
        }
        let b = match second {
            Ok(t) => {
                while !t.is_finished() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    progress(VerifyProgress {
                        checked: m + done_b.load(Ordering::Relaxed),
                        total: size,
                    });
                }
                match t.join() {
                    Ok(Ok(b)) => b,
                    // The first half's finding comes first; without one, the panic is the
                    // audit's, as it would be in a single scan (`log::guarded` reports it).
                    Ok(Err(_)) | Err(_) if a.bad.is_some() => Scanned::new(),
                    Ok(Err(panic)) => std::panic::resume_unwind(Box::new(panic)),
                    Err(payload) => std::panic::resume_unwind(payload),
                }
            }
            // No thread to be had: the second half on this one.
            Err(_) => scan(store, m, size, root_at, None, &mut |n| {
                progress(VerifyProgress {
                    checked: m + n,
                    total: size,
                })
            }),
        };
        (a, b)
    });
    let stack = |b_stack: &[Hash]| {
        let mut all = a.compact.stack.clone();
        all.extend_from_slice(b_stack);
        all
    };
    let root = root_of(&stack(&b.compact.stack));
    let joined = Whole {
        checked: m + b.checked,
        bad: None,
        root,
        root_at: match (root_at, &a.root_at, &b.root_at) {
            (Some(n), Some(s), _) if n <= m => Some(root_of(s)),
            (_, _, Some(s)) => Some(root_of(&stack(s))),
            _ => None,
        },
    };
    if a.bad.is_some() {
        return Whole {
            checked: a.checked,
            bad: a.bad,
            ..joined
        };
    }
    let fail = |checked: u64, i: u64, why: String| Whole {
        checked,
        bad: Some((i, why)),
        ..joined
    };
    // Without a `prev_hash` entry `m` itself failed before it was read, which `b.bad` says.
    if b.first_prev.is_some_and(|p| p[..] != a.last.0[..]) {
        return fail(m, m, "prev_hash does not match the previous entry".into());
    }
    if let Some((i, why)) = b.bad {
        return fail(m + b.checked, i, why);
    }
    if let Some((i, k, stored)) = b.carry {
        // Entry `2m - 1` completes the subtree joining both halves.
        let (Some(left), Some(right)) = (a.compact.stack.first(), b.compact.stack.first()) else {
            return fail(i, i, "the two halves of the tree do not join".into());
        };
        if stored != node(left, right) {
            let idx = tlog_tiles::stored_hash_index(0, i) + k as u64;
            return fail(
                i,
                i,
                format!("stored tree hash {idx} does not match the entries"),
            );
        }
    }
    joined
}

/// What the scan of `[from, to)` found.
struct Scanned {
    /// Entries checked before the first disagreement.
    checked: u64,
    bad: Option<(u64, String)>,
    /// The tree of the leaves scanned, relative to `from`.
    compact: Compact,
    /// The leaf hash of the last entry checked (zero before the first).
    last: Hash,
    /// The `prev_hash` of entry `from` (checked here only for entry 0).
    first_prev: Option<Vec<u8>>,
    /// The compact stack once `root_at` entries were checked, if that is in the range.
    root_at: Option<Vec<Hash>>,
    /// A stored hash of the last entry that joins the range's tree with the one before it:
    /// the entry's index, the hash's position in the entry and its value.
    carry: Option<(u64, usize, Hash)>,
}

impl Scanned {
    fn new() -> Self {
        Scanned {
            checked: 0,
            bad: None,
            compact: Compact::default(),
            last: ZERO_HASH,
            first_prev: None,
            root_at: None,
            carry: None,
        }
    }
}

/// Scans the entries `[from, to)`, `from` being 0 or a power of two at least `to - from`,
/// calling `progress` with the entries checked every 65,536; gives up early (its findings then
/// incomplete) once `stop` is set.
fn scan(
    store: &Store,
    from: u64,
    to: u64,
    root_at: Option<u64>,
    stop: Option<&AtomicBool>,
    progress: &mut dyn FnMut(u64),
) -> Scanned {
    let mut out = Scanned::new();
    let mut produced = Vec::new();
    let mut entries = store.packed(from, to);
    for i in from..to {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let bad = |mut out: Scanned, why: String| {
            out.bad = Some((i, why));
            out
        };
        let next = match super::guard::catch(|| entries.next()) {
            Ok(next) => next,
            Err(panic) => {
                let file = store.describe();
                return bad(out, format!("{file} cannot be read: {panic}"));
            }
        };
        let packed = match next {
            Some(Ok((idx, v))) if idx == i => v,
            Some(Ok(_)) | None => return bad(out, "entry missing".into()),
            Some(Err(e)) => return bad(out, format!("reading entry: {e}")),
        };
        let Some((count, at)) = unpack(&packed) else {
            return bad(out, "stored entry is malformed".into());
        };
        let bytes = &packed[at..];
        let env = match Envelope::decode(bytes) {
            Ok(env) => env,
            Err(e) => return bad(out, format!("entry does not decode: {e}")),
        };
        if env.index != i {
            return bad(out, format!("entry says index {}", env.index));
        }
        if i == from && from > 0 {
            out.first_prev = Some(env.prev_hash.clone());
        } else if env.prev_hash[..] != out.last.0[..] {
            return bad(out, "prev_hash does not match the previous entry".into());
        }
        let leaf = leaf_hash(bytes);
        out.compact.push(leaf, &mut produced);
        // What the append of entry `i` stores: its leaf, then one hash per subtree it
        // completes. Relative to `from` the scan makes all but (for the last entry of a second
        // half as long as the first) the one joining the two halves.
        let makes = 1 + i.trailing_ones() as usize;
        if count != makes {
            return bad(
                out,
                format!("stores {count} hashes, its append makes {makes}"),
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
                return bad(out, what);
            }
        }
        match makes - produced.len() {
            0 => {}
            1 => match packed_hash(&packed, produced.len()) {
                Some(h) => out.carry = Some((i, produced.len(), h)),
                None => return bad(out, "stored entry is malformed".into()),
            },
            _ => return bad(out, "the audit split the tree where it may not".into()),
        }
        out.last = leaf;
        out.checked += 1;
        if root_at == Some(i + 1) {
            out.root_at = Some(out.compact.stack.clone());
        }
        if out.checked % PROGRESS_EVERY == 0 {
            progress(out.checked);
        }
    }
    out
}

/// The RFC 6962 root of a compact stack (largest subtree first).
fn root_of(stack: &[Hash]) -> Hash {
    let mut it = stack.iter().rev();
    let Some(mut acc) = it.next().copied() else {
        return tlog_tiles::EMPTY_HASH;
    };
    for left in it {
        acc = node(left, &acc);
    }
    acc
}

/// Runs the full audit, calling `progress` as it goes (every 65,536 entries of a half, and
/// every 50 ms while only the second half is left) and at the end.
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
    let whole = scan_all(store, size, outside_size, progress);
    report.checked = whole.checked;
    if let Some((i, why)) = whole.bad {
        return fail(report, i, why);
    }
    let root = whole.root;
    let outside_root = if outside_size == Some(0) {
        Some(tlog_tiles::EMPTY_HASH)
    } else {
        whole.root_at
    };
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
