//! CPU time by group of threads, from `/proc/self/task` (Linux): where the server's CPU goes
//! (the gRPC workers, the writer, the query index, sled's IO threads…) without a profiler.
//!
//! The kernel keeps a thread's CPU time only while the thread exists, and some threads come
//! and go: tantivy makes its indexing threads anew at every commit. So each reading adds to a
//! thread's group what the thread used since the previous reading (a new thread: its whole
//! life), and puts the rest of the process's time, what threads used between the previous
//! reading and their end, in `ended`. Every group's total only grows, and the groups add up to
//! the process's CPU time (`process_cpu_seconds_total`).

use std::collections::HashMap;

/// The groups, the values of the `threads` label; [`ENDED`] last.
pub const GROUPS: [&str; 7] = [
    "tokio",
    "writer",
    "checkpoint_file",
    "index",
    "sled",
    "other",
    "ended",
];

/// The index in [`GROUPS`] of `ended`: time of threads that ended since the previous reading.
const ENDED: usize = GROUPS.len() - 1;

/// The group of a thread, by its name (`comm`, which the kernel cuts to 15 bytes):
/// - `tokio`: the runtime's workers (HTTP/2, gRPC, the handlers) and its blocking pool (reads
///   of the log, the query indexer's batches);
/// - `writer` and `checkpoint_file`: the log's writer and the thread that writes its
///   checkpoint file;
/// - `index`: tantivy's indexing, merge and segment-updater threads;
/// - `sled`: sled's IO threads and its flusher;
/// - `other`: the rest (the main thread, the memory trim, verify, followers, PostgreSQL's
///   client).
pub fn group(comm: &str) -> usize {
    let name = if comm == "tokio-rt-worker" || comm.starts_with("tokio-runtime") {
        "tokio"
    } else if comm.starts_with("claimledger-wri") {
        "writer"
    } else if comm.starts_with("claimledger-che") {
        "checkpoint_file"
    } else if comm.starts_with("thrd-tantivy")
        || comm.starts_with("merge_thread")
        || comm == "segment_updater"
    {
        "index"
    } else if comm.starts_with("sled-io") || comm == "log flusher" {
        "sled"
    } else {
        "other"
    };
    GROUPS.iter().position(|g| *g == name).unwrap_or(ENDED - 1)
}

/// One thread as a reading sees it.
#[derive(Debug, Clone)]
pub struct Thread {
    pub id: u32,
    pub name: String,
    /// User and system time, in `USER_HZ` ticks.
    pub ticks: u64,
}

/// What the previous readings saw: each live thread's ticks, and each group's total.
#[derive(Debug, Default)]
pub struct ThreadCpu {
    last: HashMap<u32, u64>,
    totals: [u64; GROUPS.len()],
}

impl ThreadCpu {
    /// Takes one reading: every live thread, then the process's ticks (read after the
    /// threads, so it covers them). Returns each group's total ticks, in [`GROUPS`] order.
    pub fn update(&mut self, threads: &[Thread], process: u64) -> [u64; GROUPS.len()] {
        let mut seen = HashMap::with_capacity(threads.len());
        for t in threads {
            let before = self.last.get(&t.id).copied().unwrap_or(0);
            // Fewer ticks than before under the same id: a new thread that reused it.
            let used = t.ticks.checked_sub(before).unwrap_or(t.ticks);
            self.totals[group(&t.name)] += used;
            seen.insert(t.id, t.ticks);
        }
        self.last = seen;
        let attributed: u64 = self.totals[..ENDED].iter().sum();
        self.totals[ENDED] = self.totals[ENDED].max(process.saturating_sub(attributed));
        self.totals
    }
}

/// Every thread of this process, from `/proc/self/task`; `None` where it cannot be listed. A
/// thread that ends while it is read is left out (its time goes to `ended`).
pub fn read() -> Option<Vec<Thread>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let Some(id) = task.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, ticks)) = parse_stat(&stat) {
            out.push(Thread { id, name, ticks });
        }
    }
    Some(out)
}

/// A `stat` line's name and user + system ticks. `pid (comm) state ppid …`: comm may hold
/// spaces and parentheses, so fields are counted from the last ')'. utime and stime are fields
/// 14 and 15, the 12th and 13th after it.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(id: u32, name: &str, ticks: u64) -> Thread {
        Thread {
            id,
            name: name.into(),
            ticks,
        }
    }

    fn by_name(totals: [u64; GROUPS.len()]) -> HashMap<&'static str, u64> {
        GROUPS.iter().copied().zip(totals).collect()
    }

    #[test]
    fn threads_are_grouped_by_name() {
        for (name, g) in [
            ("tokio-rt-worker", "tokio"),
            ("claimledger-wri", "writer"),
            ("claimledger-che", "checkpoint_file"),
            ("thrd-tantivy-in", "index"),
            ("merge_thread_0", "index"),
            ("segment_updater", "index"),
            ("sled-io-3", "sled"),
            ("log flusher", "sled"),
            ("claimledger", "other"),
            ("claimledger-ver", "other"),
        ] {
            assert_eq!(GROUPS[group(name)], g, "{name}");
        }
    }

    /// A group's total only grows, though its threads end and others start; the time a thread
    /// used between the last reading and its end is `ended`'s; the groups add up to the
    /// process's time.
    #[test]
    fn time_is_kept_when_threads_end() {
        let mut cpu = ThreadCpu::default();
        let first = [
            thread(1, "tokio-rt-worker", 10),
            thread(2, "claimledger-wri", 5),
            thread(3, "thrd-tantivy-in", 4),
        ];
        let t = by_name(cpu.update(&first, 20));
        assert_eq!(
            (t["tokio"], t["writer"], t["index"], t["ended"]),
            (10, 5, 4, 1)
        );
        // Thread 3 ended (after 2 more ticks); thread 4 started and used 3.
        let second = [
            thread(1, "tokio-rt-worker", 15),
            thread(2, "claimledger-wri", 5),
            thread(4, "thrd-tantivy-in", 3),
        ];
        let t = by_name(cpu.update(&second, 30));
        assert_eq!(
            (t["tokio"], t["writer"], t["index"], t["ended"]),
            (15, 5, 7, 3)
        );
        assert_eq!(t.values().sum::<u64>(), 30);
        // Thread 1's id reused by a new thread with fewer ticks: its whole life is counted.
        let third = [
            thread(1, "claimledger-wri", 2),
            thread(2, "claimledger-wri", 5),
        ];
        let t = by_name(cpu.update(&third, 33));
        assert_eq!((t["tokio"], t["writer"], t["index"]), (15, 7, 7));
        assert_eq!(t["ended"], 4);
    }

    #[test]
    fn a_stat_line_gives_its_name_and_ticks() {
        let stat = "42 (sled-io-1) S 1 1 1 0 -1 4194368 10 0 0 0 7 3 0 0 20 0 9 0 100";
        assert_eq!(parse_stat(stat), Some(("sled-io-1".into(), 10)));
        // A name with a space and a parenthesis.
        let stat = "43 (a (b) c) R 1 1 1 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 5";
        assert_eq!(parse_stat(stat), Some(("a (b) c".into(), 3)));
        assert_eq!(parse_stat("44 (x) S 1"), None);
    }
}
