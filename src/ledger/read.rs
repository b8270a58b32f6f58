//! Reads of the ledger: records, and statuses now or as of an earlier log size; `query` lists
//! sources. Every read is a point lookup or the range of one record; none scans the log, and
//! listing claims is the derived index's job (`crate::index`).

mod cache;
mod query;

pub use query::{
    bad_token, decode_token, encode_token, page_size, DEFAULT_PAGE, MAX_PAGE, MAX_PAGE_BYTES,
};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::error::{not_found, LedgerError};
use super::keys::{self, join};
use super::status::{outcome, sources_of};
use crate::claims::policy::{self, Outcome};
use crate::log::{Envelope, IndexView, Log};
use crate::pb;

pub(super) fn decode<M: Message + Default>(v: &[u8], what: &str) -> Result<M, LedgerError> {
    M::decode(v).map_err(|e| LedgerError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The status of a claim, with everything GetClaimStatus returns.
pub struct StatusAnswer {
    pub outcome: Arc<Outcome>,
    pub as_of_size: u64,
    /// The record cut to `as_of_size` (shared with the answers the reader keeps).
    pub record: Arc<pb::GetClaimResponse>,
}

/// A claim's record and the policy's judgement of it, as kept between reads (`cache`).
struct Judged {
    record: Arc<pb::GetClaimResponse>,
    outcome: Arc<Outcome>,
    /// The time it was judged at.
    now: i64,
    /// The keys of the sources it was judged with (their tags, `Ctx::touch`).
    sources: Vec<Vec<u8>>,
}

impl Judged {
    fn new(record: Arc<pb::GetClaimResponse>, outcome: Arc<Outcome>, now: i64) -> Judged {
        let mut sources: Vec<Vec<u8>> = sources_of(&record)
            .into_iter()
            .filter(|id| !id.is_empty())
            .map(|id| join(&[keys::SOURCE, id.as_bytes()]))
            .collect();
        sources.sort_unstable();
        sources.dedup();
        Judged {
            record,
            outcome,
            now,
            sources,
        }
    }

    /// Whether the judgement at `self.now` is the judgement at `now` too.
    fn holds_at(&self, now: i64) -> bool {
        match self.record.claim.as_ref().and_then(policy::deadline) {
            None => true,
            Some(t) => (self.now > t) == (now > t),
        }
    }
}

/// One item on a claim (`keys::ITEM`).
enum Item {
    Evidence(pb::Evidence),
    Verdict(pb::Verdict),
    Retraction(pb::Retraction),
}

fn decode_item(v: &[u8]) -> Result<Item, LedgerError> {
    match v.split_first() {
        Some((&keys::ITEM_EVIDENCE, m)) => Ok(Item::Evidence(decode(m, "evidence")?)),
        Some((&keys::ITEM_VERDICT, m)) => Ok(Item::Verdict(decode(m, "verdict")?)),
        Some((&keys::ITEM_RETRACTION, m)) => Ok(Item::Retraction(decode(m, "retraction")?)),
        _ => Err(LedgerError::Corrupt(
            "claim item with an unknown tag".into(),
        )),
    }
}

/// Read access to the ledger. Every read is cut to a log size: the published (durable) size
/// unless said otherwise, since the writer's state runs ahead of what is durable.
///
/// Judged claims and sources are kept between reads (`cache`), shared by clones.
#[derive(Clone)]
pub struct Reader {
    pub(super) log: Log,
    pub(super) idx: IndexView,
    /// None where the log keeps no change marks (PostgreSQL): nothing could be reused.
    kept: Option<Arc<cache::Answers>>,
}

impl Reader {
    pub fn new(log: Log) -> Reader {
        let idx = log.indexes();
        Reader {
            log,
            kept: idx.keeps_marks().then(|| Arc::new(cache::Answers::new())),
            idx,
        }
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    fn source_record(&self, id: &str) -> Result<Option<pb::GetSourceResponse>, LedgerError> {
        match self.idx.get(&join(&[keys::SOURCE, id.as_bytes()]))? {
            None => Ok(None),
            Some(v) => Ok(Some(decode(&v, "source record")?)),
        }
    }

    /// The source as it stood at log size `size` (None if it was not registered then): its
    /// latest grade before `size`, found with one lookup of the grade history, or the answer
    /// kept from an earlier read if no entry has touched the source since.
    pub(crate) fn source_at(&self, id: &str, size: u64) -> Result<Option<pb::Source>, LedgerError> {
        // Taken before the marks are looked at (`IndexView::unchanged_since`).
        let published = self.log.size();
        let kept = self.kept.as_ref().and_then(|c| c.sources.get(id));
        let tag = join(&[keys::SOURCE, id.as_bytes()]);
        if let Some((source, _)) = self.usable(kept, &tag, size, published) {
            return Ok(Some(source));
        }
        let Some(rec) = self.source_record(id)? else {
            return Ok(None);
        };
        let source = self.source_of(&rec, size)?;
        if let (Some(s), Some(c)) = (&source, &self.kept) {
            if size == published {
                c.keep_source(id, size, s.clone());
            }
        }
        Ok(source)
    }

    pub(super) fn source_of(
        &self,
        rec: &pb::GetSourceResponse,
        size: u64,
    ) -> Result<Option<pb::Source>, LedgerError> {
        let Some(mut s) = rec.source.clone() else {
            return Err(LedgerError::Corrupt(
                "source record without a source".into(),
            ));
        };
        if s.registered_index >= size {
            return Ok(None);
        }
        if rec.grades.last().is_some_and(|g| g.index < size) {
            return Ok(Some(s));
        }
        // The last grade below `size`, read from the end of the range (one descent, however
        // long the history).
        let last = self.idx.last_in(
            &keys::bucket(keys::GRADE, &s.id),
            &keys::at(keys::GRADE, &s.id, size),
        )?;
        match last {
            Some((_, v)) => {
                let g: pb::GradeRecord = decode(&v, "grade")?;
                s.reliability = g.reliability;
                Ok(Some(s))
            }
            None => Err(LedgerError::Corrupt(format!(
                "source {:?} has no grade before size {size}",
                s.id
            ))),
        }
    }

    /// A source with its grade history, as of the published size.
    pub fn source(&self, id: &str) -> Result<pb::GetSourceResponse, LedgerError> {
        let size = self.log.size();
        let Some(source) = self.source_at(id, size)? else {
            return Err(not_found("source", id));
        };
        let mut grades = Vec::new();
        for kv in self.idx.range(
            &keys::bucket(keys::GRADE, id),
            &keys::at(keys::GRADE, id, size),
        ) {
            let (_, v) = kv?;
            grades.push(decode(&v, "grade")?);
        }
        Ok(pb::GetSourceResponse {
            source: Some(source),
            grades,
        })
    }

    /// A claim as logged, if it was in the log at `size`.
    pub(crate) fn claim_at(&self, id: &str, size: u64) -> Result<Option<pb::Claim>, LedgerError> {
        let Some(v) = self.idx.get(&join(&[keys::CLAIM, id.as_bytes()]))? else {
            return Ok(None);
        };
        let claim: pb::Claim = decode(&v, "claim")?;
        Ok((claim.index < size).then_some(claim))
    }

    /// A claim's record as the log stood at `size`: the claim and its items logged before it.
    pub(crate) fn record_at(
        &self,
        id: &str,
        size: u64,
    ) -> Result<Option<pb::GetClaimResponse>, LedgerError> {
        let Some(claim) = self.claim_at(id, size)? else {
            return Ok(None);
        };
        let mut rec = pb::GetClaimResponse {
            entry_indexes: vec![claim.index],
            claim: Some(claim),
            ..Default::default()
        };
        for kv in self.idx.range(
            &keys::bucket(keys::ITEM, id),
            &keys::at(keys::ITEM, id, size),
        ) {
            let (k, v) = kv?;
            let index = keys::trailing_index(&k)
                .ok_or_else(|| LedgerError::Corrupt("claim item key".into()))?;
            rec.entry_indexes.push(index);
            match decode_item(&v)? {
                Item::Evidence(e) => rec.evidence.push(e),
                Item::Verdict(v) => rec.verdicts.push(v),
                Item::Retraction(r) => rec.retraction = Some(r),
            }
        }
        Ok(Some(rec))
    }

    /// The value of `kept` if it is the answer about `tag` at `size` too, with the size from
    /// which nothing may have touched what it depends on (`min` of the two sizes). Never one
    /// asked at, or read at, a size above `published`, this reader's own published size taken
    /// before: only that orders the marks it sees (`IndexView::unchanged_since`).
    fn usable<T>(
        &self,
        kept: Option<cache::Kept<T>>,
        tag: &[u8],
        size: u64,
        published: u64,
    ) -> Option<(T, u64)> {
        let k = kept.filter(|k| size <= published && k.size <= published)?;
        let at = k.size.min(size);
        self.idx.unchanged_since(tag, at).then_some((k.value, at))
    }

    /// A claim's record as the log stood at `size` and the policy's judgement of it at time
    /// `now`: kept from an earlier read when no entry has touched the claim or its sources
    /// since and `now` is on the same side of the claim's deadline; else the record (kept, or
    /// read) judged again.
    fn judged(&self, id: &str, size: u64, now: i64) -> Result<Option<Arc<Judged>>, LedgerError> {
        // Taken before the marks are looked at (`IndexView::unchanged_since`).
        let published = self.log.size();
        let kept = self.kept.as_ref().and_then(|c| c.judged.get(id));
        let tag = join(&[keys::CLAIM, id.as_bytes()]);
        let mut record = None;
        if let Some((j, at)) = self.usable(kept, &tag, size, published) {
            if j.holds_at(now) && j.sources.iter().all(|t| self.idx.unchanged_since(t, at)) {
                return Ok(Some(j));
            }
            record = Some(j.record.clone());
        }
        let record = match record {
            Some(r) => r,
            None => match self.record_at(id, size)? {
                Some(r) => Arc::new(r),
                None => return Ok(None),
            },
        };
        let outcome = Arc::new(self.outcome_at(&record, size, now)?);
        let j = Arc::new(Judged::new(record, outcome, now));
        if let Some(c) = self.kept.as_ref().filter(|_| size == published) {
            c.keep_judged(id, size, j.clone());
        }
        Ok(Some(j))
    }

    /// The item logged at `index` on a claim (what a write just added), as of the published
    /// size.
    fn item(&self, claim_id: &str, index: u64) -> Result<Item, LedgerError> {
        if index >= self.log.size() {
            return Err(LedgerError::NotFound(format!(
                "entry {index} is not published yet"
            )));
        }
        let v = self
            .idx
            .get(&keys::at(keys::ITEM, claim_id, index))?
            .ok_or_else(|| {
                LedgerError::NotFound(format!("entry {index} is not about claim {claim_id:?}"))
            })?;
        decode_item(&v)
    }

    pub fn evidence_at(&self, claim_id: &str, index: u64) -> Result<pb::Evidence, LedgerError> {
        match self.item(claim_id, index)? {
            Item::Evidence(e) => Ok(e),
            _ => Err(LedgerError::Corrupt(format!(
                "entry {index} is not evidence"
            ))),
        }
    }

    pub fn verdict_at(&self, claim_id: &str, index: u64) -> Result<pb::Verdict, LedgerError> {
        match self.item(claim_id, index)? {
            Item::Verdict(v) => Ok(v),
            _ => Err(LedgerError::Corrupt(format!(
                "entry {index} is not a verdict"
            ))),
        }
    }

    pub fn retraction_at(&self, claim_id: &str, index: u64) -> Result<pb::Retraction, LedgerError> {
        match self.item(claim_id, index)? {
            Item::Retraction(r) => Ok(r),
            _ => Err(LedgerError::Corrupt(format!(
                "entry {index} is not a retraction"
            ))),
        }
    }

    /// A claim as logged (without its items), as of the published size.
    pub fn claim_only(&self, id: &str) -> Result<pb::Claim, LedgerError> {
        self.claim_at(id, self.log.size())?
            .ok_or_else(|| not_found("claim", id))
    }

    /// The policy's judgement of a record cut to `size`, with its sources as of `size`, at
    /// time `now`.
    pub(crate) fn outcome_at(
        &self,
        rec: &pb::GetClaimResponse,
        size: u64,
        now: i64,
    ) -> Result<Outcome, LedgerError> {
        let mut lookup = |id: &str| self.source_at(id, size);
        outcome(rec, now, &mut lookup)
    }

    /// A claim with its evidence, verdicts, retraction, entries and its status now.
    pub fn claim(&self, id: &str) -> Result<pb::GetClaimResponse, LedgerError> {
        let j = self
            .judged(id, self.log.size(), now_unix())?
            .ok_or_else(|| not_found("claim", id))?;
        let mut rec = pb::GetClaimResponse::clone(&j.record);
        rec.status = j.outcome.status as i32;
        rec.computed_status = j.outcome.computed_status as i32;
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
        if as_of != 0 && self.claim_at(id, as_of)?.is_none() {
            // Before any entry is read: an unknown id is NOT_FOUND whatever the log holds.
            if self.claim_at(id, size)?.is_some() {
                return Err(LedgerError::NotFound(format!(
                    "claim {id:?} was not in the log at size {as_of}"
                )));
            }
            return Err(not_found("claim", id));
        }
        // Everything about one tree size, which the returned checkpoint and proofs are about.
        let (at, now) = if as_of == 0 {
            (size, now_unix())
        } else {
            // "Now" for an earlier size is the time of the last entry then, so deadlines are
            // judged as they would have been at that moment.
            let then = self
                .log
                .entry(as_of - 1)?
                .ok_or_else(|| LedgerError::Corrupt(format!("entry {} missing", as_of - 1)))?;
            let env: Envelope = decode(&then, "entry")?;
            (
                as_of,
                env.recorded_at.map(|t| t.seconds).unwrap_or_default(),
            )
        };
        let Some(j) = self.judged(id, at, now)? else {
            return Err(not_found("claim", id));
        };
        Ok(StatusAnswer {
            outcome: j.outcome.clone(),
            as_of_size: at,
            record: j.record.clone(),
        })
    }
}
