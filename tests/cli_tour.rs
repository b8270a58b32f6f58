//! The README's tour, run through the real `claimledger` binary: serve on a loopback port over a
//! temp data dir, import the article, ask about the drone claim, add evidence until it is
//! confirmed, fetch and verify proofs, audit on the server, stop with SIGTERM, audit offline,
//! rebuild the indexes with `reindex`, and find the same answers after a restart.
//!
//! Again with `serve --store postgres://…` on the test process's own PostgreSQL: the same tour,
//! where the offline audit and `reindex` (sled's) give way to a restart with the query index
//! deleted, rebuilt from the log in the database.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::BIN;
/// The drone claim's id: derived from the import file's request id, so stable everywhere.
const DRONES: &str = "c-3658ce8b22ece3b3";

struct Server {
    child: Child,
    url: String,
}

impl Server {
    /// `serve` on `dir`, with the log in `store` (`None`: sled in `dir`).
    fn start(dir: &Path, store: Option<&str>) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(store.map(|s| ["--store", s]).into_iter().flatten())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start claimledger serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .expect("read serve's stderr");
            if let Some(a) = line.strip_prefix("claimledger listening on http://") {
                break a.trim().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            url: format!("http://{addr}"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args(args)
            .args(["--server", &self.url])
            .output()
            .expect("run the client");
        assert!(
            out.status.success(),
            "claimledger {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM, then wait: the server drains and exits on its own.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let status = self.child.wait().expect("wait for serve");
        assert!(status.success(), "serve exited with {status}");
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn offline(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run offline command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn readme_tour_through_the_binary() {
    tour(None);
}

#[test]
fn readme_tour_through_the_binary_on_postgres() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let url = common::pg::cluster()
        .and_then(|c| c.database_for(tmp.path()))
        .unwrap_or_else(|e| panic!("the test PostgreSQL: {e}"));
    tour(Some(&url));
}

fn tour(store: Option<&str>) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let article = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/article.jsonl");

    let server = Server::start(&dir, store);
    let imported = server.run(&["import", article]);
    assert!(imported.contains("8 claims"), "{imported}");
    assert!(imported.contains(DRONES), "{imported}");
    // Importing again is idempotent: same ids, nothing new written.
    let size = |s: &Server| json(&s.run(&["log", "checkpoint", "--json"]))["size"].clone();
    let before = size(&server);
    server.run(&["import", article]);
    assert_eq!(size(&server), before);

    let status = server.run(&["claim", "status", DRONES]);
    assert!(status.contains("CLAIMED — not confirmed"), "{status}");
    assert!(status.contains("no_comment:UA"), "{status}");

    server.run(&[
        "claim",
        "evidence",
        DRONES,
        "--source",
        "reuters",
        "--stance",
        "supports",
        "--kind",
        "media-report",
        "--credibility",
        "2",
    ]);
    let status = json(&server.run(&["claim", "status", DRONES, "--json"]));
    assert_eq!(status["status"], "STATUS_CORROBORATED");
    server.run(&[
        "claim",
        "evidence",
        DRONES,
        "--source",
        "isw",
        "--stance",
        "supports",
        "--kind",
        "osint-analysis",
        "--credibility",
        "2",
        "--quantity",
        r#"{"measure":"destroyed","unit":"drones","qualifier":"QUALIFIER_EXACT","best":35}"#,
    ]);
    // `--proof` makes the CLI verify every proof against the signed checkpoint itself.
    let status = server.run(&["claim", "status", DRONES, "--proof"]);
    assert!(status.contains("CONFIRMED — confirmed"), "{status}");
    assert!(
        status.contains("proofs verified against the signed checkpoint"),
        "{status}"
    );

    assert!(server
        .run(&["log", "proof", "--index", "3"])
        .contains("verified"));
    assert!(server
        .run(&["log", "consistency", "10"])
        .contains("verified"));
    let audit = server.run(&["log", "verify"]);
    assert!(audit.starts_with("ok: "), "{audit}");
    let listed = server.run(&["claim", "list", "--status", "confirmed", "--json"]);
    let confirmed = json(&listed)["claims"].as_array().map_or(0, Vec::len);
    assert_eq!(confirmed, 2, "{listed}");
    server.stop();

    if store.is_none() {
        let (ok, out) = offline(&["verify"], &dir);
        assert!(ok && out.starts_with("ok: "), "{out}");
        let (ok, out) = offline(&["reindex"], &dir);
        assert!(ok, "{out}");
    } else {
        // The offline audit is sled's; it says where a PostgreSQL log is audited.
        let out = Command::new(BIN)
            .args(["verify", "--data-dir"])
            .arg(&dir)
            .output()
            .expect("run verify");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("log verify --server"),
            "{err}"
        );
        // The query index is derived: without it, `serve` rebuilds it from the log.
        std::fs::remove_dir_all(dir.join("index")).expect("delete the query index");
    }

    // After rebuilding the indexes from the log, the answers are the same.
    let server = Server::start(&dir, store);
    let again = server.run(&["claim", "list", "--status", "confirmed", "--json"]);
    assert_eq!(json(&again), json(&listed));
    let status = json(&server.run(&["claim", "status", DRONES, "--json"]));
    assert_eq!(status["status"], "STATUS_CONFIRMED");
    assert_eq!(status["confirmed"], true);
    server.stop();
}
