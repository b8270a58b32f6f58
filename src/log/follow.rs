//! Followers: a process that does not sequence a log kept in PostgreSQL learns of the groups
//! another process commits by reading the stored head, and publishes each new size to its
//! readers (its reads, its live tails, its query index) once the head's checkpoint verifies
//! with the log's key. So no process shows a size that was not committed and signed.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::checkpoint::{Checkpointer, SignedCheckpoint};
use super::error::LogError;
use super::store::Store;

/// How often a follower reads the head.
pub const EVERY: Duration = Duration::from_millis(100);

/// Starts the follower thread; it ends when the log's writer has ended (`size_tx` is gone).
pub(crate) fn spawn(
    store: Store,
    checkpointer: Arc<Checkpointer>,
    published: Arc<RwLock<SignedCheckpoint>>,
    size_tx: Weak<watch::Sender<u64>>,
) -> Result<(), LogError> {
    std::thread::Builder::new()
        .name("claimledger-follow".into())
        .spawn(move || {
            let mut warned = false;
            loop {
                std::thread::sleep(EVERY);
                let Some(tx) = size_tx.upgrade() else {
                    return;
                };
                match step(&store, &checkpointer, &published, &tx) {
                    Ok(()) => warned = false,
                    Err(e) if !warned => {
                        tracing::warn!(error = %e, "following the log's head failed; retrying");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| LogError::Internal(format!("spawning the follower: {e}")))?;
    Ok(())
}

fn step(
    store: &Store,
    checkpointer: &Checkpointer,
    published: &RwLock<SignedCheckpoint>,
    size_tx: &watch::Sender<u64>,
) -> Result<(), LogError> {
    let Some(pg) = store.kv().postgres() else {
        return Ok(());
    };
    // The sequencer publishes what it commits itself.
    if pg.leading() {
        return Ok(());
    }
    let (size, note) = pg.head()?;
    if size <= *size_tx.borrow() {
        return Ok(());
    }
    let note = note.ok_or_else(|| {
        LogError::Corrupt(format!(
            "the head says {size} entries but holds no checkpoint"
        ))
    })?;
    let signed = checkpointer.verify(note.as_bytes())?;
    if signed.size != size {
        return Err(LogError::Corrupt(format!(
            "the head says {size} entries but its checkpoint {}",
            signed.size
        )));
    }
    // The state up to this size may differ from what this process cached: emptied before
    // the size is published, so no reader at the new size finds an older value; what is read
    // from the database from now on is at least this size's (the head said so already).
    pg.followed();
    super::publish(published, size_tx, &signed);
    Ok(())
}
