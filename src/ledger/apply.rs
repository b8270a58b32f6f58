//! Applying log entries to the ledger's state, inside the log's writer.
//!
//! This is where checks that depend on state live (does the claimant exist? is the retracting
//! source in the claimant's cluster? was this request id used before?), because only here are
//! they serialized with every other write. A refusal here means the entry is never appended.
//!
//! **Bounded work:** each entry reads and writes a fixed number of keys (`keys`), whatever the
//! size of its claim, the evidence already on the claim or the claims citing a source. Nothing
//! here rewrites a record that grows, and no status is computed: statuses are judged when they
//! are asked for (`read`) and kept current for queries by the derived index (`crate::index`).

use prost::Message;

use super::error::{not_found, LedgerError};
use super::keys::{self, join};
use crate::log::{Apply, Ctx, EntryMeta, Rejection};
use crate::pb::{self, change::Kind};

/// The ledger's [`Apply`] hook.
pub struct LedgerApply;

impl Apply for LedgerApply {
    fn apply(&self, ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), Rejection> {
        apply_change(ctx, meta, body).map_err(|e| Box::new(e) as Rejection)
    }

    /// The request id, and the records the change names (its sources, claim, evidence),
    /// which `apply_change` reads.
    fn reads(&self, actor: &str, body: &[u8]) -> Vec<Vec<u8>> {
        let Ok(change) = pb::Change::decode(body) else {
            return Vec::new();
        };
        let source = |id: &str| join(&[keys::SOURCE, id.as_bytes()]);
        let claim = |id: &str| join(&[keys::CLAIM, id.as_bytes()]);
        let evidence = |id: &str| join(&[keys::EVIDENCE, id.as_bytes()]);
        let hops = |h: &[pb::AttributionHop]| -> Vec<Vec<u8>> {
            h.iter()
                .filter(|h| !h.source_id.is_empty())
                .map(|h| source(&h.source_id))
                .collect()
        };
        let mut out = Vec::new();
        if !change.request_id.is_empty() {
            let scoped = super::scoped_request_id(actor, &change.request_id);
            out.push(join(&[keys::REQUEST, scoped.as_bytes()]));
        }
        match change.kind {
            Some(Kind::SourceRegistered(s)) => out.push(source(&s.id)),
            Some(Kind::SourceGraded(g)) => out.push(source(&g.source_id)),
            Some(Kind::ClaimSubmitted(c)) => {
                out.push(source(&c.claimant_id));
                out.extend(hops(&c.attribution));
                out.push(claim(&c.id));
            }
            Some(Kind::EvidenceAdded(e)) => {
                out.push(claim(&e.claim_id));
                out.push(source(&e.source_id));
                out.extend(hops(&e.attribution));
                out.push(evidence(&e.id));
            }
            Some(Kind::VerdictRecorded(v)) => {
                out.push(claim(&v.claim_id));
                out.extend(v.evidence_ids.iter().map(|id| evidence(id)));
            }
            Some(Kind::ClaimRetracted(r)) => {
                out.push(claim(&r.claim_id));
                out.push(join(&[keys::RETRACTED, r.claim_id.as_bytes()]));
                out.push(source(&r.source_id));
            }
            None => {}
        }
        out
    }
}

fn get<M: Message + Default>(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<M>, LedgerError> {
    match ctx.get(key)? {
        None => Ok(None),
        Some(v) => M::decode(&v[..])
            .map(Some)
            .map_err(|e| LedgerError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key)))),
    }
}

fn source_record(ctx: &Ctx<'_>, id: &str) -> Result<Option<pb::GetSourceResponse>, LedgerError> {
    get(ctx, &join(&[keys::SOURCE, id.as_bytes()]))
}

fn require_source(ctx: &Ctx<'_>, id: &str) -> Result<pb::GetSourceResponse, LedgerError> {
    source_record(ctx, id)?.ok_or_else(|| not_found("source", id))
}

fn require_hops(ctx: &Ctx<'_>, hops: &[pb::AttributionHop]) -> Result<(), LedgerError> {
    for h in hops.iter().filter(|h| !h.source_id.is_empty()) {
        require_source(ctx, &h.source_id)?;
    }
    Ok(())
}

fn require_claim(ctx: &Ctx<'_>, id: &str) -> Result<pb::Claim, LedgerError> {
    get(ctx, &join(&[keys::CLAIM, id.as_bytes()]))?.ok_or_else(|| not_found("claim", id))
}

fn put_item(ctx: &mut Ctx<'_>, claim_id: &str, index: u64, tag: u8, msg: &impl Message) {
    let mut v = Vec::with_capacity(1 + msg.encoded_len());
    v.push(tag);
    v.extend_from_slice(&msg.encode_to_vec());
    ctx.put(&keys::at(keys::ITEM, claim_id, index), v);
    // The claim's record changed: readers keeping it read it again (`read::cache`).
    ctx.touch(&join(&[keys::CLAIM, claim_id.as_bytes()]));
}

fn apply_change(ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), LedgerError> {
    let change = pb::Change::decode(body).map_err(|e| {
        LedgerError::InvalidArgument(crate::claims::validate::FieldError {
            field: "body".into(),
            message: format!("not a Change: {e}"),
        })
    })?;
    if meta.index == 0 {
        // The state of a log is written in one layout from its first entry on (a rebuild
        // applies entry 0 again), so the marker goes with it.
        ctx.put(keys::LAYOUT_KEY, keys::LAYOUT.to_vec());
    }
    let scoped = super::scoped_request_id(&meta.actor, &change.request_id);
    let req_key = join(&[keys::REQUEST, scoped.as_bytes()]);
    if !change.request_id.is_empty() {
        if let Some(v) = ctx.get(&req_key)? {
            if v.len() == 40 && v[..32] == change.request_digest[..] {
                let index = u64::from_be_bytes(v[32..40].try_into().unwrap_or_default());
                return Err(LedgerError::Duplicate { index });
            }
            return Err(LedgerError::AlreadyExists(format!(
                "request_id {:?} was already used for a different request",
                change.request_id
            )));
        }
        ctx.put(
            &req_key,
            join(&[&change.request_digest, &meta.index.to_be_bytes()]),
        );
    }
    let kind = change
        .kind
        .ok_or_else(|| LedgerError::Corrupt("change without a kind".into()))?;
    match kind {
        Kind::SourceRegistered(s) => register_source(ctx, meta, s),
        Kind::SourceGraded(g) => grade_source(ctx, meta, g),
        Kind::ClaimSubmitted(c) => submit_claim(ctx, meta, c),
        Kind::EvidenceAdded(e) => add_evidence(ctx, meta, e),
        Kind::VerdictRecorded(v) => record_verdict(ctx, meta, v),
        Kind::ClaimRetracted(r) => retract_claim(ctx, meta, r),
    }
}

/// Writes a grade: the source's record (with only this, its latest grade) and the grade under
/// its own key.
fn put_grade(ctx: &mut Ctx<'_>, source: pb::Source, grade: pb::GradeRecord) {
    ctx.put(
        &keys::at(keys::GRADE, &source.id, grade.index),
        grade.encode_to_vec(),
    );
    let key = join(&[keys::SOURCE, source.id.as_bytes()]);
    let rec = pb::GetSourceResponse {
        source: Some(source),
        grades: vec![grade],
    };
    ctx.put(&key, rec.encode_to_vec());
    // The source changed: readers keeping it read it again (`read::cache`).
    ctx.touch(&key);
}

fn register_source(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut s: pb::Source,
) -> Result<(), LedgerError> {
    if source_record(ctx, &s.id)?.is_some() {
        return Err(LedgerError::AlreadyExists(format!(
            "source {:?} is already registered",
            s.id
        )));
    }
    if s.cluster.is_empty() {
        s.cluster = s.id.clone();
    }
    s.registered_index = meta.index;
    let grade = pb::GradeRecord {
        reliability: s.reliability,
        rationale: "initial grade at registration".into(),
        index: meta.index,
        logged_at: Some(meta.recorded_at),
        actor: meta.actor.clone(),
    };
    put_grade(ctx, s, grade);
    Ok(())
}

/// A new grade is one key for the grade and the source's small record. The claims citing the
/// source are not touched: their statuses are judged when asked, and the derived index
/// re-evaluates them after it reads this entry.
fn grade_source(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    g: pb::SourceGrade,
) -> Result<(), LedgerError> {
    let rec = require_source(ctx, &g.source_id)?;
    let mut source = rec
        .source
        .ok_or_else(|| LedgerError::Corrupt(format!("source {:?} without a body", g.source_id)))?;
    source.reliability = g.reliability;
    let grade = pb::GradeRecord {
        reliability: g.reliability,
        rationale: g.rationale,
        index: meta.index,
        logged_at: Some(meta.recorded_at),
        actor: meta.actor.clone(),
    };
    put_grade(ctx, source, grade);
    Ok(())
}

fn submit_claim(ctx: &mut Ctx<'_>, meta: &EntryMeta, mut c: pb::Claim) -> Result<(), LedgerError> {
    require_source(ctx, &c.claimant_id)?;
    require_hops(ctx, &c.attribution)?;
    let key = join(&[keys::CLAIM, c.id.as_bytes()]);
    if ctx.get(&key)?.is_some() {
        return Err(LedgerError::AlreadyExists(format!(
            "claim {:?} exists",
            c.id
        )));
    }
    c.index = meta.index;
    c.logged_at = Some(meta.recorded_at);
    ctx.put(&key, c.encode_to_vec());
    ctx.touch(&key);
    Ok(())
}

fn add_evidence(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut e: pb::Evidence,
) -> Result<(), LedgerError> {
    require_claim(ctx, &e.claim_id)?;
    require_source(ctx, &e.source_id)?;
    require_hops(ctx, &e.attribution)?;
    let ev_key = join(&[keys::EVIDENCE, e.id.as_bytes()]);
    if ctx.get(&ev_key)?.is_some() {
        return Err(LedgerError::AlreadyExists(format!(
            "evidence {:?} exists",
            e.id
        )));
    }
    ctx.put(&ev_key, e.claim_id.as_bytes().to_vec());
    e.index = meta.index;
    e.logged_at = Some(meta.recorded_at);
    let claim_id = e.claim_id.clone();
    put_item(ctx, &claim_id, meta.index, keys::ITEM_EVIDENCE, &e);
    Ok(())
}

fn record_verdict(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut v: pb::Verdict,
) -> Result<(), LedgerError> {
    require_claim(ctx, &v.claim_id)?;
    for id in &v.evidence_ids {
        let on = ctx.get(&join(&[keys::EVIDENCE, id.as_bytes()]))?;
        if on.as_deref() != Some(v.claim_id.as_bytes()) {
            return Err(LedgerError::NotFound(format!(
                "evidence {id:?} is not evidence on claim {:?}",
                v.claim_id
            )));
        }
    }
    v.index = meta.index;
    v.logged_at = Some(meta.recorded_at);
    v.reviewer = meta.actor.clone();
    let claim_id = v.claim_id.clone();
    put_item(ctx, &claim_id, meta.index, keys::ITEM_VERDICT, &v);
    Ok(())
}

fn retract_claim(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut r: pb::Retraction,
) -> Result<(), LedgerError> {
    let claim = require_claim(ctx, &r.claim_id)?;
    let retracted = join(&[keys::RETRACTED, r.claim_id.as_bytes()]);
    if ctx.get(&retracted)?.is_some() {
        return Err(LedgerError::FailedPrecondition(format!(
            "claim {:?} is already retracted",
            r.claim_id
        )));
    }
    let cluster = |s: &pb::GetSourceResponse| {
        s.source
            .as_ref()
            .map(|s| s.cluster.clone())
            .unwrap_or_default()
    };
    let by = require_source(ctx, &r.source_id)?;
    let claimant = require_source(ctx, &claim.claimant_id)?;
    if cluster(&by) != cluster(&claimant) {
        return Err(LedgerError::FailedPrecondition(format!(
            "only the claimant's cluster ({:?}) can retract; {:?} is in {:?}",
            cluster(&claimant),
            r.source_id,
            cluster(&by)
        )));
    }
    r.index = meta.index;
    r.logged_at = Some(meta.recorded_at);
    ctx.put(&retracted, meta.index.to_be_bytes().to_vec());
    let claim_id = r.claim_id.clone();
    put_item(ctx, &claim_id, meta.index, keys::ITEM_RETRACTION, &r);
    Ok(())
}
