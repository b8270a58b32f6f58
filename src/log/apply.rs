//! The hook through which the domain layer keeps its indexes in the same atomic sled batch as
//! the entries they derive from.
//!
//! The writer calls [`Apply::apply`] for each entry of a group, in index order, before the group
//! is committed. The domain layer reads the current state through [`Ctx`] (which sees the
//! writes of earlier entries of the same group) and stages its own writes there. If it returns
//! an error, the entry is not appended, its staged writes are dropped, and the caller gets the
//! error back; the rest of the group is unaffected.
//!
//! **API Boundary**: all domain keys live under the one-byte prefix [`INDEX_PREFIX`], which
//! [`Ctx`] and [`IndexView`] add themselves, so the domain layer cannot touch log keys.

use std::collections::BTreeMap;

use super::entry::EntryMeta;
use super::error::LogError;
use super::kv::Val;
use super::store::Store;

/// The first byte of every domain index key.
pub const INDEX_PREFIX: u8 = b'x';

/// A domain error refusing an entry; the API layer downcasts it to its own type.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// The domain layer's entry hook.
pub trait Apply: Send + Sync + 'static {
    /// Validates one entry against the current state and stages the index writes it implies.
    fn apply(&self, ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), Rejection>;

    /// The state keys (without the index prefix byte) that applying this entry will read, as
    /// far as the body alone tells. A store that pays a round trip per read (PostgreSQL)
    /// fetches them for a whole group in one before the group is applied. Only a hint: the
    /// hook may read other keys, and listing one it will not read costs only its fetch.
    fn reads(&self, _actor: &str, _body: &[u8]) -> Vec<Vec<u8>> {
        Vec::new()
    }
}

/// An [`Apply`] that accepts everything and indexes nothing (the bare log).
pub struct NoApply;

impl Apply for NoApply {
    fn apply(&self, _: &mut Ctx<'_>, _: &EntryMeta, _: &[u8]) -> Result<(), Rejection> {
        Ok(())
    }
}

pub(crate) fn full_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(INDEX_PREFIX);
    k.extend_from_slice(key);
    k
}

/// A key (without the index prefix byte) and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Staged writes of one group: key (with prefix) → new value, or `None` for a removal.
pub type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Read-your-writes access to the domain indexes while an entry is being applied.
pub struct Ctx<'a> {
    store: &'a Store,
    group: &'a Overlay,
    local: Overlay,
    /// The slots ([`Marks`](super::marks::Marks)) of the tags this entry touched.
    touched: Vec<usize>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(store: &'a Store, group: &'a Overlay) -> Self {
        Ctx {
            store,
            group,
            local: Overlay::new(),
            touched: Vec::new(),
        }
    }

    /// Says this entry changes what readers know by `tag` (a name the domain layer chooses,
    /// such as a record's key), so that answers about it read at an earlier size are read
    /// again ([`IndexView::unchanged_since`]). Every write that can change such an answer must
    /// touch its tag.
    pub fn touch(&mut self, tag: &[u8]) {
        self.touched.push(super::marks::Marks::slot(tag));
    }

    /// The slots of the tags touched so far.
    pub(crate) fn touched(&self) -> &[usize] {
        &self.touched
    }

    pub fn into_writes(self) -> Overlay {
        self.local
    }

    /// The keys this entry has staged so far (writes and removals): what it adds to its
    /// group's batch beside the log's own keys. A hook wrapping another can count them.
    pub fn staged(&self) -> usize {
        self.local.len()
    }

    /// Reads a key as it stands with this group's earlier writes.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        let k = full_key(key);
        if let Some(v) = self.local.get(&k).or_else(|| self.group.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self.store.kv().get(&k)?.map(|v| v.to_vec()))
    }

    /// Stages a write.
    pub fn put(&mut self, key: &[u8], value: impl Into<Vec<u8>>) {
        self.local.insert(full_key(key), Some(value.into()));
    }

    /// Stages a removal.
    pub fn remove(&mut self, key: &[u8]) {
        self.local.insert(full_key(key), None);
    }

    /// All keys under `prefix` (without the index prefix byte) with their values, as they stand
    /// with this group's earlier writes, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, LogError> {
        let p = full_key(prefix);
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.store.kv().range(&p, &prefix_end(&p)) {
            let (k, v) = kv?;
            out.insert(k.to_vec(), v.to_vec());
        }
        for overlay in [self.group, &self.local] {
            for (k, v) in overlay.range(p.clone()..) {
                if !k.starts_with(&p) {
                    break;
                }
                match v {
                    Some(v) => out.insert(k.clone(), v.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out.into_iter().map(|(k, v)| (k[1..].to_vec(), v)).collect())
    }
}

/// The first key after every key that starts with `prefix` (which starts with the index
/// prefix byte, so one exists).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All bytes 0xFF: nothing sorts after the prefix but its own extensions.
    vec![INDEX_PREFIX + 1]
}

/// Read-only access to the committed domain indexes (for the API's reads).
#[derive(Clone)]
pub struct IndexView {
    store: Store,
}

impl IndexView {
    pub(crate) fn new(store: Store) -> Self {
        IndexView { store }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Val>, LogError> {
        self.store.kv().get(&full_key(key))
    }

    /// Keys (without the index prefix byte) and values in `[start, end)`, in key order.
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Val), LogError>> + Send + '_ {
        self.store
            .kv()
            .range(&full_key(start), &full_key(end))
            .map(|kv| kv.map(|(k, v)| (k[1..].to_vec(), v)))
    }

    /// Whether an answer about `tag` read at log size `at` is the answer at every size from
    /// `at` up to the published size: no entry at `at` or later has touched `tag`
    /// ([`Ctx::touch`]). The caller must have taken a published size of at least `at`
    /// (`Log::size`) before asking, and must not use an answer read at a size above the one it
    /// took (another reader's, kept): only its own published size orders the marks it sees.
    /// Always false where this process cannot know (a log in PostgreSQL, which other
    /// processes write).
    pub fn unchanged_since(&self, tag: &[u8], at: u64) -> bool {
        self.store
            .marks()
            .unchanged_since(super::marks::Marks::slot(tag), at)
    }

    /// Whether this log keeps change marks at all (a sled log, opened with its writer): if
    /// not, [`IndexView::unchanged_since`] is always false and keeping answers is pointless.
    pub fn keeps_marks(&self) -> bool {
        self.store.marks().armed()
    }

    /// The last key (without the index prefix byte) in `[start, end)`, with its value.
    pub fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Vec<u8>, Val)>, LogError> {
        Ok(self
            .store
            .kv()
            .last_in(&full_key(start), &full_key(end))?
            .map(|(k, v)| (k[1..].to_vec(), v)))
    }

    /// Keys (without the index prefix byte) and values from `start` (inclusive) while they keep
    /// `prefix`, in key order.
    pub fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Val), LogError>> + Send + '_ {
        let end = prefix_end(&full_key(prefix));
        self.store
            .kv()
            .range(&full_key(start), &end)
            .map(|kv| kv.map(|(k, v)| (k[1..].to_vec(), v)))
    }
}
