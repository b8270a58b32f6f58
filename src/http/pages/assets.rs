//! The explorer's static files, embedded in the binary: one stylesheet and one script.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub(super) async fn file(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "style.css" => (include_str!("static/style.css"), "text/css; charset=utf-8"),
        "explorer.js" => (
            include_str!("static/explorer.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => {
            return crate::http::text(
                StatusCode::NOT_FOUND,
                format!("not found: /static/{name}\n"),
            )
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            // They change with the binary; a short cache keeps an upgrade visible.
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
