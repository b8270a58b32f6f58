//! Exports in the formats other tools already read (SPEC §9):
//!
//! - schema.org `ClaimReview` JSON-LD, the markup Google's Fact Check tools read, for every
//!   claim that has been reviewed: `/claims/<id>/claimreview.json` for one (also embedded in
//!   the claim page), `/export/claimreview.jsonl` for all, one per line. A claim whose status
//!   is still `claimed` has had no review, so it has no ClaimReview (404 for one, left out of
//!   the export): publishing one would tell readers it was checked.
//! - `/export/events.csv`: the event-like claims (strikes, interceptions, territorial control,
//!   casualty figures, prisoner exchanges) in ACLED's column layout, so researchers can load
//!   them beside ACLED's own data. Columns we cannot know (the perpetrator, ACLED's
//!   interaction codes) are left empty rather than guessed; our status and whether the claim
//!   is confirmed go into `tags` and `notes`.
//!
//! Both bulk exports stream: claims are read a page at a time from the query index, in log
//! order, so memory stays at one page however large the log.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::text;
use crate::api::Ctx;
use crate::pb;

/// Claims read from the index per page of a bulk export.
const PAGE: u32 = 200;

pub(crate) fn routes() -> axum::Router<Ctx> {
    axum::Router::new()
        .route("/claims/{id}/claimreview.json", get(one_review))
        .route("/export/claimreview.jsonl", get(all_reviews))
        .route("/export/events.csv", get(events_csv))
}

/// The claim kinds ACLED would record as events, with ACLED's disorder type, event type and
/// sub-event type for them ("" where the claim cannot tell which).
fn acled_types(kind: i32) -> Option<(&'static str, &'static str, &'static str)> {
    use pb::ClaimKind as K;
    match K::try_from(kind).ok()? {
        K::Strike => Some(("Political violence", "Explosions/Remote violence", "")),
        K::Interception => Some((
            "Political violence",
            "Explosions/Remote violence",
            "Air/drone strike",
        )),
        K::TerritorialControl => Some(("Political violence", "Battles", "")),
        K::CasualtyFigure => Some(("Political violence", "Battles", "")),
        K::PrisonerExchange => Some((
            "Strategic developments",
            "Strategic developments",
            "Agreement",
        )),
        _ => None,
    }
}

/// ACLED's columns, in ACLED's order.
pub const EVENT_COLUMNS: [&str; 31] = [
    "event_id_cnty",
    "event_date",
    "year",
    "time_precision",
    "disorder_type",
    "event_type",
    "sub_event_type",
    "actor1",
    "assoc_actor_1",
    "inter1",
    "actor2",
    "assoc_actor_2",
    "inter2",
    "interaction",
    "civilian_targeting",
    "iso",
    "region",
    "country",
    "admin1",
    "admin2",
    "admin3",
    "location",
    "latitude",
    "longitude",
    "geo_precision",
    "source",
    "source_scale",
    "notes",
    "fatalities",
    "tags",
    "timestamp",
];

/// A timestamp in RFC 3339 (UTC), as proto3 JSON writes it.
pub(crate) fn rfc3339(ts: Option<&pbjson_types::Timestamp>) -> Option<String> {
    ts.and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
}

fn status_of(n: i32) -> pb::Status {
    pb::Status::try_from(n).unwrap_or(pb::Status::Unspecified)
}

/// The words and the 1–5 rating a status gets in a ClaimReview (`None`: not reviewed).
fn rating(status: pb::Status) -> Option<(&'static str, Option<u8>)> {
    use pb::Status as S;
    match status {
        S::Confirmed => Some(("Confirmed", Some(5))),
        S::Corroborated => Some(("Corroborated, not confirmed", Some(4))),
        S::Inconclusive => Some(("Inconclusive", Some(3))),
        S::Disputed => Some(("Disputed", Some(2))),
        S::Refuted => Some(("Refuted", Some(1))),
        S::Retracted => Some(("Retracted by the claimant", None)),
        S::Claimed | S::Unspecified => None,
    }
}

/// The address this server is reached at, as the request names it (for absolute URLs).
pub(crate) fn base_url(headers: &HeaderMap, uri: &http::Uri) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    let scheme = uri.scheme_str().unwrap_or("http");
    format!("{scheme}://{host}")
}

/// The ClaimReview of a claim's record with its effective `status`, or `None` when it has not
/// been reviewed. `base` is the server's address for the review's URL.
pub(crate) fn claim_review(
    ctx: &Ctx,
    base: &str,
    record: &pb::GetClaimResponse,
    status: i32,
) -> Option<Value> {
    let claim = record.claim.as_ref()?;
    let (words, value) = rating(status_of(status))?;
    // When the review reached its present state: the latest entry on the claim.
    let latest = record
        .evidence
        .iter()
        .map(|e| (e.index, e.logged_at.as_ref()))
        .chain(
            record
                .verdicts
                .iter()
                .map(|v| (v.index, v.logged_at.as_ref())),
        )
        .chain(
            record
                .retraction
                .iter()
                .map(|r| (r.index, r.logged_at.as_ref())),
        )
        .chain(std::iter::once((claim.index, claim.logged_at.as_ref())))
        .max_by_key(|(index, _)| *index)
        .and_then(|(_, t)| rfc3339(t));
    let claimant = ctx
        .reader
        .source(&claim.claimant_id)
        .ok()
        .and_then(|s| s.source)
        .map_or_else(|| claim.claimant_id.clone(), |s| s.name);
    let mut rating = json!({
        "@type": "Rating",
        "alternateName": words,
        "bestRating": 5,
        "worstRating": 1,
    });
    if let Some(v) = value {
        rating["ratingValue"] = json!(v);
    }
    let appearances: Vec<Value> = claim
        .urls
        .iter()
        .map(|u| json!({"@type": "CreativeWork", "url": u}))
        .collect();
    let mut item = json!({
        "@type": "Claim",
        "author": {"@type": "Organization", "name": claimant},
        // When it entered this record: the claim was made at or before it.
        "datePublished": rfc3339(claim.logged_at.as_ref()),
    });
    if let Some(first) = appearances.first() {
        item["firstAppearance"] = first.clone();
        item["appearance"] = Value::Array(appearances.clone());
    }
    Some(json!({
        "@context": "https://schema.org",
        "@type": "ClaimReview",
        "url": format!("{base}/claims/{}", claim.id),
        "claimReviewed": claim.summary,
        "datePublished": latest,
        "author": {
            "@type": "Organization",
            "name": ctx.log.checkpointer().origin(),
            "url": base,
        },
        "reviewRating": rating,
        "itemReviewed": item,
    }))
}

async fn one_review(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: http::Uri,
) -> Response {
    let record = match ctx.reader.claim(&id) {
        Ok(r) => r,
        Err(crate::ledger::LedgerError::NotFound(m)) => {
            return text(StatusCode::NOT_FOUND, format!("{m}\n"))
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    match claim_review(&ctx, &base_url(&headers, &uri), &record, record.status) {
        Some(v) => (
            [(header::CONTENT_TYPE, "application/ld+json; charset=utf-8")],
            v.to_string(),
        )
            .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            format!(
                "claim {id} has not been reviewed yet (its status is claimed): no ClaimReview\n"
            ),
        ),
    }
}

/// Streams `render(page)` for every page of claims in log order, after `head`.
fn paged<F>(ctx: Ctx, head: Bytes, content_type: &'static str, render: F) -> Response
where
    F: Fn(&Ctx, Vec<pb::ClaimListItem>) -> Result<Vec<u8>, String> + Send + Sync + 'static,
{
    let render = std::sync::Arc::new(render);
    let pages = futures::stream::unfold(Some(String::new()), move |token| {
        let ctx = ctx.clone();
        let render = render.clone();
        async move {
            let token = token?;
            let req = pb::ListClaimsRequest {
                page_size: PAGE,
                page_token: token,
                ..Default::default()
            };
            let page = match crate::api::claims::list_claims(&ctx, req).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("an export stopped: {}", e.message());
                    return Some((Err(std::io::Error::other(e.message().to_string())), None));
                }
            };
            let next = (!page.next_page_token.is_empty()).then_some(page.next_page_token);
            let ctx2 = ctx.clone();
            let chunk = tokio::task::spawn_blocking(move || render(&ctx2, page.claims)).await;
            match chunk {
                Ok(Ok(bytes)) => Some((Ok(Bytes::from(bytes)), next)),
                Ok(Err(e)) => {
                    tracing::warn!("an export stopped: {e}");
                    Some((Err(std::io::Error::other(e)), None))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(pages);
    (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(body),
    )
        .into_response()
}

async fn all_reviews(State(ctx): State<Ctx>, headers: HeaderMap, uri: http::Uri) -> Response {
    let base = base_url(&headers, &uri);
    paged(
        ctx,
        Bytes::new(),
        "application/x-ndjson; charset=utf-8",
        move |ctx, items| {
            let mut out = Vec::new();
            for item in items {
                let Some(claim) = item.claim else { continue };
                if rating(status_of(item.status)).is_none() {
                    continue;
                }
                let record = ctx.reader.claim(&claim.id).map_err(|e| e.to_string())?;
                if let Some(v) = claim_review(ctx, &base, &record, record.status) {
                    out.extend_from_slice(v.to_string().as_bytes());
                    out.push(b'\n');
                }
            }
            Ok(out)
        },
    )
}

async fn events_csv(State(ctx): State<Ctx>) -> Response {
    let mut head = csv::Writer::from_writer(Vec::new());
    let head = head
        .write_record(EVENT_COLUMNS)
        .map_err(|e| e.to_string())
        .and_then(|()| head.into_inner().map_err(|e| e.to_string()));
    let head = match head {
        Ok(h) => Bytes::from(h),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    paged(ctx, head, "text/csv; charset=utf-8", |ctx, items| {
        let mut w = csv::Writer::from_writer(Vec::new());
        for item in items {
            let Some(claim) = item.claim else { continue };
            let Some(row) = event_row(ctx, &claim, item.status, item.confirmed) else {
                continue;
            };
            w.write_record(&row).map_err(|e| e.to_string())?;
        }
        w.into_inner().map_err(|e| e.to_string())
    })
}

/// ACLED's time precision: 1 a day, 2 a week, 3 a month or more (from the event time's span).
fn time_precision(t: &pb::EventTime) -> &'static str {
    let span = match (&t.start, &t.end) {
        (Some(s), Some(e)) => e.seconds - s.seconds,
        _ => 0,
    };
    match span {
        s if s <= 86_400 => "1",
        s if s <= 7 * 86_400 => "2",
        _ => "3",
    }
}

/// One claim as an ACLED row (in [`EVENT_COLUMNS`] order), if its kind is event-like.
fn event_row(ctx: &Ctx, claim: &pb::Claim, status: i32, confirmed: bool) -> Option<Vec<String>> {
    let (disorder, event_type, sub_event) = acled_types(claim.kind)?;
    let when = claim
        .event_time
        .as_ref()
        .and_then(|t| t.start.as_ref())
        .or(claim.logged_at.as_ref());
    let date = rfc3339(when).unwrap_or_default();
    let day = date.get(..10).unwrap_or_default().to_string();
    let year = date.get(..4).unwrap_or_default().to_string();
    let precision = claim
        .event_time
        .as_ref()
        .filter(|t| t.start.is_some())
        .map_or("3", time_precision);
    let place = claim.places.first().cloned().unwrap_or_default();
    let number = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    let geo_precision = match pb::PlacePrecision::try_from(place.precision) {
        Ok(pb::PlacePrecision::Exact | pb::PlacePrecision::Locality) => "1",
        Ok(pb::PlacePrecision::Admin2) => "2",
        Ok(pb::PlacePrecision::Admin1 | pb::PlacePrecision::Country) => "3",
        _ => "",
    };
    let claimant = ctx
        .reader
        .source(&claim.claimant_id)
        .ok()
        .and_then(|s| s.source)
        .map_or_else(|| claim.claimant_id.clone(), |s| s.name);
    let status_word = status_of(status)
        .as_str_name()
        .trim_start_matches("STATUS_")
        .to_lowercase();
    // Fatalities only from a claim's own count of people killed.
    let fatalities = claim
        .quantities
        .iter()
        .find(|q| {
            let m = q.measure.to_lowercase();
            m.contains("killed") || m.contains("dead") || m.contains("fatalit")
        })
        .map(|q| q.best.to_string())
        .unwrap_or_default();
    let mut tags = vec![format!("claimledger status: {status_word}")];
    tags.extend(claim.tags.iter().cloned());
    let notes = format!(
        "{} [claim by {claimant}; claimledger {}: {status_word}, {}]",
        claim.summary,
        claim.id,
        if confirmed {
            "confirmed"
        } else {
            "not confirmed"
        }
    );
    let location = [&place.locality, &place.admin2, &place.admin1]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default();
    let timestamp = claim
        .logged_at
        .as_ref()
        .map(|t| t.seconds.to_string())
        .unwrap_or_default();
    Some(vec![
        claim.id.clone(),
        day,
        year,
        precision.into(),
        disorder.into(),
        event_type.into(),
        sub_event.into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        place.country.clone(),
        place.admin1.clone(),
        place.admin2.clone(),
        String::new(),
        location,
        number(place.lat),
        number(place.lon),
        geo_precision.into(),
        claimant,
        String::new(),
        notes,
        fatalities,
        tags.join("; "),
        timestamp,
    ])
}
