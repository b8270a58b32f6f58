//! Benchmarks of the log engine (`cargo bench --bench log`), printed as tables with the
//! baselines measured side by side in the same run. See BENCHMARKS.md for the method and
//! the figures.
//!
//! Environment:
//! - `CLAIMLEDGER_BENCH_N`: size of the large log (default 1,000,000); the append section
//!   scales its entry counts with it (down to 1 %), so a small N gives a quick smoke run.
//! - `CLAIMLEDGER_BENCH_DIR`: where the temporary data directories go (default: the system
//!   temporary directory, which must be on a real disk for the durability figures to mean
//!   anything).
//! - `CLAIMLEDGER_BENCH_ONLY`: a comma-separated subset of `append,open,verify,proofs`.
//! - `CLAIMLEDGER_BENCH_LOG_DIR`: keep the large log there, and reuse it on the next run
//!   (for profiling one part).
//!
//! The binary re-executes itself (`CLAIMLEDGER_BENCH_CHILD=open`) to measure open time and
//! resident memory in a fresh process.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claimledger::log::{leaf_hash, Envelope, Log, NoApply, Offline, Options};
use prost::Message;
use sha2::{Digest, Sha256};

/// Shuts the log down and drops this handle (and with it the sled database), so the directory
/// can be opened again in this process.
async fn close(log: Log) {
    log.shutdown().await.expect("shutdown");
}

/// Body length chosen so that a stored entry (envelope with index, prev hash, time, actor and
/// body) is about 300 bytes.
const BODY_LEN: usize = 236;
const ACTOR: &str = "bench";
const GROUPS: [usize; 3] = [1, 16, 256];

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Incompressible pseudo-random body bytes.
fn body(seed: u64) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = Vec::with_capacity(BODY_LEN);
    while v.len() < BODY_LEN {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(BODY_LEN);
    v
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn bench_root() -> PathBuf {
    std::env::var_os("CLAIMLEDGER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn tempdir() -> tempfile::TempDir {
    let root = bench_root();
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new()
        .prefix("claimledger-bench-")
        .tempdir_in(root)
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// VmRSS and VmHWM of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&path),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Drops the files of `p` from the page cache (best effort): fsync, then
/// posix_fadvise(DONTNEED), so that the next open reads from the disk.
fn evict(p: &Path) {
    use std::os::unix::io::AsRawFd;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                evict(&path);
            } else if let Ok(f) = File::open(&path) {
                let _ = f.sync_all();
                // SAFETY: a valid open descriptor; the call only advises the kernel.
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
                }
            }
        }
    }
}

/// The first three fields of /proc/loadavg (other work on the machine skews the figures).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    let s = format!("{:.0}", r);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------------------------
// Durable append throughput
// ---------------------------------------------------------------------------------------------

struct AppendRun {
    entries: u64,
    elapsed: Duration,
    groups: u64,
    stored: Vec<Vec<u8>>,
}

/// Appends `count` entries through the log with `max_group = g`, driven by `2 g` concurrent
/// appenders (so that a full group is always waiting while the previous one commits).
fn log_append_run(rt: &tokio::runtime::Runtime, g: usize, count: u64) -> AppendRun {
    log_append_run_with(rt, g, count, true)
}

/// [`log_append_run`], with or without the checkpoint file outside sled.
fn log_append_run_with(
    rt: &tokio::runtime::Runtime,
    g: usize,
    count: u64,
    external_checkpoint: bool,
) -> AppendRun {
    let dir = tempdir();
    let appenders = (2 * g) as u64;
    let count = count.div_ceil(appenders) * appenders;
    rt.block_on(async {
        let opts = Options {
            max_group: g,
            queue_capacity: 2 * g,
            external_checkpoint,
            ..Options::default()
        };
        let log = Log::open(dir.path(), opts, Arc::new(NoApply)).unwrap();
        let per = count / appenders;
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut sizes = Vec::with_capacity(per as usize);
                    for k in 0..per {
                        let r = log.append(ACTOR, body(t * per + k)).await.unwrap();
                        sizes.push(r.checkpoint.size);
                    }
                    sizes
                })
            })
            .collect();
        let mut sizes = HashSet::new();
        for t in tasks {
            sizes.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed();
        assert_eq!(log.size(), count);
        let stored: Vec<Vec<u8>> = log
            .entries(0, count)
            .map(|kv| kv.unwrap().1.to_vec())
            .collect();
        close(log).await;
        AppendRun {
            entries: count,
            elapsed,
            groups: sizes.len() as u64,
            stored,
        }
    })
}

fn raw_sled(dir: &Path) -> (sled::Db, File) {
    // The same configuration as the log's store.
    let path = dir.join("sled");
    let db = sled::Config::new()
        .path(&path)
        .cache_capacity(claimledger::log::CACHE_BYTES)
        .mode(sled::Mode::HighThroughput)
        .open()
        .unwrap();
    let file = File::open(path.join("db")).unwrap();
    (db, file)
}

fn key(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// What a raw sled run writes per entry, besides the entry itself.
#[derive(Clone, Copy)]
struct WriteSet {
    /// The stored hashes (`1 + trailing_ones(i)` of them, 32 bytes each) packed in front of the
    /// entry in the same value, as the log stores them.
    hashes: bool,
    /// The leaf hash -> index map (a 33-byte random key per entry).
    leaf_index: bool,
    /// Size and a checkpoint-sized value, once per group.
    meta: bool,
}

const ENTRIES_ONLY: WriteSet = WriteSet {
    hashes: false,
    leaf_index: false,
    meta: false,
};
const FULL: WriteSet = WriteSet {
    hashes: true,
    leaf_index: true,
    meta: true,
};

/// Raw sled with the same entry bytes and group size: one `apply_batch` of `g` entries, then
/// `flush` and `sync_data` of sled's data file, per group, from one thread. `ws` adds what the
/// log writes besides the entries, with the hashes precomputed outside the timing.
fn raw_append_run(entries: &[Vec<u8>], g: usize, ws: WriteSet) -> Duration {
    let dir = tempdir();
    let (db, file) = raw_sled(dir.path());
    let leaves: Vec<[u8; 32]> = entries.iter().map(|e| leaf_hash(e).0).collect();
    let checkpoint = [b'c'; 180];
    let start = Instant::now();
    for (c, chunk) in entries.chunks(g).enumerate() {
        let mut batch = sled::Batch::default();
        for (j, e) in chunk.iter().enumerate() {
            let i = (c * g + j) as u64;
            if ws.hashes {
                let count = 1 + i.trailing_ones() as usize;
                let hashes = vec![tlog_tiles::Hash(leaves[i as usize]); count];
                batch.insert(&key(b'e', i)[..], claimledger::log::entry::pack(&hashes, e));
            } else {
                batch.insert(&key(b'e', i)[..], &e[..]);
            }
            if ws.leaf_index {
                let mut lk = [0u8; 33];
                lk[0] = b'l';
                lk[1..].copy_from_slice(&leaves[i as usize]);
                batch.insert(&lk[..], &i.to_be_bytes()[..]);
            }
        }
        if ws.meta {
            batch.insert(
                &b"msize"[..],
                &((c * g + chunk.len()) as u64).to_be_bytes()[..],
            );
            batch.insert(&b"mcheckpoint"[..], &checkpoint[..]);
        }
        db.apply_batch(batch).unwrap();
        db.flush().unwrap();
        file.sync_data().unwrap();
    }
    start.elapsed()
}

/// Entries to append at group size `g`: about a second of work each at full scale, divided by
/// `share` when a section makes several runs.
fn append_count(g: usize, scale: f64, share: u64) -> u64 {
    let base: u64 = match g {
        1 => 4_000,
        16 => 48_000,
        _ => 256_000,
    } / share;
    ((base as f64 * scale) as u64).max(4 * g as u64)
}

fn bench_append(rt: &tokio::runtime::Runtime, scale: f64) {
    println!("\n## Durable append throughput (group commit)\n");
    println!(
        "log = Log::append with max_group = g and 2g concurrent appenders; raw = sled apply_batch \
         of g entries + flush + sync_data of sled's `db` file, same bytes, one thread"
    );
    println!(
        "\n{:>6} {:>9} {:>10} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "group", "entries", "mean grp", "log e/s", "raw e/s", "raw+idx e/s", "log/raw", "log/r+i"
    );
    let mut at_256 = None;
    let mut breakdown = Vec::new();
    for g in GROUPS {
        let count = append_count(g, scale, 1);
        let run = log_append_run(rt, g, count);
        let raw = raw_append_run(&run.stored, g, ENTRIES_ONLY);
        let raw_full = raw_append_run(&run.stored, g, FULL);
        let log_rate = per_sec(run.entries, run.elapsed);
        let raw_rate = per_sec(run.entries, raw);
        let full_rate = per_sec(run.entries, raw_full);
        let mean_size =
            run.stored.iter().map(|e| e.len()).sum::<usize>() as f64 / run.stored.len() as f64;
        println!(
            "{:>6} {:>9} {:>10.1} {:>14} {:>14} {:>14} {:>8.0}% {:>8.0}%",
            g,
            run.entries,
            run.entries as f64 / run.groups as f64,
            fmt_rate(log_rate),
            fmt_rate(raw_rate),
            fmt_rate(full_rate),
            100.0 * log_rate / raw_rate,
            100.0 * log_rate / full_rate,
        );
        if g == 256 {
            at_256 = Some((log_rate, raw_rate, mean_size));
            breakdown = run.stored;
        }
    }
    if !breakdown.is_empty() {
        println!(
            "\nraw sled at g=256, {} entries, by write set (entries/s):",
            breakdown.len()
        );
        for (name, ws) in [
            ("entries only", ENTRIES_ONLY),
            (
                "entries with their stored hashes packed in",
                WriteSet {
                    hashes: true,
                    ..ENTRIES_ONLY
                },
            ),
            (
                "entries + leaf-hash index",
                WriteSet {
                    leaf_index: true,
                    ..ENTRIES_ONLY
                },
            ),
            ("entries + hashes + leaf index + meta (log's set)", FULL),
        ] {
            let d = raw_append_run(&breakdown, 256, ws);
            println!(
                "  {:<50} {:>10}",
                name,
                fmt_rate(per_sec(breakdown.len() as u64, d))
            );
        }
    }
    if let Some((log_rate, raw_rate, mean_size)) = at_256 {
        println!("\nmean stored entry size: {mean_size:.0} bytes");
        println!(
            "target: >= 100,000 entries/s at g=256: {} ({}); >= 70 % of raw sled: {} ({:.0} %)",
            verdict(log_rate >= 100_000.0),
            fmt_rate(log_rate),
            verdict(log_rate >= 0.7 * raw_rate),
            100.0 * log_rate / raw_rate
        );
    }
}

/// What keeping the latest checkpoint in a file outside sled costs: the same appends with and
/// without it, alternated, two runs each, best of two.
fn bench_checkpoint_file(rt: &tokio::runtime::Runtime, scale: f64) {
    println!("\n## The checkpoint file outside sled: cost per group\n");
    println!(
        "Log::append with max_group = g, 2g appenders; `without` = Options::external_checkpoint \
         off (sled commit only), `with` = on (plus the checkpoint file: a slot written in place \
         and fdatasynced, overlapped with the next group); \
         best of 2 alternated runs each"
    );
    println!(
        "\n{:>6} {:>9} {:>14} {:>14} {:>9} {:>16}",
        "group", "entries", "without e/s", "with e/s", "with/w-o", "file cost/group"
    );
    for g in GROUPS {
        let count = append_count(g, scale, 2);
        let mut best = [f64::MAX, f64::MAX];
        let mut entries = 0;
        let mut groups = [0u64; 2];
        for _ in 0..2 {
            for (k, external) in [false, true].into_iter().enumerate() {
                let run = log_append_run_with(rt, g, count, external);
                entries = run.entries;
                groups[k] = run.groups;
                best[k] = best[k].min(secs(run.elapsed));
            }
        }
        let (without, with) = (entries as f64 / best[0], entries as f64 / best[1]);
        let per_group_us = 1e6 * (best[1] - best[0]) / groups[1].max(1) as f64;
        println!(
            "{:>6} {:>9} {:>14} {:>14} {:>8.0}% {:>13.0} µs",
            g,
            entries,
            fmt_rate(without),
            fmt_rate(with),
            100.0 * with / without,
            per_group_us
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The large log: build, open, verify, proofs
// ---------------------------------------------------------------------------------------------

fn build_large(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) -> Duration {
    const APPENDERS: u64 = 8192;
    rt.block_on(async {
        let opts = Options {
            max_group: 4096,
            queue_capacity: 8192,
            ..Options::default()
        };
        let log = Log::open(dir, opts, Arc::new(NoApply)).unwrap();
        let start = Instant::now();
        let tasks: Vec<_> = (0..APPENDERS.min(n))
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut k = t;
                    while k < n {
                        log.append(ACTOR, body(k)).await.unwrap();
                        k += APPENDERS;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        assert_eq!(log.size(), n);
        close(log).await;
        elapsed
    })
}

struct OpenResult {
    secs: f64,
    base_rss: u64,
    rss: u64,
    hwm: u64,
}

/// In a fresh child process: open the log, then read VmRSS/VmHWM.
/// What the open child opens.
#[derive(Clone, Copy, PartialEq)]
enum OpenKind {
    /// `Offline::open` and `size()` only: sled's own recovery and the entry files' end offsets
    /// (plus reading the origin and the key), no start-up check.
    SledOnly,
    /// `Log::open` with `rehash_on_open` false / true.
    Log { rehash: bool },
}

fn open_in_child(dir: &Path, kind: OpenKind) -> OpenResult {
    let mode = match kind {
        OpenKind::SledOnly => "sled",
        OpenKind::Log { rehash: false } => "0",
        OpenKind::Log { rehash: true } => "1",
    };
    let out = Command::new(std::env::current_exe().unwrap())
        .env("CLAIMLEDGER_BENCH_CHILD", "open")
        .env("CLAIMLEDGER_BENCH_OPEN_DIR", dir)
        .env("CLAIMLEDGER_BENCH_REHASH", mode)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("OPEN "))
        .unwrap_or_else(|| {
            panic!(
                "child failed: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<f64> = line[5..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    OpenResult {
        secs: v[0],
        base_rss: v[1] as u64,
        rss: v[2] as u64,
        hwm: v[3] as u64,
    }
}

fn child_open() {
    let dir = PathBuf::from(std::env::var_os("CLAIMLEDGER_BENCH_OPEN_DIR").unwrap());
    let mode = std::env::var("CLAIMLEDGER_BENCH_REHASH").unwrap_or_default();
    let rehash = mode == "1";
    let rt = runtime();
    let (base_rss, _) = rss_kib();
    if mode == "sled" {
        let start = Instant::now();
        let store = Offline::open(&dir).unwrap();
        let size = store.size().unwrap();
        let elapsed = start.elapsed();
        let (rss, hwm) = rss_kib();
        std::hint::black_box(size);
        drop(store);
        println!("OPEN {} {} {} {}", secs(elapsed), base_rss, rss, hwm);
        return;
    }
    let (elapsed, rss, hwm) = rt.block_on(async {
        let start = Instant::now();
        let log = Log::open(
            &dir,
            Options {
                rehash_on_open: rehash,
                ..Options::default()
            },
            Arc::new(NoApply),
        )
        .unwrap();
        let elapsed = start.elapsed();
        let (rss, hwm) = rss_kib();
        close(log).await;
        (elapsed, rss, hwm)
    });
    println!("OPEN {} {} {} {}", secs(elapsed), base_rss, rss, hwm);
}

fn bench_open(dir: &Path, n: u64, just_built: bool) {
    println!("\n## Open time and resident memory at {n} entries (fresh child process each)\n");
    println!(
        "{:<26} {:>12} {:>10} {:>12} {:>12} {:>12}",
        "what is opened", "page cache", "open s", "RSS MiB", "HWM MiB", "RSS before"
    );
    let mut worst_quick: f64 = 0.0;
    let mut worst_rehash: f64 = 0.0;
    let mut worst_hwm = 0;
    if just_built {
        // The first open after the build: sled replays the part of its log written since its
        // last snapshot (and then writes a new snapshot), so it is slower than later opens.
        evict(dir);
        let r = open_in_child(dir, OpenKind::Log { rehash: false });
        println!(
            "{:<26} {:>12} {:>10.3} {:>12.1} {:>12.1} {:>10.1} M",
            "1st Log::open after build",
            "evicted",
            r.secs,
            r.rss as f64 / 1024.0,
            r.hwm as f64 / 1024.0,
            r.base_rss as f64 / 1024.0
        );
        worst_quick = r.secs;
        worst_hwm = r.hwm;
    }
    for kind in [
        OpenKind::SledOnly,
        OpenKind::Log { rehash: false },
        OpenKind::Log { rehash: true },
    ] {
        for cold in [true, false] {
            if cold {
                evict(dir);
            }
            let r = open_in_child(dir, kind);
            let name = match kind {
                OpenKind::SledOnly => "store only (Offline::open)",
                OpenKind::Log { rehash: false } => "Log::open, no rehash",
                OpenKind::Log { rehash: true } => "Log::open, rehash (dflt)",
            };
            println!(
                "{:<26} {:>12} {:>10.3} {:>12.1} {:>12.1} {:>10.1} M",
                name,
                if cold { "evicted" } else { "warm" },
                r.secs,
                r.rss as f64 / 1024.0,
                r.hwm as f64 / 1024.0,
                r.base_rss as f64 / 1024.0
            );
            match kind {
                OpenKind::SledOnly => {}
                OpenKind::Log { rehash: true } => worst_rehash = worst_rehash.max(r.secs),
                OpenKind::Log { rehash: false } => worst_quick = worst_quick.max(r.secs),
            }
            if kind != OpenKind::SledOnly {
                worst_hwm = worst_hwm.max(r.hwm);
            }
        }
    }
    println!(
        "\ntarget: open <= 1 s: without rehash {} ({:.3} s worst), with rehash (default) {} \
         ({:.3} s worst); memory <= 256 MiB: {} ({:.1} MiB peak)",
        verdict(worst_quick <= 1.0),
        worst_quick,
        verdict(worst_rehash <= 1.0),
        worst_rehash,
        verdict(worst_hwm <= 256 * 1024),
        worst_hwm as f64 / 1024.0
    );
}

fn bench_verify(dir: &Path, n: u64) {
    println!("\n## Full verify at {n} entries\n");
    let store = Offline::open(dir).unwrap();

    // The audit itself, twice: the first pass right after opening, the second with whatever
    // of the entry files the kernel's page cache still holds.
    let mut verify_times = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let report = store.verify(&mut |_| {}).unwrap();
        verify_times.push(start.elapsed());
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.checked, n);
    }
    let verify_time = verify_times[1];

    // Baselines over the same bytes: a scan of the entry files alone, one with SHA-256 of each
    // entry, and SHA-256 of each entry from memory.
    let start = Instant::now();
    let mut bytes = 0usize;
    for kv in store.entries(0, n) {
        bytes += kv.unwrap().1.len();
    }
    let scan_time = start.elapsed();

    let start = Instant::now();
    let mut acc = 0u8;
    for kv in store.entries(0, n) {
        acc ^= leaf_hash(&kv.unwrap().1).0[0];
    }
    let scan_sha_time = start.elapsed();

    let mut buf = Vec::with_capacity(bytes);
    let mut ends = Vec::with_capacity(n as usize);
    for kv in store.entries(0, n) {
        buf.extend_from_slice(&kv.unwrap().1);
        ends.push(buf.len());
    }
    let start = Instant::now();
    let mut prev = 0;
    for &end in &ends {
        let d: [u8; 32] = Sha256::digest(&buf[prev..end]).into();
        acc ^= d[0];
        prev = end;
    }
    let sha_time = start.elapsed();

    // Verify's work without reading the files, from memory: decode each envelope, check its index and
    // prev-hash link, hash it, and rebuild the tree with a compact stack.
    let start = Instant::now();
    let mut prev = 0;
    let mut last = [0u8; 32];
    let mut stack: Vec<[u8; 32]> = Vec::new();
    for (i, &end) in ends.iter().enumerate() {
        let bytes = &buf[prev..end];
        let env = Envelope::decode(bytes).unwrap();
        assert_eq!(env.index, i as u64);
        assert_eq!(env.prev_hash[..], last[..]);
        let mut h = leaf_hash(bytes).0;
        last = h;
        let mut k = i as u64;
        while k & 1 == 1 {
            let left = stack.pop().unwrap();
            let mut node = Sha256::new();
            node.update([1u8]);
            node.update(left);
            node.update(h);
            h = node.finalize().into();
            k >>= 1;
        }
        stack.push(h);
        prev = end;
    }
    let cpu_time = start.elapsed();
    std::hint::black_box(&stack);
    std::hint::black_box(acc);
    drop(buf);
    drop(store);

    println!(
        "{:<44} {:>10} {:>14} {:>10}",
        "pass (entries/s = N / seconds)", "seconds", "entries/s", "MB/s"
    );
    let row = |name: &str, d: Duration, bytes: usize| {
        println!(
            "{:<44} {:>10.3} {:>14} {:>10.0}",
            name,
            secs(d),
            fmt_rate(per_sec(n, d)),
            bytes as f64 / 1e6 / secs(d)
        );
    };
    row(
        "verify, 1st pass (decode, chain, hash, tree)",
        verify_times[0],
        bytes,
    );
    row("verify, 2nd pass", verify_time, bytes);
    row("entry-file scan only (one thread)", scan_time, bytes);
    row(
        "entry-file scan + SHA-256 of each entry",
        scan_sha_time,
        bytes,
    );
    row("plain SHA-256 of each entry (in memory)", sha_time, bytes);
    row("verify's work, one thread, in memory", cpu_time, bytes);
    let best = verify_times.iter().min().copied().unwrap();
    let rate = per_sec(n, best);
    println!(
        "\nthroughput ratios (faster verify pass): verify / plain SHA-256 = {:.3}; \
         verify / (file scan + SHA-256) = {:.2}",
        secs(sha_time) / secs(best),
        secs(scan_sha_time) / secs(best),
    );
    println!(
        "target: >= 1,000,000 entries/s: {} ({})",
        verdict(rate >= 1_000_000.0),
        fmt_rate(rate)
    );
}

fn bench_proofs(rt: &tokio::runtime::Runtime, dir: &Path, n: u64) {
    const SAMPLES: usize = 20_000;
    println!("\n## Proof latency at {n} entries ({SAMPLES} random proofs each, after warm-up)\n");
    rt.block_on(async {
        let opts = Options {
            rehash_on_open: false,
            ..Options::default()
        };
        let log = Log::open(dir, opts, Arc::new(NoApply)).unwrap();
        assert_eq!(log.size(), n);
        let root = log.latest_checkpoint().unwrap().root;
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);

        // Warm-up, and a correctness check of a sample.
        for _ in 0..2_000 {
            let i = rng.below(n);
            let p = log.inclusion_proof(i, n).unwrap();
            let leaf = log.leaf_hash_at(i).unwrap();
            tlog_tiles::check_record(&p, n, root, i, leaf).unwrap();
            let old = 1 + rng.below(n);
            let p = log.consistency_proof(old, n).unwrap();
            let old_root = log.root_at(old).unwrap();
            tlog_tiles::check_tree(&p, n, root, old, old_root).unwrap();
        }

        let mut incl = Vec::with_capacity(SAMPLES);
        let mut cons = Vec::with_capacity(SAMPLES);
        let mut root_at = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let i = rng.below(n);
            let t = Instant::now();
            let p = log.inclusion_proof(i, n).unwrap();
            incl.push(t.elapsed());
            std::hint::black_box(p);

            let old = 1 + rng.below(n);
            let t = Instant::now();
            let p = log.consistency_proof(old, n).unwrap();
            cons.push(t.elapsed());
            std::hint::black_box(p);

            let size = 1 + rng.below(n);
            let t = Instant::now();
            let r = log.root_at(size).unwrap();
            root_at.push(t.elapsed());
            std::hint::black_box(r);
        }
        for v in [&mut incl, &mut cons, &mut root_at] {
            v.sort();
        }
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>10}",
            "operation", "median µs", "p99 µs", "max µs", "hashes"
        );
        let p_len = log.inclusion_proof(n / 3, n).unwrap().len();
        let c_len = log.consistency_proof(n / 3, n).unwrap().len();
        for (name, v, len) in [
            ("inclusion_proof(i, N)", &incl, p_len.to_string()),
            ("consistency_proof(m, N)", &cons, c_len.to_string()),
            ("root_at(m)", &root_at, "-".to_string()),
        ] {
            println!(
                "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>10}",
                name,
                us(percentile(v, 0.5)),
                us(percentile(v, 0.99)),
                us(*v.last().unwrap()),
                len
            );
        }
        let worst_median = us(percentile(&incl, 0.5)).max(us(percentile(&cons, 0.5)));
        println!(
            "\ntarget: median <= 50 µs: {} (worst median {:.1} µs)",
            verdict(worst_median <= 50.0),
            worst_median
        );
        close(log).await;
    });
}

fn main() {
    if std::env::var("CLAIMLEDGER_BENCH_CHILD").as_deref() == Ok("open") {
        child_open();
        return;
    }
    let n = env_u64("CLAIMLEDGER_BENCH_N", 1_000_000).max(1_000);
    let scale = (n as f64 / 1e6).clamp(0.01, 1.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("# claimledger log benchmarks");
    println!(
        "\n{} CPUs ({cpu}), data under {}, N = {n}",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        bench_root().display()
    );
    let load_start = loadavg();
    let total = Instant::now();
    let rt = runtime();

    let only = std::env::var("CLAIMLEDGER_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);

    if run("append") {
        bench_append(&rt, scale);
    }
    if run("checkpoint-file") {
        bench_checkpoint_file(&rt, scale);
    }
    if !(run("open") || run("verify") || run("proofs")) {
        return;
    }

    // The large log: a temporary directory, or CLAIMLEDGER_BENCH_LOG_DIR (kept, and reused
    // when it already holds N entries).
    let tmp;
    let dir: PathBuf = match std::env::var_os("CLAIMLEDGER_BENCH_LOG_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempdir();
            tmp.path().to_path_buf()
        }
    };
    let existing = if dir.join("sled").exists() {
        Offline::open(&dir).and_then(|s| s.size()).unwrap_or(0)
    } else {
        0
    };
    let just_built = existing != n;
    if !just_built {
        println!("\n## Reusing the log of {n} entries in {}", dir.display());
    } else {
        assert_eq!(existing, 0, "{} holds another log", dir.display());
        println!("\n## Building a log of {n} entries (max_group 4096, 8192 appenders)\n");
        let build = build_large(&rt, &dir, n);
        println!(
            "built in {:.1} s ({} entries/s); {:.0} MiB on disk",
            secs(build),
            fmt_rate(per_sec(n, build)),
            dir_size(&dir) as f64 / (1024.0 * 1024.0)
        );
    }
    drop(rt);

    if run("open") {
        bench_open(&dir, n, just_built);
    }
    if run("verify") {
        bench_verify(&dir, n);
    }
    if run("proofs") {
        let rt = runtime();
        bench_proofs(&rt, &dir, n);
    }

    println!(
        "\ntotal benchmark time: {:.0} s; load average at start {} / at end {}",
        secs(total.elapsed()),
        load_start.trim(),
        loadavg().trim()
    );
}
