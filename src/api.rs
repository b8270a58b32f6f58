//! The gRPC surface: tonic services over the ledger and the log.
//!
//! - [`error`]: the one place where log and ledger errors become gRPC status codes.
//! - [`sources`], [`claims`], [`log`]: the three services of `claimledger.v1`.
//! - [`auth`]: who is calling (bearer token → principal, else `anonymous`) and what they may
//!   write: one tower layer and one method → role table.
//! - [`server`]: assembling the router with health, reflection and limits, and graceful
//!   shutdown.

pub mod auth;
pub mod claims;
pub mod error;
pub mod forward;
pub mod log;
pub mod server;
pub mod sources;

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::index::{IndexError, QueryIndex};
use crate::ledger::{LedgerError, Reader};
use crate::log::{AppendError, Log};
use crate::pb;
use crate::witness::submit::CosignedView;

/// State shared by the services.
#[derive(Clone)]
pub struct Ctx {
    pub log: Log,
    pub reader: Reader,
    /// The derived query index ListClaims searches, and the task keeping it up to date.
    pub index: QueryIndex,
    indexer: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Becomes true when the server begins a graceful shutdown (ends live tails).
    pub closing: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    /// One server-side audit at a time: each reads the whole log.
    pub audit: std::sync::Arc<tokio::sync::Semaphore>,
    /// Entry streams (GetEntries, WatchEntries) open at once across all connections.
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
    /// The latest checkpoint the log's witnesses cosigned, when it has witnesses.
    pub cosigned: Option<CosignedView>,
    /// A test hook, off unless a test turns it on: while it is on, the claim page
    /// (`crate::http::pages`, and its JSON twin) serves each entry's inclusion proof with one
    /// bit flipped, so a test can see the page's own proof check in the browser fail. Nothing
    /// else reads it: the gRPC API and the other pages always serve the true proofs.
    pub alter_page_proofs: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The most entry streams open at once; each holds at most about 1.25 MiB (see `api::log`).
pub const MAX_STREAMS: usize = 256;

impl Ctx {
    /// The services' state for an open log: opens its query index (`DATA_DIR/index`, rebuilt
    /// from the log if it does not match it) and starts the indexer, which follows the log
    /// until [`Ctx::stop_indexer`]. Must be called within a tokio runtime.
    pub fn open(log: Log) -> Result<Ctx, IndexError> {
        let reader = Reader::new(log.clone());
        let (index, indexer) = QueryIndex::open(log.dir(), reader.clone())?;
        let closing = tokio::sync::watch::channel(false).0;
        let task = tokio::spawn(indexer.run(closing.subscribe()));
        Ok(Ctx::over(log, reader, index, closing, Some(task)))
    }

    /// The services' state over an open query index, with the task keeping it up to date if
    /// there is one (without, the index moves only when whoever holds its `Indexer` moves it:
    /// a test).
    fn over(
        log: Log,
        reader: Reader,
        index: QueryIndex,
        closing: tokio::sync::watch::Sender<bool>,
        indexer: Option<tokio::task::JoinHandle<()>>,
    ) -> Ctx {
        Ctx {
            reader,
            index,
            indexer: std::sync::Arc::new(std::sync::Mutex::new(indexer)),
            log,
            closing: std::sync::Arc::new(closing),
            audit: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            cosigned: None,
            alter_page_proofs: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Stops the indexer (after its batch in progress, if any) and waits for it, so the data
    /// directory's index can be opened again. `closing` must have been set.
    pub async fn stop_indexer(&self) {
        let task = self.indexer.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!("the indexer ended badly: {e}");
            }
        }
    }

    /// Serves the cosigned checkpoint of `view` (GetCheckpoint) beside the log's own.
    pub fn with_witnesses(mut self, view: CosignedView) -> Ctx {
        self.cosigned = Some(view);
        self
    }

    /// A place for one more entry stream, or RESOURCE_EXHAUSTED.
    pub(crate) fn stream_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_STREAMS} entry streams are open on this server; try again later"
            ))
        })
    }

    /// Appends a change and returns the receipt, or, for a retried request, the receipt of the
    /// entry the first attempt wrote (nothing new is written).
    pub(crate) async fn write(
        &self,
        actor: &str,
        change: pb::Change,
    ) -> Result<pb::Receipt, Status> {
        match self.log.append(actor, change.encode_to_vec()).await {
            Ok(r) => Ok(pb::Receipt {
                index: r.index,
                leaf_hash: r.leaf_hash.0.to_vec(),
                checkpoint: r.checkpoint.note,
                inclusion_proof: r.inclusion_proof.iter().map(|h| h.0.to_vec()).collect(),
                tree_size: r.checkpoint.size,
            }),
            Err(AppendError::Rejected(e)) => match e.downcast::<LedgerError>() {
                Ok(le) => match *le {
                    LedgerError::Duplicate { index } => self.receipt_for(index),
                    other => Err(error::ledger(other)),
                },
                Err(e) => Err(Status::internal(e.to_string())),
            },
            Err(AppendError::Log(e)) => Err(error::log(e)),
        }
    }

    /// A receipt for an entry already in the log, against the latest checkpoint.
    pub(crate) fn receipt_for(&self, index: u64) -> Result<pb::Receipt, Status> {
        let cp = self.log.latest_checkpoint().map_err(error::log)?;
        let proof = self
            .log
            .inclusion_proof(index, cp.size)
            .map_err(error::log)?;
        let leaf = self.log.leaf_hash_at(index).map_err(error::log)?;
        Ok(pb::Receipt {
            index,
            leaf_hash: leaf.0.to_vec(),
            checkpoint: cp.note,
            inclusion_proof: proof.iter().map(|h| h.0.to_vec()).collect(),
            tree_size: cp.size,
        })
    }
}

/// The idempotency key and content digest of a write request: the client's `request_id` (or a
/// fresh random one), and SHA-256 of the request encoded without it.
pub(crate) fn request_key<M: Message + Clone>(
    req: &M,
    request_id: &str,
    clear: impl FnOnce(&mut M),
) -> Result<(String, Vec<u8>), Status> {
    crate::claims::validate::request_id(request_id).map_err(error::field)?;
    let mut bare = req.clone();
    clear(&mut bare);
    let digest = Sha256::digest(bare.encode_to_vec()).to_vec();
    let id = if request_id.is_empty() {
        let mut b = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        request_id.to_string()
    };
    Ok((id, digest))
}
