//! `add-checkpoint`: the checks tlog-witness requires before a witness cosigns, in its order,
//! and the cosignature.
//!
//! 1. The body is well formed (else [`AddError::Malformed`]), the checkpoint's origin is a log
//!    the witness follows ([`AddError::UnknownOrigin`]) and one of that log's keys signed it
//!    ([`AddError::Unverified`]; signatures of unknown keys are ignored, a bad signature of a
//!    known key refuses the note).
//! 2. The old size is at most the checkpoint's size ([`AddError::OldTooLarge`]).
//! 3. Under the log's lock: the old size is the size the witness last cosigned
//!    ([`AddError::Conflict`] tells the client that size); at the same size the root is the one
//!    cosigned ([`AddError::RootConflict`]); otherwise the consistency proof from the cosigned
//!    tree to the new one verifies ([`AddError::BadProof`]).
//! 4. Still under the lock: the new state is written durably, then the cosignature returned.
//!
//! The check and the update are one critical section per log, so two concurrent requests
//! cannot roll the state back (tlog-witness's race: B stores N+K, then A, checked before, stores
//! N).

use signed_note::{Note, Signature, Verifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash, EMPTY_HASH};

use super::cosignature::Cosigner;
use super::state::{self, Cosigned};
use super::{lock, request, Witness};

/// Why a checkpoint was not cosigned. Each case maps to one HTTP status of tlog-witness (in
/// `witness::server`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AddError {
    /// 400: the body is not `old N`, proof lines, an empty line and a signed checkpoint.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// 400: the old size is larger than the checkpoint's.
    #[error("the old size {old} is larger than the checkpoint's size {size}")]
    OldTooLarge { old: u64, size: u64 },
    /// 404: the witness does not follow this origin.
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// 403: no signature of a trusted key of the log verifies.
    #[error("the checkpoint has no valid signature from a trusted key of its log ({0})")]
    Unverified(String),
    /// 409: the old size is not the size the witness last cosigned, which it carries.
    #[error("the witness last cosigned size {0} of this log")]
    Conflict(u64),
    /// 409: same size as the cosigned checkpoint, different root: the log forked.
    #[error("the witness cosigned a different root at size {0}")]
    RootConflict(u64),
    /// 422: the consistency proof does not verify.
    #[error("the consistency proof does not verify: {0}")]
    BadProof(String),
    /// 500: the state could not be stored, or the clock is unusable.
    #[error("{0}")]
    Internal(String),
}

impl Witness {
    /// Handles one `add-checkpoint` request body: checks it as tlog-witness requires, stores the
    /// checkpoint as the log's latest cosigned one (durably) and returns the cosignature line
    /// (`— name base64(key ID ‖ timestamp ‖ signature)\n`), timestamped now.
    ///
    /// It blocks on a file sync; async callers run it with `spawn_blocking`.
    pub fn add_checkpoint(&self, body: &[u8]) -> Result<String, AddError> {
        let req = request::parse(body).map_err(AddError::Malformed)?;
        let note = Note::from_bytes(req.note).map_err(|e| {
            AddError::Malformed(format!("the checkpoint is not a signed note ({e})"))
        })?;
        let cp = Checkpoint::from_bytes(note.text()).map_err(|_| {
            AddError::Malformed(
                "the note is not a checkpoint (origin, decimal size, base64 root)".into(),
            )
        })?;
        let log = self
            .logs
            .get(cp.origin())
            .ok_or_else(|| AddError::UnknownOrigin(cp.origin().to_string()))?;
        let trusted = VerifierList::new(
            log.keys
                .iter()
                .map(|k| Box::new(k.clone()) as Box<dyn Verifier>)
                .collect(),
        );
        let (verified, _unknown) = note
            .verify(&trusted)
            .map_err(|e| AddError::Unverified(e.to_string()))?;
        let (size, root) = (cp.size(), *cp.hash());
        if req.old > size {
            return Err(AddError::OldTooLarge { old: req.old, size });
        }

        let mut state = lock(&log.state);
        let last = match &*state {
            Ok(last) => last.clone(),
            Err(reason) => {
                return Err(AddError::Internal(format!(
                    "this log's witness state could not be stored earlier ({reason}); restart \
                     the witness once the disk is fixed"
                )))
            }
        };
        let cosigned_size = last.as_ref().map_or(0, |c| c.size);
        if req.old != cosigned_size {
            return Err(AddError::Conflict(cosigned_size));
        }
        if let Err(e) = consistent(&req.proof, last.as_ref(), size, root) {
            // The log signed this checkpoint, so a refusal here is evidence that it misbehaved:
            // keep the note in the witness's log (tlog-witness allows it).
            tracing::warn!(
                origin = cp.origin(),
                old = req.old,
                size,
                error = %e,
                note = %String::from_utf8_lossy(req.note),
                "refused a signed checkpoint that is not consistent with the cosigned one"
            );
            return Err(e);
        }

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| AddError::Internal("the system clock is before 1970".into()))?
            .as_secs();
        let cosigner = Cosigner::new(&self.name, &self.key, now);
        let internal = |e: &dyn std::fmt::Display| AddError::Internal(format!("cosigning: {e}"));
        let sig = signed_note::Signer::sign(&cosigner, note.text()).map_err(|e| internal(&e))?;
        let sig = Signature::new(self.name.clone(), self.key_id, sig).map_err(|e| internal(&e))?;
        let mut sigs = verified;
        sigs.push(sig.clone());
        let cosigned_note = Note::new(note.text(), &sigs)
            .map_err(|e| internal(&e))?
            .to_bytes();
        if let Err(e) = state::store(&self.dir, cp.origin(), &cosigned_note) {
            // After a failed write or fsync nothing says what reached the disk: the file may
            // hold the new checkpoint or the old one. Going on from the old one in memory could
            // cosign a tree that conflicts with what a restart finds, so this log stops until
            // a restart reads the file again.
            tracing::error!(origin = cp.origin(), error = %e, "storing the witness state failed");
            *state = Err(e.clone());
            return Err(AddError::Internal(e));
        }
        *state = Ok(Some(Cosigned { size, root }));
        tracing::info!(origin = cp.origin(), old = req.old, size, "cosigned");
        String::from_utf8(sig.to_bytes()).map_err(|e| internal(&e))
    }
}

/// Whether the checkpoint (`size`, `root`) extends the last cosigned one (`last`, whose size is
/// the request's old size) with `proof`.
fn consistent(
    proof: &[Hash],
    last: Option<&Cosigned>,
    size: u64,
    root: Hash,
) -> Result<(), AddError> {
    let old = last.map_or(0, |c| c.size);
    if old == size {
        let expected = last.map_or(EMPTY_HASH, |c| c.root);
        if root != expected {
            return Err(match last {
                Some(_) => AddError::RootConflict(size),
                // Nothing cosigned yet and size 0: the only tree of size 0 is the empty one.
                None => AddError::BadProof(format!(
                    "a tree of size 0 has root {EMPTY_HASH}, not {root}"
                )),
            });
        }
        if !proof.is_empty() {
            return Err(AddError::BadProof(
                "the proof between two trees of the same size is empty".into(),
            ));
        }
        return Ok(());
    }
    match last.filter(|c| c.size > 0) {
        // Every tree extends the empty one; tlog-witness requires the proof to be empty.
        None if proof.is_empty() => Ok(()),
        None => Err(AddError::BadProof(
            "the proof from size 0 must be empty".into(),
        )),
        Some(c) => tlog_tiles::check_tree(&proof.to_vec(), size, root, c.size, c.root)
            .map_err(|e| AddError::BadProof(format!("from size {} to size {size}: {e}", c.size))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(b: u8) -> Hash {
        Hash([b; 32])
    }

    #[test]
    fn the_same_size_needs_the_same_root_and_no_proof() {
        let last = Cosigned {
            size: 5,
            root: h(1),
        };
        assert_eq!(consistent(&[], Some(&last), 5, h(1)), Ok(()));
        assert_eq!(
            consistent(&[], Some(&last), 5, h(2)),
            Err(AddError::RootConflict(5))
        );
        assert!(matches!(
            consistent(&[h(3)], Some(&last), 5, h(1)),
            Err(AddError::BadProof(_))
        ));
    }

    #[test]
    fn from_nothing_any_tree_is_consistent_but_the_proof_is_empty() {
        assert_eq!(consistent(&[], None, 7, h(1)), Ok(()));
        assert!(matches!(
            consistent(&[h(3)], None, 7, h(1)),
            Err(AddError::BadProof(_))
        ));
        assert_eq!(consistent(&[], None, 0, EMPTY_HASH), Ok(()));
        assert!(matches!(
            consistent(&[], None, 0, h(1)),
            Err(AddError::BadProof(_))
        ));
    }

    #[test]
    fn a_proof_that_does_not_verify_is_refused() {
        let last = Cosigned {
            size: 1,
            root: h(1),
        };
        // The proof from 1 to 2 is the second leaf's hash: the new root is then node(1, 2).
        let root = tlog_tiles::node_hash(h(1), h(2));
        assert_eq!(consistent(&[h(2)], Some(&last), 2, root), Ok(()));
        assert!(matches!(
            consistent(&[h(3)], Some(&last), 2, root),
            Err(AddError::BadProof(_))
        ));
        assert!(matches!(
            consistent(&[], Some(&last), 2, root),
            Err(AddError::BadProof(_))
        ));
    }
}
