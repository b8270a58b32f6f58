//! The dashboard, `/`: the latest signed checkpoint (and the latest cosigned one when the log
//! has witnesses), the log's size and recent write rate, the latest entries, and how many
//! claims the query index holds with each status.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine;
use prost::Message;
use serde_json::json;

use super::entries::entry_view;
use super::{respond, words, Format, PageError, View};
use crate::api::Ctx;
use crate::pb;

/// Entries shown under "recent entries".
const RECENT: u64 = 10;

pub(super) async fn page(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    respond(Format::of(&headers, false), view(&ctx))
}

pub(super) async fn json(State(ctx): State<Ctx>) -> Response {
    respond(Format::Json, view(&ctx))
}

/// The time (unix seconds) an entry was recorded.
fn recorded_at(ctx: &Ctx, index: u64) -> Result<Option<i64>, PageError> {
    let Some(bytes) = ctx.log.entry(index)? else {
        return Ok(None);
    };
    let entry = pb::Entry::decode(&bytes[..]).map_err(|e| {
        PageError::internal(format!("entry {index} does not decode as an Entry: {e}"))
    })?;
    Ok(entry.recorded_at.map(|t| t.seconds))
}

fn view(ctx: &Ctx) -> Result<View, PageError> {
    let cp = ctx.log.latest_checkpoint()?;
    let size = cp.size;
    let checkpoint = json!({
        "note": cp.note,
        "size": cp.size,
        "root": base64::engine::general_purpose::STANDARD.encode(cp.root.0),
        "origin": ctx.log.checkpointer().origin(),
        "verifier_key": ctx.log.checkpointer().verifier_key(),
    });
    let cosigned = ctx.cosigned.as_ref().map(|w| match w.latest() {
        Some(c) => json!({
            "quorum": w.quorum(),
            "size": c.size,
            "is_latest": c.size == cp.size && c.root == cp.root,
            "note": c.note,
            "cosigners": c.cosigners.iter().map(|(name, t)| json!({"name": name, "timestamp": t})).collect::<Vec<_>>(),
        }),
        None => json!({"quorum": w.quorum(), "size": 0, "note": null}),
    });
    let mut recent = Vec::new();
    let from = size.saturating_sub(RECENT);
    for kv in ctx.log.entries_with_leaf(from, size) {
        let (index, bytes, leaf) = kv?;
        recent.push(entry_view(index, &bytes, &leaf, false)?);
    }
    recent.reverse();
    // The write rate over the last entries shown: entries per minute between the first and
    // the last one's recorded time.
    let rate = match (size >= 2, from < size.saturating_sub(1)) {
        (true, true) => {
            let (first, last) = (recorded_at(ctx, from)?, recorded_at(ctx, size - 1)?);
            match (first, last) {
                (Some(a), Some(b)) => {
                    let seconds = (b - a).max(0);
                    let entries = size - 1 - from;
                    Some(json!({
                        "entries": entries,
                        "seconds": seconds,
                        // Entries all within one second have no rate to speak of.
                        "per_minute": (seconds > 0).then(|| {
                            (entries as f64 * 60.0 / seconds as f64 * 10.0).round() / 10.0
                        }),
                    }))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let (counts, indexed_size) = ctx
        .index
        .count_by_status()
        .map_err(crate::api::error::index)?;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let counts: Vec<_> = counts
        .into_iter()
        .map(|(s, n)| {
            json!({
                "status": words::status(s as i32),
                "count": n,
                "link": format!("/claims?status={}", words::status(s as i32)),
            })
        })
        .collect();
    Ok(View {
        template: "dashboard.html",
        title: "claimledger".to_string(),
        data: json!({
            "checkpoint": checkpoint,
            "cosigned": cosigned,
            "size": size,
            "write_rate": rate,
            "recent": recent,
            "counts": counts,
            "claims": total,
            "indexed_size": indexed_size,
        }),
    })
}
