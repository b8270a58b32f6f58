//! Assembling and running the gRPC server.
//!
//! Limits live in layers, not handlers: a per-request timeout, a cap on concurrent requests
//! per connection, and message size limits. Shutdown is graceful: on the signal, health turns
//! NOT_SERVING, the server stops accepting and lets in-flight calls finish, then the log's
//! writer drains its queue and syncs before the process exits.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::auth::Auth;
use super::claims::Claims;
use super::log::LogApi;
use super::sources::Sources;
use super::Ctx;
use crate::pb;

/// Largest request or response message, in bytes.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Serves `ctx` on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn serve(
    ctx: Ctx,
    listener: TcpListener,
    auth: Auth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let names = [
        "claimledger.v1.SourceService",
        "claimledger.v1.ClaimService",
        "claimledger.v1.LogService",
        "",
    ];
    for n in names {
        health_reporter
            .set_service_status(n, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let a1 = auth.clone();
    let a2 = auth.clone();
    let a3 = auth;
    let sources = InterceptedService::new(
        pb::source_service_server::SourceServiceServer::new(Sources(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE),
        move |r| a1.check(r),
    );
    let claims = InterceptedService::new(
        pb::claim_service_server::ClaimServiceServer::new(Claims(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE),
        move |r| a2.check(r),
    );
    let logsvc = InterceptedService::new(
        pb::log_service_server::LogServiceServer::new(LogApi(ctx.clone()))
            .max_decoding_message_size(MAX_MESSAGE),
        move |r| a3.check(r),
    );

    // The listener is ours (bound on port 0 in tests), so the builder's nodelay setting does not
    // reach its connections; without it every small response waits for a delayed ACK (~40 ms).
    // A writer that stopped accepting appends (a failed commit) makes the server unhealthy, so
    // load balancers and operators see it; reads keep working.
    let watcher = health_reporter.clone();
    let log = ctx.log.clone();
    let shutting_down = ctx.closing.subscribe();
    tokio::spawn(async move {
        let why = log.writer_stopped().await;
        if *shutting_down.borrow() {
            return;
        }
        tracing::error!(%why, "the log writer stopped: health NOT_SERVING");
        for n in names {
            watcher
                .set_service_status(n, ServingStatus::NotServing)
                .await;
        }
    });
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let closing = ctx.closing.clone();
    let reporter = health_reporter.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
        // Live tails never finish on their own; tell them to end so the server can drain.
        closing.send_replace(true);
        for n in names {
            reporter
                .set_service_status(n, ServingStatus::NotServing)
                .await;
        }
    };
    Server::builder()
        .timeout(Duration::from_secs(60))
        .concurrency_limit_per_connection(256)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(sources)
        .add_service(claims)
        .add_service(logsvc)
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    // In-flight calls are done; let the writer commit what is queued and exit.
    ctx.log.shutdown().await?;
    tracing::info!("writer drained; bye");
    Ok(())
}

/// Binds `addr` (use port 0 for any free port) and returns the listener and its address.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
