//! A source's page, `/sources/<id>`: what it is, its side, role and cluster, and its grade
//! history, every grade with the entry that set it and its rationale.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;

use super::{id_and_format, respond, time, words, PageError, View};
use crate::api::Ctx;
use crate::claims::validate;

pub(super) async fn page(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (id, format) = id_and_format(&id, &headers);
    respond(format, view(&ctx, &id))
}

fn view(ctx: &Ctx, id: &str) -> Result<View, PageError> {
    if !validate::is_slug(id) {
        return Err(PageError::not_found(format!(
            "{} is not a source id",
            validate::quote(id)
        )));
    }
    let rec = ctx.reader.source(id)?;
    let s = rec
        .source
        .ok_or_else(|| PageError::internal(format!("source {id:?} has no record")))?;
    let grades: Vec<_> = rec
        .grades
        .iter()
        .map(|g| {
            json!({
                "grade": words::grade(g.reliability),
                "rationale": g.rationale,
                "index": g.index,
                "logged_at": time(g.logged_at.as_ref()),
                "actor": g.actor,
            })
        })
        .collect();
    Ok(View {
        template: "source.html",
        title: format!("Source {}", s.name),
        data: json!({
            "id": s.id,
            "name": s.name,
            "kind": words::source_kind(s.kind),
            "side": s.side,
            "role": words::role(s.role),
            "cluster": s.cluster,
            "grade": words::grade(s.reliability),
            "registered_index": s.registered_index,
            "grades": grades,
            "claims_link": format!("/claims?claimant={}", s.id),
        }),
    })
}
