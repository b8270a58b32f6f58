//! The command line (SPEC §5): `serve`, offline `verify` and `reindex`, `import`, `bench`, and
//! client subcommands for every RPC (`source …`, `claim …`, `log …`). Human-readable output by
//! default, proto3 JSON with `--json`.
//!
//! `local` holds the commands that open a data directory themselves. Each client command group
//! has one module with its clap types and its dispatcher (`source`, `claim`, `log`, `import`,
//! `bench`); they share `connect` (the client options, the channel and the token), `parse`
//! (command-line text into request fields), `request_id` (the idempotency key of every write),
//! `proofs` and `cosigned` (the checks the CLI does itself rather than trust the server:
//! proofs, signatures, witnesses' cosignatures) and `output`
//! (everything printed).

mod bench;
mod claim;
mod config;
mod connect;
mod cosigned;
mod import;
mod local;
mod log;
mod output;
mod parse;
mod proofs;
mod request_id;
mod source;
mod token;
mod witness;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use connect::ClientOpts;

#[derive(Parser)]
#[command(
    name = "claimledger",
    version,
    about = "A tamper-evident, verifiable record of war claims"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// How log lines are written to stderr: `text` for people, `json` (one object per line)
    /// for log collectors.
    #[arg(
        long,
        global = true,
        env = "CLAIMLEDGER_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"]
    )]
    log_format: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gRPC server on an embedded sled data directory (or on PostgreSQL: --store).
    Serve(local::ServeArgs),
    /// Audit a data directory offline: re-hash every entry, check the chain, the tree and the
    /// signed checkpoint; report the first bad index.
    Verify(local::DirArgs),
    /// Rebuild the claim and source indexes of a data directory from its log (offline).
    Reindex(local::DirArgs),
    /// Say what continuing from a damaged data directory would lose; with --accept-loss, do it
    /// (offline): keep what sled still holds and make its checkpoint the latest again.
    Recover(local::RecoverArgs),
    /// Copy a log to another store (sled to PostgreSQL or back), checking every entry and the
    /// root at the end against the signed checkpoint (offline: stop the servers first).
    Migrate(local::MigrateArgs),
    /// Load sources, claims, evidence, grades, verdicts and retractions from JSON lines.
    Import(import::ImportArgs),
    /// Sources: register, grade, get, list.
    Source {
        #[command(subcommand)]
        cmd: source::SourceCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Claims: submit, evidence, verdict, retract, get, status, list.
    Claim {
        #[command(subcommand)]
        cmd: claim::ClaimCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The log: checkpoint, entries, proofs, watch, verify.
    Log {
        #[command(subcommand)]
        cmd: log::LogCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Bearer tokens: `token new PRINCIPAL --roles … [--clusters …] --tokens-file FILE`.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Measure a running server: each main call against Health/Check, at 1, 16 and 64 streams.
    Bench(bench::BenchArgs),
    /// Run a C2SP tlog-witness: cosign checkpoints of the given logs that extend the last one.
    Witness(witness::WitnessArgs),
}

/// What returns the allocator's free memory to the kernel, set by the binary (see
/// [`set_memory_trim`]).
static MEMORY_TRIM: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// How often `serve` returns the allocator's free memory to the kernel.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets what `serve` calls every second to return the allocator's free memory to the kernel
/// (glibc's `malloc_trim` in the binary: the allocator is the binary's choice, and the
/// library has no `unsafe`). Set once; later calls change nothing.
pub fn set_memory_trim(trim: fn()) {
    let _ = MEMORY_TRIM.set(trim);
}

/// Starts the thread that calls the memory trim, if one is set.
fn start_memory_trim() {
    if let Some(trim) = MEMORY_TRIM.get().copied() {
        let started = std::thread::Builder::new()
            .name("claimledger-trim".into())
            .spawn(move || loop {
                std::thread::sleep(TRIM_EVERY);
                trim();
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no thread to return free memory with; memory may stay higher");
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let args = match config::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", output::clean(&format!("{e:#}")));
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => local::serve(a).await,
            Cmd::Verify(a) => local::verify(a).await,
            Cmd::Reindex(a) => local::reindex(a).await,
            Cmd::Recover(a) => local::recover(a).await,
            Cmd::Migrate(a) => local::migrate(a).await,
            Cmd::Import(a) => import::run(a).await,
            Cmd::Source { cmd, opts } => source::run(cmd, &opts).await,
            Cmd::Claim { cmd, opts } => claim::run(cmd, &opts).await,
            Cmd::Log { cmd, opts } => log::run(cmd, &opts).await,
            Cmd::Bench(a) => bench::run(a).await,
            Cmd::Token { cmd } => token::run(cmd),
            Cmd::Witness(a) => witness::run(a).await,
        }
    });
    // Tasks cut off by the drain deadline (a stalled stream, a long audit) must not keep the
    // process alive once the work that matters (the writer's drain) is done.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            // A gRPC error reads best as its code and message. Both may carry text from the
            // server, so they are cleaned like any other output.
            let text = match e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
                Some(s) => {
                    let ctx = e.to_string();
                    let s_text = format!("{:?}: {}", s.code(), s.message());
                    if ctx.starts_with("status:") || ctx.starts_with("code:") {
                        s_text
                    } else {
                        format!("{ctx}: {s_text}")
                    }
                }
                None => format!("{e:#}"),
            };
            eprintln!("error: {}", output::clean(&text));
            ExitCode::FAILURE
        }
    }
}
