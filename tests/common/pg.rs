//! A real PostgreSQL server for the end-to-end tests: one per test process, started lazily on
//! first use, on a free loopback port, in a fresh temporary directory, and stopped (and its
//! directory removed) by a watchdog when the test process exits.
//!
//! Nothing here links a PostgreSQL client: the server is driven by its own tools (`initdb`,
//! `pg_ctl`, `psql`), so this file needs no dependency beyond those of the crate. Every
//! failure is returned as a `String` naming the command, its exit status and its output; the
//! caller is expected to panic with it, so a machine without PostgreSQL fails loudly instead
//! of skipping the tests (`.ci/run` installs the server when it is missing).
//!
//! ```ignore
//! let pg = common::pg::cluster().unwrap_or_else(|e| panic!("{e}"));
//! let url = pg.database_for(dir.path()).unwrap_or_else(|e| panic!("{e}"));
//! ```

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The `psql` of the system: Debian's `pg_wrapper`, which runs the newest installed client.
const PSQL: &str = "/usr/bin/psql";

/// The OS user Debian's `postgresql` package creates; the server runs as it when we are root.
const POSTGRES_USER: &str = "postgres";

/// How many times the server is started on a fresh port when the start fails (another
/// process may take the port between our probe and the server's bind).
const START_ATTEMPTS: usize = 3;

/// The PostgreSQL server of this test process. See [`cluster`].
#[derive(Debug)]
pub struct PgCluster {
    /// The loopback TCP port the server listens on (127.0.0.1 only).
    port: u16,
    /// The temporary directory: `data/` (the cluster), `server.log`, and the Unix socket.
    root: PathBuf,
}

/// The cluster of this process, or why it could not be started: stored either way, so every
/// test sees the same server, or the same error, and a failed start is not retried per test.
static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The PostgreSQL server shared by every test of this process, started on the first call.
///
/// Concurrent first callers block until the one start finishes and all get the same server.
/// Never panics: any failure (no PostgreSQL installed, `initdb` or `pg_ctl` failing, no
/// `postgres` user while running as root) comes back as `Err` with the command, its exit
/// status and its stderr.
pub fn cluster() -> Result<&'static PgCluster, String> {
    CLUSTER
        .get_or_init(PgCluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

impl PgCluster {
    /// The connection URL of `database` on this server (user `postgres`, trust auth, no
    /// password).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The TCP port of the server on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory of the server (its data directory is `data/` inside it, its
    /// log `server.log`). Removed when the test process exits.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Creates the database `name` unless it exists, and returns its URL.
    ///
    /// Idempotent, and safe to call from concurrent tests with the same name or different
    /// ones. Names are limited to ASCII letters, digits, `_` and `-`, at most 63 bytes
    /// (PostgreSQL silently truncates longer identifiers), so that the name needs no escaping
    /// in the URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        check_database_name(name)?;
        let exists = format!(
            "SELECT count(*) FROM pg_database WHERE datname = {}",
            quote_literal(name)
        );
        if self.psql("postgres", &exists)? == "1" {
            return Ok(self.url(name));
        }
        match self.psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        ) {
            Ok(_) => Ok(self.url(name)),
            // Another test created it between our check and our CREATE: it exists, fine.
            Err(_) if self.psql("postgres", &exists).ok().as_deref() == Some("1") => {
                Ok(self.url(name))
            }
            Err(e) => Err(e),
        }
    }

    /// The database of a test's directory: its name is derived from `dir` alone (`t_` and 16
    /// hex digits of the SHA-256 of the path's bytes, taken as given, not canonicalized), it
    /// is created if missing, and its URL is returned.
    ///
    /// A test that stops a server and starts another on the same temporary directory thus gets
    /// the same database back, and tests with different directories never share one.
    pub fn database_for(&self, dir: &Path) -> Result<String, String> {
        self.create_database(&database_name(dir))
    }

    /// Runs `sql` in `database` with `psql` (unaligned, tuples only, stop at the first error)
    /// and returns what it printed, without the final newline: `SELECT 1` gives `"1"`, rows
    /// are separated by `\n` and columns by `|`.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let mut cmd = clean_command(PSQL);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql]);
        let out = run(&mut cmd)?;
        let mut text = out;
        while text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// Turns TLS on in this server, with `cert`/`key` (PEM) as its certificate and `ca` as the
    /// CA its clients' certificates must chain to, and replaces `pg_hba.conf` with `hba`; the
    /// configuration is reloaded, and checked by a `psql` connection over TCP that must be
    /// encrypted. For a test process of its own: every test of that process sees the change.
    pub fn enable_tls(&self, cert: &str, key: &str, ca: &str, hba: &str) -> Result<(), String> {
        let data = self.root.join("data");
        let as_postgres = is_root()?;
        for (name, text) in [("server.crt", cert), ("server.key", key), ("root.crt", ca)] {
            let path = data.join(name);
            fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
            // The server refuses a key file others can read.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            if as_postgres {
                run(Command::new("chown").arg(POSTGRES_USER).arg(&path))?;
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
        text.push_str(
            "\n# TLS (tests/common/pg.rs enable_tls)\n\
             ssl = on\n\
             ssl_cert_file = 'server.crt'\n\
             ssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\n",
        );
        fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let hba_path = data.join("pg_hba.conf");
        fs::write(&hba_path, hba).map_err(|e| format!("writing {}: {e}", hba_path.display()))?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // The reload is asynchronous; a new connection sees it once the postmaster has it.
        let check = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        for _ in 0..100 {
            if self.psql("postgres", check).ok().as_deref() == Some("t") {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(format!(
            "TLS did not come on after the reload; server log:\n{}",
            log_tail(&self.root.join("server.log"))
        ))
    }

    /// A streaming replica of this server, made now with `pg_basebackup -R` (WAL streamed,
    /// so it follows every commit) and started on a port of its own as a hot standby; it is
    /// stopped and removed with the test process, like the primary. Its [`PgCluster::url`]
    /// and [`PgCluster::psql`] reach the replica.
    pub fn start_replica(&self) -> Result<PgCluster, String> {
        let bin = find_bin_dir()?;
        let pg_ctl = bin.pg_ctl;
        // Beside the real pg_ctl (PATH may hold a symlink to it), else Debian's wrapper.
        let basebackup = fs::canonicalize(&pg_ctl)
            .map(|p| p.with_file_name("pg_basebackup"))
            .ok()
            .filter(|p| is_executable(p))
            .unwrap_or_else(|| PathBuf::from("/usr/bin/pg_basebackup"));
        let as_postgres = is_root()?;
        let (root, data, log) = server_root("claimledger-pg-replica-", &pg_ctl, as_postgres)?;
        let mut cmd = server_command(&basebackup, as_postgres, &root);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-D",
        ])
        .arg(&data)
        // A fast checkpoint: by default pg_basebackup waits for a spread one (over a minute).
        .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        run(&mut cmd)?;
        let port = free_port()?;
        write_settings(&data, &root, port)?;
        start_server(&pg_ctl, as_postgres, &root, &data, &log)
            .map_err(|e| format!("starting the replica: {e}"))?;
        Ok(PgCluster { port, root })
    }

    /// `initdb`, the settings, the watchdog, `pg_ctl -w start`: see [`cluster`].
    fn start() -> Result<PgCluster, String> {
        let bin = find_bin_dir()?;
        let initdb = bin.initdb;
        let pg_ctl = bin.pg_ctl;
        let as_postgres = is_root()?;
        let (root, data, log) = server_root("claimledger-pg-", &pg_ctl, as_postgres)?;

        // --no-sync only skips flushing initdb's own output to disk: the cluster is thrown away
        // with the process, so that costs nothing. The server itself keeps fsync on.
        let mut cmd = server_command(&initdb, as_postgres, &root);
        cmd.arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .arg("--no-sync");
        run(&mut cmd)?;

        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            write_settings(&data, &root, port)?;
            match start_server(&pg_ctl, as_postgres, &root, &data, &log) {
                Ok(()) => return Ok(PgCluster { port, root }),
                Err(e) => last_error = e,
            }
        }
        Err(format!(
            "PostgreSQL did not start after {START_ATTEMPTS} attempts; the last: {last_error}"
        ))
    }
}

/// A new temporary directory for a server: `(root, root/data, root/server.log)`. Before anything
/// can fail, the watchdog is started, so whatever happens next the server (if any) is stopped
/// and the directory removed once this process is gone; when we are root, the directory is
/// given to `postgres`, which runs the server tools and must own it.
fn server_root(
    prefix: &str,
    pg_ctl: &Path,
    as_postgres: bool,
) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("creating a temporary directory for PostgreSQL: {e}"))?
        .keep();
    let data = root.join("data");
    let log = root.join("server.log");
    spawn_watchdog(&root, &data, pg_ctl, as_postgres)?;
    if as_postgres {
        run(Command::new("chown").arg(POSTGRES_USER).arg(&root))?;
    }
    Ok((root, data, log))
}

/// The last 20 lines of a server's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// `pg_ctl -w start` on `data`, the server's output going to `log`; on failure the error ends
/// with the log's last 20 lines.
fn start_server(
    pg_ctl: &Path,
    as_postgres: bool,
    root: &Path,
    data: &Path,
    log: &Path,
) -> Result<(), String> {
    let mut cmd = server_command(pg_ctl, as_postgres, root);
    // -l: the server's output goes to the log file. Without it the server would inherit
    // pg_ctl's stdout, which is our pipe, and reading pg_ctl's output would never end.
    cmd.arg("-D")
        .arg(data)
        .arg("-l")
        .arg(log)
        .args(["-w", "-t", "60", "start"]);
    run(&mut cmd)
        .map(|_| ())
        .map_err(|e| format!("{e}\nserver log ({}):\n{}", log.display(), log_tail(log)))
}

/// The name [`PgCluster::database_for`] gives to the database of `dir`.
fn database_name(dir: &Path) -> String {
    let digest = Sha256::digest(dir.as_os_str().as_bytes());
    let mut name = String::from("t_");
    for byte in &digest[..8] {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

fn check_database_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || name.len() > 63 || !name.chars().all(allowed) {
        return Err(format!(
            "database name {name:?}: use 1 to 63 ASCII letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Quotes `text` as one word for `sh`.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The server binaries to use.
struct BinDir {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

/// `initdb` and `pg_ctl` from PATH if both are there, else from the newest
/// `/usr/lib/postgresql/<version>/bin/` (Debian does not put them on PATH).
fn find_bin_dir() -> Result<BinDir, String> {
    if let (Some(initdb), Some(pg_ctl)) = (on_path("initdb"), on_path("pg_ctl")) {
        return Ok(BinDir { initdb, pg_ctl });
    }
    let versions = fs::read_dir("/usr/lib/postgresql").map_err(|e| {
        format!(
            "PostgreSQL is not installed: no initdb/pg_ctl on PATH and /usr/lib/postgresql: {e} \
             (apt-get install postgresql)"
        )
    })?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in versions.flatten() {
        let bin = entry.path().join("bin");
        if !is_executable(&bin.join("initdb")) || !is_executable(&bin.join("pg_ctl")) {
            continue;
        }
        let version: Vec<u64> = entry
            .file_name()
            .to_string_lossy()
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect();
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    let (_, bin) = best.ok_or_else(|| {
        "PostgreSQL is not installed: no initdb/pg_ctl on PATH nor in \
         /usr/lib/postgresql/*/bin/ (apt-get install postgresql)"
            .to_string()
    })?;
    Ok(BinDir {
        initdb: bin.join("initdb"),
        pg_ctl: bin.join("pg_ctl"),
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (effective uid 0), from /proc/self/status, else `id -u`.
///
/// PostgreSQL refuses to run as root (`initdb: cannot be run as root`), so as root the server
/// tools run as the `postgres` user instead.
fn is_root() -> Result<bool, String> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:\treal\teffective\tsaved\tfs"
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            if let Some(effective) = line.split_whitespace().nth(2) {
                return Ok(effective == "0");
            }
        }
    }
    Ok(run(Command::new("id").arg("-u"))?.trim() == "0")
}

/// A command for `program` with no `PG*` variables from our environment (PGDATA, PGPORT,
/// PGOPTIONS… would change what the tools do).
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.as_bytes().starts_with(b"PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A command running the server tool `program`, as `postgres` when we are root, from `cwd`
/// (a directory `postgres` can enter, unlike, perhaps, ours).
fn server_command(program: &Path, as_postgres: bool, cwd: &Path) -> Command {
    let mut cmd = if as_postgres {
        let mut cmd = clean_command("runuser");
        cmd.args(["-u", POSTGRES_USER, "--"]).arg(program);
        cmd
    } else {
        clean_command(program)
    };
    cmd.current_dir(cwd);
    cmd
}

/// Runs `cmd` to completion and returns its stdout, or an error with the command, its exit
/// status, stderr and stdout.
fn run(cmd: &mut Command) -> Result<String, String> {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if status.success() {
        return Ok(stdout);
    }
    Err(format!(
        "{cmd:?} failed ({status})\nstderr:\n{}\nstdout:\n{}",
        String::from_utf8_lossy(&stderr).trim_end(),
        stdout.trim_end()
    ))
}

/// A TCP port free on 127.0.0.1 now: bound, read, released for the server to take.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("binding 127.0.0.1:0 to find a free port: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("reading the address of 127.0.0.1:0: {e}"))?
        .port();
    Ok(port)
}

/// Appends the server settings to `postgresql.conf` (a later line wins over an earlier one,
/// so a retry on another port just appends again).
///
/// In the file rather than as `pg_ctl -o "-c …"`: pg_ctl hands `-o` to a shell, so the
/// directory would need quoting there. What makes the tests fast is only what does not change
/// what a commit means: fsync, synchronous_commit and full_page_writes keep their defaults
/// (fsync is spelled out so nobody "speeds up" the tests by turning it off); `jit = off` only
/// saves compiling queries, and 300 connections leave room for many servers' pools at once.
fn write_settings(data: &Path, root: &Path, port: u16) -> Result<(), String> {
    let conf = data.join("postgresql.conf");
    let socket_dir = root
        .to_str()
        .ok_or_else(|| format!("the temporary directory {} is not UTF-8", root.display()))?;
    let settings = format!(
        "\n# claimledger tests (tests/common/pg.rs)\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = {}\n\
         max_connections = 300\n\
         shared_buffers = 64MB\n\
         fsync = on\n\
         jit = off\n",
        quote_literal(socket_dir)
    );
    let mut text =
        fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
    text.push_str(&settings);
    // Rewriting in place keeps the file's owner (postgres) and mode.
    fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))
}

/// Starts the watchdog that stops the server and removes `root` once this process is gone.
///
/// Rust test binaries have no teardown: statics are never dropped and the process may end by
/// `exit`, a panic in `main` or a signal. So a detached `sh` polls this process's pid and,
/// when it is gone, runs `pg_ctl stop -m immediate` (as `postgres` when we are root, like the
/// start) and `rm -rf` on the directory. Its stdin, stdout and stderr are /dev/null: if it
/// kept the test's stdout or stderr pipes open, `cargo test` would wait for them to close
/// for as long as the watchdog lives. It is put in its own process group so that a Ctrl-C
/// in the terminal, which kills the test, does not kill the watchdog too.
fn spawn_watchdog(
    root: &Path,
    data: &Path,
    pg_ctl: &Path,
    as_postgres: bool,
) -> Result<(), String> {
    let (Some(root_s), Some(data_s), Some(pg_ctl_s)) =
        (root.to_str(), data.to_str(), pg_ctl.to_str())
    else {
        return Err(format!(
            "paths for the PostgreSQL watchdog are not UTF-8: {}, {}",
            root.display(),
            pg_ctl.display()
        ));
    };
    let stop = format!(
        "{} -D {} stop -m immediate",
        sh_quote(pg_ctl_s),
        sh_quote(data_s)
    );
    let stop = if as_postgres {
        format!("runuser -u {POSTGRES_USER} -- {stop}")
    } else {
        stop
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         {stop}; rm -rf {root}",
        pid = std::process::id(),
        root = sh_quote(root_s),
    );
    clean_command("sh")
        .arg("-c")
        .arg(&script)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the PostgreSQL watchdog `sh -c {script}`: {e}"))?;
    Ok(())
}
