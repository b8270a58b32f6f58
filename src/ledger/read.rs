//! Reads of the ledger: records, and statuses now or as of an earlier log size; the list
//! queries are in `query`. Every read goes through an index; none scans the log.

mod query;

pub use query::{DEFAULT_PAGE, MAX_PAGE, MAX_PAGE_BYTES};

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::error::{not_found, LedgerError};
use super::keys::{self, join};
use super::status::{outcome, record_as_of, source_as_of};
use crate::claims::policy::Outcome;
use crate::log::{Envelope, IndexView, Log};
use crate::pb;

pub(super) fn decode<M: Message + Default>(v: &[u8], what: &str) -> Result<M, LedgerError> {
    M::decode(v).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The status of a claim, with everything GetClaimStatus returns.
pub struct StatusAnswer {
    pub outcome: Outcome,
    pub as_of_size: u64,
    /// The record cut to `as_of_size`.
    pub record: pb::GetClaimResponse,
}

/// Read access to the ledger.
#[derive(Clone)]
pub struct Reader {
    pub(super) log: Log,
    pub(super) idx: IndexView,
}

impl Reader {
    pub fn new(log: Log) -> Reader {
        let idx = log.indexes();
        Reader { log, idx }
    }

    /// A source record as of the published (durable) log size: the writer makes a group's
    /// records visible before its fdatasync ends, and nothing is shown before it is durable.
    pub(super) fn lookup_source(
        &self,
        id: &str,
    ) -> Result<Option<pb::GetSourceResponse>, LedgerError> {
        let Some(v) = self.idx.get(&join(&[keys::SOURCE, id.as_bytes()]))? else {
            return Ok(None);
        };
        let mut rec: pb::GetSourceResponse = decode(&v, "source record")?;
        let size = self.log.size();
        rec.grades.retain(|g| g.index < size);
        let Some(source) = source_as_of(&rec, Some(size)) else {
            return Ok(None);
        };
        rec.source = Some(source);
        Ok(Some(rec))
    }

    pub fn source(&self, id: &str) -> Result<pb::GetSourceResponse, LedgerError> {
        self.lookup_source(id)?
            .ok_or_else(|| not_found("source", id))
    }

    /// A claim record as of the published (durable) log size (see `lookup_source`).
    pub(super) fn record(&self, id: &str) -> Result<pb::GetClaimResponse, LedgerError> {
        let Some(v) = self.idx.get(&join(&[keys::CLAIM, id.as_bytes()]))? else {
            return Err(not_found("claim", id));
        };
        let rec: pb::GetClaimResponse = decode(&v, "claim record")?;
        let size = self.log.size();
        if rec.claim.as_ref().is_none_or(|c| c.index >= size) {
            return Err(not_found("claim", id));
        }
        Ok(record_as_of(&rec, size))
    }

    pub(super) fn evaluate_now(&self, rec: &pb::GetClaimResponse) -> Result<Outcome, LedgerError> {
        let mut lookup = |id: &str| self.lookup_source(id);
        outcome(rec, None, now_unix(), &mut lookup)
    }

    /// A claim with its evidence, verdicts, retraction, entries and its status now.
    pub fn claim(&self, id: &str) -> Result<pb::GetClaimResponse, LedgerError> {
        let mut rec = self.record(id)?;
        let out = self.evaluate_now(&rec)?;
        rec.status = out.status as i32;
        rec.computed_status = out.computed_status as i32;
        Ok(rec)
    }

    /// The status of a claim now (`as_of` 0) or as the log stood at size `as_of`.
    pub fn status(&self, id: &str, as_of: u64) -> Result<StatusAnswer, LedgerError> {
        let size = self.log.size();
        if as_of > size {
            return Err(LedgerError::Log(crate::log::LogError::OutOfRange {
                requested: as_of,
                size,
            }));
        }
        // The record is cut to a published size at least `size`; cut it to exactly `size`, which
        // the returned checkpoint and proofs are about.
        let rec = self.record(id)?;
        if as_of == 0 {
            if rec.claim.as_ref().is_none_or(|c| c.index >= size) {
                return Err(not_found("claim", id));
            }
            let rec = record_as_of(&rec, size);
            // Sources as of `size` too, so the whole answer is about one tree size.
            let mut lookup = |id: &str| self.lookup_source(id);
            let outcome = outcome(&rec, Some(size), now_unix(), &mut lookup)?;
            return Ok(StatusAnswer {
                outcome,
                as_of_size: size,
                record: rec,
            });
        }
        if rec.claim.as_ref().is_none_or(|c| c.index >= as_of) {
            return Err(LedgerError::NotFound(format!(
                "claim {id:?} was not in the log at size {as_of}"
            )));
        }
        let cut = record_as_of(&rec, as_of);
        // "Now" for an earlier size is the time of the last entry then, so deadlines are judged
        // as they would have been at that moment.
        let then = self
            .log
            .entry(as_of - 1)?
            .ok_or_else(|| LedgerError::Corrupt(format!("entry {} missing", as_of - 1)))?;
        let env: Envelope = decode(&then, "entry")?;
        let now = env.recorded_at.map(|t| t.seconds).unwrap_or_default();
        let mut lookup = |id: &str| self.lookup_source(id);
        let outcome = outcome(&cut, Some(as_of), now, &mut lookup)?;
        Ok(StatusAnswer {
            outcome,
            as_of_size: as_of,
            record: cut,
        })
    }
}
