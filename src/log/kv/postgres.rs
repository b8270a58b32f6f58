//! The log in PostgreSQL (`serve --store postgres://…`).
//!
//! The key space of [`super`] kept in tables an operator can read, back up and replicate:
//!
//! | table | rows | keys of the log |
//! |---|---|---|
//! | `entries (idx, hashes, body)` | one per entry: the stored hashes it produced, its exact bytes | `e` ‖ be64(idx) |
//! | `state (k, v)` | the ledger's validation state and idempotency keys | `x` ‖ … |
//! | `meta (k, v)` | the origin | `m…` |
//! | `head` | one: `tree_size`, `root`, `checkpoint`, `writer_epoch` | `msize`, `mcheckpoint` |
//! | `checkpoints (tree_size, note)` | every checkpoint the log signed with a group | |
//! | `cosigned (tree_size, cosigners, note)` | one: the latest checkpoint the witnesses' quorum cosigned | |
//! | `claimledger_schema (version)` | the migrations applied | |
//!
//! **One sequencer at a time.** Any number of processes may open the same database; the one
//! whose writer holds the session advisory lock [`SEQUENCER_LOCK`] (on a connection of its
//! own) sequences and signs. Taking the lock bumps `head.writer_epoch`, and every group commits
//! only `WHERE writer_epoch = mine AND tree_size = the size it extends`, in the statement that
//! inserts its entries (one statement per group, so one round trip): a stale leader (paused, partitioned, its lock lost with its session)
//! can neither append nor fork. A commit that fails or is fenced is not acknowledged, and the
//! writer steps down; the next group takes the lock again and continues from the stored head,
//! so a client's retry with the same request id gets one answer either way.
//!
//! Every commit is a transaction committed with the server's `synchronous_commit` (on by
//! default: durable on the primary's disk, and on a synchronous standby's when
//! `synchronous_standby_names` is set), so returning from [`PgKv::commit`] means durable.
//!
//! The log's code is synchronous (the writer is a thread; reads run inside request handlers as
//! sled's do), so queries run on a small runtime of this module's own and the caller waits on
//! a channel: like a sled read, a query blocks its thread for its round trip and never
//! re-enters the caller's runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

mod tls;

use super::{GroupWrite, KvIter, Lead, Val};
use crate::log::entry::unpack;
use crate::log::error::LogError;
use crate::log::store::{be64, SyncFailure, ENTRY, META_CHECKPOINT, META_SIZE};

/// The advisory lock (a 64-bit key) the sequencer holds: "claimledger-sequencer" hashed.
pub const SEQUENCER_LOCK: i64 = 0x636c_6169_6d73_6571;
/// The metadata key holding the URL the sequencer is reached at.
const META_SEQUENCER: &[u8] = b"msequencer";
/// The transaction-level advisory lock taken while migrating.
const MIGRATION_LOCK: i64 = 0x636c_6169_6d6d_6967;

/// The `application_name` of the writer's connection, which holds the sequencer lock.
pub const SEQUENCER_NAME: &str = "claimledger-sequencer";
/// The `application_name` of the read connections.
pub const READER_NAME: &str = "claimledger";

/// Connections for reads, shared round robin (a connection pipelines concurrent queries).
const READERS: usize = 4;
/// Rows fetched per query by a range scan.
const PAGE: i64 = 512;

/// The schema, one migration per version, applied in order at open (see [`migrate`]).
const MIGRATIONS: &[&str] = &[
    // 1: the log, the ledger's state, and the fenced head.
    "CREATE TABLE entries (
         idx bigint PRIMARY KEY CHECK (idx >= 0),
         hashes bytea NOT NULL,
         body bytea NOT NULL
     );
     CREATE TABLE state (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE meta (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE head (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         tree_size bigint NOT NULL CHECK (tree_size >= 0),
         root bytea,
         checkpoint text,
         writer_epoch bigint NOT NULL
     );
     INSERT INTO head (tree_size, writer_epoch) VALUES (0, 0);
     CREATE TABLE checkpoints (tree_size bigint PRIMARY KEY, note text NOT NULL);",
    // 2: the latest checkpoint the witnesses' quorum cosigned, written by the sequencer and
    // served by every process.
    "CREATE TABLE cosigned (
         one boolean PRIMARY KEY DEFAULT true CHECK (one),
         tree_size bigint NOT NULL CHECK (tree_size >= 0),
         cosigners integer NOT NULL CHECK (cosigners >= 0),
         note text NOT NULL
     );",
];

/// The log's tables in one PostgreSQL database.
pub(crate) struct PgKv {
    /// The URL without its password, for messages.
    shown: String,
    /// Where the primary is and how to reach it (TLS included).
    target: tls::Target,
    /// Runs the connections and the queries; taken (and shut down without blocking) on drop.
    rt: Option<tokio::runtime::Runtime>,
    readers: Vec<Arc<Client>>,
    next: AtomicUsize,
    writer: Mutex<Sequencer>,
    /// The URL other processes forward writes to while this one sequences (`None`: not
    /// reachable from them; writes sent elsewhere are then refused there).
    advertise: Option<String>,
    /// Connections to a streaming replica that the log is read from (`serve --read-store`)
    /// while this process follows; see [`PgKv::log_reader`].
    replica: Option<Vec<Arc<Client>>>,
    replica_shown: Option<String>,
    /// The largest head size read from the replica (it only grows: replay moves forward).
    replica_size: AtomicU64,
    /// The largest size this process committed as the sequencer or read from the primary's
    /// head (which the writer publishes when it takes the lead).
    committed: AtomicU64,
    /// The connection holding the sequencer lock while this process leads (a copy of the
    /// writer's, readable without waiting for a commit).
    leader: std::sync::RwLock<Option<Arc<Client>>>,
    /// The ledger state this process read or wrote while it sequences (see [`StateCache`]).
    cache: Mutex<StateCache>,
}

/// The most state keys [`StateCache`] keeps before it starts again empty.
const CACHE_KEYS: usize = 100_000;

/// State keys as they stand, absent ones included.
///
/// **In the sequencer**, while it holds the epoch no other process writes the state, so what
/// it read or committed stays true until it steps down (when the cache is emptied). It spares
/// the writer's validation a round trip per read of a key already seen (a claimant's source,
/// a claim's record, a request id a retry sends again), and its readers the same.
///
/// **In a follower**, the state changes only when the sequencer commits, and every commit
/// moves the head, which the follower publishes; so the cache is emptied at each size the
/// follower publishes ([`PgKv::followed`]), and between two it holds values no older than the
/// published size (as an uncached read does), which a read-mostly instance mostly hits.
///
/// `commits` counts commits, publishes and clears: a value read from the database is kept only
/// if none came between the read and the keeping.
#[derive(Default)]
struct StateCache {
    map: std::collections::HashMap<Vec<u8>, Option<Val>>,
    commits: u64,
}

impl StateCache {
    fn insert(&mut self, key: Vec<u8>, value: Option<Val>) {
        if self.map.len() >= CACHE_KEYS && !self.map.contains_key(&key) {
            self.map.clear();
        }
        self.map.insert(key, value);
    }
}

/// The writer's own connection, on which it holds the sequencer lock.
struct Sequencer {
    client: Option<Arc<Client>>,
    /// The epoch this process took with the lock; `None` while it does not lead.
    epoch: Option<i64>,
}

fn db(shown: &str, e: tokio_postgres::Error) -> LogError {
    LogError::Database(format!("{shown}: {}", describe_error(&e)))
}

/// A PostgreSQL error with its server message (tokio-postgres' Display says only "db error").
fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        // tokio-postgres' own text names only the step that failed ("error performing TLS
        // handshake"); the reason is in its sources.
        None => crate::log::with_causes(e),
    }
}

/// Runs a connection until it ends, and says why if it failed.
async fn watch<F: Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!(error = %describe_error(&e), "PostgreSQL connection ended");
    }
}

/// `url` with any password replaced, to be shown in messages and logs.
pub fn redact(url: &str) -> String {
    // tokio-postgres reads a string as a URL only when it starts with one of these schemes;
    // anything else is the key=value form.
    let Some((scheme, rest)) = ["postgresql://", "postgres://"]
        .iter()
        .find_map(|p| url.strip_prefix(p).map(|rest| (p, rest)))
    else {
        return redact_conninfo(url);
    };
    // The user info runs to an `@`. From the first `:` before the first `@` to the last `@` is
    // hidden, so a password holding `/`, `?` or `@` is hidden whole (and at worst a host or
    // query after it too).
    let first_at = rest.find('@').unwrap_or(rest.len());
    let rest = match (rest[..first_at].find(':'), rest.rfind('@')) {
        (Some(colon), Some(last_at)) => format!("{}:***@{}", &rest[..colon], &rest[last_at + 1..]),
        _ => rest.to_string(),
    };
    // A password may also be a query parameter, its name percent-encoded.
    let Some((base, query)) = rest.split_once('?') else {
        return format!("{scheme}{rest}");
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if percent_decoded(k) == "password" => "password=***",
            _ => p,
        })
        .collect();
    format!("{scheme}{base}?{}", query.join("&"))
}

/// `s` with its `%XX` escapes decoded (bytes that are not UTF-8 replaced).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq key=value connection string with its password's value replaced: `key = value`
/// pairs apart by whitespace, spaces allowed around `=`, a value single-quoted (with `\'` and
/// `\\` escapes) or unquoted (with `\` escapes). What does not parse as such is not shown at
/// all when it may hold a password.
fn redact_conninfo(s: &str) -> String {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        let after_key = rest[key_len..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return hidden(s);
        };
        let value_at = after_eq.trim_start();
        let Some(value_len) = conninfo_value_len(value_at) else {
            return hidden(s);
        };
        if key.is_empty() {
            return hidden(s);
        }
        let value = &value_at[..value_len];
        out.push(if key == "password" {
            "password=***".to_string()
        } else {
            format!("{key}={value}")
        });
        rest = value_at[value_len..].trim_start();
    }
    out.join(" ")
}

/// The length of the conninfo value at the start of `s` (quotes and escapes included), or
/// `None` when a quote is not closed.
fn conninfo_value_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    if s.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return Some(i + 1),
                _ => {}
            }
        }
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c.is_whitespace() => return Some(i),
            _ => {}
        }
    }
    Some(s.len())
}

/// A connection string that could not be read: shown only when it cannot hold a password.
fn hidden(s: &str) -> String {
    if s.contains("password") {
        "(a connection string that does not parse; not shown, it may hold a password)".into()
    } else {
        s.to_string()
    }
}

impl PgKv {
    /// Connects to `url`, applies the migrations this version knows, and keeps
    /// [`READERS`] connections for reads.
    pub fn open(
        url: &str,
        advertise: Option<String>,
        replica: Option<&str>,
    ) -> Result<PgKv, LogError> {
        let shown = redact(url);
        let target = tls::parse(url).map_err(|e| LogError::Database(format!("{shown}: {e}")))?;
        let replica_target = match replica {
            Some(r) => {
                Some(tls::parse(r).map_err(|e| LogError::Database(format!("{}: {e}", redact(r))))?)
            }
            None => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("claimledger-pg")
            .enable_all()
            .build()
            .map_err(|e| LogError::Internal(format!("starting the PostgreSQL runtime: {e}")))?;
        let mut kv = PgKv {
            shown,
            target,
            rt: Some(rt),
            readers: Vec::new(),
            next: AtomicUsize::new(0),
            writer: Mutex::new(Sequencer {
                client: None,
                epoch: None,
            }),
            advertise,
            replica: None,
            replica_shown: replica.map(redact),
            replica_size: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            leader: std::sync::RwLock::new(None),
            cache: Mutex::new(StateCache::default()),
        };
        let first = kv.connect(READER_NAME)?;
        kv.migrate(&first)?;
        kv.readers.push(first);
        for _ in 1..READERS {
            let c = kv.connect(READER_NAME)?;
            kv.readers.push(c);
        }
        if let Some(r) = &replica_target {
            let mut clients = Vec::with_capacity(READERS);
            for _ in 0..READERS {
                clients.push(kv.connect_to(r, kv.replica_shown.as_deref(), READER_NAME)?);
            }
            kv.replica = Some(clients);
        }
        Ok(kv)
    }

    pub fn describe(&self) -> String {
        match &self.replica_shown {
            Some(r) => format!("PostgreSQL {} (read from the replica {r})", self.shown),
            None => format!("PostgreSQL {}", self.shown),
        }
    }

    /// Runs `f` on this module's runtime and waits for it on the calling thread.
    fn block<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    ) -> Result<T, LogError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| LogError::Database("the PostgreSQL connection is closed".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        // Inside a multi-threaded runtime (a request handler), the wait is announced, so the
        // runtime moves this worker's other tasks to another thread instead of stalling them
        // for the round trip: concurrent reads then wait side by side, not one per worker.
        let wait = || rx.recv();
        let answer = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        answer
            .map_err(|_| LogError::Database("the PostgreSQL runtime stopped".into()))?
            .map_err(|e| db(&self.shown, e))
    }

    /// A new connection, named `application_name` in `pg_stat_activity` (an operator can
    /// tell the sequencer's connection from the readers').
    fn connect(&self, application_name: &'static str) -> Result<Arc<Client>, LogError> {
        self.connect_to(&self.target, None, application_name)
    }

    /// A new connection to `target` (`shown`: its URL for messages, if not the primary's).
    fn connect_to(
        &self,
        target: &tls::Target,
        shown: Option<&str>,
        application_name: &'static str,
    ) -> Result<Arc<Client>, LogError> {
        let mut config = target.config.clone();
        let tls = target.tls.clone();
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| LogError::Database("the PostgreSQL connection is closed".into()))?;
        let handle = rt.handle().clone();
        let connect = async move {
            let client = match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    handle.spawn(watch(connection));
                    client
                }
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    handle.spawn(watch(connection));
                    client
                }
            };
            Ok(client)
        };
        let client = match shown {
            None => self.block(connect)?,
            // The error names the replica, not the primary.
            Some(shown) => self
                .block(async move { Ok(connect.await) })?
                .map_err(|e| db(shown, e))?,
        };
        Ok(Arc::new(client))
    }

    /// Applies the migrations not applied yet, under a transaction-level advisory lock so that
    /// processes starting together apply each once.
    fn migrate(&self, client: &Arc<Client>) -> Result<(), LogError> {
        let c = client.clone();
        let applied: i32 = self.block(async move {
            c.batch_execute(&format!(
                "BEGIN;
                 SET LOCAL client_min_messages = warning;
                 SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                 CREATE TABLE IF NOT EXISTS claimledger_schema (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await?;
            let row = c
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM claimledger_schema",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })?;
        let known = MIGRATIONS.len() as i32;
        if applied > known {
            let c = client.clone();
            let _ = self.block(async move { c.batch_execute("ROLLBACK").await });
            return Err(LogError::Database(format!(
                "{}: the schema is at version {applied}, newer than this claimledger knows \
                 ({known}); run a newer claimledger",
                self.shown
            )));
        }
        let todo: Vec<(i32, &'static str)> = MIGRATIONS
            .iter()
            .enumerate()
            .map(|(i, sql)| (i as i32 + 1, *sql))
            .filter(|(v, _)| *v > applied)
            .collect();
        let c = client.clone();
        self.block(async move {
            for (version, sql) in todo {
                c.batch_execute(sql).await?;
                c.execute(
                    "INSERT INTO claimledger_schema (version) VALUES ($1)",
                    &[&version],
                )
                .await?;
                tracing::info!(version, "PostgreSQL schema migrated");
            }
            c.batch_execute("COMMIT").await
        })
    }

    /// A connection to the primary (for writes, and what only the primary knows: its locks).
    fn reader(&self) -> Arc<Client> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].clone()
    }

    /// A connection to read the log from: the replica's, if this process reads from one,
    /// does not sequence, and the replica holds all this process may have published.
    ///
    /// A process publishes sizes it committed itself or read from the primary's head when it
    /// took the lead (at most `committed`), or sizes it read from the replica's head (at most
    /// `replica_size`). Both only grow, so once the replica
    /// has shown a size at least `committed`, it holds every entry and state behind any size
    /// this process published before; until then, and while this process sequences (its
    /// validation must read what the primary holds), reads go to the primary, which holds
    /// everything.
    fn log_reader(&self) -> Arc<Client> {
        match &self.replica {
            Some(r)
                if !self.leading()
                    && self.replica_size.load(Ordering::Acquire)
                        >= self.committed.load(Ordering::Acquire) =>
            {
                r[self.next.fetch_add(1, Ordering::Relaxed) % r.len()].clone()
            }
            _ => self.reader(),
        }
    }

    /// Runs a read of the log (on the replica, if there is one).
    fn query(
        &self,
        sql: &'static str,
        params: Vec<(Box<dyn ToSql + Send + Sync>, Type)>,
    ) -> Result<Vec<Row>, LogError> {
        self.query_on(self.log_reader(), sql, params)
    }

    fn query_on(
        &self,
        c: Arc<Client>,
        sql: &'static str,
        params: Vec<(Box<dyn ToSql + Send + Sync>, Type)>,
    ) -> Result<Vec<Row>, LogError> {
        self.block(async move {
            let p: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .map(|(v, t)| (&**v as &(dyn ToSql + Sync), t.clone()))
                .collect();
            c.query_typed(sql, &p).await
        })
    }

    /// Fills the sequencer's state cache with `keys` (absent ones too) in one query: the
    /// writer calls it with the keys a group's validation will read, which would otherwise be
    /// a round trip each (a new request id, a new claim's id). Nothing while this process does
    /// not sequence (the writer does not validate then).
    pub fn prefetch(&self, mut keys: Vec<Vec<u8>>) -> Result<(), LogError> {
        if !self.leading() {
            return Ok(());
        }
        let seen = match self.cache.lock() {
            Ok(c) => {
                keys.retain(|k| {
                    matches!(Keyspace::of(k), Keyspace::State) && !c.map.contains_key(k)
                });
                c.commits
            }
            Err(_) => return Ok(()),
        };
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        let rows = self.query(
            "SELECT k, v FROM state WHERE k = ANY($1)",
            vec![(Box::new(keys.clone()), Type::BYTEA_ARRAY)],
        )?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let k: Vec<u8> = r.try_get(0).map_err(|e| db(&self.shown, e))?;
            found.insert(k, column(r, 1)?);
        }
        if let Ok(mut c) = self.cache.lock() {
            // As in `get`: only if no commit came in between.
            if c.commits == seen {
                for k in keys {
                    let v = found.remove(&k);
                    c.insert(k, v);
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Val>, LogError> {
        match Keyspace::of(key) {
            Keyspace::Entry(idx) => {
                let rows = self.query(
                    "SELECT idx, hashes, body FROM entries WHERE idx = $1",
                    vec![(Box::new(idx), Type::INT8)],
                )?;
                rows.first().map(|r| packed(r).map(|(_, v)| v)).transpose()
            }
            Keyspace::State => {
                let seen = match self.cache.lock() {
                    Ok(c) => match c.map.get(key) {
                        Some(v) => return Ok(v.clone()),
                        None => Some(c.commits),
                    },
                    Err(_) => None,
                };
                let rows = self.query(
                    "SELECT k, v FROM state WHERE k = $1",
                    vec![(Box::new(key.to_vec()), Type::BYTEA)],
                )?;
                let v = rows.first().map(|r| column(r, 1)).transpose()?;
                if let (Some(seen), Ok(mut c)) = (seen, self.cache.lock()) {
                    // Only if no commit came between the read and now: else `v` may be older
                    // than what the cache holds or is about to hold.
                    if c.commits == seen {
                        c.insert(key.to_vec(), v.clone());
                    }
                }
                Ok(v)
            }
            Keyspace::Size => {
                let rows = self.query("SELECT tree_size FROM head", vec![])?;
                let size: i64 = rows
                    .first()
                    .ok_or_else(|| LogError::Corrupt("the head row is missing".into()))?
                    .try_get(0)
                    .map_err(|e| db(&self.shown, e))?;
                Ok(Some(Val::Bytes(
                    (size as u64).to_be_bytes().to_vec().into(),
                )))
            }
            Keyspace::Checkpoint => {
                let rows = self.query("SELECT checkpoint FROM head", vec![])?;
                let note: Option<String> = rows
                    .first()
                    .ok_or_else(|| LogError::Corrupt("the head row is missing".into()))?
                    .try_get(0)
                    .map_err(|e| db(&self.shown, e))?;
                Ok(note.map(|n| Val::Bytes(n.into_bytes().into())))
            }
            Keyspace::Meta => {
                let rows = self.query(
                    "SELECT k, v FROM meta WHERE k = $1",
                    vec![(Box::new(key.to_vec()), Type::BYTEA)],
                )?;
                rows.first().map(|r| column(r, 1)).transpose()
            }
            Keyspace::None => Ok(None),
        }
    }

    pub fn range(&self, start: &[u8], end: &[u8]) -> KvIter<'_> {
        Box::new(PgRange {
            kv: self,
            space: Keyspace::of(start),
            from: start.to_vec(),
            end: end.to_vec(),
            buf: VecDeque::new(),
            done: start >= end,
        })
    }

    pub fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<(Val, Val)>, LogError> {
        if start >= end {
            return Ok(None);
        }
        match (Keyspace::of(start), entry_bound(end)) {
            (Keyspace::Entry(from), Some(to)) => {
                let rows = self.query(
                    "SELECT idx, hashes, body FROM entries WHERE idx >= $1 AND idx < $2 \
                     ORDER BY idx DESC LIMIT 1",
                    vec![(Box::new(from), Type::INT8), (Box::new(to), Type::INT8)],
                )?;
                rows.first()
                    .map(|r| packed(r).map(|(i, v)| (entry_key(i), v)))
                    .transpose()
            }
            (Keyspace::State, _) => {
                let rows = self.query(
                    "SELECT k, v FROM state WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT 1",
                    vec![
                        (Box::new(start.to_vec()), Type::BYTEA),
                        (Box::new(end.to_vec()), Type::BYTEA),
                    ],
                )?;
                rows.first()
                    .map(|r| Ok((column(r, 0)?, column(r, 1)?)))
                    .transpose()
            }
            _ => Err(LogError::Internal(
                "a reverse scan over log metadata".into(),
            )),
        }
    }

    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), LogError> {
        let c = self.reader();
        let (k, v) = (key.to_vec(), value.to_vec());
        self.block(async move {
            c.execute(
                "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = $2",
                &[&k, &v],
            )
            .await
        })?;
        Ok(())
    }

    /// The value of metadata `key`: the one stored, or `value`, stored now if there was none
    /// (the first of several processes to ask wins).
    pub fn settle_meta(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, LogError> {
        let c = self.reader();
        let (k, v) = (key.to_vec(), value.to_vec());
        self.block(async move {
            c.execute(
                "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING",
                &[&k, &v],
            )
            .await?;
            let row = c
                .query_one("SELECT v FROM meta WHERE k = $1", &[&k])
                .await?;
            Ok(row.get(0))
        })
    }

    /// Whether this process's writer holds the sequencer lock.
    pub fn leading(&self) -> bool {
        // A session PostgreSQL ended (terminated, partitioned) has lost the lock with it.
        // Read without the writer's lock, which a commit holds for its whole transaction.
        self.leader
            .read()
            .map(|l| l.as_ref().is_some_and(|c| !c.is_closed()))
            .unwrap_or(false)
    }

    /// Records whether this process leads, with the connection that holds the lock.
    fn set_leader(&self, client: Option<Arc<Client>>) {
        if let Ok(mut l) = self.leader.write() {
            *l = client;
        }
    }

    /// See [`super::Kv::lead`]: keeps the lead while the writer's connection lives; otherwise
    /// tries to take the lock (without waiting) and bumps the epoch.
    pub fn lead(&self) -> Result<Lead, LogError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| LogError::Internal("the sequencer's lock is poisoned".into()))?;
        if w.epoch.is_some() && w.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(Lead::Continue);
        }
        w.epoch = None;
        self.set_leader(None);
        let client = match w.client.as_ref().filter(|c| !c.is_closed()) {
            Some(c) => c.clone(),
            None => {
                let c = self.connect(SEQUENCER_NAME)?;
                w.client = Some(c.clone());
                c
            }
        };
        let c = client.clone();
        let advertise = self.advertise.clone();
        let epoch: Option<i64> = self.block(async move {
            let row = c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SEQUENCER_LOCK])
                .await?;
            if !row.get::<_, bool>(0) {
                return Ok(None);
            }
            let row = c
                .query_one(
                    "UPDATE head SET writer_epoch = writer_epoch + 1 RETURNING writer_epoch",
                    &[],
                )
                .await?;
            // Where the others forward writes to from now on (nowhere, without a URL).
            match advertise {
                Some(url) => {
                    c.execute(
                        "INSERT INTO meta (k, v) VALUES ($1, $2) \
                         ON CONFLICT (k) DO UPDATE SET v = $2",
                        &[&META_SEQUENCER, &url.into_bytes()],
                    )
                    .await?;
                }
                None => {
                    c.execute("DELETE FROM meta WHERE k = $1", &[&META_SEQUENCER])
                        .await?;
                }
            }
            Ok(Some(row.get(0)))
        })?;
        match epoch {
            Some(e) => {
                tracing::info!(epoch = e, "this process now sequences the log");
                w.epoch = Some(e);
                // Leading first, then emptied: a read that began before keeps nothing it read
                // (the count moved), and one that begins after reads the primary (it leads).
                self.set_leader(Some(client.clone()));
                // What was cached before may have been changed by the previous sequencer.
                self.forget_state();
                Ok(Lead::Took)
            }
            None => Ok(Lead::Follower(
                "another claimledger process sequences this log (it holds the sequencer lock \
                 on the database); retry"
                    .into(),
            )),
        }
    }

    /// The URL of the process that sequences the log, if that is another live process that
    /// recorded one: its lock is held (its session lives) and it is not this process.
    pub fn sequencer_elsewhere(&self) -> Result<Option<String>, LogError> {
        if self.leading() {
            return Ok(None);
        }
        let rows = self.query_on(
            self.reader(),
            "SELECT v, EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid::bigint = $2 AND objid::bigint = $3 AND objsubid = 1) \
             FROM meta WHERE k = $1",
            vec![
                (Box::new(META_SEQUENCER.to_vec()), Type::BYTEA),
                (Box::new(SEQUENCER_LOCK >> 32), Type::INT8),
                (Box::new(SEQUENCER_LOCK & 0xffff_ffff), Type::INT8),
            ],
        )?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let url: Vec<u8> = row.try_get(0).map_err(|e| db(&self.shown, e))?;
        let held: bool = row.try_get(1).map_err(|e| db(&self.shown, e))?;
        let url = String::from_utf8_lossy(&url).into_owned();
        Ok((held && self.advertise.as_deref() != Some(url.as_str())).then_some(url))
    }

    /// Steps down: drops the writer's connection, which releases the lock with its session.
    fn step_down(&self, w: &mut Sequencer) {
        w.epoch = None;
        w.client = None;
        self.set_leader(None);
        self.forget_state();
    }

    /// Called by a follower when it publishes a new size: the state another process committed
    /// up to it may differ from what the cache holds.
    pub fn followed(&self) {
        self.forget_state();
    }

    /// Empties the state cache: another process may write the state from now on.
    fn forget_state(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.map.clear();
            c.commits += 1;
        }
    }

    /// Writes `group` in one statement (its own transaction) fenced by the epoch and the size
    /// it extends.
    pub fn commit(&self, group: GroupWrite) -> Result<(), SyncFailure> {
        let mut w = self.writer.lock().map_err(|_| {
            SyncFailure::Final(LogError::Internal(
                "the sequencer's lock is poisoned".into(),
            ))
        })?;
        let (Some(client), Some(epoch)) = (w.client.clone(), w.epoch) else {
            return Err(SyncFailure::Lost(LogError::Unavailable(
                "this process does not sequence the log; retry".into(),
            )));
        };
        let mut idx = Vec::with_capacity(group.entries.len());
        let mut hashes = Vec::with_capacity(group.entries.len());
        let mut bodies = Vec::with_capacity(group.entries.len());
        for (i, p) in group.entries {
            let (_, at) = unpack(&p).ok_or_else(|| {
                SyncFailure::Final(LogError::Internal(format!("entry {i} is not packed")))
            })?;
            idx.push(i as i64);
            hashes.push(p[1..at].to_vec());
            bodies.push(p[at..].to_vec());
        }
        // What the cache learns once the group is committed.
        let learned: Vec<(Vec<u8>, Option<Val>)> = group
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map(|v| Val::Bytes(v.into()))))
            .collect();
        let (mut put_k, mut put_v, mut del_k) = (Vec::new(), Vec::new(), Vec::new());
        for (k, v) in group.state {
            match v {
                Some(v) => {
                    put_k.push(k);
                    put_v.push(v);
                }
                None => del_k.push(k),
            }
        }
        let size = group.checkpoint.size as i64;
        let prev = group.prev_size as i64;
        let root = group.checkpoint.root.0.to_vec();
        let note = group.checkpoint.note;
        let c = client.clone();
        // One statement, so one round trip and its own transaction: every part after the fenced
        // head update happens only if that update matched (`EXISTS (SELECT 1 FROM h)`), and
        // any error (a duplicate index, say) undoes it all.
        let outcome = self.block(async move {
            let rows = c
                .query_typed(
                    "WITH h AS (
                         UPDATE head SET tree_size = $1, root = $2, checkpoint = $3
                         WHERE writer_epoch = $4 AND tree_size = $5 RETURNING tree_size
                     ), e AS (
                         INSERT INTO entries (idx, hashes, body)
                         SELECT * FROM unnest($6::int8[], $7::bytea[], $8::bytea[])
                         WHERE EXISTS (SELECT 1 FROM h)
                     ), p AS (
                         INSERT INTO state (k, v)
                         SELECT * FROM unnest($9::bytea[], $10::bytea[])
                         WHERE EXISTS (SELECT 1 FROM h)
                         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v
                     ), d AS (
                         DELETE FROM state WHERE k = ANY($11::bytea[]) AND EXISTS (SELECT 1 FROM h)
                     ), n AS (
                         INSERT INTO checkpoints (tree_size, note)
                         SELECT $1, $3 WHERE EXISTS (SELECT 1 FROM h)
                     )
                     SELECT count(*) FROM h",
                    &[
                        (&size, Type::INT8),
                        (&root, Type::BYTEA),
                        (&note, Type::TEXT),
                        (&epoch, Type::INT8),
                        (&prev, Type::INT8),
                        (&idx, Type::INT8_ARRAY),
                        (&hashes, Type::BYTEA_ARRAY),
                        (&bodies, Type::BYTEA_ARRAY),
                        (&put_k, Type::BYTEA_ARRAY),
                        (&put_v, Type::BYTEA_ARRAY),
                        (&del_k, Type::BYTEA_ARRAY),
                    ],
                )
                .await?;
            let updated: i64 = match rows.first() {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            Ok(updated == 1)
        });
        match outcome {
            Ok(true) => {
                // Before the writer publishes it: see `log_reader`.
                self.committed.fetch_max(size as u64, Ordering::AcqRel);
                if let Ok(mut c) = self.cache.lock() {
                    c.commits += 1;
                    for (k, v) in learned {
                        c.insert(k, v);
                    }
                }
                Ok(())
            }
            Ok(false) => {
                self.step_down(&mut w);
                tracing::warn!(
                    epoch,
                    "fenced: another process sequences the log now; stepping down"
                );
                Err(SyncFailure::Lost(LogError::Unavailable(
                    "another claimledger process took over sequencing this log; retry".into(),
                )))
            }
            Err(e) => {
                // Whether the statement committed is unknown if the connection broke while it
                // ran: stepping down makes the next group re-read the head either way.
                self.step_down(&mut w);
                Err(SyncFailure::Lost(e))
            }
        }
    }

    /// Keeps `note`, a checkpoint of `size` entries cosigned by `cosigners` witnesses (at
    /// least the quorum), as the log's latest cosigned checkpoint, unless a larger one (or the
    /// same size with as many cosigners or more) is kept already: a stale sequencer cannot
    /// take it back.
    pub fn store_cosigned(&self, size: u64, cosigners: usize, note: &str) -> Result<(), LogError> {
        let (size, cosigners, note) = (size as i64, cosigners as i32, note.to_string());
        let c = self.reader();
        self.block(async move {
            c.execute(
                "INSERT INTO cosigned (tree_size, cosigners, note) VALUES ($1, $2, $3) \
                 ON CONFLICT (one) DO UPDATE SET tree_size = EXCLUDED.tree_size, \
                 cosigners = EXCLUDED.cosigners, note = EXCLUDED.note \
                 WHERE cosigned.tree_size < EXCLUDED.tree_size \
                 OR (cosigned.tree_size = EXCLUDED.tree_size \
                     AND cosigned.cosigners < EXCLUDED.cosigners)",
                &[&size, &cosigners, &note],
            )
            .await
            .map(|_| ())
        })
    }

    /// The cosigned checkpoint [`PgKv::store_cosigned`] keeps, if any.
    pub fn cosigned(&self) -> Result<Option<String>, LogError> {
        let rows = self.query_on(self.reader(), "SELECT note FROM cosigned", vec![])?;
        rows.first()
            .map(|r| r.try_get(0).map_err(|e| db(&self.shown, e)))
            .transpose()
    }

    /// The size the primary's head holds now (what the log has, whatever this process has
    /// published so far).
    pub fn primary_size(&self) -> Result<u64, LogError> {
        let rows = self.query_on(self.reader(), "SELECT tree_size FROM head", vec![])?;
        let row = rows
            .first()
            .ok_or_else(|| LogError::Corrupt("the head row is missing".into()))?;
        let size: i64 = row.try_get(0).map_err(|e| db(&self.shown, e))?;
        Ok(size as u64)
    }

    /// The stored size and checkpoint note: the primary's while this process sequences (the
    /// writer reloads from it when it takes the lead), else the replica's if it reads one (what
    /// a follower publishes), else the primary's.
    pub fn head(&self) -> Result<(u64, Option<String>), LogError> {
        let on_replica = match &self.replica {
            Some(r) if !self.leading() => {
                Some(r[self.next.fetch_add(1, Ordering::Relaxed) % r.len()].clone())
            }
            _ => None,
        };
        let c = on_replica.clone().unwrap_or_else(|| self.reader());
        let rows = self.query_on(c, "SELECT tree_size, checkpoint FROM head", vec![])?;
        let row = rows
            .first()
            .ok_or_else(|| LogError::Corrupt("the head row is missing".into()))?;
        let size: i64 = row.try_get(0).map_err(|e| db(&self.shown, e))?;
        let note: Option<String> = row.try_get(1).map_err(|e| db(&self.shown, e))?;
        let size = size as u64;
        if on_replica.is_some() {
            self.replica_size.fetch_max(size, Ordering::AcqRel);
        } else {
            // The writer may publish it (it reloads from here when it takes the lead).
            self.committed.fetch_max(size, Ordering::AcqRel);
        }
        Ok((size, note))
    }
}

impl Drop for PgKv {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (inside another runtime).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Which table a key lives in.
#[derive(Clone, Copy, Debug)]
enum Keyspace {
    Entry(i64),
    State,
    Size,
    Checkpoint,
    Meta,
    None,
}

impl Keyspace {
    fn of(key: &[u8]) -> Keyspace {
        match key.first() {
            Some(&ENTRY) if key.len() == 9 => match be64(&key[1..]) {
                Some(i) => Keyspace::Entry(i64::try_from(i).unwrap_or(i64::MAX)),
                None => Keyspace::None,
            },
            Some(&crate::log::apply::INDEX_PREFIX) => Keyspace::State,
            Some(b'm') if key == META_SIZE => Keyspace::Size,
            Some(b'm') if key == META_CHECKPOINT => Keyspace::Checkpoint,
            Some(b'm') => Keyspace::Meta,
            _ => Keyspace::None,
        }
    }
}

/// The index an entry range's end key bounds (exclusive).
fn entry_bound(end: &[u8]) -> Option<i64> {
    match Keyspace::of(end) {
        Keyspace::Entry(i) => Some(i),
        _ if end.first().is_some_and(|b| *b > ENTRY) => Some(i64::MAX),
        _ => None,
    }
}

fn entry_key(index: i64) -> Val {
    Val::Bytes(crate::log::store::key(ENTRY, index as u64).to_vec().into())
}

fn column(row: &Row, i: usize) -> Result<Val, LogError> {
    let v: Vec<u8> = row
        .try_get(i)
        .map_err(|e| LogError::Database(format!("reading a row: {}", describe_error(&e))))?;
    Ok(Val::Bytes(v.into()))
}

/// An entries row as the packed value `store` reads: hash count ‖ hashes ‖ entry bytes.
fn packed(row: &Row) -> Result<(i64, Val), LogError> {
    let bad = |e: tokio_postgres::Error| {
        LogError::Database(format!("reading an entry row: {}", describe_error(&e)))
    };
    let idx: i64 = row.try_get(0).map_err(bad)?;
    let hashes: &[u8] = row.try_get(1).map_err(bad)?;
    let body: &[u8] = row.try_get(2).map_err(bad)?;
    if hashes.is_empty() || hashes.len() % 32 != 0 || hashes.len() / 32 > 65 {
        return Err(LogError::Tampered {
            index: idx as u64,
            reason: format!("{} bytes of stored hashes", hashes.len()),
        });
    }
    let mut v = Vec::with_capacity(1 + hashes.len() + body.len());
    v.push((hashes.len() / 32) as u8);
    v.extend_from_slice(hashes);
    v.extend_from_slice(body);
    Ok((idx, Val::Bytes(v.into())))
}

/// A forward range scan, a page of rows per query.
struct PgRange<'a> {
    kv: &'a PgKv,
    space: Keyspace,
    /// The next key to read from (inclusive).
    from: Vec<u8>,
    end: Vec<u8>,
    buf: VecDeque<(Val, Val)>,
    done: bool,
}

impl PgRange<'_> {
    fn fill(&mut self) -> Result<(), LogError> {
        match self.space {
            Keyspace::Entry(_) => {
                let (Keyspace::Entry(from), Some(to)) =
                    (Keyspace::of(&self.from), entry_bound(&self.end))
                else {
                    self.done = true;
                    return Ok(());
                };
                let rows = self.kv.query(
                    "SELECT idx, hashes, body FROM entries WHERE idx >= $1 AND idx < $2 \
                     ORDER BY idx LIMIT $3",
                    vec![
                        (Box::new(from), Type::INT8),
                        (Box::new(to), Type::INT8),
                        (Box::new(PAGE), Type::INT8),
                    ],
                )?;
                if (rows.len() as i64) < PAGE {
                    self.done = true;
                }
                for r in &rows {
                    let (i, v) = packed(r)?;
                    self.buf.push_back((entry_key(i), v));
                    self.from = crate::log::store::key(ENTRY, i as u64 + 1).to_vec();
                }
            }
            Keyspace::State => {
                let rows = self.kv.query(
                    "SELECT k, v FROM state WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3",
                    vec![
                        (Box::new(self.from.clone()), Type::BYTEA),
                        (Box::new(self.end.clone()), Type::BYTEA),
                        (Box::new(PAGE), Type::INT8),
                    ],
                )?;
                if (rows.len() as i64) < PAGE {
                    self.done = true;
                }
                for r in &rows {
                    let k = column(r, 0)?;
                    // The next page starts just after this key.
                    let mut next = k.to_vec();
                    next.push(0);
                    self.from = next;
                    self.buf.push_back((k, column(r, 1)?));
                }
            }
            _ => self.done = true,
        }
        Ok(())
    }
}

impl Iterator for PgRange<'_> {
    type Item = Result<(Val, Val), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() && !self.done {
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.buf.pop_front().map(Ok)
    }
}
