//! Claim search, `/claims?q=&kind=&status=&claimant=&place=&from=&to=&page=`: the page's
//! parameters become a `ListClaimsRequest` and go through ListClaims's own code path
//! (`api::claims::list_claims`, the query index), so the page finds exactly what the API
//! finds. `page` is the API's opaque page token; each page links to the next.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::{params, respond, time, words, Format, PageError, View};
use crate::api::Ctx;
use crate::claims::validate::quote;
use crate::pb;

/// Claims on one page.
const PAGE_SIZE: u32 = 20;

const PARAMS: &[&str] = &[
    "q", "kind", "status", "claimant", "place", "from", "to", "page",
];

pub(super) async fn page(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    respond(Format::of(&headers, false), view(&ctx, q.as_deref()).await)
}

pub(super) async fn json(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    respond(Format::Json, view(&ctx, q.as_deref()).await)
}

/// An enum parameter given as its plain words ("interception", "territorial control") or its
/// full name (`CLAIM_KIND_INTERCEPTION`); empty is "any".
fn enum_param(
    name: &str,
    v: &str,
    prefix: &str,
    parse: impl Fn(&str) -> Option<i32>,
    values: &[String],
) -> Result<i32, PageError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(0);
    }
    let norm = v.to_uppercase().replace([' ', '-'], "_");
    let full = if norm.starts_with(prefix) {
        norm
    } else {
        format!("{prefix}{norm}")
    };
    match parse(&full) {
        Some(n) if n != 0 => Ok(n),
        _ => Err(PageError::bad_request(format!(
            "{name}: {} is not one of: {}",
            quote(v),
            values.join(", ")
        ))),
    }
}

/// A date (`2025-05-19`, the whole day) or an RFC 3339 time; `end_of_day` picks the last
/// second of a bare date (for `to`).
fn time_param(
    name: &str,
    v: &str,
    end_of_day: bool,
) -> Result<Option<pbjson_types::Timestamp>, PageError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let full = if v.len() == 10 {
        format!("{v}T{}Z", if end_of_day { "23:59:59" } else { "00:00:00" })
    } else {
        v.to_string()
    };
    serde_json::from_value::<pbjson_types::Timestamp>(Value::String(full))
        .map(Some)
        .map_err(|_| {
            PageError::bad_request(format!(
                "{name}: {} is not a date (YYYY-MM-DD) or an RFC 3339 time",
                quote(v)
            ))
        })
}

fn kinds() -> Vec<String> {
    (1..)
        .map_while(|n| pb::ClaimKind::try_from(n).ok())
        .map(|k| words::claim_kind(k as i32))
        .collect()
}

fn statuses() -> Vec<String> {
    (1..)
        .map_while(|n| pb::Status::try_from(n).ok())
        .map(|s| words::status(s as i32))
        .collect()
}

/// This search's URL with page token `page` (none: the first page).
fn link(p: &std::collections::HashMap<String, String>, page: Option<&str>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for k in PARAMS.iter().filter(|k| **k != "page") {
        if let Some(v) = p.get(*k).filter(|v| !v.is_empty()) {
            ser.append_pair(k, v);
        }
    }
    if let Some(t) = page {
        ser.append_pair("page", t);
    }
    let q = ser.finish();
    if q.is_empty() {
        "/claims".to_string()
    } else {
        format!("/claims?{q}")
    }
}

async fn view(ctx: &Ctx, query: Option<&str>) -> Result<View, PageError> {
    let p = params(query, PARAMS)?;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    let (kinds, statuses) = (kinds(), statuses());
    let req = pb::ListClaimsRequest {
        kind: enum_param(
            "kind",
            get("kind"),
            "CLAIM_KIND_",
            |s| pb::ClaimKind::from_str_name(s).map(|k| k as i32),
            &kinds,
        )?,
        status: enum_param(
            "status",
            get("status"),
            "STATUS_",
            |s| pb::Status::from_str_name(s).map(|k| k as i32),
            &statuses,
        )?,
        claimant_id: get("claimant").trim().to_string(),
        place: get("place").to_string(),
        event_time_from: time_param("from", get("from"), false)?,
        event_time_to: time_param("to", get("to"), true)?,
        query: get("q").to_string(),
        page_size: PAGE_SIZE,
        page_token: get("page").to_string(),
        min_size: 0,
    };
    let ans = crate::api::claims::list_claims(ctx, req).await?;
    let claims: Vec<Value> = ans
        .claims
        .iter()
        .filter_map(|item| {
            let c = item.claim.as_ref()?;
            Some(json!({
                "id": c.id,
                "url": format!("/claims/{}", c.id),
                "summary": c.summary,
                "kind": words::claim_kind(c.kind),
                "status": words::status(item.status),
                "confirmed": item.confirmed,
                "claimant": c.claimant_id,
                "event_time": c.event_time.as_ref().map(|t| {
                    if t.expression.is_empty() { time(t.start.as_ref()) } else { t.expression.clone() }
                }),
                "places": c.places.iter().map(words::place).collect::<Vec<_>>(),
                "index": c.index,
            }))
        })
        .collect();
    let searched: serde_json::Map<String, Value> = PARAMS
        .iter()
        .map(|k| (k.to_string(), Value::String(get(k).to_string())))
        .collect();
    Ok(View {
        template: "claims.html",
        title: if get("q").is_empty() {
            "Claims".to_string()
        } else {
            format!("Claims matching {}", get("q"))
        },
        data: json!({
            "search": searched,
            "claims": claims,
            "next": (!ans.next_page_token.is_empty()).then(|| link(&p, Some(&ans.next_page_token))),
            "first": (!get("page").is_empty()).then(|| link(&p, None)),
            "indexed_size": ans.indexed_size,
            "kinds": kinds,
            "statuses": statuses,
        }),
    })
}
