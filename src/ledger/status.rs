//! The status of a claim record: the policy run on the record as it stood at a log size, with
//! its sources as they stood then. Shared by the readers (`read`) and by the index writer
//! (`apply`, which keeps the status index), so both judge a claim the same way.

use std::collections::HashMap;

use super::error::LedgerError;
use crate::claims::policy::{self, Outcome, PolicyInput};
use crate::pb;

/// Looks a source record up by id.
pub(crate) type SourceLookup<'a> =
    dyn FnMut(&str) -> Result<Option<pb::GetSourceResponse>, LedgerError> + 'a;

/// The source as it stood before log size `as_of` (None: now), or None if not yet registered.
pub(crate) fn source_as_of(rec: &pb::GetSourceResponse, as_of: Option<u64>) -> Option<pb::Source> {
    let mut s = rec.source.clone()?;
    if let Some(n) = as_of {
        if s.registered_index >= n {
            return None;
        }
        if let Some(g) = rec.grades.iter().rev().find(|g| g.index < n) {
            s.reliability = g.reliability;
        }
    }
    Some(s)
}

/// Keeps only what was logged before size `as_of`.
pub(crate) fn record_as_of(rec: &pb::GetClaimResponse, as_of: u64) -> pb::GetClaimResponse {
    let mut r = rec.clone();
    r.evidence.retain(|e| e.index < as_of);
    r.verdicts.retain(|v| v.index < as_of);
    if r.retraction.as_ref().is_some_and(|x| x.index >= as_of) {
        r.retraction = None;
    }
    r.entry_indexes.retain(|i| *i < as_of);
    r
}

/// Runs the policy on a claim record (already cut to `as_of` if given), with sources as of then.
pub(crate) fn outcome(
    rec: &pb::GetClaimResponse,
    as_of: Option<u64>,
    now_unix: i64,
    lookup: &mut SourceLookup<'_>,
) -> Result<Outcome, LedgerError> {
    let claim = rec
        .claim
        .as_ref()
        .ok_or_else(|| LedgerError::Corrupt("claim record without claim".into()))?;
    let mut ids: Vec<&str> = vec![&claim.claimant_id];
    ids.extend(claim.attribution.iter().map(|h| h.source_id.as_str()));
    for e in &rec.evidence {
        ids.push(&e.source_id);
        ids.extend(e.attribution.iter().map(|h| h.source_id.as_str()));
    }
    let mut sources = HashMap::new();
    for id in ids {
        if id.is_empty() || sources.contains_key(id) {
            continue;
        }
        if let Some(s) = lookup(id)?.as_ref().and_then(|r| source_as_of(r, as_of)) {
            sources.insert(id.to_string(), s);
        }
    }
    Ok(policy::evaluate(&PolicyInput {
        claim,
        evidence: &rec.evidence,
        verdicts: &rec.verdicts,
        retraction: rec.retraction.as_ref(),
        sources: &sources,
        now_unix,
    }))
}
