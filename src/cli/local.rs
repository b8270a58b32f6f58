//! Commands that work on a data directory directly: `serve`, `verify`, `reindex`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::api::{self, auth::Auth};
use crate::ledger::{self, LedgerApply};
use crate::log::{self, checkpoint::Checkpointer, Log, Options, Store};

#[derive(Args)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(
        long,
        env = "CLAIMLEDGER_DATA_DIR",
        default_value = "./claimledger-data"
    )]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "CLAIMLEDGER_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Checkpoint origin for a new data directory (an existing one keeps its own).
    #[arg(long, env = "CLAIMLEDGER_ORIGIN")]
    origin: Option<String>,
    /// File of `token principal` lines; without it every caller is `anonymous`.
    #[arg(long, env = "CLAIMLEDGER_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Skip re-hashing every entry at start-up and check only the stored root against the
    /// signed checkpoint (O(log n)); a changed entry is then found by `verify`, not at start.
    #[arg(long)]
    quick_open: bool,
}

#[derive(Args)]
pub struct DirArgs {
    /// Data directory.
    #[arg(
        long,
        env = "CLAIMLEDGER_DATA_DIR",
        default_value = "./claimledger-data"
    )]
    data_dir: PathBuf,
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let auth = match &a.tokens_file {
        None => Auth::default(),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Auth::from_text(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
    };
    let opts = Options {
        origin: a.origin.clone(),
        rehash_on_open: !a.quick_open,
        ..Options::default()
    };
    let dir = a.data_dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, opts, Arc::new(LedgerApply)))
        .await?
        .with_context(|| format!("opening {}", a.data_dir.display()))?;
    let cp = log.checkpointer();
    tracing::info!(
        data_dir = %a.data_dir.display(),
        size = log.size(),
        origin = cp.origin(),
        "log opened and checked"
    );
    eprintln!("verifier key: {}", cp.verifier_key());
    let (listener, addr) = api::server::bind(&a.addr).await?;
    eprintln!("claimledger listening on {addr}");
    api::server::serve(
        api::Ctx::new(log),
        listener,
        auth,
        api::server::shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn open_offline(dir: &std::path::Path) -> anyhow::Result<(Store, Checkpointer)> {
    if !dir.join("sled").exists() {
        anyhow::bail!("{} is not a claimledger data directory", dir.display());
    }
    let store = Store::open(dir)?;
    let origin = store.settle_origin(None)?;
    let cp = Checkpointer::load(dir, &origin)?;
    Ok((store, cp))
}

fn bar(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} entries ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

pub async fn verify(a: DirArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let (store, cp) = open_offline(&a.data_dir)?;
        let pb = bar(store.size()?);
        let report = log::verify::verify(&store, &cp, &mut |p| {
            pb.set_length(p.total);
            pb.set_position(p.checked);
        })?;
        pb.finish_and_clear();
        let root = report.root.map(|r| r.to_string()).unwrap_or_default();
        if report.ok() {
            println!("ok: {} entries verified, root {root}", report.checked);
            println!("verifier key: {}", cp.verifier_key());
            Ok(ExitCode::SUCCESS)
        } else {
            match report.first_bad_index {
                Some(i) => println!("FAILED at index {i}: {}", report.error),
                None => println!("FAILED: {}", report.error),
            }
            Ok(ExitCode::from(2))
        }
    })
    .await?
}

pub async fn reindex(a: DirArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let (store, _) = open_offline(&a.data_dir)?;
        let pb = bar(store.size()?);
        let n = ledger::reindex(&store, &mut |done, total| {
            if done % 4096 == 0 || done == total {
                pb.set_position(done);
            }
        })?;
        pb.finish_and_clear();
        println!("reindexed {n} entries");
        Ok(ExitCode::SUCCESS)
    })
    .await?
}
