//! `LogService`: what auditors and monitors use — checkpoints, entries, proofs, a live tail,
//! and a server-side audit.

use std::pin::Pin;

use futures::Stream;
use tlog_tiles::Hash;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{error, Ctx};
use crate::log::verify;
use crate::pb::{self, log_service_server::LogService};

pub struct LogApi(pub Ctx);

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// How many entries one read from the store fetches at most before the stream yields them …
const CHUNK: u64 = 256;
/// … and how many bytes of entry data: with [`QUEUE`] this bounds what one stream holds in
/// memory when its client does not read (CHUNK_BYTES + QUEUE × the largest entry).
const CHUNK_BYTES: usize = 256 * 1024;
/// Messages queued between a stream's reader task and the connection.
const QUEUE: usize = 4;

fn hash(field: &str, b: &[u8]) -> Result<Hash, Status> {
    let arr: [u8; 32] = b
        .try_into()
        .map_err(|_| Status::invalid_argument(format!("{field}: must be 32 bytes")))?;
    Ok(Hash(arr))
}

/// Sends entries `[start, end)` to `tx`; returns false when the client went away.
async fn send_range(
    ctx: &Ctx,
    tx: &mpsc::Sender<Result<pb::LogEntry, Status>>,
    start: u64,
    end: u64,
) -> bool {
    let mut at = start;
    while at < end {
        let to = (at + CHUNK).min(end);
        let mut bytes = 0;
        let batch: Result<Vec<pb::LogEntry>, Status> = ctx
            .log
            .entries_with_leaf(at, to)
            .take_while(|kv| {
                let more = bytes < CHUNK_BYTES;
                bytes += kv.as_ref().map_or(0, |(_, d, _)| d.len());
                more
            })
            .map(|kv| {
                let (index, data, leaf) = kv.map_err(error::log)?;
                Ok(pb::LogEntry {
                    index,
                    leaf_hash: leaf.0.to_vec(),
                    data: data.to_vec(),
                })
            })
            .collect();
        let to = match &batch {
            Ok(items) => items.last().map_or(to, |e| e.index + 1),
            Err(_) => to,
        };
        match batch {
            Ok(items) => {
                for item in items {
                    if tx.send(Ok(item)).await.is_err() {
                        return false;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        }
        at = to;
    }
    true
}

#[tonic::async_trait]
impl LogService for LogApi {
    async fn get_checkpoint(
        &self,
        _req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let log = &self.0.log;
        let cp = log.latest_checkpoint().map_err(error::log)?;
        let witnesses = self.0.cosigned.as_ref();
        let cosigned = witnesses.and_then(|w| w.latest());
        Ok(Response::new(pb::GetCheckpointResponse {
            size: cp.size,
            root_hash: cp.root.0.to_vec(),
            origin: log.checkpointer().origin().to_string(),
            verifier_key: log.checkpointer().verifier_key().to_string(),
            cosigned_is_latest: cosigned
                .as_ref()
                .is_some_and(|c| c.size == cp.size && c.root == cp.root),
            cosigned_note: cosigned
                .as_ref()
                .map(|c| c.note.clone())
                .unwrap_or_default(),
            cosigned_size: cosigned.as_ref().map_or(0, |c| c.size),
            witness_quorum: witnesses.map_or(0, |w| w.quorum() as u32),
            note: cp.note,
        }))
    }

    type GetEntriesStream = Stream_<pb::LogEntry>;

    async fn get_entries(
        &self,
        req: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<Self::GetEntriesStream>, Status> {
        let r = req.into_inner();
        let size = self.0.log.size();
        let end = if r.end == 0 { size } else { r.end };
        if end > size {
            return Err(Status::out_of_range(format!(
                "end {end} is beyond the log (size {size})"
            )));
        }
        if r.start > size {
            return Err(Status::out_of_range(format!(
                "start {} is beyond the log (size {size})",
                r.start
            )));
        }
        if r.start > end {
            return Err(Status::invalid_argument(format!(
                "start {} is after end {end}",
                r.start
            )));
        }
        let permit = self.0.stream_permit()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let ctx = self.0.clone();
        tokio::spawn(async move {
            let _permit = permit;
            send_range(&ctx, &tx, r.start, end).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let r = req.into_inner();
        let log = &self.0.log;
        let tree_size = if r.tree_size == 0 {
            log.size()
        } else {
            r.tree_size
        };
        let index = match r.leaf {
            Some(pb::get_inclusion_proof_request::Leaf::Index(i)) => i,
            Some(pb::get_inclusion_proof_request::Leaf::LeafHash(h)) => {
                let h = hash("leaf_hash", &h)?;
                // An entry still being synced is not in the log yet.
                let index = self.0.index.clone();
                tokio::task::spawn_blocking(move || index.index_of(&h))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(error::index)?
                    .ok_or_else(|| Status::not_found("no entry has this leaf hash"))?
            }
            None => return Err(error::missing("index or leaf_hash")),
        };
        let hashes = log.inclusion_proof(index, tree_size).map_err(error::log)?;
        let root = log.root_at(tree_size).map_err(error::log)?;
        let leaf = log.leaf_hash_at(index).map_err(error::log)?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            index,
            leaf_hash: leaf.0.to_vec(),
            tree_size,
            root_hash: root.0.to_vec(),
            hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let r = req.into_inner();
        let log = &self.0.log;
        let new_size = if r.new_size == 0 {
            log.size()
        } else {
            r.new_size
        };
        let hashes = log
            .consistency_proof(r.old_size, new_size)
            .map_err(error::log)?;
        Ok(Response::new(pb::GetConsistencyProofResponse {
            old_size: r.old_size,
            new_size,
            old_root: log.root_at(r.old_size).map_err(error::log)?.0.to_vec(),
            new_root: log.root_at(new_size).map_err(error::log)?.0.to_vec(),
            hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    type WatchEntriesStream = Stream_<pb::LogEntry>;

    async fn watch_entries(
        &self,
        req: Request<pb::WatchEntriesRequest>,
    ) -> Result<Response<Self::WatchEntriesStream>, Status> {
        let from = req.into_inner().from_index;
        let size = self.0.log.size();
        if from > size {
            return Err(Status::out_of_range(format!(
                "from_index {from} is beyond the log (size {size}); use at most {size}"
            )));
        }
        let permit = self.0.stream_permit()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let ctx = self.0.clone();
        let mut closing = ctx.closing.subscribe();
        tokio::spawn(async move {
            let _permit = permit;
            let mut next = from;
            loop {
                let have = ctx.log.size();
                if have > next {
                    if !send_range(&ctx, &tx, next, have).await {
                        return;
                    }
                    next = have;
                }
                tokio::select! {
                    grown = ctx.log.wait_beyond(next) => {
                        if grown.is_none() {
                            let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                            return;
                        }
                    }
                    _ = tx.closed() => return,
                    _ = async {
                        while !*closing.borrow_and_update() {
                            if closing.changed().await.is_err() {
                                break;
                            }
                        }
                    } => {
                        let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type VerifyLogStream = Stream_<pb::VerifyLogResponse>;

    async fn verify_log(
        &self,
        _req: Request<pb::VerifyLogRequest>,
    ) -> Result<Response<Self::VerifyLogStream>, Status> {
        let permit = self.0.audit.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("an audit is already running; try again when it ends")
        })?;
        let (tx, rx) = mpsc::channel(16);
        let log = self.0.log.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let progress_tx = tx.clone();
            let mut progress = |p: verify::VerifyProgress| {
                let _ = progress_tx.blocking_send(Ok(pb::VerifyLogResponse {
                    checked: p.checked,
                    total: p.total,
                    ..Default::default()
                }));
            };
            // The stream always ends with a `done` message, also when the audit cannot run.
            let last = match log.verify(&mut progress) {
                Ok(r) => pb::VerifyLogResponse {
                    checked: r.checked,
                    total: r.size,
                    done: true,
                    ok: r.ok(),
                    first_bad_index: r.first_bad_index,
                    error: r.error,
                    root_hash: r.root.map(|h| h.0.to_vec()).unwrap_or_default(),
                },
                Err(e) => pb::VerifyLogResponse {
                    done: true,
                    ok: false,
                    first_bad_index: match &e {
                        crate::log::LogError::Tampered { index, .. } => Some(*index),
                        _ => None,
                    },
                    error: e.to_string(),
                    ..Default::default()
                },
            };
            let _ = tx.blocking_send(Ok(last));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
