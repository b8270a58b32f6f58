//! The one place where errors become gRPC statuses. Client mistakes get the specific code
//! (never UNKNOWN); storage trouble is INTERNAL or DATA_LOSS.

use tonic::{Code, Status};

use crate::claims::validate::FieldError;
use crate::index::IndexError;
use crate::ledger::LedgerError;
use crate::log::LogError;

pub fn field(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub fn missing(field: &str) -> Status {
    Status::invalid_argument(format!("{field}: is required"))
}

pub fn log(e: LogError) -> Status {
    let code = match &e {
        LogError::OutOfRange { .. } => Code::OutOfRange,
        LogError::InvalidArgument(_) | LogError::NotADataDirectory(_) | LogError::TooLarge(_) => {
            Code::InvalidArgument
        }
        LogError::Tampered { .. }
        | LogError::Corrupt(_)
        | LogError::Unverified(_)
        | LogError::Shrunk { .. }
        | LogError::Diverged { .. }
        | LogError::Unreadable { .. } => Code::DataLoss,
        LogError::Closed | LogError::Unavailable(_) | LogError::Database(_) => Code::Unavailable,
        LogError::Halted(_) => Code::FailedPrecondition,
        LogError::OriginMismatch { .. }
        | LogError::Storage(_)
        | LogError::Io { .. }
        | LogError::Insecure(_)
        | LogError::Internal(_) => Code::Internal,
    };
    // The code already says UNAVAILABLE; the message is the reason alone (clients print
    // both, which read "unavailable: unavailable: …" before).
    let message = match e {
        LogError::Unavailable(why) => why,
        e => e.to_string(),
    };
    Status::new(code, message)
}

pub fn ledger(e: LedgerError) -> Status {
    match e {
        LedgerError::InvalidArgument(f) => field(f),
        LedgerError::NotFound(m) => Status::not_found(m),
        LedgerError::AlreadyExists(m) => Status::already_exists(m),
        LedgerError::FailedPrecondition(m) => Status::failed_precondition(m),
        LedgerError::Duplicate { index } => {
            Status::already_exists(format!("already logged at index {index}"))
        }
        LedgerError::Corrupt(m) => Status::data_loss(m),
        LedgerError::Log(e) => log(e),
    }
}

/// Gives the codes SPEC §7 asks for to the two request errors tonic answers before any handler
/// runs: an undecodable body (tonic says INTERNAL; it is the client's mistake, so
/// INVALID_ARGUMENT) and an oversized one (tonic says OUT_OF_RANGE; RESOURCE_EXHAUSTED).
/// Both are trailers-only responses, so the status is in the headers and the body is empty.
#[derive(Clone, Copy, Default)]
pub struct RequestErrorsLayer;

impl<S> tower::Layer<S> for RequestErrorsLayer {
    type Service = RequestErrors<S>;

    fn layer(&self, inner: S) -> RequestErrors<S> {
        RequestErrors(inner)
    }
}

#[derive(Clone)]
pub struct RequestErrors<S>(S);

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for RequestErrors<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, fn(HttpResponse) -> HttpResponse>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        self.0
            .call(req)
            .map_ok(recode as fn(HttpResponse) -> HttpResponse)
    }
}

fn recode(mut resp: HttpResponse) -> HttpResponse {
    let Some(status) = Status::from_header_map(resp.headers()) else {
        return resp;
    };
    let fixed = match status.code() {
        Code::Internal
            if status
                .message()
                .starts_with("failed to decode Protobuf message") =>
        {
            Status::invalid_argument(format!(
                "the request body is not a valid message for this method ({})",
                status.message()
            ))
        }
        Code::OutOfRange
            if status
                .message()
                .starts_with("Error, decoded message length") =>
        {
            Status::resource_exhausted(format!("the request is too large ({})", status.message()))
        }
        _ => return resp,
    };
    let headers = resp.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    if fixed.add_header(headers).is_err() {
        tracing::warn!("could not rewrite a request error's status");
    }
    resp
}

/// How a query index error reaches the client.
pub fn index(e: IndexError) -> Status {
    match e {
        IndexError::Query(f) => field(f),
        IndexError::Ledger(e) => ledger(e),
        IndexError::Log(e) => log(e),
        e @ IndexError::BeyondLog { .. } => Status::out_of_range(e.to_string()),
        e @ (IndexError::Behind { .. } | IndexError::CatchingUp { .. }) => {
            Status::unavailable(e.to_string())
        }
        e @ (IndexError::Tantivy(_) | IndexError::Io { .. } | IndexError::Corrupt(_)) => {
            Status::internal(e.to_string())
        }
    }
}
