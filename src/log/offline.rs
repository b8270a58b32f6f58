//! A data directory opened without a writer, for the offline commands (`verify`, `reindex`,
//! `recover`) and for tools. Opening it writes no log or index key (sled itself may flush or
//! snapshot as part of its recovery), except once on a directory from before the entry files,
//! whose entries opening moves out of sled ([`super::entries`]): the origin is the one sled recorded, or the checkpoint
//! file's, or the default for a directory with nothing in it yet.
//!
//! Opening, the audit, `reindex` and `recovery` run under `log::guarded`, so a damaged file
//! is an error naming it, not a panic; [`Offline::entries`] reads the entry files in order.

use std::path::{Path, PathBuf};

use super::apply::{Apply, IndexView, Overlay, INDEX_PREFIX};
use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::checkpoint_file;
use super::entry::{EntryMeta, Envelope};
use super::error::LogError;
use super::kv::Val;
use super::store::{leaf_hash, Store};
use super::verify::{self, VerifyProgress, VerifyReport};
use super::{guarded, Ctx, DEFAULT_ORIGIN};

/// A data directory, open for offline work.
pub struct Offline {
    dir: PathBuf,
    store: Store,
    cp: Checkpointer,
}

/// What continuing from what sled holds would give up (see [`Offline::recovery`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// sled agrees with the checkpoint file: nothing to recover.
    Consistent { stored: u64 },
    /// A directory from before the checkpoint file: the next open makes one.
    NoFileYet { stored: u64 },
    /// sled lost entries `stored..committed` that were acknowledged.
    Lost { stored: u64, committed: u64 },
    /// sled holds another history than the one acknowledged up to `size`.
    Diverged { stored: u64, size: u64 },
    /// The file this directory keeps is gone.
    Missing { stored: u64 },
    /// The file holds no checkpoint signed by this log's key.
    Damaged { stored: u64, why: String },
}

impl Recovery {
    /// Whether there is anything to recover from.
    pub fn needed(&self) -> bool {
        !matches!(
            self,
            Recovery::Consistent { .. } | Recovery::NoFileYet { .. }
        )
    }

    /// The size the log continues from after recovering: what sled holds.
    pub fn stored(&self) -> u64 {
        match self {
            Recovery::Consistent { stored }
            | Recovery::NoFileYet { stored }
            | Recovery::Lost { stored, .. }
            | Recovery::Diverged { stored, .. }
            | Recovery::Missing { stored }
            | Recovery::Damaged { stored, .. } => *stored,
        }
    }

    /// One sentence for an operator, naming the checkpoint file `file`.
    pub fn describe(&self, file: &Path) -> String {
        let file = file.display();
        match self {
            Recovery::Consistent { stored } => {
                format!("nothing to recover: sled holds {stored} entries, consistent with {file}")
            }
            Recovery::NoFileYet { .. } => "nothing to recover: this data directory has no \
                 checkpoint file yet; the next open makes one from sled's checkpoint"
                .to_string(),
            Recovery::Lost { stored, committed } => format!(
                "sled holds {stored} entries, but {file} says {committed} were committed and \
                 acknowledged: entries {stored} to {} ({} entries) are lost",
                committed - 1,
                committed - stored
            ),
            Recovery::Diverged { stored, size } => format!(
                "the tree sled holds ({stored} entries) differs at size {size} from the signed \
                 checkpoint in {file}: the history acknowledged up to that size is replaced by \
                 the one sled holds"
            ),
            Recovery::Missing { stored } => format!(
                "{file} is missing: sled holds {stored} entries, and any acknowledged beyond \
                 them cannot be known"
            ),
            Recovery::Damaged { stored, why } => {
                format!("{why}: what it recorded cannot be known; sled holds {stored} entries")
            }
        }
    }
}

/// What [`Offline::recover`] did.
#[derive(Debug)]
pub enum Recovered {
    /// The log continues from `size` (every entry verified); the superseded file, if any, was
    /// kept at `kept`.
    Done { size: u64, kept: Option<PathBuf> },
    /// What sled holds does not verify either: nothing was changed.
    Unsound(VerifyReport),
}

impl Offline {
    /// Opens the data directory `dir` (which must hold `sled/`), writing nothing.
    pub fn open(dir: &Path) -> Result<Offline, LogError> {
        if !dir.join("sled").exists() {
            return Err(LogError::NotADataDirectory(dir.display().to_string()));
        }
        let store = Store::open(dir)?;
        let origin = match guarded(&store, || store.stored_origin())? {
            Some(o) => o,
            None => checkpoint_file::origin(dir)?.unwrap_or_else(|| DEFAULT_ORIGIN.into()),
        };
        let cp = Checkpointer::load(dir, &origin)?;
        Ok(Offline {
            dir: dir.to_path_buf(),
            store,
            cp,
        })
    }

    /// The size sled holds.
    pub fn size(&self) -> Result<u64, LogError> {
        guarded(&self.store, || self.store.size())
    }

    /// Entries `[start, end)` as stored, with their indexes (for tools and benchmarks that scan
    /// the log themselves).
    pub fn entries(
        &self,
        start: u64,
        end: u64,
    ) -> impl Iterator<Item = Result<(u64, Val), LogError>> + '_ {
        self.store.entries(start, end)
    }

    /// Read access to the domain indexes as stored.
    pub fn indexes(&self) -> IndexView {
        self.store.indexes()
    }

    /// The log's signing key and origin.
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.cp
    }

    /// The full audit, the checkpoint file included (the [`verify`] module).
    pub fn verify(
        &self,
        progress: &mut dyn FnMut(VerifyProgress),
    ) -> Result<VerifyReport, LogError> {
        verify::verify(&self.store, &self.cp, progress)
    }

    /// Rebuilds every domain index from the log with `apply`: removes all index keys, then
    /// applies each entry in order. If an entry does not apply (which a log written by the same
    /// hook cannot contain), it stops with an error naming the entry and the indexes stay
    /// partial until the cause is fixed and it is run again.
    pub fn reindex(
        &self,
        apply: &dyn Apply,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, LogError> {
        guarded(&self.store, || self.rebuild(apply, progress))
    }

    fn rebuild(
        &self,
        apply: &dyn Apply,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, LogError> {
        if let Some(e) = self.store.kv().missing_entries() {
            return Err(e);
        }
        let tree =
            self.store.kv().sled_tree().ok_or_else(|| {
                LogError::Internal("reindex works on a sled data directory".into())
            })?;
        let mut batch = sled::Batch::default();
        for k in tree.scan_prefix([INDEX_PREFIX]).keys() {
            batch.remove(k?);
        }
        tree.apply_batch(batch)?;
        let size = self.store.size()?;
        let mut group = Overlay::new();
        for kv in self.store.entries(0, size) {
            let (i, bytes) = kv?;
            let env = <Envelope as prost::Message>::decode(&bytes[..]).map_err(|e| {
                LogError::Tampered {
                    index: i,
                    reason: format!("entry does not decode: {e}"),
                }
            })?;
            let meta = EntryMeta::of(&env, leaf_hash(&bytes));
            let mut ctx = Ctx::new(&self.store, &group);
            // Every entry in the log was accepted by this same hook when it was written, so a
            // refusal here means the log or the code changed: stop and say which entry.
            if let Err(e) = apply.apply(&mut ctx, &meta, &env.body) {
                return Err(LogError::Corrupt(format!("entry {i} does not apply: {e}")));
            }
            group.extend(ctx.into_writes());
            if group.len() > 50_000 || i + 1 == size {
                let mut batch = sled::Batch::default();
                for (k, v) in std::mem::take(&mut group) {
                    match v {
                        Some(v) => batch.insert(k, v),
                        None => batch.remove(k),
                    }
                }
                tree.apply_batch(batch)?;
            }
            progress(i + 1, size);
        }
        self.store.sync()?;
        Ok(size)
    }

    /// What continuing from what sled holds would give up, compared with the checkpoint file.
    pub fn recovery(&self) -> Result<Recovery, LogError> {
        let stored = self.size()?;
        // A damaged file is a case to recover from too; only an I/O error stops here.
        let file = match checkpoint_file::read(&self.dir, &self.cp) {
            Ok(f) => f,
            Err(e @ LogError::Corrupt(_)) => {
                return Ok(Recovery::Damaged {
                    stored,
                    why: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        Ok(match file {
            Some(f) if f.size > stored => Recovery::Lost {
                stored,
                committed: f.size,
            },
            Some(f) => {
                let root = guarded(&self.store, || self.store.root_at(f.size, stored))?;
                if root == f.root {
                    Recovery::Consistent { stored }
                } else {
                    Recovery::Diverged {
                        stored,
                        size: f.size,
                    }
                }
            }
            None if guarded(&self.store, || self.store.keeps_checkpoint_file())? => {
                Recovery::Missing { stored }
            }
            None => Recovery::NoFileYet { stored },
        })
    }

    /// Makes what sled holds the log's history again, giving up what `recovery` describes:
    /// verifies sled first (and changes nothing if it does not verify), keeps the superseded
    /// checkpoint file as `checkpoint.superseded-<size|damaged>`, then writes sled's checkpoint
    /// as the checkpoint file. The operator's explicit act; nothing calls it by itself.
    pub fn recover(&self, recovery: &Recovery) -> Result<Recovered, LogError> {
        let report = verify::verify_sled(&self.store, &self.cp)?;
        if !report.ok() {
            return Ok(Recovered::Unsound(report));
        }
        let path = checkpoint_file::path(&self.dir);
        let superseded = match recovery {
            Recovery::Lost { .. } | Recovery::Diverged { .. } => {
                checkpoint_file::read(&self.dir, &self.cp)?
                    .map(|f| (f.size.to_string(), f.note.into_bytes()))
            }
            Recovery::Damaged { .. } => Some((
                "damaged".to_string(),
                std::fs::read(&path).map_err(|e| LogError::io(&path, e))?,
            )),
            _ => None,
        };
        let kept = match superseded {
            Some((tag, bytes)) => {
                let kept = self.dir.join(format!(
                    "{}.superseded-{tag}",
                    checkpoint_file::CHECKPOINT_FILE
                ));
                crate::files::replace(&kept, &bytes).map_err(|(p, e)| LogError::io(&p, e))?;
                Some(kept)
            }
            None => None,
        };
        let signed = self.sled_checkpoint()?;
        checkpoint_file::replace(&self.dir, &signed, &self.store)?;
        Ok(Recovered::Done {
            size: report.checked,
            kept,
        })
    }

    /// sled's own latest checkpoint (the empty tree's, signed now, for an empty log).
    fn sled_checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        guarded(&self.store, || {
            let size = self.store.size()?;
            if self.store.has_checkpoint()? {
                self.store.latest_checkpoint()
            } else {
                self.cp.sign(size, self.store.root_at(size, size)?)
            }
        })
    }
}
