//! Writes sent to a process that does not sequence a log kept in PostgreSQL go to the one that
//! does, so a client sees one behaviour whichever process it reaches.
//!
//! The sequencer records the URL it is reached at when it takes the lead
//! (`serve --advertise-url`, or its listening address when that is a specific one). A write
//! that arrives at another process, after authentication and authorization here, is sent on
//! as it came (the same path, headers, bearer token and body) to that URL, and the answer is
//! passed back as it is: the sequencer authenticates the caller again, records the same
//! principal as the entry's actor, and applies idempotency by request id as for any write.
//! A forwarded request carries [`FORWARDED`] and is never forwarded again, so two processes
//! that disagree on who leads cannot send a request back and forth; it is answered here
//! (UNAVAILABLE if this process cannot take the lead). Reads are always answered locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either};
use tonic::transport::Channel;
use tower::{Layer, Service, ServiceExt};

use super::auth::rules::{access, Access};
use crate::log::Log;

/// How long a forwarded write may take at the sequencer before it is answered UNAVAILABLE.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The header a forwarded write carries.
pub const FORWARDED: &str = "claimledger-forwarded";

type Response = http::Response<tonic::body::Body>;

/// Forwards writes to the sequencer (see the module's documentation).
#[derive(Clone)]
pub struct ForwardLayer {
    log: Log,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// TLS to an `https://` sequencer: `serve --peer-ca` (and this process's own certificate
    /// as its client certificate), else the platform's roots.
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl ForwardLayer {
    pub fn new(log: Log, tls: Option<tonic::transport::ClientTlsConfig>) -> ForwardLayer {
        ForwardLayer {
            log,
            channels: Arc::new(Mutex::new(HashMap::new())),
            tls,
        }
    }
}

impl<S> Layer<S> for ForwardLayer {
    type Service = ForwardService<S>;

    fn layer(&self, inner: S) -> ForwardService<S> {
        ForwardService {
            layer: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct ForwardService<S> {
    layer: ForwardLayer,
    inner: S,
}

fn is_write(path: &str) -> bool {
    path.starts_with("/claimledger.v1.") && access(path) != Access::Open
}

impl ForwardLayer {
    /// The channel to `url`, made once and reused (it reconnects by itself).
    fn channel(&self, url: &str) -> Result<Channel, tonic::Status> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| tonic::Status::internal("the forwarding channels' lock is poisoned"))?;
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let unusable = |e: &dyn std::fmt::Display| {
            tonic::Status::unavailable(format!("the sequencer's URL {url:?} is not usable: {e}"))
        };
        let mut endpoint = Channel::from_shared(url.to_string())
            .map_err(|e| unusable(&e))?
            .connect_timeout(std::time::Duration::from_secs(2))
            // A sequencer that stopped answering (paused, partitioned, its session still
            // alive) is reported rather than waited for.
            .timeout(FORWARD_TIMEOUT);
        if url.starts_with("https://") {
            // A sequencer serving TLS is checked against `--peer-ca`, or else the platform's
            // root certificates.
            let tls = self
                .tls
                .clone()
                .unwrap_or_else(|| tonic::transport::ClientTlsConfig::new().with_native_roots());
            endpoint = endpoint.tls_config(tls).map_err(|e| unusable(&e))?;
        }
        let c = endpoint.connect_lazy();
        channels.insert(url.to_string(), c.clone());
        Ok(c)
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for ForwardService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        let candidate = self.layer.log.shared()
            && is_write(req.uri().path())
            && !req.headers().contains_key(FORWARDED);
        if !candidate {
            return Either::Left(self.inner.call(req));
        }
        // The ready inner service is used for a local answer; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Either::Right(Box::pin(async move {
            let target = match layer.log.sequencer_elsewhere() {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell which process sequences; answering here");
                    None
                }
            };
            let Some(url) = target else {
                return inner.call(req).await;
            };
            let channel = match layer.channel(&url) {
                Ok(c) => c,
                Err(status) => return Ok(status.into_http()),
            };
            req.headers_mut()
                .insert(FORWARDED, http::HeaderValue::from_static("1"));
            // The channel sets scheme and authority from its own URL.
            match channel.oneshot(req).await {
                Ok(resp) => Ok(resp.map(tonic::body::Body::new)),
                Err(e) => Ok(tonic::Status::unavailable(format!(
                    "this process does not sequence the log, and the one that does ({url}) \
                     cannot be reached: {}; retry",
                    crate::log::with_causes(&e)
                ))
                .into_http()),
            }
        }))
    }
}
