//! The derived query index (SPEC §8): what ListClaims searches, kept by an indexer that follows
//! the log, never by the writer.
//!
//! One tantivy document per claim (`schema`): its words (stemmed English, with positions for
//! phrases), places, kind, claimant, event time, log index, the sources its status depends on,
//! its deadline, and its effective status as judged when the document was written. The indexer
//! (`follow`) reads published entries from the watermark on, re-judges the claims they touch
//! (and, for a new grade, every claim citing the source; for the passing of time, every claim
//! whose `resolve_by` passed), and commits the documents together with the watermark as the
//! commit's payload, so what is searchable and how far it got can never disagree, a crash
//! included. `search` answers ListClaims from the last commit and says which log size that is.
//!
//! The index lives in `DATA_DIR/index`. It is checked against the log on open (schema version,
//! watermark within the log, the leaf hash at the watermark) and rebuilt from the log when it
//! does not match, and `claimledger reindex` rebuilds it on purpose.

mod follow;
mod schema;
mod search;

pub use follow::Indexer;
pub use schema::Fields;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher};
use tokio::sync::watch;

use crate::ledger::Reader;

/// The most entries past the index's watermark a lookup by leaf hash reads itself; further
/// behind (an index being rebuilt) it answers UNAVAILABLE instead.
pub const MAX_TAIL_SCAN: u64 = 100_000;

/// How long a ListClaims with `min_size` waits for the index to get there.
pub const MIN_SIZE_WAIT: Duration = Duration::from_secs(5);

/// The index directory inside a data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("query index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("query index: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("query index: {0}")]
    Log(#[from] crate::log::LogError),
    #[error("query index: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("query index: {0}")]
    Corrupt(String),
    /// A filter of the request cannot be searched for.
    #[error("invalid {0}")]
    Query(crate::claims::validate::FieldError),
    /// `min_size` is beyond the log.
    #[error("min_size {wanted} is beyond the log's size {size}")]
    BeyondLog { wanted: u64, size: u64 },
    /// The index did not reach `min_size` in time.
    #[error(
        "the query index has read the log to size {indexed}, not yet to min_size {wanted} \
         (waited {waited_ms} ms){failing}; retry"
    )]
    Behind {
        indexed: u64,
        wanted: u64,
        waited_ms: u128,
        /// Empty, or why the indexer is failing (it retries).
        failing: String,
    },
    /// The index is too far behind the log to find an entry by its leaf hash now.
    #[error(
        "the query index has read the log to size {indexed} of {size}; entries are found by \
         leaf hash once it catches up; retry"
    )]
    CatchingUp { indexed: u64, size: u64 },
}

/// What a commit of the index records about itself (its payload).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
struct Mark {
    /// [`schema::VERSION`].
    version: u32,
    /// Every entry below this size is indexed.
    size: u64,
    /// Leaf hash (base64) of entry `size - 1`: the log this index was built from.
    leaf: String,
    /// Every claim whose `resolve_by` is before this moment (unix seconds) was judged after it.
    deadlines_before: i64,
}

/// What readers search: one committed state of the index and the log size it covers.
#[derive(Clone)]
struct Snapshot {
    searcher: Searcher,
    size: u64,
}

struct Inner {
    index: Index,
    fields: Fields,
    reader: IndexReader,
    current: RwLock<Snapshot>,
    size_tx: watch::Sender<u64>,
    failure: watch::Sender<Option<String>>,
    ledger: Reader,
    /// The largest size a caller waits for (`min_size`), and the wake-up the indexer gets
    /// when one starts waiting, so it commits now rather than after its usual pause.
    wanted: std::sync::atomic::AtomicU64,
    hurry: tokio::sync::Notify,
}

/// The read side of the query index, shared by the API's handlers.
#[derive(Clone)]
pub struct QueryIndex {
    inner: Arc<Inner>,
}

impl QueryIndex {
    /// Opens the index of `data_dir` for the log `ledger` reads, rebuilding it (empty, to be
    /// filled by the indexer) if it is missing, damaged, of another schema, or of another log.
    /// Returns the shared read side and the indexer that keeps it up to date.
    pub fn open(data_dir: &Path, ledger: Reader) -> Result<(QueryIndex, Indexer), IndexError> {
        let dir = path(data_dir);
        let fields = Fields::new();
        let (index, mark) = match open_existing(&dir, &fields, &ledger) {
            Ok(Some(found)) => found,
            Ok(None) => (create(&dir, &fields)?, None),
            Err(why) => {
                tracing::warn!(
                    "the query index in {} does not match this log ({why}); rebuilding it from \
                     the log",
                    dir.display()
                );
                (create(&dir, &fields)?, None)
            }
        };
        let mark = mark.unwrap_or(Mark {
            version: schema::VERSION,
            size: 0,
            leaf: String::new(),
            deadlines_before: crate::ledger::read::now_unix(),
        });
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let snapshot = Snapshot {
            searcher: reader.searcher(),
            size: mark.size,
        };
        let writer = index.writer_with_num_threads(1, follow::WRITER_MEMORY)?;
        writer.set_merge_policy(follow::merge_policy());
        let shared = QueryIndex {
            inner: Arc::new(Inner {
                index,
                fields,
                reader,
                current: RwLock::new(snapshot),
                size_tx: watch::channel(mark.size).0,
                failure: watch::channel(None).0,
                ledger,
                wanted: std::sync::atomic::AtomicU64::new(0),
                hurry: tokio::sync::Notify::new(),
            }),
        };
        let indexer = Indexer::new(shared.clone(), writer, mark);
        Ok((shared, indexer))
    }

    /// The log size the searchable index covers.
    pub fn indexed_size(&self) -> u64 {
        *self.inner.size_tx.borrow()
    }

    /// Why the indexer is not keeping up, if its last batch failed (it retries), as a clause
    /// to append to a message; empty while it works.
    pub fn failing(&self) -> String {
        match &*self.inner.failure.borrow() {
            Some(why) => format!("; the indexer is failing: {why}"),
            None => String::new(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        match self.inner.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes the index's latest commit searchable, as covering `size`.
    fn publish(&self, size: u64) -> Result<(), IndexError> {
        self.inner.reader.reload()?;
        let snapshot = Snapshot {
            searcher: self.inner.reader.searcher(),
            size,
        };
        match self.inner.current.write() {
            Ok(mut s) => *s = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
        self.inner.size_tx.send_replace(size);
        Ok(())
    }

    /// Waits until the index covers `size`, at most `wait`; returns the size it covers.
    pub async fn wait_for(&self, size: u64, wait: Duration) -> u64 {
        let mut rx = self.inner.size_tx.subscribe();
        if *rx.borrow() < size {
            self.inner
                .wanted
                .fetch_max(size, std::sync::atomic::Ordering::Relaxed);
            self.inner.hurry.notify_one();
        }
        let reached = tokio::time::timeout(wait, rx.wait_for(|s| *s >= size)).await;
        match reached {
            Ok(Ok(s)) => *s,
            _ => self.indexed_size(),
        }
    }
}

fn create(dir: &Path, fields: &Fields) -> Result<Index, IndexError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(Index::builder()
        .schema(fields.schema.clone())
        .settings(schema::settings())
        .create_in_dir(dir)?)
}

/// The existing index and its mark, `None` if there is none, or why it cannot be used.
fn open_existing(
    dir: &Path,
    fields: &Fields,
    ledger: &Reader,
) -> Result<Option<(Index, Option<Mark>)>, String> {
    if !dir.join("meta.json").exists() {
        return Ok(None);
    }
    let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
    if index.schema() != fields.schema
        || index.settings().sort_by_field != schema::settings().sort_by_field
    {
        return Err("its schema is another version's".into());
    }
    let metas = index.load_metas().map_err(|e| e.to_string())?;
    let Some(payload) = metas.payload else {
        // Every commit of the indexer has a mark: documents without one were not written by
        // it (the indexer relies on a claim submitted past the mark having no document).
        if !metas.segments.is_empty() {
            return Err("it holds documents but no commit mark".into());
        }
        return Ok(Some((index, None)));
    };
    let mark: Mark = serde_json::from_str(&payload).map_err(|e| format!("its commit mark: {e}"))?;
    if mark.version != schema::VERSION {
        return Err(format!(
            "it was written by indexer version {}, this is {}",
            mark.version,
            schema::VERSION
        ));
    }
    let log = ledger.log();
    if mark.size > log.size() {
        return Err(format!(
            "it covers {} entries, the log has {}",
            mark.size,
            log.size()
        ));
    }
    if mark.size > 0 {
        let leaf = log
            .leaf_hash_at(mark.size - 1)
            .map_err(|e| e.to_string())?
            .to_string();
        if leaf != mark.leaf {
            return Err(format!(
                "entry {} of the log it was built from has another leaf hash",
                mark.size - 1
            ));
        }
    }
    Ok(Some((index, Some(mark))))
}
