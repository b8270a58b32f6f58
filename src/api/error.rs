//! The one place where errors become gRPC statuses. Client mistakes get the specific code
//! (never UNKNOWN); storage trouble is INTERNAL or DATA_LOSS.

use tonic::{Code, Status};

use crate::claims::validate::FieldError;
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
        LogError::InvalidArgument(_) => Code::InvalidArgument,
        LogError::Tampered { .. } | LogError::Corrupt(_) | LogError::Unverified(_) => {
            Code::DataLoss
        }
        LogError::Closed => Code::Unavailable,
        LogError::OriginMismatch { .. }
        | LogError::Storage(_)
        | LogError::Io { .. }
        | LogError::Insecure(_)
        | LogError::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
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
        LedgerError::Storage(e) => Status::internal(e.to_string()),
        LedgerError::Log(e) => log(e),
    }
}
