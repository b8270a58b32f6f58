//! Change marks: for readers that keep an answer read at one log size and want to know, without
//! reading the store again, whether it is still the answer at a later size.
//!
//! The domain layer names what an entry changes with [`Ctx::touch`](super::Ctx::touch) (a tag:
//! a record's key, say). Before the entry's group is committed, the writer raises the mark of
//! the tag's slot to the entry's index + 1. A reader that read an answer about a tag at size
//! `p` (not above the published size it took itself) may reuse it at any published size `s`
//! while the slot's mark is at most `min(p, s)`: no
//! entry at or after that size has touched anything in the slot. Tags share the 65,536 slots,
//! so a touch of one tag can only make another's answer be read again, never keep a stale one.
//!
//! Ordering: a mark is raised before the group is committed and its size published, and
//! readers take the published size before they look at a mark, so a published entry's touch
//! is always seen.
//!
//! Marks are armed only where this process's writer is the only one changing the state (a sled
//! log): a log in PostgreSQL is changed by other processes, and an unarmed log's answer is
//! always "changed". They start at the log's size when the writer starts: what came before is
//! not known slot by slot.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const SLOTS: usize = 1 << 16;

pub(crate) struct Marks {
    /// Set by [`Marks::arm`] (offline and PostgreSQL stores never allocate them).
    armed: OnceLock<Armed>,
}

struct Armed {
    /// Per slot: 1 + the index of the last entry that touched a tag in it (0: none since the
    /// writer started).
    slots: Box<[AtomicU64]>,
    /// The log's size when the writer started: every slot is at least this.
    floor: u64,
}

impl Marks {
    pub(crate) fn new() -> Marks {
        Marks {
            armed: OnceLock::new(),
        }
    }

    /// The slot of a tag.
    pub(crate) fn slot(tag: &[u8]) -> usize {
        // SipHash with fixed keys: stable within a process, which is all a slot needs.
        let mut h = std::hash::DefaultHasher::new();
        tag.hash(&mut h);
        (h.finish() as usize) & (SLOTS - 1)
    }

    /// Starts keeping marks, for a writer starting at log size `size` (once: a later call
    /// changes nothing).
    pub(crate) fn arm(&self, size: u64) {
        let _ = self.armed.set(Armed {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            floor: size,
        });
    }

    pub(crate) fn armed(&self) -> bool {
        self.armed.get().is_some()
    }

    /// Records that the entry at `index` touched a tag in `slot` (by the writer, before the
    /// entry's group is committed).
    pub(crate) fn touch(&self, slot: usize, index: u64) {
        if let Some(a) = self.armed.get() {
            a.slots[slot & (SLOTS - 1)].fetch_max(index + 1, Ordering::AcqRel);
        }
    }

    /// Whether no entry at index `at` or later has touched a tag in `slot`, as far as entries
    /// below the published size go. The caller must have taken a published size of at least
    /// `at` before asking, and must not use an answer read at a size above that one.
    pub(crate) fn unchanged_since(&self, slot: usize, at: u64) -> bool {
        let Some(a) = self.armed.get() else {
            return false;
        };
        let mark = a.slots[slot & (SLOTS - 1)].load(Ordering::Acquire);
        mark.max(a.floor) <= at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unarmed_marks_say_changed() {
        let m = Marks::new();
        assert!(!m.unchanged_since(Marks::slot(b"c"), u64::MAX));
    }

    #[test]
    fn a_touch_changes_its_slot_from_its_index_on() {
        let m = Marks::new();
        m.arm(10);
        let s = Marks::slot(b"claim-a");
        // Nothing is known slot by slot below the size the writer started at.
        assert!(!m.unchanged_since(s, 9));
        assert!(m.unchanged_since(s, 10));
        m.touch(s, 14);
        assert!(!m.unchanged_since(s, 10));
        assert!(!m.unchanged_since(s, 14));
        assert!(m.unchanged_since(s, 15));
        // Marks only rise.
        m.touch(s, 12);
        assert!(m.unchanged_since(s, 15));
    }
}
