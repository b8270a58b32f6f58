//! `serve --config FILE` and `--log-format json`, through the real binary: the file's settings
//! are used, a flag on the command line overrides them, a mistake in the file is named, and
//! log lines come out as JSON objects.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `claimledger ARGS…` with `env`, waits for its listening line, and returns the
/// process, the address and the stderr lines before that line.
fn start(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("CLAIMLEDGER_DATA_DIR")
        .env_remove("CLAIMLEDGER_ADDR")
        .env_remove("CLAIMLEDGER_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start claimledger");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a closed pipe would make the
        // server's next log line fail.
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("claimledger listening on http://") {
                    return (child, a.trim().to_string(), seen);
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start; stderr:\n{}", seen.join("\n"));
            }
        }
    }
}

fn stop(mut child: std::process::Child) {
    // SIGTERM: a clean shutdown.
    terminate(child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("poll") {
            assert!(s.success(), "serve exited with {s}");
            return;
        }
        assert!(Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn serve_takes_its_settings_from_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("from-file");
    let config = dir.path().join("claimledger.toml");
    std::fs::write(
        &config,
        format!(
            "# a comment\ndata-dir = {:?}\naddr = \"127.0.0.1:0\"\nquick-open = true\n\
             drain-seconds = 1\nmax-streams-per-connection = 8\nlog-format = \"json\"\n",
            data.display().to_string()
        ),
    )
    .expect("write the config");
    let (child, addr, before) = start(
        &["serve", "--config", config.to_str().expect("utf-8")],
        &[("RUST_LOG", "info")],
    );
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(data.join("sled").is_dir(), "the file's data-dir is used");
    // The log lines are JSON objects (the listening and key lines are plain prints).
    let json: Vec<serde_json::Value> = before
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        json.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("config file"))),
        "the start-up says where its settings came from: {before:?}"
    );
    assert!(json.iter().all(|v| v["level"].is_string()));
    stop(child);

    // A flag on the command line wins over the file; so does an environment variable.
    let other = dir.path().join("from-flag");
    let (child, _, _) = start(
        &[
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
            "--data-dir",
            other.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(other.join("sled").is_dir());
    stop(child);
    let env_dir = dir.path().join("from-env");
    let (child, _, lines) = start(
        &["serve", "--config", config.to_str().expect("utf-8")],
        &[
            ("CLAIMLEDGER_DATA_DIR", env_dir.to_str().expect("utf-8")),
            ("CLAIMLEDGER_LOG_FORMAT", "text"),
            ("RUST_LOG", "info"),
        ],
    );
    assert!(env_dir.join("sled").is_dir());
    assert!(
        lines.iter().all(|l| !l.starts_with('{')),
        "the environment's text format wins: {lines:?}"
    );
    stop(child);
}

#[test]
fn mistakes_in_the_file_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    for (text, says) in [
        ("adr = \"127.0.0.1:0\"\n", "unknown setting \"adr\""),
        ("quick-open = \"yes\"\n", "is a switch"),
        ("addr = \n", "not valid TOML"),
        ("max-connections = \"many\"\n", "max-connections"),
    ] {
        std::fs::write(&config, text).expect("write");
        let run = claimledger(["serve", "--config", config.to_str().expect("utf-8")]);
        assert!(!run.status.success(), "{text}: refused");
        assert!(run.stderr.contains(says), "{text}: {}", run.stderr);
    }
    let run = claimledger(["serve", "--config", "/no/such/file.toml"]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("reading the config file"),
        "{}",
        run.stderr
    );
}
