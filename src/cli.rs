//! The command line (SPEC §5): `serve`, offline `verify` and `reindex`, `import`, `bench`, and
//! client subcommands for every RPC (`source …`, `claim …`, `log …`). Human-readable output by
//! default, proto3 JSON with `--json`.

mod client;
mod local;
mod output;
mod token;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "claimledger",
    version,
    about = "A tamper-evident, verifiable record of war claims"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options of every client command.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// The server to talk to.
    #[arg(
        long,
        global = true,
        env = "CLAIMLEDGER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Print proto3 JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token (the server maps it to the principal recorded as the entry's actor).
    #[arg(long, global = true, env = "CLAIMLEDGER_TOKEN")]
    pub token: Option<String>,
    /// The log's verifier key (`origin+hash+base64`) to check checkpoints against; without it
    /// the key the server itself reports is used, which proves consistency but not identity.
    #[arg(long, global = true, env = "CLAIMLEDGER_VERIFIER_KEY")]
    pub verifier_key: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gRPC server on an embedded sled data directory.
    Serve(local::ServeArgs),
    /// Audit a data directory offline: re-hash every entry, check the chain, the tree and the
    /// signed checkpoint; report the first bad index.
    Verify(local::DirArgs),
    /// Rebuild the claim and source indexes of a data directory from its log (offline).
    Reindex(local::DirArgs),
    /// Load sources, claims, evidence, grades, verdicts and retractions from JSON lines.
    Import(client::ImportArgs),
    /// Sources: register, grade, get, list.
    Source {
        #[command(subcommand)]
        cmd: client::SourceCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Claims: submit, evidence, verdict, retract, get, status, list.
    Claim {
        #[command(subcommand)]
        cmd: client::ClaimCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The log: checkpoint, entries, proofs, watch, verify.
    Log {
        #[command(subcommand)]
        cmd: client::LogCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Bearer tokens: `token new PRINCIPAL --roles … [--clusters …] --tokens-file FILE`.
    Token {
        #[command(subcommand)]
        cmd: token::TokenCmd,
    },
    /// Load generator: submits claims with evidence concurrently and reports throughput.
    Bench(client::BenchArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            Cmd::Import(a) => client::import(a).await,
            Cmd::Source { cmd, opts } => client::source(cmd, &opts).await,
            Cmd::Claim { cmd, opts } => client::claim(cmd, &opts).await,
            Cmd::Log { cmd, opts } => client::log(cmd, &opts).await,
            Cmd::Bench(a) => client::bench(a).await,
            Cmd::Token { cmd } => token::run(cmd),
        }
    });
    // Tasks cut off by the drain deadline (a stalled stream, a long audit) must not keep the
    // process alive once the work that matters (the writer's drain) is done.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            // A gRPC error reads best as its code and message.
            match e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
                Some(s) => {
                    let ctx = e.to_string();
                    let s_text = format!("{:?}: {}", s.code(), s.message());
                    if ctx.starts_with("status:") || ctx.starts_with("code:") {
                        eprintln!("error: {s_text}");
                    } else {
                        eprintln!("error: {ctx}: {s_text}");
                    }
                }
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
