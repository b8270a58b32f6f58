//! The witness's HTTP/1.1 endpoint: `POST /add-checkpoint` (C2SP tlog-witness), and where its
//! limits live.
//!
//! tlog-witness has no authentication beyond the log's signature on the checkpoint, so anyone
//! who can reach the port can send requests. What one client can take is bounded:
//! - at most [`MAX_CONNECTIONS`] open connections (the accept loop holds a permit per
//!   connection and stops accepting while none is free);
//! - a request's head must arrive within [`HEADER_TIMEOUT`] of the connection being ready for
//!   it (hyper starts the timer when it waits for a head, so a silent new connection and an
//!   idle kept-alive one are both closed after it) and fit in [`MAX_HEADER_BYTES`]; the body
//!   must arrive within [`BODY_TIMEOUT`] and fit in [`MAX_BODY_BYTES`] (413 beyond it);
//! - at most [`MAX_IN_FLIGHT`] requests are checked at once, each on tokio's blocking pool (it
//!   ends with a file sync). The permit is taken once the body is in, so clients that send
//!   slowly hold only their connection, not a place among the checks.
//!
//! [`status`] is the one place where an [`AddError`] becomes an HTTP status.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{AddError, Witness};

/// Most open connections at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Most `add-checkpoint` requests being checked at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// The largest request body: a checkpoint with a hundred signatures and 63 proof lines is
/// about 15 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's body once its headers arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight requests get to finish after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The media type of a 409 answer's body, the size the witness last cosigned (tlog-witness).
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// Serves the witness on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish (at most `DRAIN`) and returns.
///
/// Failed accepts (out of file descriptors, a connection reset before it was accepted) are
/// logged and retried after a short pause rather than ending the server.
pub async fn serve(
    listener: TcpListener,
    witness: Arc<Witness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(witness);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    // The same capped accept loop as the gRPC server's.
    while let Some((stream, permit)) =
        crate::api::server::incoming::accept_capped(&listener, &permits, &mut shutdown).await
    {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "witness connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("witness requests still running after {DRAIN:?} were cut off");
    }
    Ok(())
}

/// The routes: `POST /add-checkpoint`; anything else is 404 (405 for another method).
fn router(witness: Arc<Witness>) -> Router {
    let app = App {
        witness,
        checks: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    };
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .with_state(Arc::new(app))
}

/// What the handler needs: the witness and the permits of the checks in flight.
struct App {
    witness: Arc<Witness>,
    checks: Arc<Semaphore>,
}

async fn add_checkpoint(State(app): State<Arc<App>>, body: Body) -> Response {
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if too_large(&e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes\n"),
            )
        }
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}\n"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_TIMEOUT:?}\n"),
            )
        }
    };
    // The permit moves into the blocking task: a client that hangs up does not free its place
    // before its check is done.
    let Ok(permit) = app.checks.clone().acquire_owned().await else {
        // The semaphore is never closed; answered rather than assumed.
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the witness is not taking requests\n".into(),
        );
    };
    let witness = app.witness.clone();
    let check = move || {
        let _permit = permit;
        witness.add_checkpoint(&body)
    };
    match tokio::task::spawn_blocking(check).await {
        Ok(Ok(cosignature)) => text(StatusCode::OK, cosignature),
        Ok(Err(e)) => refusal(&e),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}\n"),
        ),
    }
}

/// The HTTP status tlog-witness gives each refusal.
pub fn status(e: &AddError) -> StatusCode {
    match e {
        AddError::Malformed(_) | AddError::OldTooLarge { .. } => StatusCode::BAD_REQUEST,
        AddError::UnknownOrigin(_) => StatusCode::NOT_FOUND,
        AddError::Unverified(_) => StatusCode::FORBIDDEN,
        AddError::Conflict(_) | AddError::RootConflict(_) => StatusCode::CONFLICT,
        AddError::BadProof(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AddError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refusal(e: &AddError) -> Response {
    match e {
        // The client learns the size to prove from, in the format tlog-witness fixes.
        AddError::Conflict(size) => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
            format!("{size}\n"),
        )
            .into_response(),
        // The details (file paths, OS errors) are for the operator's log, not for clients.
        AddError::Internal(_) => {
            tracing::error!(error = %e, "add-checkpoint failed");
            text(
                status(e),
                "the witness could not cosign (see its log)\n".into(),
            )
        }
        _ => text(status(e), format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Whether reading a body failed because it was over the limit.
fn too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
