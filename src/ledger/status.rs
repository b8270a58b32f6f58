//! The status of a claim record: the policy run on the record as it stood at a log size, with
//! its sources as they stood then. Shared by the readers (`read`) and the derived index
//! (`crate::index`, which keeps statuses current for queries), so both judge a claim the same
//! way.

use std::collections::HashMap;

use super::error::LedgerError;
use crate::claims::policy::{self, Outcome, PolicyInput};
use crate::pb;

/// Looks a source up by id, as it stood at the size the caller judges at (None: not registered
/// then).
pub(crate) type SourceLookup<'a> = dyn FnMut(&str) -> Result<Option<pb::Source>, LedgerError> + 'a;

/// Every source a claim's status depends on: its claimant, and the sources of its attribution,
/// its evidence and their attributions (with repeats; empty ids are skipped by the callers).
pub(crate) fn sources_of(rec: &pb::GetClaimResponse) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    if let Some(claim) = &rec.claim {
        ids.push(&claim.claimant_id);
        ids.extend(claim.attribution.iter().map(|h| h.source_id.as_str()));
    }
    for e in &rec.evidence {
        ids.push(&e.source_id);
        ids.extend(e.attribution.iter().map(|h| h.source_id.as_str()));
    }
    ids
}

/// Runs the policy on a claim record (already cut to the size it is judged at), with the
/// sources `lookup` gives for that size.
pub(crate) fn outcome(
    rec: &pb::GetClaimResponse,
    now_unix: i64,
    lookup: &mut SourceLookup<'_>,
) -> Result<Outcome, LedgerError> {
    let claim = rec
        .claim
        .as_ref()
        .ok_or_else(|| LedgerError::Corrupt("claim record without claim".into()))?;
    let mut sources = HashMap::new();
    for id in sources_of(rec) {
        if id.is_empty() || sources.contains_key(id) {
            continue;
        }
        if let Some(s) = lookup(id)? {
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
