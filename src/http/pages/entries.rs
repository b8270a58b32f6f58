//! The entry browser, `/entries?start=N`: a page of the log's entries from `N` (the latest
//! page without it), each decoded from its exact bytes (`claimledger.v1.Entry`) and shown
//! with its leaf hash, SHA-256(0x00 ‖ bytes).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use prost::Message;
use serde_json::{json, Value};

use super::{hex, params, proto_json, respond, time, words, Format, PageError, View};
use crate::api::Ctx;
use crate::pb;

/// Entries on one page.
const PAGE: u64 = 50;

/// One entry for the pages: index, time, actor, what it did in words, the page it is about,
/// its leaf hash, and, when `full`, the decoded entry as proto3 JSON.
pub(super) fn entry_view(
    index: u64,
    bytes: &[u8],
    leaf: &tlog_tiles::Hash,
    full: bool,
) -> Result<Value, PageError> {
    let entry = pb::Entry::decode(bytes).map_err(|e| {
        PageError::internal(format!("entry {index} does not decode as an Entry: {e}"))
    })?;
    let (what, link) = words::change(entry.body.as_ref());
    let mut v = json!({
        "index": index,
        "recorded_at": time(entry.recorded_at.as_ref()),
        "actor": entry.actor,
        "what": what,
        "link": link,
        "leaf_hash": hex(&leaf.0),
        "bytes": bytes.len(),
    });
    if full {
        v["entry"] = proto_json(&entry);
    }
    Ok(v)
}

pub(super) async fn page(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    respond(Format::of(&headers, false), view(&ctx, q.as_deref()))
}

pub(super) async fn json(State(ctx): State<Ctx>, RawQuery(q): RawQuery) -> Response {
    respond(Format::Json, view(&ctx, q.as_deref()))
}

fn view(ctx: &Ctx, query: Option<&str>) -> Result<View, PageError> {
    let p = params(query, &["start"])?;
    let size = ctx.log.size();
    let start = match p.get("start") {
        Some(s) => super::number("start", s)?,
        None => size.saturating_sub(PAGE),
    };
    if start > size {
        return Err(PageError::bad_request(format!(
            "start: {start} is beyond the log (size {size})"
        )));
    }
    let end = (start + PAGE).min(size);
    let mut items = Vec::new();
    for kv in ctx.log.entries_with_leaf(start, end) {
        let (index, bytes, leaf) = kv?;
        items.push(entry_view(index, &bytes, &leaf, true)?);
    }
    let link = |s: u64| format!("/entries?start={s}");
    Ok(View {
        template: "entries.html",
        title: format!("Entries {start}–{} of {size}", end.max(1) - 1),
        data: json!({
            "size": size,
            "start": start,
            "end": end,
            "entries": items,
            "previous": (start > 0).then(|| link(start.saturating_sub(PAGE))),
            "next": (end < size).then(|| link(end)),
        }),
    })
}
