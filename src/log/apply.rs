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

use sled::IVec;

use super::entry::EntryMeta;

/// The first byte of every domain index key.
pub const INDEX_PREFIX: u8 = b'x';

/// A domain error refusing an entry; the API layer downcasts it to its own type.
pub type Rejection = Box<dyn std::error::Error + Send + Sync>;

/// The domain layer's entry hook.
pub trait Apply: Send + Sync + 'static {
    /// Validates one entry against the current state and stages the index writes it implies.
    fn apply(&self, ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), Rejection>;
}

/// An [`Apply`] that accepts everything and indexes nothing (the bare log).
pub struct NoApply;

impl Apply for NoApply {
    fn apply(&self, _: &mut Ctx<'_>, _: &EntryMeta, _: &[u8]) -> Result<(), Rejection> {
        Ok(())
    }
}

fn full_key(key: &[u8]) -> Vec<u8> {
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
    tree: &'a sled::Tree,
    group: &'a Overlay,
    local: Overlay,
}

impl<'a> Ctx<'a> {
    pub fn new(tree: &'a sled::Tree, group: &'a Overlay) -> Self {
        Ctx {
            tree,
            group,
            local: Overlay::new(),
        }
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
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, sled::Error> {
        let k = full_key(key);
        if let Some(v) = self.local.get(&k).or_else(|| self.group.get(&k)) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(&k)?.map(|v| v.to_vec()))
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
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, sled::Error> {
        let p = full_key(prefix);
        let mut out: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.tree.scan_prefix(&p) {
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

/// Read-only access to the committed domain indexes (for the API's reads).
#[derive(Clone)]
pub struct IndexView {
    tree: sled::Tree,
}

impl IndexView {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        IndexView { tree }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<IVec>, sled::Error> {
        self.tree.get(full_key(key))
    }

    /// Keys (without the index prefix byte) and values in `[start, end)`, in key order.
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Vec<u8>, IVec), sled::Error>> + '_ {
        self.tree
            .range(full_key(start)..full_key(end))
            .map(|kv| kv.map(|(k, v)| (k[1..].to_vec(), v)))
    }

    /// Keys (without the index prefix byte) and values from `start` (inclusive) while they keep
    /// `prefix`, in key order.
    pub fn scan_from(
        &self,
        prefix: &[u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, IVec), sled::Error>> + '_ {
        let p = full_key(prefix);
        let s = full_key(start);
        self.tree
            .range(s..)
            .take_while(move |kv| match kv {
                Ok((k, _)) => k.starts_with(&p),
                Err(_) => true,
            })
            .map(|kv| kv.map(|(k, v)| (k[1..].to_vec(), v)))
    }
}
