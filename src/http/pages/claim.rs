//! A claim's page, `/claims/<id>[?as_of=<size>]`: everything GetClaimStatus says (through the
//! same code, `api::claims::status_response`, with proofs) and the record it is about, for
//! people: effective and computed status with `confirmed` said plainly, the trace as
//! sentences, a timeline (an SVG drawn here) of the claim's entries and the status after
//! each, attribution chains, places and quantities, and the claim's entries, each with its
//! exact bytes and inclusion proof for the page's script (`static/explorer.js`) to check
//! against the signed checkpoint of the size the page is about.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use super::words::{self, OriginInfo};
use super::{hex, id_and_format, params, respond, time, PageError, View};
use crate::api::Ctx;
use crate::claims::validate;
use crate::pb;

/// The most entries of one claim whose status-after-each is drawn on the timeline (each is
/// one policy run); a longer history is drawn without the status band.
const MAX_STATUS_STEPS: usize = 200;

/// Timeline geometry (SVG user units).
const WIDTH: f64 = 900.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 30.0;

pub(super) async fn page(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let (id, format) = id_and_format(&id, &headers);
    let base = crate::http::export::base_url(&headers, &uri);
    respond(format, view(&ctx, &id, q.as_deref(), &base))
}

/// Names and grades of the sources a page mentions, as of the size it is about.
struct Names<'a> {
    ctx: &'a Ctx,
    size: u64,
    known: HashMap<String, Option<pb::Source>>,
}

impl Names<'_> {
    fn source(&mut self, id: &str) -> Result<Option<&pb::Source>, PageError> {
        if !self.known.contains_key(id) {
            let s = self.ctx.reader.source_at(id, self.size)?;
            self.known.insert(id.to_string(), s);
        }
        Ok(self.known.get(id).and_then(|s| s.as_ref()))
    }

    fn name(&mut self, id: &str) -> Result<String, PageError> {
        Ok(self
            .source(id)?
            .map_or_else(|| id.to_string(), |s| s.name.clone()))
    }

    /// An attribution chain as links: each hop's label, link, relation and marker.
    fn chain(&mut self, hops: &[pb::AttributionHop]) -> Result<Vec<Value>, PageError> {
        let mut out = Vec::new();
        for h in hops {
            let (label, link) = if h.source_id.is_empty() {
                (format!("{} (unregistered)", h.name), None)
            } else {
                (
                    self.name(&h.source_id)?,
                    Some(format!("/sources/{}", h.source_id)),
                )
            };
            out.push(json!({
                "label": label,
                "link": link,
                "relation": words::relation(h.relation),
                "marker": h.marker,
            }));
        }
        Ok(out)
    }
}

/// One thing that happened to the claim, for the timeline and the entry list.
struct Event {
    index: u64,
    lane: usize,
    class: &'static str,
    label: String,
    time: String,
}

const LANES: [&str; 3] = ["claim", "evidence", "verdicts"];

fn view(ctx: &Ctx, id: &str, query: Option<&str>, base: &str) -> Result<View, PageError> {
    if validate::id("id", id).is_err() {
        return Err(PageError::not_found(format!(
            "{} is not a claim id",
            validate::quote(id)
        )));
    }
    let p = params(query, &["as_of"])?;
    let as_of = match p.get("as_of").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => {
            let n = super::number("as_of", v)?;
            if n == 0 {
                return Err(PageError::bad_request(
                    "as_of: a log size is at least 1 (omit as_of for the latest)",
                ));
            }
            n
        }
    };
    let ans = ctx.reader.status(id, as_of)?;
    let status = crate::api::claims::status_response(ctx, id, &ans, true)?;
    let size = ans.as_of_size;
    let latest = ctx.log.size();
    let rec = &ans.record;
    let claim = rec
        .claim
        .as_ref()
        .ok_or_else(|| PageError::internal(format!("claim {id:?} has no record")))?;
    let mut names = Names {
        ctx,
        size,
        known: HashMap::new(),
    };

    let claimant = json!({
        "id": claim.claimant_id,
        "name": names.name(&claim.claimant_id)?,
        "link": format!("/sources/{}", claim.claimant_id),
    });
    let chain = names.chain(&claim.attribution)?;
    let mut evidence = Vec::new();
    for e in &rec.evidence {
        evidence.push(json!({
            "id": e.id,
            "source": names.name(&e.source_id)?,
            "source_link": format!("/sources/{}", e.source_id),
            "stance": words::stance(e.stance),
            "kind": words::evidence_kind(e.kind),
            "credibility": e.credibility,
            "url": e.url,
            "content_sha256": e.content_sha256,
            "quantity": e.quantity.as_ref().map(words::quantity),
            "geolocation_verified": e.geolocation_verified,
            "note": e.note,
            "index": e.index,
            "logged_at": time(e.logged_at.as_ref()),
            "chain": names.chain(&e.attribution)?,
        }));
    }
    let mut trace = Vec::new();
    for item in &status.trace {
        let ev = rec.evidence.iter().find(|e| e.id == item.evidence_id);
        let origin = match item.origin.strip_prefix("unknown:") {
            Some(label) => OriginInfo {
                name: format!("{label} (unknown origin)"),
                grade: None,
            },
            None => match names.source(&item.origin)? {
                Some(s) => OriginInfo {
                    name: s.name.clone(),
                    grade: Some(words::grade(s.reliability)),
                },
                None => OriginInfo {
                    name: item.origin.clone(),
                    grade: None,
                },
            },
        };
        trace.push(json!({
            "evidence_id": item.evidence_id,
            "sentence": words::trace_sentence(item, ev, &origin),
            "counted": item.counted,
            "independent": item.independent,
            "group": item.group,
            "reasons": item.reasons,
        }));
    }
    let verdicts: Vec<Value> = rec
        .verdicts
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "decision": words::decision(v.decision),
                "rationale": v.rationale,
                "reviewer": v.reviewer,
                "evidence_ids": v.evidence_ids,
                "index": v.index,
                "logged_at": time(v.logged_at.as_ref()),
            })
        })
        .collect();
    let retraction = rec.retraction.as_ref().map(|r| {
        json!({
            "source_id": r.source_id,
            "url": r.url,
            "note": r.note,
            "index": r.index,
            "logged_at": time(r.logged_at.as_ref()),
        })
    });

    // What happened, in log order.
    let mut events = vec![Event {
        index: claim.index,
        lane: 0,
        class: "claim",
        label: "claim submitted".to_string(),
        time: time(claim.logged_at.as_ref()),
    }];
    for e in &rec.evidence {
        events.push(Event {
            index: e.index,
            lane: 1,
            class: match pb::Stance::try_from(e.stance) {
                Ok(pb::Stance::Supports) => "supports",
                Ok(pb::Stance::Contradicts) => "contradicts",
                _ => "neutral",
            },
            label: format!(
                "{} {} ({})",
                names.name(&e.source_id)?,
                words::evidence_kind(e.kind),
                words::stance(e.stance)
            ),
            time: time(e.logged_at.as_ref()),
        });
    }
    for v in &rec.verdicts {
        events.push(Event {
            index: v.index,
            lane: 2,
            class: "verdict",
            label: format!("verdict: {}", words::decision(v.decision)),
            time: time(v.logged_at.as_ref()),
        });
    }
    if let Some(r) = &rec.retraction {
        events.push(Event {
            index: r.index,
            lane: 2,
            class: "retraction",
            label: "retracted by the claimant".to_string(),
            time: time(r.logged_at.as_ref()),
        });
    }
    events.sort_by_key(|e| e.index);
    let timeline = timeline(ctx, id, &events, claim.index, size)?;

    // The claim's entries with their exact bytes and proofs, for the page's own check.
    let altered = ctx
        .alter_page_proofs
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut entries = Vec::new();
    for proof in &status.proofs {
        let mut bytes = ctx
            .log
            .entry(proof.index)?
            .ok_or_else(|| PageError::internal(format!("entry {} is missing", proof.index)))?
            .to_vec();
        let mut hashes: Vec<Vec<u8>> = proof.hashes.clone();
        if altered {
            // The test hook: one bit of the proof (or of the bytes, when the proof is
            // empty) flipped, which the page's check must catch.
            match hashes.first_mut().and_then(|h| h.first_mut()) {
                Some(b) => *b ^= 1,
                None => {
                    if let Some(b) = bytes.last_mut() {
                        *b ^= 1;
                    }
                }
            }
        }
        let what = events
            .iter()
            .find(|e| e.index == proof.index)
            .map_or_else(String::new, |e| e.label.clone());
        entries.push(json!({
            "index": proof.index,
            "what": what,
            "leaf_hash": hex(&proof.leaf_hash),
            "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "proof": hashes.iter().map(|h| hex(h)).collect::<Vec<_>>(),
        }));
    }
    let verifier_key = ctx.log.checkpointer().verifier_key().to_string();
    let cosigned = ctx
        .cosigned
        .as_ref()
        .and_then(|w| w.latest())
        .map(|c| json!({"size": c.size, "note": c.note}));

    Ok(View {
        template: "claim.html",
        title: claim.summary.clone(),
        data: json!({
            "id": claim.id,
            "summary": claim.summary,
            "text": claim.text,
            "kind": words::claim_kind(claim.kind),
            "modality": words::modality(claim.modality),
            "claimant": claimant,
            "chain": chain,
            "urls": claim.urls,
            "event_time": claim.event_time.as_ref().map(|t| json!({
                "start": time(t.start.as_ref()),
                "end": time(t.end.as_ref()),
                "expression": t.expression,
            })),
            "places": claim.places.iter().map(words::place).collect::<Vec<_>>(),
            "quantities": claim.quantities.iter().map(words::quantity).collect::<Vec<_>>(),
            "resolve_by": time(claim.resolve_by.as_ref()),
            "tags": claim.tags,
            "index": claim.index,
            "logged_at": time(claim.logged_at.as_ref()),
            "status": {
                "effective": words::status(status.status),
                "computed": words::status(status.computed_status),
                "confirmed": status.confirmed,
                "needs_review": status.needs_review,
                "flags": status.flags,
                "supporting_groups": status.supporting_groups,
                "contradicting_groups": status.contradicting_groups,
                "policy": status.policy,
            },
            "as_of_size": size,
            "latest_size": latest,
            "is_latest": size == latest,
            "trace": trace,
            "evidence": evidence,
            "verdicts": verdicts,
            "retraction": retraction,
            "timeline": timeline,
            "proofs": {
                "checkpoint": status.checkpoint,
                "verifier_key": verifier_key,
                "size": size,
                "entries": entries,
            },
            "cosigned": cosigned,
            // The schema.org ClaimReview of the claim as it stands now (none for an earlier
            // size, or before any review).
            "claimreview": if size == latest {
                crate::http::export::claim_review(ctx, base, rec, status.status)
            } else {
                None
            },
        }),
    })
}

/// The timeline's geometry: a lane per kind of event with a marker per entry at its log
/// index, and a band of the effective status after each entry (as GetClaimStatus with
/// `as_of` = index + 1 answers).
fn timeline(
    ctx: &Ctx,
    id: &str,
    events: &[Event],
    first: u64,
    size: u64,
) -> Result<Value, PageError> {
    let last = size.saturating_sub(1).max(first);
    let span = (last - first).max(1) as f64;
    let x = |index: u64| LEFT + (index - first) as f64 / span * (WIDTH - LEFT - RIGHT);
    let lane_y = |lane: usize| 30.0 + 34.0 * lane as f64;
    let band_y = lane_y(LANES.len()) - 6.0;
    let markers: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "x": (x(e.index) * 10.0).round() / 10.0,
                "y": lane_y(e.lane),
                "class": e.class,
                "label": e.label,
                "index": e.index,
                "time": e.time,
            })
        })
        .collect();
    let mut band = Vec::new();
    if events.len() <= MAX_STATUS_STEPS {
        for (i, e) in events.iter().enumerate() {
            let after = ctx.reader.status(id, e.index + 1)?.outcome.status;
            let end = events.get(i + 1).map_or(WIDTH - RIGHT, |n| x(n.index));
            band.push(json!({
                "x": (x(e.index) * 10.0).round() / 10.0,
                "width": ((end - x(e.index)).max(2.0) * 10.0).round() / 10.0,
                "status": words::status(after as i32),
                "class": words::status(after as i32).replace(' ', "-"),
                "index": e.index,
            }));
        }
    }
    let lanes: Vec<Value> = LANES
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"name": name, "y": lane_y(i)}))
        .collect();
    Ok(json!({
        "width": WIDTH,
        "height": band_y + 60.0,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "lanes": lanes,
        "markers": markers,
        "band": band,
        "band_y": band_y,
        "first": first,
        "last": last,
        "first_time": events.first().map(|e| e.time.clone()),
        "last_time": events.last().map(|e| e.time.clone()),
    }))
}
