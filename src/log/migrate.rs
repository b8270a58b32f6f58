//! Copying a log from one store to another (`claimledger migrate`): sled to PostgreSQL and
//! back, so that a user is never locked in.
//!
//! The source is audited first (every entry re-hashed, the hash chain and the tree checked
//! against its signed checkpoint), and nothing is written if it does not verify. Then every
//! entry is copied with its exact bytes, in groups: its stored hashes are computed again in the
//! target, and the ledger's state is rebuilt by applying each entry with the same hook the
//! writer uses (so every entry must still be accepted). Each group is committed like a writer's
//! group, with a checkpoint signed by the log's key at its size; the last one is the source's
//! own signed checkpoint, used only once the target's root at that size equals it.
//! The query index is not copied: a server rebuilds it from the log when it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tlog_tiles::Hash;

use super::apply::{Apply, Ctx, Overlay};
use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::entry::{pack, EntryMeta, Envelope};
use super::error::LogError;
use super::kv::{GroupWrite, Kv, Lead};
use super::store::{leaf_hash, Store, SyncFailure};
use super::writer::GroupReader;
use super::{checkpoint, guarded, verify, META_VERIFIER_KEY};

/// Entries per committed group.
const GROUP: u64 = 4096;

/// Where a log is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A sled data directory (its `sled/` and `log.key`).
    Sled(PathBuf),
    /// A PostgreSQL database; its signing key is in another data directory.
    Postgres(String),
}

impl Location {
    /// `sled:DIR` or a `postgres://` URL.
    pub fn parse(s: &str) -> Result<Location, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Location::Postgres(s.to_string()));
        }
        match s.strip_prefix("sled:") {
            Some(dir) if !dir.is_empty() => Ok(Location::Sled(PathBuf::from(dir))),
            _ => Err(format!(
                "{s:?} is neither `sled:DIR` nor a `postgres://` URL"
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Location::Sled(d) => format!("sled:{}", d.display()),
            Location::Postgres(u) => super::kv::postgres::redact(u),
        }
    }
}

/// What [`copy`] did.
#[derive(Debug, Clone)]
pub struct Migrated {
    /// Entries copied.
    pub size: u64,
    /// The root of the copied tree, equal to the source's signed checkpoint's.
    pub root: Hash,
    /// The source's latest signed checkpoint, now the target's.
    pub checkpoint: Option<SignedCheckpoint>,
}

/// Copies the log at `from` to the empty store at `to`. `key_dir` is a data directory holding
/// the log's `log.key` (a sled location's own directory is used when it is not given); a sled
/// target gets a copy of the key. `progress` is called with (copied, total).
pub fn copy(
    from: &Location,
    to: &Location,
    key_dir: Option<&Path>,
    apply: Arc<dyn Apply>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Migrated, LogError> {
    if from == to {
        return Err(LogError::InvalidArgument(
            "the source and the target are the same store".into(),
        ));
    }
    let key_dir = match (key_dir, from, to) {
        (Some(d), _, _) => d.to_path_buf(),
        (None, Location::Sled(d), _) => d.clone(),
        (None, Location::Postgres(_), _) => {
            return Err(LogError::InvalidArgument(
                "--data-dir: name a data directory holding the log's log.key (a process's \
                 serving this database)"
                    .into(),
            ))
        }
    };
    let source = open(from, &key_dir, false)?;
    let origin = guarded(&source, || source.stored_origin())?
        .ok_or_else(|| LogError::InvalidArgument(format!("{} holds no log", from.describe())))?;
    let cp = Checkpointer::load(&key_dir, &origin)?;
    // The source is audited before anything is created or written in the target.
    let audit = guarded(&source, || verify::verify_sled(&source, &cp))?;
    if !audit.ok() {
        return Err(match audit.first_bad_index {
            Some(index) => LogError::Tampered {
                index,
                reason: audit.error,
            },
            None => LogError::Corrupt(format!("the source does not verify: {}", audit.error)),
        });
    }
    if let Location::Sled(dir) = to {
        if dir.join("sled").exists() {
            return Err(LogError::InvalidArgument(format!(
                "{} already holds a log; migrate into an empty directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        if dir.join(checkpoint::KEY_FILE) != key_dir.join(checkpoint::KEY_FILE) {
            let key = std::fs::read(key_dir.join(checkpoint::KEY_FILE))
                .map_err(|e| LogError::io(&key_dir.join(checkpoint::KEY_FILE), e))?;
            crate::files::replace(&dir.join(checkpoint::KEY_FILE), &key)
                .map_err(|(p, e)| LogError::io(&p, e))?;
        }
    }
    let target_dir = match to {
        Location::Sled(d) => d.clone(),
        Location::Postgres(_) => key_dir.clone(),
    };
    let target = open(to, &target_dir, true)?;
    guarded(&source, || {
        guarded(&target, || {
            run(
                &source,
                &target,
                &cp,
                &origin,
                audit.size,
                apply.as_ref(),
                progress,
            )
        })
    })
}

fn open(at: &Location, dir: &Path, create: bool) -> Result<Store, LogError> {
    match at {
        Location::Sled(d) => {
            if !create && !d.join("sled").exists() {
                return Err(LogError::NotADataDirectory(d.display().to_string()));
            }
            Store::open(d)
        }
        Location::Postgres(url) => {
            let kv = super::kv::postgres::PgKv::open(url, None, None)?;
            Ok(Store::over(dir, Kv::Postgres(Arc::new(kv))))
        }
    }
}

fn run(
    source: &Store,
    target: &Store,
    cp: &Checkpointer,
    origin: &str,
    size: u64,
    apply: &dyn Apply,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Migrated, LogError> {
    if target.size()? != 0 || target.has_checkpoint()? {
        return Err(LogError::InvalidArgument(format!(
            "{} already holds a log of {} entries; migrate into an empty store",
            target.describe(),
            target.size()?
        )));
    }
    let signed = if size == 0 {
        None
    } else {
        Some(source.latest_checkpoint()?)
    };
    target.settle_origin(Some(origin), None)?;
    if let Some(pg) = target.kv().postgres() {
        let recorded = pg.settle_meta(META_VERIFIER_KEY, cp.verifier_key().as_bytes())?;
        if recorded != cp.verifier_key().as_bytes() {
            return Err(LogError::Unverified(format!(
                "{} records another verifier key ({})",
                pg.describe(),
                String::from_utf8_lossy(&recorded)
            )));
        }
    }
    if let Lead::Follower(why) = target.kv().lead()? {
        return Err(LogError::Unavailable(why));
    }
    let mut start = 0;
    while start < size {
        let end = (start + GROUP).min(size);
        let reader = GroupReader::new(target.clone());
        let mut overlay = Overlay::new();
        let mut entries = Vec::with_capacity((end - start) as usize);
        let mut next = start;
        for kv in source.entries(start, end) {
            let (index, bytes) = kv?;
            if index != next {
                return Err(LogError::Corrupt(format!("entry {next} is missing")));
            }
            let leaf = leaf_hash(&bytes);
            let env = <Envelope as prost::Message>::decode(&bytes[..]).map_err(|e| {
                LogError::Tampered {
                    index,
                    reason: format!("entry does not decode: {e}"),
                }
            })?;
            let meta = EntryMeta::of(&env, leaf);
            let mut ctx = Ctx::new(target, &overlay);
            apply
                .apply(&mut ctx, &meta, &env.body)
                .map_err(|e| LogError::Corrupt(format!("entry {index} does not apply: {e}")))?;
            overlay.extend(ctx.into_writes());
            let hashes = tlog_tiles::stored_hashes_for_record_hash(index, leaf, &reader)
                .map_err(|e| LogError::Corrupt(format!("stored hashes of {index}: {e}")))?;
            let first = tlog_tiles::stored_hash_index(0, index);
            for (i, h) in hashes.iter().enumerate() {
                reader.stage(first + i as u64, *h);
            }
            entries.push((index, pack(&hashes, &bytes)));
            next += 1;
        }
        if next != end {
            return Err(LogError::Corrupt(format!("entry {next} is missing")));
        }
        let root = tlog_tiles::tree_hash(end, &reader)
            .map_err(|e| LogError::Corrupt(format!("the tree at {end}: {e}")))?;
        let checkpoint = match &signed {
            Some(s) if end == size => {
                if s.root != root {
                    return Err(LogError::Corrupt(format!(
                        "the copied tree's root at {size} differs from the source's signed \
                         checkpoint"
                    )));
                }
                s.clone()
            }
            _ => cp.sign(end, root)?,
        };
        target
            .kv()
            .commit(GroupWrite {
                prev_size: start,
                entries,
                state: overlay,
                checkpoint,
            })
            .map_err(SyncFailure::into_error)?;
        progress(end, size);
        start = end;
    }
    let root = target.root_at(size, size)?;
    if let Some(s) = &signed {
        if s.root != root || target.latest_checkpoint()?.note != s.note {
            return Err(LogError::Corrupt(
                "the target's tree does not match the source's signed checkpoint".into(),
            ));
        }
    }
    Ok(Migrated {
        size,
        root,
        checkpoint: signed,
    })
}
