//! `/metrics`: what an operator scrapes, in the Prometheus/OpenMetrics text format
//! (`prometheus-client`).
//!
//! - every gRPC call, by service, method, type and code: `grpc_server_handled_total` and the
//!   `grpc_server_handling_seconds` histogram (the names and labels of go-grpc-prometheus, so
//!   existing dashboards work), counted by [`MetricsLayer`], a tower layer around the whole
//!   router. A call's code is read where gRPC puts it: in the headers of a trailers-only answer,
//!   else in the trailers at the end of the body, so a stream is counted when it ends and its
//!   time is the whole stream's; a stream the client drops is `Canceled`.
//! - every HTTP request, by route and status: `http_requests_total`,
//!   `http_request_duration_seconds` (to the response's head).
//! - the log: size, writer queue depth, group sizes and sync (fdatasync) times, which the
//!   writer records itself ([`crate::log::WriterMetrics`]); the index: its watermark and lag;
//!   witnesses: the cosigned size and whether the log is halted.
//! - the process, under the names of Prometheus' own process collector (on Linux, from
//!   `/proc/self`): `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_open_fds`. `claimledger bench` reads the first to report server CPU per call.
//!   And the same CPU time by group of threads, `claimledger_thread_cpu_seconds_total`
//!   (`threads`: tokio, writer, checkpoint_file, index, sled, other, ended; see `threads.rs`).
//!
//! Labels take values only from fixed lists (a method this server does not have is counted
//! as `unknown`, an unknown route as `other`), so no client can grow the set of series.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::api::Ctx;

mod threads;

/// Every gRPC method this server has: `(service, method, type)`.
pub const GRPC_METHODS: &[(&str, &str, &str)] = &[
    ("claimledger.v1.SourceService", "RegisterSource", "unary"),
    ("claimledger.v1.SourceService", "GradeSource", "unary"),
    ("claimledger.v1.SourceService", "GetSource", "unary"),
    ("claimledger.v1.SourceService", "ListSources", "unary"),
    ("claimledger.v1.ClaimService", "SubmitClaim", "unary"),
    ("claimledger.v1.ClaimService", "AddEvidence", "unary"),
    ("claimledger.v1.ClaimService", "RecordVerdict", "unary"),
    ("claimledger.v1.ClaimService", "RetractClaim", "unary"),
    ("claimledger.v1.ClaimService", "GetClaim", "unary"),
    ("claimledger.v1.ClaimService", "GetClaimStatus", "unary"),
    ("claimledger.v1.ClaimService", "ListClaims", "unary"),
    ("claimledger.v1.LogService", "GetCheckpoint", "unary"),
    ("claimledger.v1.LogService", "GetEntries", "server_stream"),
    ("claimledger.v1.LogService", "GetInclusionProof", "unary"),
    ("claimledger.v1.LogService", "GetConsistencyProof", "unary"),
    ("claimledger.v1.LogService", "WatchEntries", "server_stream"),
    ("claimledger.v1.LogService", "VerifyLog", "server_stream"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// The first path segments of our HTTP routes, the values of the `route` label.
const HTTP_ROUTES: &[&str] = &[
    "checkpoint",
    "tile",
    "metrics",
    "healthz",
    "readyz",
    "claims",
    "sources",
    "entries",
    "export",
    "static",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethod {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcHandled {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadGroup {
    threads: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRoute {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpHandled {
    route: &'static str,
    code: u16,
}

/// The server's metrics: the registry `/metrics` encodes and the handles that record into it.
pub struct Metrics {
    registry: Registry,
    grpc_started: Family<GrpcMethod, Counter>,
    grpc_handled: Family<GrpcHandled, Counter>,
    grpc_seconds: Family<GrpcMethod, Histogram>,
    http_requests: Family<HttpHandled, Counter>,
    http_seconds: Family<HttpRoute, Histogram>,
    log_size: Gauge,
    queue_depth: Gauge,
    indexed_size: Gauge,
    index_lag: Gauge,
    cosigned_size: Gauge,
    witness_quorum: Gauge,
    halted: Gauge,
    writer_failing: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    thread_cpu_seconds: Family<ThreadGroup, Counter<f64, AtomicU64>>,
    /// What the last reading of the threads saw ([`threads::ThreadCpu`]).
    thread_cpu: Mutex<threads::ThreadCpu>,
    resident_bytes: Gauge,
    open_fds: Gauge,
}

/// `/proc/[pid]/stat` counts CPU time in `USER_HZ` ticks: 100 a second on x86, ARM, RISC-V,
/// POWER and s390 (the kernel's ABI, whatever its internal tick; Alpha used 1024).
const USER_HZ: f64 = 100.0;

/// User and system CPU time of all this process's threads, ended ones included, in `USER_HZ`
/// ticks, from `/proc/self/stat` (Linux); `None` where it cannot be read.
fn process_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    threads::parse_stat(&stat).map(|(_, ticks)| ticks)
}

/// Sets a counter of seconds to `ticks`, never lowering it, by concurrent scrapes too: the
/// bits of non-negative floats order as the floats do.
fn set_seconds(counter: &Counter<f64, AtomicU64>, ticks: u64) {
    let seconds = ticks as f64 / USER_HZ;
    counter
        .inner()
        .fetch_max(seconds.max(0.0).to_bits(), Ordering::Relaxed);
}

/// Resident memory, from `/proc/self/status`.
fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Open file descriptors, from `/proc/self/fd`, whose listing itself takes one: with every
/// descriptor in use it fails, and then the process is at its limit.
fn process_open_fds() -> Result<u64, std::io::Error> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 100 µs to ~3.3 s.
    exponential_buckets(0.000_1, 2.0, 16)
}

impl Metrics {
    /// The metrics of a server over `log`'s writer (whose histograms it registers).
    pub fn new(writer: &crate::log::WriterMetrics) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let grpc_started = Family::<GrpcMethod, Counter>::default();
        let grpc_handled = Family::<GrpcHandled, Counter>::default();
        let grpc_seconds = Family::<GrpcMethod, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let http_requests = Family::<HttpHandled, Counter>::default();
        let http_seconds = Family::<HttpRoute, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "grpc_server_started",
            "gRPC calls started, by method",
            grpc_started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by method and code",
            grpc_handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from a gRPC call's start to its status (a stream's whole life)",
            grpc_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route (first path segment) and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request to its response's head, by route",
            http_seconds.clone(),
        );
        let mut m = Metrics {
            grpc_started,
            grpc_handled,
            grpc_seconds,
            http_requests,
            http_seconds,
            log_size: Gauge::default(),
            queue_depth: Gauge::default(),
            indexed_size: Gauge::default(),
            index_lag: Gauge::default(),
            cosigned_size: Gauge::default(),
            witness_quorum: Gauge::default(),
            halted: Gauge::default(),
            writer_failing: Gauge::default(),
            cpu_seconds: Counter::default(),
            thread_cpu_seconds: Family::default(),
            thread_cpu: Mutex::new(threads::ThreadCpu::default()),
            resident_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            registry,
        };
        let gauges = [
            (
                "claimledger_log_size",
                "Entries in the published tree",
                m.log_size.clone(),
            ),
            (
                "claimledger_writer_queue_depth",
                "Appends waiting for the writer",
                m.queue_depth.clone(),
            ),
            (
                "claimledger_index_size",
                "Log entries the query index has read (its watermark)",
                m.indexed_size.clone(),
            ),
            (
                "claimledger_index_lag_entries",
                "Published entries the query index has not read yet",
                m.index_lag.clone(),
            ),
            (
                "claimledger_witness_cosigned_size",
                "Size of the latest checkpoint cosigned by a quorum of witnesses (0: none)",
                m.cosigned_size.clone(),
            ),
            (
                "claimledger_witness_quorum",
                "Witness cosignatures a checkpoint needs (0: the log has no witnesses)",
                m.witness_quorum.clone(),
            ),
            (
                "claimledger_log_halted",
                "1 when the log stopped signing because a witness holds a conflicting history",
                m.halted.clone(),
            ),
            (
                "claimledger_writer_failing",
                "1 while the writer cannot commit",
                m.writer_failing.clone(),
            ),
        ];
        for (name, help, gauge) in gauges {
            m.registry.register(name, help, gauge);
        }
        // Only where `/proc/self` can be read: elsewhere they would stay at 0 and say so wrongly.
        if process_cpu_ticks().is_some() {
            m.register_process();
        }
        m.registry.register(
            "claimledger_writer_group_size",
            "Entries per group the writer commits",
            writer.group_size.clone(),
        );
        m.registry.register(
            "claimledger_writer_sync_seconds",
            "Time to commit one group durably (sled: the entry files' write and fdatasyncs, then \
             sled's batch, flush and fdatasync; PostgreSQL: the transaction)",
            writer.sync_seconds.clone(),
        );
        Arc::new(m)
    }

    fn register_process(&mut self) {
        self.registry.register(
            "process_cpu_seconds",
            "User and system CPU time this process has used, in seconds",
            self.cpu_seconds.clone(),
        );
        self.registry.register(
            "process_resident_memory_bytes",
            "Resident memory of this process, in bytes",
            self.resident_bytes.clone(),
        );
        self.registry.register(
            "process_open_fds",
            "File descriptors this process has open",
            self.open_fds.clone(),
        );
        // By group of threads too, where `/proc/self/task` can be listed.
        if threads::read().is_some() {
            self.registry.register(
                "claimledger_thread_cpu_seconds",
                "User and system CPU time of this process by group of threads, in seconds \
                 (ended: threads that ended since the previous scrape)",
                self.thread_cpu_seconds.clone(),
            );
        }
    }

    /// The metrics as OpenMetrics text, with the gauges read now from `ctx`.
    pub fn render(&self, ctx: &Ctx) -> Result<String, std::fmt::Error> {
        let size = ctx.log.size();
        let indexed = ctx.index.indexed_size();
        self.log_size.set(gauge_value(size));
        self.queue_depth
            .set(gauge_value(ctx.log.queue_depth() as u64));
        self.indexed_size.set(gauge_value(indexed));
        self.index_lag
            .set(gauge_value(size.saturating_sub(indexed)));
        let (quorum, cosigned) = ctx.cosigned.as_ref().map_or((0, 0), |w| {
            (w.quorum() as u64, w.latest().map_or(0, |c| c.size))
        });
        self.witness_quorum.set(gauge_value(quorum));
        self.cosigned_size.set(gauge_value(cosigned));
        self.halted
            .set(i64::from(ctx.log.halted().borrow().is_some()));
        self.writer_failing
            .set(i64::from(ctx.log.writer_health().borrow().is_some()));
        // Each read on its own: one failing leaves the others current. The threads first, so
        // the process's time, read after them, covers theirs; both under the lock, so two
        // scrapes never apply their readings out of order.
        let mut state = match self.thread_cpu.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let threads = threads::read();
        if let Some(ticks) = process_cpu_ticks() {
            set_seconds(&self.cpu_seconds, ticks);
            if let Some(threads) = threads {
                let totals = state.update(&threads, ticks);
                for (group, total) in threads::GROUPS.iter().zip(totals) {
                    let labels = ThreadGroup { threads: group };
                    set_seconds(&self.thread_cpu_seconds.get_or_create(&labels), total);
                }
            }
        }
        drop(state);
        if let Some(rss) = process_resident_bytes() {
            self.resident_bytes.set(gauge_value(rss));
        }
        match process_open_fds() {
            Ok(n) => {
                self.open_fds.set(gauge_value(n));
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                // Listing them needs one more than there is: the process is at its limit.
                if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
                    self.open_fds.set(gauge_value(soft));
                }
            }
            Err(_) => {}
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `GET /metrics`.
pub(crate) async fn handler(State((ctx, metrics)): State<(Ctx, Arc<Metrics>)>) -> Response {
    match metrics.render(&ctx) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => super::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}\n"),
        ),
    }
}

/// The gRPC method a path names, from [`GRPC_METHODS`] (or `unknown`).
fn grpc_method(path: &str) -> GrpcMethod {
    let found = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .and_then(|(service, method)| {
            GRPC_METHODS
                .iter()
                .find(|(s, m, _)| *s == service && *m == method)
        });
    match found {
        Some((s, m, t)) => GrpcMethod {
            grpc_type: t,
            grpc_service: s,
            grpc_method: m,
        },
        None => GrpcMethod {
            grpc_type: "unknown",
            grpc_service: "unknown",
            grpc_method: "unknown",
        },
    }
}

/// The `route` label of an HTTP path: its first segment if it is one of ours.
fn http_route(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.is_empty() {
        return "/";
    }
    let first = first.strip_suffix(".json").unwrap_or(first);
    HTTP_ROUTES
        .iter()
        .find(|r| **r == first)
        .copied()
        .unwrap_or("other")
}

/// gRPC's name for a code, as go-grpc-prometheus labels it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let v = headers.get("grpc-status")?;
    Some(tonic::Code::from_bytes(v.as_bytes()))
}

/// Counts every request through the router (see the module's documentation).
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> MetricsLayer {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    metrics: Arc<Metrics>,
    inner: S,
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let grpc = super::is_grpc(req.headers()).then(|| grpc_method(req.uri().path()));
        let route = http_route(req.uri().path());
        if let Some(m) = &grpc {
            metrics.grpc_started.get_or_create(m).inc();
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let Some(method) = grpc else {
                let code = resp.status().as_u16();
                metrics
                    .http_requests
                    .get_or_create(&HttpHandled { route, code })
                    .inc();
                metrics
                    .http_seconds
                    .get_or_create(&HttpRoute { route })
                    .observe(started.elapsed().as_secs_f64());
                return Ok(resp);
            };
            let mut call = Call {
                metrics,
                method,
                started,
                done: false,
            };
            if let Some(code) = grpc_code(resp.headers()) {
                // Trailers-only: the call ends with its head.
                call.finish(code);
                return Ok(resp);
            }
            let (parts, body) = resp.into_parts();
            let body = tonic::body::Body::new(CountedBody { inner: body, call });
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// One gRPC call, recorded once: when its status is known, or as `Canceled` if its body is
/// dropped first.
struct Call {
    metrics: Arc<Metrics>,
    method: GrpcMethod,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let m = &self.method;
        self.metrics
            .grpc_handled
            .get_or_create(&GrpcHandled {
                grpc_type: m.grpc_type,
                grpc_service: m.grpc_service,
                grpc_method: m.grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
        self.metrics
            .grpc_seconds
            .get_or_create(m)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A gRPC response body that records the call's code from its trailers.
struct CountedBody {
    inner: tonic::body::Body,
    call: Call,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_code) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            // A body that ends without a status: gRPC calls that Unknown.
            Poll::Ready(None) => this.call.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_lists() {
        assert_eq!(
            grpc_method("/claimledger.v1.ClaimService/SubmitClaim").grpc_method,
            "SubmitClaim"
        );
        assert_eq!(
            grpc_method("/claimledger.v1.ClaimService/Made-Up").grpc_method,
            "unknown"
        );
        assert_eq!(grpc_method("/x").grpc_service, "unknown");
        assert_eq!(http_route("/"), "/");
        assert_eq!(http_route("/tile/0/000.p/3"), "tile");
        assert_eq!(http_route("/claims.json"), "claims");
        assert_eq!(http_route("/claims/c-1"), "claims");
        assert_eq!(http_route("/anything/else"), "other");
    }

    /// Every method of the contract (and of health and reflection) has its labels.
    #[test]
    fn every_method_of_the_contract_is_listed() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the contract's descriptor set decodes");
        let mut ours = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    ours.push(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(ours.len() > 10, "the contract has its methods: {ours:?}");
        for m in &ours {
            assert_ne!(grpc_method(&format!("/{m}")).grpc_method, "unknown", "{m}");
        }
        // The listed types match the contract's streaming flags.
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let want = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    assert_eq!(grpc_method(&path).grpc_type, want, "{path}");
                }
            }
        }
    }
}
