//! Commands that work on a data directory directly: `serve`, `verify`, `reindex`, `recover`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::{
    self,
    auth::{Auth, Tokens},
    server::{Config, Limits},
};
use crate::ledger::{self, LedgerApply};
use crate::log::{self, Log, Options};
use crate::witness::submit::{self, Submitter, WitnessConfig, Witnessing};

#[derive(Args)]
pub struct ServeArgs {
    /// A TOML file setting any of these flags by their long names (`addr = "0.0.0.0:50051"`,
    /// `quick-open = true`, `witness = ["URL=KEY", …]`, `log-format = "json"`). A flag on the
    /// command line or its environment variable overrides the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (created if missing).
    #[arg(
        long,
        env = "CLAIMLEDGER_DATA_DIR",
        default_value = "./claimledger-data"
    )]
    data_dir: PathBuf,
    /// Where the log is kept: `sled` (the default: sled in the data directory; `sled:DIR` is
    /// the same as `--data-dir DIR`) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, a
    /// PostgreSQL database that several `serve` processes may share (one sequences, the others
    /// serve reads); the data directory then keeps only the signing key and the query index.
    /// TLS as libpq: `?sslmode=verify-full&sslrootcert=CA.pem` (also `disable`, `prefer` (the
    /// default), `require`, `verify-ca`; `sslcert=`/`sslkey=` for a client certificate).
    #[arg(
        long,
        env = "CLAIMLEDGER_STORE",
        value_name = "sled[:DIR]|postgres://…"
    )]
    store: Option<String>,
    /// With `--store postgres://…`: a streaming replica of that database (`pg_basebackup -R`)
    /// to read the log from while another process sequences. Such a process shows what the
    /// replica has (never more than the primary committed and signed) and forwards writes to
    /// the sequencer; when there is none, it takes the lead itself and then reads and writes
    /// the primary until the replica has caught up with what it committed.
    #[arg(long, env = "CLAIMLEDGER_READ_STORE", value_name = "postgres://…")]
    read_store: Option<String>,
    /// With `--store postgres://…`: the URL other `serve` processes of the same database reach
    /// this one at, to forward writes while it sequences (default: `http://` or `https://`
    /// and the listening address, unless that is 0.0.0.0 or ::).
    #[arg(long, env = "CLAIMLEDGER_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "CLAIMLEDGER_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Checkpoint origin for a new data directory (an existing one keeps its own).
    #[arg(long, env = "CLAIMLEDGER_ORIGIN")]
    origin: Option<String>,
    /// Tokens file (`sha256:<hex> principal roles [clusters=…]` lines; make them with
    /// `claimledger token new`). Without it the server is in open mode: every caller is
    /// `anonymous` with every role, which is allowed on a loopback address only.
    #[arg(long, env = "CLAIMLEDGER_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// PEM certificate chain: serve over TLS (with --tls-key).
    #[arg(long, env = "CLAIMLEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (must be readable only by its owner).
    #[arg(long, env = "CLAIMLEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by them (mutual TLS).
    #[arg(long, env = "CLAIMLEDGER_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With `--store postgres://…`: PEM CA certificate(s) that signed the other processes' TLS
    /// certificates, to check the sequencer's when a write is forwarded to its `https://` URL
    /// (default: the platform's roots). With --tls-cert/--tls-key, that certificate is
    /// presented as the client certificate, for a sequencer that requires one (--client-ca).
    #[arg(long, env = "CLAIMLEDGER_PEER_CA", value_name = "FILE")]
    peer_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address on purpose (behind a TLS-terminating proxy).
    #[arg(long, env = "CLAIMLEDGER_ALLOW_PLAINTEXT")]
    allow_plaintext: bool,
    /// Most open connections at once (lowered to fit the open-file limit).
    #[arg(long, env = "CLAIMLEDGER_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Most concurrent calls (HTTP/2 streams) per connection.
    #[arg(
        long,
        env = "CLAIMLEDGER_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 64
    )]
    max_streams_per_connection: u32,
    /// Seconds in-flight calls get to finish after SIGTERM before they are cut off.
    #[arg(long, env = "CLAIMLEDGER_DRAIN_SECONDS", default_value_t = 10)]
    drain_seconds: u64,
    /// Skip re-hashing every entry at start-up and check only the stored root against the
    /// signed checkpoint (O(log n)); a changed entry is then found by `verify`, not at start.
    #[arg(long, env = "CLAIMLEDGER_QUICK_OPEN")]
    quick_open: bool,
    /// A witness to submit checkpoints to: its submission URL (`POST URL/add-checkpoint`) and
    /// its cosignature verifier key (`name+hash+base64`, as `claimledger witness` prints it).
    /// Repeatable (comma-separated in the environment variable).
    #[arg(
        long = "witness",
        value_name = "URL=VERIFIER_KEY",
        env = "CLAIMLEDGER_WITNESSES",
        value_delimiter = ','
    )]
    witnesses: Vec<WitnessConfig>,
    /// How many witnesses must cosign a checkpoint before it is served as cosigned (default:
    /// all of them).
    #[arg(long, value_name = "N", env = "CLAIMLEDGER_WITNESS_QUORUM")]
    witness_quorum: Option<usize>,
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The log to copy: `sled:DIR` or `postgres://…`.
    #[arg(long, value_name = "STORE")]
    from: String,
    /// Where to copy it: an empty `sled:DIR` (created) or an empty `postgres://…` database.
    #[arg(long, value_name = "STORE")]
    to: String,
    /// A data directory holding the log's `log.key`, needed when the source is PostgreSQL (a
    /// sled source's own directory is used otherwise). A sled target gets a copy of the key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
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

#[derive(Args)]
pub struct RecoverArgs {
    /// Data directory.
    #[arg(
        long,
        env = "CLAIMLEDGER_DATA_DIR",
        default_value = "./claimledger-data"
    )]
    data_dir: PathBuf,
    /// Do it: give up the acknowledged entries sled no longer holds (the old checkpoint file is
    /// kept beside the new one as evidence). Without it, only say what would be lost.
    #[arg(long)]
    accept_loss: bool,
}

/// File descriptors kept free for sled, the signing key, TLS files and the like: the
/// connection cap is the open-file limit minus this.
const RESERVED_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard one and returns the soft limit now in force.
fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// The TLS configuration of the flags, if any.
fn tls_config(a: &ServeArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else {
        return Ok(None);
    };
    crate::files::ensure_private(key, "TLS key").map_err(anyhow::Error::msg)?;
    let identity = Identity::from_pem(
        read_pem(cert, "TLS certificate")?,
        read_pem(key, "TLS key")?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &a.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem(ca, "client CA")?));
    }
    Ok(Some(tls))
}

/// How writes are forwarded to an `https://` sequencer, from `--peer-ca` (`None`: the
/// platform's roots).
fn forward_tls(a: &ServeArgs) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    let Some(ca) = &a.peer_ca else {
        return Ok(None);
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_pem(ca, "peer CA")?));
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        tls = tls.identity(Identity::from_pem(
            read_pem(cert, "TLS certificate")?,
            read_pem(key, "TLS key")?,
        ));
    }
    Ok(Some(tls))
}

/// The transport rules of SPEC §7: open mode only on loopback, plaintext off loopback only
/// when asked for on purpose.
fn check_exposure(a: &ServeArgs, addr: SocketAddr) -> anyhow::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if a.tokens_file.is_none() {
        anyhow::bail!(
            "{addr} is not a loopback address: without --tokens-file every caller could write \
             (open mode is for loopback only); create tokens with `claimledger token new`"
        );
    }
    if a.tls_cert.is_none() && !a.allow_plaintext {
        anyhow::bail!(
            "{addr} is not a loopback address: serve TLS (--tls-cert, --tls-key) so tokens are \
             not sent in the clear, or pass --allow-plaintext behind a TLS-terminating proxy"
        );
    }
    Ok(())
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = api::server::shutdown_signal();
    super::start_memory_trim();
    if let Some(file) = &a.config {
        // Its settings are already flags (`cli::config`); say where they came from.
        tracing::info!(config = %file.display(), "settings read from the config file");
    }
    let auth = match &a.tokens_file {
        None => Auth::default(),
        Some(p) => Auth::Tokens(Arc::new(Tokens::load(p).map_err(anyhow::Error::msg)?)),
    };
    let tls = tls_config(&a)?;
    let forward_tls = forward_tls(&a)?;
    let witnessing = Witnessing::new(a.witnesses.clone(), a.witness_quorum)?;
    let (listener, addr) = api::server::bind(&a.addr).await?;
    check_exposure(&a, addr)?;
    let nofile = raise_open_file_limit();
    let fit = nofile.saturating_sub(RESERVED_FDS).max(1) as usize;
    if fit < a.max_connections {
        tracing::warn!(
            open_file_limit = nofile,
            max_connections = fit,
            "the open-file limit is low: fewer connections are allowed"
        );
    }
    let limits = Limits {
        max_connections: a.max_connections.min(fit),
        max_streams_per_connection: a.max_streams_per_connection,
        drain: std::time::Duration::from_secs(a.drain_seconds),
        ..Limits::default()
    };
    let (data_dir, postgres) = store_choice(&a.data_dir, a.store.as_deref())?;
    if let Some(r) = &a.read_store {
        anyhow::ensure!(
            postgres.is_some(),
            "--read-store needs --store postgres://… (the primary the replica follows)"
        );
        anyhow::ensure!(
            r.starts_with("postgres://") || r.starts_with("postgresql://"),
            "--read-store: {:?} is not a postgres:// URL",
            log::kv::postgres::redact(r)
        );
    }
    // Where other processes sharing a PostgreSQL log forward writes while this one sequences:
    // the given URL, or this listening address when it names one host.
    let advertise = a.advertise_url.clone().or_else(|| {
        let scheme = if tls.is_some() { "https" } else { "http" };
        (!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}"))
    });
    let opts = Options {
        origin: a.origin.clone(),
        rehash_on_open: !a.quick_open,
        postgres: postgres.clone(),
        advertise,
        read_postgres: a.read_store.clone(),
        ..Options::default()
    };
    let a = ServeArgs { data_dir, ..a };
    let log = open_log(&a.data_dir, opts).await?;
    let cp = log.checkpointer();
    tracing::info!(
        data_dir = %a.data_dir.display(),
        store = %postgres.as_deref().map_or("sled".to_string(), log::kv::postgres::redact),
        size = log.size(),
        origin = cp.origin(),
        "log opened and checked"
    );
    eprintln!("verifier key: {}", cp.verifier_key());
    let mut ctx = api::Ctx::open(log.clone())
        .with_context(|| format!("opening the query index of {}", a.data_dir.display()))?;
    if ctx.index.indexed_size() < log.size() {
        eprintln!(
            "query index: at size {} of {}, catching up in the background",
            ctx.index.indexed_size(),
            log.size()
        );
    }
    if let Some(w) = witnessing {
        ctx = start_witnessing(ctx, &log, &a.data_dir, w).await;
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("claimledger listening on {scheme}://{addr}");
    let config = Config {
        auth,
        tls,
        limits,
        forward_tls,
    };
    api::server::serve(ctx, listener, config, shutdown).await?;
    if postgres.is_none() {
        drop(log);
        settle_sled(a.data_dir.clone()).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the stopped server's sled directory once more, and closes it. sled 0.34 advances its
/// snapshot only when it opens a database, replaying its log from the last snapshot: without
/// this, the next start would replay everything written since this server started (0.9 s of a
/// 1.4 s start at a million claims; BENCHMARKS.md). A restart after a crash still pays it.
/// Best effort: if sled cannot be opened (a handle still held, say), the next start replays.
async fn settle_sled(dir: std::path::PathBuf) {
    let started = std::time::Instant::now();
    let settled = tokio::task::spawn_blocking(move || log::Offline::open(&dir).map(drop)).await;
    match settled {
        Ok(Ok(())) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "sled's snapshot advanced for the next start"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "sled's snapshot was not advanced"),
        Err(e) => tracing::warn!(error = %e, "sled's snapshot was not advanced"),
    }
}

/// The data directory and, for PostgreSQL, the database URL that `--store` names.
fn store_choice(data_dir: &Path, store: Option<&str>) -> anyhow::Result<(PathBuf, Option<String>)> {
    match store {
        None | Some("sled") => Ok((data_dir.to_path_buf(), None)),
        Some(s) if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
            Ok((data_dir.to_path_buf(), Some(s.to_string())))
        }
        Some(s) => match s.strip_prefix("sled:") {
            Some(dir) if !dir.is_empty() => Ok((PathBuf::from(dir), None)),
            _ => anyhow::bail!(
                "--store: {s:?} is neither `sled`, `sled:DIR` nor a `postgres://` URL"
            ),
        },
    }
}

/// Opens and checks the log in `dir`; a log whose ledger state is in an earlier layout is then
/// closed, its state rebuilt from the (checked) log, and opened again.
async fn open_log(dir: &Path, opts: Options) -> anyhow::Result<Log> {
    let open = |opts: Options| {
        let dir = dir.to_path_buf();
        async move {
            let shown = dir.display().to_string();
            tokio::task::spawn_blocking(move || Log::open(&dir, opts, Arc::new(LedgerApply)))
                .await?
                .with_context(|| format!("opening {shown}"))
        }
    };
    let log = open(opts.clone()).await?;
    if !ledger::needs_upgrade(&log)? {
        return Ok(log);
    }
    log.shutdown().await?;
    drop(log);
    let d = dir.to_path_buf();
    let n =
        tokio::task::spawn_blocking(move || ledger::upgrade_layout(&d, &mut |_, _| {})).await??;
    if let Some(n) = n {
        eprintln!(
            "the ledger state was in an earlier layout: rebuilt it from the log ({n} entries)"
        );
    }
    // Checked a moment ago; the upgrade wrote no log key.
    open(Options {
        rehash_on_open: false,
        ..opts
    })
    .await
}

/// Prints the witnesses, runs the first round before the server listens (so a restored copy
/// of the data directory is caught before it signs anything new), and starts the submitter.
/// An unreachable witness is a warning; a witness's proof of a fork leaves the server up but
/// halted (health NOT_SERVING, writes refused with the reason) so the operator sees why.
async fn start_witnessing(ctx: api::Ctx, log: &Log, dir: &Path, w: Witnessing) -> api::Ctx {
    for cfg in w.witnesses() {
        eprintln!("{cfg}: key {}", cfg.verifier().verifier_key());
    }
    eprintln!("witness quorum: {} of {}", w.quorum(), w.witnesses().len());
    let (mut submitter, view) = Submitter::new(log.clone(), dir, w);
    let first = submitter.first_round(submit::FIRST_ROUND_TIMEOUT).await;
    for why in &first.failed {
        tracing::warn!("{why}");
    }
    match (&first.halted, first.cosigned) {
        (Some(why), _) => eprintln!("error: the log is halted: {why}"),
        (None, Some(size)) => eprintln!("cosigned checkpoint: size {size}"),
        (None, None) => eprintln!("no checkpoint cosigned by the quorum yet"),
    }
    tokio::spawn(submitter.run(ctx.closing.subscribe()));
    ctx.with_witnesses(view)
}

/// `recover`: the explicit way past [`log::LogError::Shrunk`] and [`log::LogError::Diverged`].
/// It never runs by itself, says exactly what is given up, and keeps the superseded checkpoint.
pub async fn recover(a: RecoverArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || {
        let dir = log::Offline::open(&a.data_dir)?;
        let recovery = dir.recovery()?;
        let file = log::checkpoint_file::path(&a.data_dir);
        if !recovery.needed() {
            println!("{}", recovery.describe(&file));
            return Ok(ExitCode::SUCCESS);
        }
        let stored = recovery.stored();
        println!("{}.", recovery.describe(&file));
        println!(
            "Continuing makes size {stored} the latest again. Receipts and checkpoints above it \
             will not verify against this log's new checkpoints, and witnesses that cosigned a \
             larger tree will refuse the log (it is a fork, and they report it as one)."
        );
        if !a.accept_loss {
            println!(
                "Nothing was changed. Run again with --accept-loss to continue from size {stored}."
            );
            return Ok(ExitCode::from(1));
        }
        match dir.recover(&recovery)? {
            log::Recovered::Unsound(report) => {
                match report.first_bad_index {
                    Some(i) => println!(
                        "FAILED at index {i}: what sled holds does not verify either: {}; \
                         nothing was changed",
                        report.error
                    ),
                    None => println!(
                        "FAILED: what sled holds does not verify either: {}; nothing was \
                         changed",
                        report.error
                    ),
                }
                Ok(ExitCode::from(2))
            }
            log::Recovered::Done { size, kept } => {
                if let Some(kept) = kept {
                    println!("kept the superseded checkpoint in {}", kept.display());
                }
                println!(
                    "recovered: the log continues from size {size} (all {size} entries verified)"
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
    .await?
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
        let dir = log::Offline::open(&a.data_dir)?;
        let pb = bar(dir.size()?);
        let report = dir.verify(&mut |p| {
            pb.set_length(p.total);
            pb.set_position(p.checked);
        })?;
        pb.finish_and_clear();
        let root = report.root.map(|r| r.to_string()).unwrap_or_default();
        if report.ok() {
            println!("ok: {} entries verified, root {root}", report.checked);
            println!("verifier key: {}", dir.checkpointer().verifier_key());
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

/// `claimledger migrate`: copies a log between stores and says what it checked.
pub async fn migrate(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    let from =
        log::migrate::Location::parse(&a.from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to = log::migrate::Location::parse(&a.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let done = tokio::task::spawn_blocking(move || -> anyhow::Result<log::migrate::Migrated> {
        let mut pb: Option<indicatif::ProgressBar> = None;
        let done = log::migrate::copy(
            &from,
            &to,
            a.data_dir.as_deref(),
            Arc::new(LedgerApply),
            &mut |copied, total| {
                pb.get_or_insert_with(|| bar(total)).set_position(copied);
            },
        )?;
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
        Ok(done)
    })
    .await??;
    println!(
        "copied {} entries; every entry re-hashed and applied, root {} equals the source's \
         signed checkpoint",
        done.size,
        super::output::hex(&done.root.0)
    );
    println!("the query index is rebuilt by `serve` on first start");
    Ok(ExitCode::SUCCESS)
}

/// `reindex`: rebuilds the ledger state and the query index from the log, which it only reads.
pub async fn reindex(a: DirArgs) -> anyhow::Result<ExitCode> {
    let dir = a.data_dir.clone();
    let n = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let offline = log::Offline::open(&dir)?;
        let pb = bar(offline.size()?);
        let n = offline.reindex(&LedgerApply, &mut |done, total| {
            if done % 4096 == 0 || done == total {
                pb.set_position(done);
            }
        })?;
        pb.finish_and_clear();
        println!("ledger state: rebuilt from {n} entries");
        let index = crate::index::path(&dir);
        if index.exists() {
            std::fs::remove_dir_all(&index)
                .with_context(|| format!("removing {}", index.display()))?;
        }
        Ok(n)
    })
    .await??;
    let opts = Options {
        rehash_on_open: false,
        ..Options::default()
    };
    let dir = a.data_dir.clone();
    let log = tokio::task::spawn_blocking(move || Log::open(&dir, opts, Arc::new(LedgerApply)))
        .await?
        .with_context(|| format!("opening {}", a.data_dir.display()))?;
    let reader = ledger::Reader::new(log.clone());
    let built = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let dir = reader.log().dir().to_path_buf();
        let (_, mut indexer) = crate::index::QueryIndex::open(&dir, reader)?;
        let pb = bar(n);
        while indexer.step()? {
            pb.set_position(indexer.watermark());
        }
        indexer.flush()?;
        pb.finish_and_clear();
        Ok(indexer.watermark())
    })
    .await??;
    log.shutdown().await?;
    println!("query index: rebuilt from {built} entries");
    println!("reindexed {n} entries");
    Ok(ExitCode::SUCCESS)
}
