//! Assembling and running the gRPC server.
//!
//! One listener serves gRPC and the HTTP read surface ([`crate::http`]): HTTP/2 for both,
//! HTTP/1.1 for browsers and tile clients.
//!
//! Limits live in layers and in the accept loop, not in handlers (SPEC §7):
//! - [`incoming`]: a cap on open connections (kept below the open-file limit), a deadline for a
//!   new connection's first byte, no spinning on a failed accept;
//! - tonic/hyper: TLS with a handshake timeout, HTTP/2 keepalive pings, a cap on concurrent
//!   streams per connection and on header size, a per-request timeout, message size limits;
//! - [`AuthLayer`]: who may call what;
//! - the log service bounds each stream's buffer in bytes, and the number of open streams.
//!
//! Shutdown is graceful but bounded: on the signal, health turns NOT_SERVING, the server stops
//! accepting, live tails end, and in-flight calls get [`Limits::drain`] to finish; a client
//! that holds a stream it never reads is cut off then. The log's writer then drains its queue
//! and syncs before the process exits.

pub mod incoming;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use super::auth::{Auth, AuthLayer};
use super::claims::Claims;
use super::error::RequestErrorsLayer;
use super::log::LogApi;
use super::sources::Sources;
use super::Ctx;
use crate::pb;

/// Largest request or response message, in bytes.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// The server's resource limits. The defaults suit one process on a small machine.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_streams_per_connection: u32,
    /// Time for a new connection to send its first byte, and for a TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this much silence …
    pub keepalive_interval: Duration,
    /// … and the connection is closed if the ping is not answered within this.
    pub keepalive_timeout: Duration,
    /// A unary call's deadline.
    pub request_timeout: Duration,
    /// How long in-flight calls and streams get to finish after the shutdown signal.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_streams_per_connection: 64,
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(10),
        }
    }
}

/// How the server authenticates, encrypts and limits.
#[derive(Clone, Default)]
pub struct Config {
    pub auth: Auth,
    pub tls: Option<ServerTlsConfig>,
    pub limits: Limits,
    /// How writes are forwarded to an `https://` sequencer of a shared log (`None`: checked
    /// against the platform's root certificates, no client certificate).
    pub forward_tls: Option<tonic::transport::ClientTlsConfig>,
}

impl From<Auth> for Config {
    fn from(auth: Auth) -> Config {
        Config {
            auth,
            ..Config::default()
        }
    }
}

/// Serves `ctx` on `listener` until `shutdown` resolves, then shuts down gracefully within
/// [`Limits::drain`].
pub async fn serve(
    ctx: Ctx,
    listener: TcpListener,
    config: impl Into<Config>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = config.into();
    let limits = config.limits.clone();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let names = [
        "claimledger.v1.SourceService",
        "claimledger.v1.ClaimService",
        "claimledger.v1.LogService",
        "",
    ];
    // The first status is set before any connection is accepted: a log already halted (a
    // witness proved a fork in the round before listening) or a writer already failing is
    // never reported SERVING, not even for a moment.
    let initial =
        if ctx.log.halted().borrow().is_some() || ctx.log.writer_health().borrow().is_some() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
    for n in names {
        health_reporter.set_service_status(n, initial).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let sources = pb::source_service_server::SourceServiceServer::new(Sources(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE);
    let claims = pb::claim_service_server::ClaimServiceServer::new(Claims(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE);
    let logsvc = pb::log_service_server::LogServiceServer::new(LogApi(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE);

    // gRPC and the HTTP read surface share one port: the services' routes, merged with ours.
    let mut grpc = tonic::service::RoutesBuilder::default();
    grpc.add_service(health_service)
        .add_service(reflection)
        .add_service(sources)
        .add_service(claims)
        .add_service(logsvc);
    let metrics = crate::http::metrics::Metrics::new(ctx.log.writer_metrics());
    let routes = crate::http::router(ctx.clone(), grpc.routes(), metrics.clone());

    // A writer that cannot commit (a failed or not yet durable commit) makes the server
    // unhealthy, so load balancers and operators see it, and healthy again if it recovers;
    // reads keep working either way.
    let watcher = health_reporter.clone();
    let mut writer = ctx.log.writer_health();
    let mut halted = ctx.log.halted();
    let shutting_down = ctx.closing.subscribe();
    tokio::spawn(async move {
        loop {
            // A halt (a witness holds a conflicting history) outranks a passing writer problem.
            let trouble = halted
                .borrow_and_update()
                .clone()
                .or_else(|| writer.borrow_and_update().clone());
            if *shutting_down.borrow() {
                return;
            }
            let status = match &trouble {
                Some(why) => {
                    tracing::error!(%why, "the log cannot commit: health NOT_SERVING");
                    ServingStatus::NotServing
                }
                None => ServingStatus::Serving,
            };
            for n in names {
                watcher.set_service_status(n, status).await;
            }
            let writer_gone = tokio::select! {
                changed = writer.changed() => changed.is_err(),
                // The halt sender lives as long as the log: it never closes first.
                _ = halted.changed() => false,
            };
            if writer_gone {
                if !*shutting_down.borrow() {
                    tracing::error!("the log writer has stopped: health NOT_SERVING");
                    for n in names {
                        watcher
                            .set_service_status(n, ServingStatus::NotServing)
                            .await;
                    }
                }
                return;
            }
        }
    });
    let incoming = incoming::accept(listener, limits.max_connections, limits.handshake_timeout);
    let closing = ctx.closing.clone();
    let reporter = health_reporter.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = config.tls {
        builder = builder.tls_config(tls.timeout(limits.handshake_timeout))?;
    }
    let server = builder
        .timeout(limits.request_timeout)
        .concurrency_limit_per_connection(256)
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_header_list_size(16 * 1024)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .accept_http1(true)
        .layer(crate::http::metrics::MetricsLayer::new(metrics))
        .layer(RequestErrorsLayer)
        .layer(AuthLayer::new(config.auth))
        .layer(super::forward::ForwardLayer::new(
            ctx.log.clone(),
            config.forward_tls,
        ))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = shutdown => {
            tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
            // Live tails never finish on their own; tell them to end so the server can drain.
            closing.send_replace(true);
            for n in names {
                reporter
                    .set_service_status(n, ServingStatus::NotServing)
                    .await;
            }
            let _ = stop_tx.send(());
            match tokio::time::timeout(limits.drain, &mut server).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!(
                    drain = ?limits.drain,
                    "calls still open after the drain deadline are cut off"
                ),
            }
        }
    }
    // In-flight calls are done (or cut off); let the writer commit what is queued and exit,
    // and the indexer finish its batch.
    closing.send_replace(true);
    ctx.log.shutdown().await?;
    ctx.stop_indexer().await;
    tracing::info!("writer drained; bye");
    Ok(())
}

/// Binds `addr` (use port 0 for any free port) and returns the listener and its address.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so call it first thing: a SIGTERM during start-up (opening and
/// checking a large log) then shuts the server down cleanly instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
