//! `claimledger witness`: runs a C2SP tlog-witness for one or more logs (SPEC §3, "Witnesses").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::api;
use crate::witness::{self, Witness};

#[derive(Args)]
pub struct WitnessArgs {
    /// The witness's directory: its key `witness.key` and one state file per log (created if
    /// missing).
    #[arg(
        long,
        env = "CLAIMLEDGER_WITNESS_DIR",
        default_value = "./claimledger-witness"
    )]
    data_dir: PathBuf,
    /// Address to listen on (HTTP/1.1, `POST /add-checkpoint`).
    #[arg(
        long,
        env = "CLAIMLEDGER_WITNESS_ADDR",
        default_value = "127.0.0.1:7380"
    )]
    addr: String,
    /// A log to witness: its origin, `=`, and its verifier key as `claimledger serve` prints
    /// it (`origin+hash+base64`). Repeat for more logs, or for more keys of one log.
    #[arg(long = "log", value_name = "ORIGIN=VERIFIER_KEY", required = true, value_parser = parse_log)]
    logs: Vec<LogArg>,
    /// The witness's name, the key name of its cosignatures (a schema-less URL is
    /// recommended, e.g. `witness.example.org/w1`).
    #[arg(
        long,
        env = "CLAIMLEDGER_WITNESS_NAME",
        default_value = "claimledger-witness"
    )]
    name: String,
}

/// One `--log ORIGIN=VERIFIER_KEY`.
#[derive(Clone, Debug)]
struct LogArg {
    origin: String,
    key: String,
}

/// Splits `ORIGIN=VERIFIER_KEY`. An origin may itself contain `=`, but the key always starts
/// with `ORIGIN+` (a log's key is named after its origin), so the split is the `=` after which
/// the key begins with what precedes it; with no such `=`, the first one (and `Witness::open`
/// then says the key's name is not the origin).
fn parse_log(s: &str) -> Result<LogArg, String> {
    let split = s
        .match_indices('=')
        .map(|(i, _)| i)
        .find(|&i| s[i + 1..].starts_with(&format!("{}+", &s[..i])))
        .or_else(|| s.find('='));
    match split {
        Some(i) if i > 0 && i + 1 < s.len() => Ok(LogArg {
            origin: s[..i].to_string(),
            key: s[i + 1..].to_string(),
        }),
        _ => Err(format!(
            "{s:?} is not ORIGIN=VERIFIER_KEY (the log's origin, `=`, and the verifier key \
             `claimledger serve` prints, origin+hash+base64)"
        )),
    }
}

pub async fn run(a: WitnessArgs) -> anyhow::Result<ExitCode> {
    let shutdown = api::server::shutdown_signal();
    let logs = a.logs.into_iter().map(|l| (l.origin, l.key)).collect();
    let dir = a.data_dir.clone();
    let name = a.name.clone();
    let witness = tokio::task::spawn_blocking(move || Witness::open(&dir, &name, logs))
        .await?
        .with_context(|| format!("opening the witness in {}", a.data_dir.display()))?;
    let (listener, addr) = api::server::bind(&a.addr)
        .await
        .with_context(|| format!("listening on {}", a.addr))?;
    tracing::info!(
        data_dir = %a.data_dir.display(),
        name = witness.name(),
        key_file = witness::KEY_FILE,
        "witness opened"
    );
    eprintln!("witness verifier key: {}", witness.verifier_key());
    eprintln!("claimledger witness listening on http://{addr}");
    witness::serve(listener, Arc::new(witness), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_arguments_split_where_the_key_begins() {
        let l = parse_log("example.com/log=example.com/log+01234567+AQID").expect("parses");
        assert_eq!(l.origin, "example.com/log");
        assert_eq!(l.key, "example.com/log+01234567+AQID");
        // An `=` in the origin, and base64 padding in the key.
        let l = parse_log("a=b=a=b+01234567+AQ==").expect("parses");
        assert_eq!(l.origin, "a=b");
        assert_eq!(l.key, "a=b+01234567+AQ==");
        // No key named after the origin: the first `=`, for Witness::open to refuse.
        let l = parse_log("x=y+01234567+AQ==").expect("parses");
        assert_eq!(
            (l.origin.as_str(), l.key.as_str()),
            ("x", "y+01234567+AQ==")
        );
        for bad in ["", "=", "x=", "=y", "no-equals-sign"] {
            assert!(parse_log(bad).is_err(), "{bad:?}");
        }
    }
}
