//! Applying log entries to the domain indexes, inside the log's writer.
//!
//! This is where checks that depend on state live (does the claimant exist? is the retracting
//! source in the claimant's cluster? was this request id used before?), because only here are
//! they serialized with every other write. A refusal here means the entry is never appended.

use prost::Message;

use super::error::{not_found, LedgerError};
use super::keys::{self, join};
use super::status::{outcome, SourceLookup};
use super::terms;
use crate::log::{Apply, Ctx, EntryMeta, Rejection};
use crate::pb::{self, change::Kind};

/// The ledger's [`Apply`] hook.
pub struct LedgerApply;

impl Apply for LedgerApply {
    fn apply(&self, ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), Rejection> {
        apply_change(ctx, meta, body).map_err(|e| Box::new(e) as Rejection)
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

fn claim_record(ctx: &Ctx<'_>, id: &str) -> Result<pb::GetClaimResponse, LedgerError> {
    get(ctx, &join(&[keys::CLAIM, id.as_bytes()]))?.ok_or_else(|| not_found("claim", id))
}

fn apply_change(ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), LedgerError> {
    let change = pb::Change::decode(body).map_err(|e| {
        LedgerError::InvalidArgument(crate::claims::validate::FieldError {
            field: "body".into(),
            message: format!("not a Change: {e}"),
        })
    })?;
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
    let rec = pb::GetSourceResponse {
        grades: vec![pb::GradeRecord {
            reliability: s.reliability,
            rationale: "initial grade at registration".into(),
            index: meta.index,
            logged_at: Some(meta.recorded_at),
            actor: meta.actor.clone(),
        }],
        source: Some(s.clone()),
    };
    ctx.put(&join(&[keys::SOURCE, s.id.as_bytes()]), rec.encode_to_vec());
    Ok(())
}

fn grade_source(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    g: pb::SourceGrade,
) -> Result<(), LedgerError> {
    let mut rec = require_source(ctx, &g.source_id)?;
    if let Some(s) = rec.source.as_mut() {
        s.reliability = g.reliability;
    }
    rec.grades.push(pb::GradeRecord {
        reliability: g.reliability,
        rationale: g.rationale,
        index: meta.index,
        logged_at: Some(meta.recorded_at),
        actor: meta.actor.clone(),
    });
    ctx.put(
        &join(&[keys::SOURCE, g.source_id.as_bytes()]),
        rec.encode_to_vec(),
    );
    // A new grade can change the status of every claim whose evidence or claimant involves the
    // source, so their status index entries are recomputed in this same batch.
    let citing = ctx.scan_prefix(&keys::bucket(keys::CITES, &g.source_id))?;
    for (k, _) in citing {
        let claim_id =
            String::from_utf8_lossy(&k[keys::CITES.len() + g.source_id.len() + 1..]).into_owned();
        let mut rec = claim_record(ctx, &claim_id)?;
        restatus(ctx, meta, &mut rec)?;
        put_claim(ctx, &rec);
    }
    Ok(())
}

fn put_claim(ctx: &mut Ctx<'_>, rec: &pb::GetClaimResponse) {
    if let Some(c) = &rec.claim {
        ctx.put(&join(&[keys::CLAIM, c.id.as_bytes()]), rec.encode_to_vec());
    }
}

fn cite(ctx: &mut Ctx<'_>, source_id: &str, claim_id: &str) {
    if !source_id.is_empty() {
        ctx.put(
            &join(&[&keys::bucket(keys::CITES, source_id), claim_id.as_bytes()]),
            Vec::new(),
        );
    }
}

/// Recomputes the claim's status as of this entry and moves its status index entry.
fn restatus(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    rec: &mut pb::GetClaimResponse,
) -> Result<(), LedgerError> {
    let out = {
        let mut lookup = |id: &str| source_record(ctx, id);
        outcome(
            rec,
            None,
            meta.recorded_at.seconds,
            &mut lookup as &mut SourceLookup,
        )?
    };
    let Some(claim) = &rec.claim else {
        return Ok(());
    };
    let idx = claim.index.to_be_bytes();
    let old = join(&[&keys::enum_bucket(keys::STATUS, rec.status), &idx]);
    ctx.remove(&old);
    rec.status = out.status as i32;
    rec.computed_status = out.computed_status as i32;
    let new = join(&[&keys::enum_bucket(keys::STATUS, rec.status), &idx]);
    ctx.put(&new, claim.id.as_bytes().to_vec());
    Ok(())
}

fn submit_claim(ctx: &mut Ctx<'_>, meta: &EntryMeta, mut c: pb::Claim) -> Result<(), LedgerError> {
    require_source(ctx, &c.claimant_id)?;
    require_hops(ctx, &c.attribution)?;
    if ctx.get(&join(&[keys::CLAIM, c.id.as_bytes()]))?.is_some() {
        return Err(LedgerError::AlreadyExists(format!(
            "claim {:?} exists",
            c.id
        )));
    }
    c.index = meta.index;
    c.logged_at = Some(meta.recorded_at);
    let id = c.id.clone();
    let idb = id.as_bytes().to_vec();
    let idx = meta.index.to_be_bytes();
    ctx.put(&join(&[keys::ORDER, &idx]), idb.clone());
    ctx.put(
        &join(&[&keys::enum_bucket(keys::KIND, c.kind), &idx]),
        idb.clone(),
    );
    ctx.put(
        &join(&[&keys::bucket(keys::CLAIMANT, &c.claimant_id), &idx]),
        idb.clone(),
    );
    for w in terms::place_words(&c) {
        ctx.put(&join(&[&keys::bucket(keys::PLACE, &w), &idx]), idb.clone());
    }
    for w in terms::text_words(&c) {
        ctx.put(&join(&[&keys::bucket(keys::WORD, &w), &idx]), idb.clone());
    }
    if let Some(t) = &c.event_time {
        if let Some(start) = &t.start {
            ctx.put(
                &join(&[keys::EVENT, &keys::ordered_time(start.seconds), &idx]),
                idb.clone(),
            );
            // The longest event span seen bounds how far before a query's `from` an
            // overlapping event can start, which keeps event-time scans to a window.
            let span = t
                .end
                .as_ref()
                .map_or(0, |e| e.seconds.saturating_sub(start.seconds));
            let longest = ctx
                .get(keys::EVENT_SPAN)?
                .and_then(|v| Some(i64::from_be_bytes(v.as_slice().try_into().ok()?)))
                .unwrap_or(0);
            if span > longest {
                ctx.put(keys::EVENT_SPAN, span.to_be_bytes().to_vec());
            }
        }
    }
    cite(ctx, &c.claimant_id, &id);
    for h in &c.attribution {
        cite(ctx, &h.source_id, &id);
    }
    let mut rec = pb::GetClaimResponse {
        claim: Some(c),
        entry_indexes: vec![meta.index],
        ..Default::default()
    };
    restatus(ctx, meta, &mut rec)?;
    put_claim(ctx, &rec);
    Ok(())
}

fn add_evidence(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut e: pb::Evidence,
) -> Result<(), LedgerError> {
    let mut rec = claim_record(ctx, &e.claim_id)?;
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
    cite(ctx, &e.source_id, &e.claim_id);
    for h in &e.attribution {
        cite(ctx, &h.source_id, &e.claim_id);
    }
    rec.evidence.push(e);
    rec.entry_indexes.push(meta.index);
    restatus(ctx, meta, &mut rec)?;
    put_claim(ctx, &rec);
    Ok(())
}

fn record_verdict(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut v: pb::Verdict,
) -> Result<(), LedgerError> {
    let mut rec = claim_record(ctx, &v.claim_id)?;
    for id in &v.evidence_ids {
        if !rec.evidence.iter().any(|e| &e.id == id) {
            return Err(LedgerError::NotFound(format!(
                "evidence {id:?} is not evidence on claim {:?}",
                v.claim_id
            )));
        }
    }
    v.index = meta.index;
    v.logged_at = Some(meta.recorded_at);
    v.reviewer = meta.actor.clone();
    rec.verdicts.push(v);
    rec.entry_indexes.push(meta.index);
    restatus(ctx, meta, &mut rec)?;
    put_claim(ctx, &rec);
    Ok(())
}

fn retract_claim(
    ctx: &mut Ctx<'_>,
    meta: &EntryMeta,
    mut r: pb::Retraction,
) -> Result<(), LedgerError> {
    let mut rec = claim_record(ctx, &r.claim_id)?;
    if rec.retraction.is_some() {
        return Err(LedgerError::FailedPrecondition(format!(
            "claim {:?} is already retracted",
            r.claim_id
        )));
    }
    let claimant_id = rec
        .claim
        .as_ref()
        .map(|c| c.claimant_id.clone())
        .unwrap_or_default();
    let cluster = |s: &pb::GetSourceResponse| {
        s.source
            .as_ref()
            .map(|s| s.cluster.clone())
            .unwrap_or_default()
    };
    let by = require_source(ctx, &r.source_id)?;
    let claimant = require_source(ctx, &claimant_id)?;
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
    rec.retraction = Some(r);
    rec.entry_indexes.push(meta.index);
    restatus(ctx, meta, &mut rec)?;
    put_claim(ctx, &rec);
    Ok(())
}
