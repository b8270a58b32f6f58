//! The HTTP surface beside gRPC, on the same port and behind the same TLS and limits (SPEC §9).
//!
//! [`router`] is an axum router that `api::server` merges with the gRPC services' routes, so
//! one listener serves both: gRPC requests go to tonic's services by their `/package.Service/`
//! path, everything else comes here. Every HTTP endpoint is a read, open to every caller like
//! the gRPC reads (SPEC §7).
//!
//! - [`tiles`]: the C2SP tlog-tiles read endpoints (`/checkpoint`, `/tile/…`), for standard
//!   tile clients and monitors.
//! - [`pages`]: the explorer for people (dashboard, claim search, claim, source and entry
//!   pages), each with a JSON twin.
//! - [`export`]: schema.org ClaimReview JSON-LD and an ACLED-layout CSV of event-like claims.
//! - [`metrics`]: `/metrics` for Prometheus, and the tower layer that counts every call.
//! - `/healthz` (the process answers) and `/readyz` (it can take writes: the writer commits,
//!   no witness proved a fork, no shutdown under way), for load balancers and orchestrators.

pub mod export;
pub mod metrics;
pub mod pages;
pub mod tiles;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::Ctx;

/// The gRPC services' `routes` with the HTTP routes for `ctx`'s log beside them, `/metrics`
/// showing `metrics`. Unknown paths get a 404, or for a gRPC request gRPC's UNIMPLEMENTED, as
/// tonic answers an unknown method.
pub fn router(
    ctx: Ctx,
    grpc: tonic::service::Routes,
    metrics: std::sync::Arc<metrics::Metrics>,
) -> tonic::service::Routes {
    let scrape: axum::Router = axum::Router::new()
        .route("/metrics", get(metrics::handler))
        .with_state((ctx.clone(), metrics));
    let http = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(tiles::routes())
        .merge(pages::routes())
        .merge(export::routes())
        .with_state(ctx);
    // tonic's routes carry a fallback (UNIMPLEMENTED); ours replaces it after the merge.
    grpc.into_axum_router()
        .merge(http)
        .merge(scrape)
        .fallback(not_found)
        .into()
}

/// Whether a request is a gRPC call (its content type says so).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A plain-text answer with `status`.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    if is_grpc(req.headers()) {
        let method = req.uri().path().to_string();
        return tonic::Status::unimplemented(format!("no such method: {method}"))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    text(
        StatusCode::NOT_FOUND,
        format!("not found: {}\n", req.uri().path()),
    )
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

async fn readyz(State(ctx): State<Ctx>) -> Response {
    let trouble = ctx
        .log
        .halted()
        .borrow()
        .clone()
        .map(|why| format!("halted: {why}"))
        .or_else(|| {
            ctx.log
                .writer_health()
                .borrow()
                .clone()
                .map(|why| format!("the log cannot commit: {why}"))
        })
        .or_else(|| (*ctx.closing.borrow()).then(|| "shutting down".to_string()));
    match trouble {
        None => text(StatusCode::OK, "ready\n"),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
