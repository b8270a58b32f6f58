//! The web explorer (SPEC §9): plain server-rendered pages for people, each with a JSON twin
//! for scripts, and the small stylesheet and script they use, all embedded in the binary so
//! nothing is ever loaded from another host.
//!
//! - `/` (`dashboard`): the latest checkpoint (and the cosigned one when the log has
//!   witnesses), size, write rate, recent entries and claim counts by status.
//! - `/claims?q=&kind=&status=&claimant=&place=&from=&to=&page=` (`search`): ListClaims's
//!   own code path (`api::claims::list_claims`) over the query index, paginated by its tokens.
//! - `/claims/<id>[?as_of=<size>]` (`claim`): effective and computed status, the trace in
//!   sentences, a timeline drawn as SVG, attribution chains, and the claim's entries with
//!   inclusion proofs that the page's own script checks against the signed checkpoint shown.
//! - `/sources/<id>` (`source`): a source and its grade history.
//! - `/entries?start=` (`entries`): the log's entries decoded, with their leaf hashes.
//!
//! Every page is one JSON-able view (a `serde_json::Value`) that either fills a minijinja
//! template (autoescaped HTML: a claim whose text is `<script>` shows as text) or is sent as
//! JSON, when the request asks with `Accept: application/json` or a `.json` suffix. Errors
//! go through the same mapping as the gRPC API (`api::error`) and leave as HTTP statuses:
//! unknown ids 404, bad parameters 400 with the reason.

mod assets;
mod claim;
mod dashboard;
mod entries;
mod search;
mod source;
mod words;

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use minijinja::Environment;
use serde_json::{json, Value};

use crate::api::Ctx;

/// The explorer's routes.
pub(crate) fn routes() -> axum::Router<Ctx> {
    axum::Router::new()
        .route("/", get(dashboard::page))
        .route("/index.json", get(dashboard::json))
        .route("/claims", get(search::page))
        .route("/claims.json", get(search::json))
        .route("/claims/{id}", get(claim::page))
        .route("/sources/{id}", get(source::page))
        .route("/entries", get(entries::page))
        .route("/entries.json", get(entries::json))
        .route("/static/{file}", get(assets::file))
}

/// How a page is answered: as HTML, or as its JSON twin.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Format {
    Html,
    Json,
}

impl Format {
    /// JSON when the path had a `.json` suffix, or when the `Accept` header names
    /// `application/json` before (or without) `text/html`; HTML otherwise.
    fn of(headers: &HeaderMap, json_suffix: bool) -> Format {
        if json_suffix {
            return Format::Json;
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        for media in accept.split(',') {
            match media.split(';').next().unwrap_or_default().trim() {
                "application/json" => return Format::Json,
                "text/html" => return Format::Html,
                _ => {}
            }
        }
        Format::Html
    }
}

/// A path id with its format: `abc.json` is `abc` as JSON.
fn id_and_format(id: &str, headers: &HeaderMap) -> (String, Format) {
    match id.strip_suffix(".json") {
        Some(bare) => (bare.to_string(), Format::Json),
        None => (id.to_string(), Format::of(headers, false)),
    }
}

/// A rendered view: which template shows it, the page title, and the data (the JSON twin).
pub(crate) struct View {
    template: &'static str,
    title: String,
    data: Value,
}

/// Why a page cannot be shown, as the HTTP status and a message for people.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn bad_request(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn not_found(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> PageError {
        PageError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

/// The gRPC API's errors (already mapped once, in `api::error`) as HTTP statuses.
impl From<tonic::Status> for PageError {
    fn from(s: tonic::Status) -> PageError {
        use tonic::Code;
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError {
            status,
            message: s.message().to_string(),
        }
    }
}

impl From<crate::log::LogError> for PageError {
    fn from(e: crate::log::LogError) -> PageError {
        crate::api::error::log(e).into()
    }
}

impl From<crate::ledger::LedgerError> for PageError {
    fn from(e: crate::ledger::LedgerError) -> PageError {
        crate::api::error::ledger(e).into()
    }
}

/// The templates, compiled once. A template that does not compile is a bug of this build;
/// it is reported on every page (500) rather than taking the server down.
static TEMPLATES: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Names ending in `.html` are HTML-escaped automatically (minijinja's default callback).
    for (name, source) in [
        ("base.html", include_str!("pages/templates/base.html")),
        ("macros.html", include_str!("pages/templates/macros.html")),
        ("error.html", include_str!("pages/templates/error.html")),
        (
            "dashboard.html",
            include_str!("pages/templates/dashboard.html"),
        ),
        ("claims.html", include_str!("pages/templates/claims.html")),
        ("claim.html", include_str!("pages/templates/claim.html")),
        ("source.html", include_str!("pages/templates/source.html")),
        ("entries.html", include_str!("pages/templates/entries.html")),
    ] {
        env.add_template(name, source)
            .map_err(|e| format!("template {name}: {e:#}"))?;
    }
    Ok(env)
});

fn render(template: &str, ctx: Value) -> Result<String, String> {
    let env = TEMPLATES.as_ref().map_err(|e| e.clone())?;
    env.get_template(template)
        .and_then(|t| t.render(ctx))
        .map_err(|e| format!("rendering {template}: {e:#}"))
}

/// Answers `result` in `format`: the view's page or JSON, or the error's page or JSON.
pub(crate) fn respond(format: Format, result: Result<View, PageError>) -> Response {
    match (format, result) {
        (Format::Json, Ok(view)) => json_response(StatusCode::OK, &view.data),
        (Format::Json, Err(e)) => json_response(
            e.status,
            &json!({"error": e.message, "status": e.status.as_u16()}),
        ),
        (Format::Html, Ok(view)) => html(
            StatusCode::OK,
            render(
                view.template,
                json!({"title": view.title, "page": view.data}),
            ),
        ),
        (Format::Html, Err(e)) => html(
            e.status,
            render(
                "error.html",
                json!({
                    "title": e.status.canonical_reason().unwrap_or("error"),
                    "status": e.status.as_u16(),
                    "message": e.message,
                }),
            ),
        ),
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":{e:?}}}"));
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body + "\n",
    )
        .into_response()
}

fn html(status: StatusCode, page: Result<String, String>) -> Response {
    match page {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(why) => super::text(StatusCode::INTERNAL_SERVER_ERROR, why + "\n"),
    }
}

/// The query parameters of a page, each at most once and only those in `allowed`; anything
/// else is a 400 that says what the page takes.
fn params(query: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, PageError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(PageError::bad_request(format!(
                "unknown query parameter {}: this page takes {}",
                crate::claims::validate::quote(&k),
                allowed.join(", ")
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(PageError::bad_request(format!(
                "query parameter {k} is given more than once"
            )));
        }
    }
    Ok(out)
}

/// A non-negative integer parameter, or a 400 naming it.
fn number(name: &str, v: &str) -> Result<u64, PageError> {
    v.trim().parse().map_err(|_| {
        PageError::bad_request(format!(
            "{name}: {} is not a non-negative whole number",
            crate::claims::validate::quote(v)
        ))
    })
}

/// Lower-case hex of `b`.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A timestamp to the second for people, `2025-05-19 04:00:00 UTC`, or "" when there is none.
fn time(ts: Option<&pbjson_types::Timestamp>) -> String {
    // pbjson writes RFC 3339 in UTC: `2025-05-19T04:00:00.123+00:00` or `…Z`.
    let rfc3339 = super::export::rfc3339(ts).unwrap_or_default();
    match (rfc3339.get(..10), rfc3339.get(11..19)) {
        (Some(day), Some(clock)) => format!("{day} {clock} UTC"),
        _ => rfc3339,
    }
}

/// A protobuf message as its proto3 JSON (the same JSON the gRPC gateway tools use).
fn proto_json<T: serde::Serialize>(m: &T) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}
