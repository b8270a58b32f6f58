//! The web explorer (SPEC §9) against a real server loaded with the demo data: every page's
//! HTML and JSON twin, escaping, 404s and 400s, and then a real browser (Debian's headless
//! Chromium) that loads the dashboard, searches "drones", follows the search result to the
//! drone claim, sees its status and trace, and sees the page's own script verify the
//! claim's inclusion proofs, and then, with the server serving an altered proof (the
//! `Ctx::alter_page_proofs` hook), sees the page say the check failed. Screenshots go to
//! `$CARGO_TARGET_DIR/test-artifacts/` (`target/test-artifacts/` when unset). Each test runs
//! on sled and on PostgreSQL (`NAME::sled`, `NAME::postgres`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use claimledger::pb;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;

/// A server like `TestServer`, keeping its `Ctx` so the test can turn the page hook on.
struct PagesServer {
    addr: SocketAddr,
    ctx: claimledger::api::Ctx,
    _shutdown: oneshot::Sender<()>,
}

impl PagesServer {
    async fn start(dir: &Path) -> PagesServer {
        let log = claimledger::log::Log::open(
            dir,
            log_options(dir),
            Arc::new(claimledger::ledger::LedgerApply),
        )
        .expect("open the log");
        let ctx = claimledger::api::Ctx::open(log).expect("open the query index");
        let (listener, addr) = claimledger::api::server::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(claimledger::api::server::serve(
            ctx.clone(),
            listener,
            claimledger::api::auth::Auth::default(),
            async move {
                let _ = rx.await;
            },
        ));
        PagesServer {
            addr,
            ctx,
            _shutdown: tx,
        }
    }

    async fn clients(&self) -> Clients {
        let ch = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the test server");
        Clients {
            sources: pb::source_service_client::SourceServiceClient::new(ch.clone()),
            claims: pb::claim_service_client::ClaimServiceClient::new(ch.clone()),
            log: pb::log_service_client::LogServiceClient::new(ch),
        }
    }
}

/// The demo data loaded, the index caught up with it, and the drone claim's id.
async fn loaded(server: &PagesServer) -> (Clients, Imported, String) {
    let mut c = server.clients().await;
    let imported = import_article(&mut c).await;
    let size = c.size().await;
    c.claims
        .list_claims(pb::ListClaimsRequest {
            min_size: size,
            ..Default::default()
        })
        .await
        .expect("the query index reaches the log's size");
    let drone = imported.claim("claim-drones-35").to_string();
    (c, imported, drone)
}

fn json_of(a: &HttpAnswer) -> Value {
    assert!(
        a.header("content-type").starts_with("application/json"),
        "a JSON answer, got {}",
        a.header("content-type")
    );
    serde_json::from_slice(&a.body).expect("the body is JSON")
}

/// The HTML of a page that must be there, with `&#x2f;` read as `/` (minijinja escapes the
/// slashes of every value it puts into a page, links included).
async fn get_ok(addr: SocketAddr, path: &str) -> String {
    let a = http_get(addr, path).await;
    assert_eq!(a.status, 200, "GET {path}: {}", a.text());
    assert!(
        a.header("content-type").starts_with("text/html"),
        "GET {path} is HTML"
    );
    a.text().replace("&#x2f;", "/")
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let a = http_get(addr, path).await;
    assert_eq!(a.status, 200, "GET {path}: {}", a.text());
    json_of(&a)
}

/// Every stylesheet and script the page loads comes from this server.
fn assert_no_other_host(path: &str, html: &str) {
    for attr in ["src=\"", "<link rel=\"stylesheet\" href=\""] {
        for (at, _) in html.match_indices(attr) {
            let rest = &html[at + attr.len()..];
            assert!(
                rest.starts_with('/') && !rest.starts_with("//"),
                "{path} loads {} from another host",
                &rest[..rest.len().min(60)]
            );
        }
    }
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_html_json_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = PagesServer::start(dir.path()).await;
    let (mut c, imported, drone) = loaded(&server).await;
    let addr = server.addr;
    let size = c.size().await;

    // The dashboard and its twin.
    let html = get_ok(addr, "/").await;
    assert!(html.contains("Latest checkpoint"), "{html}");
    assert!(html.contains(&format!("<div class=\"big\">{size}</div>")));
    assert_no_other_host("/", &html);
    let dash = get_json(addr, "/index.json").await;
    assert_eq!(dash["size"], size);
    assert_eq!(dash["checkpoint"]["size"], size);
    let claims_total = dash["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c["count"].as_u64().expect("a count"))
        .sum::<u64>();
    assert_eq!(claims_total, imported.claims.len() as u64);
    assert_eq!(dash["claims"], claims_total);
    assert_eq!(dash["recent"].as_array().expect("recent").len(), 10);
    assert_eq!(dash["recent"][0]["index"], size - 1, "newest first");
    let by_accept = http_get_with(addr, "/", &[("accept", "application/json")]).await;
    assert_eq!(json_of(&by_accept)["size"], size);

    // Search: the same claims as ListClaims, with links to them.
    let grpc: Vec<String> = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            query: "drones".into(),
            ..Default::default()
        })
        .await
        .expect("ListClaims")
        .into_inner()
        .claims
        .into_iter()
        .map(|i| i.claim.expect("claim").id)
        .collect();
    assert!(grpc.contains(&drone));
    let found = get_json(addr, "/claims.json?q=drones").await;
    let ids: Vec<String> = found["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, grpc, "the page finds what ListClaims finds");
    let html = get_ok(addr, "/claims?q=drones").await;
    assert!(
        html.contains(&format!("href=\"/claims/{drone}\"")),
        "{html}"
    );
    let filtered = get_json(addr, "/claims.json?kind=interception&status=claimed").await;
    for c in filtered["claims"].as_array().expect("claims") {
        assert_eq!(c["kind"], "interception");
        assert_eq!(c["status"], "claimed");
    }
    assert!(filtered["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .any(|c| c["id"] == drone.as_str()));
    // Pagination: with every claim listed 20 a page, the next link leads to the rest.
    let first = get_json(addr, "/claims.json").await;
    let next = first["next"].as_str().map(str::to_string);
    let total = imported.claims.len();
    if total > 20 {
        let next = next.expect("a next page link");
        let path = next.replacen("/claims?", "/claims.json?", 1);
        let second = get_json(addr, &path).await;
        assert_eq!(
            first["claims"].as_array().expect("claims").len()
                + second["claims"].as_array().expect("claims").len(),
            total.min(40)
        );
    } else {
        assert!(next.is_none());
    }

    // The claim page and its twin agree with GetClaimStatus, now and as of an earlier size.
    let page = get_json(addr, &format!("/claims/{drone}.json")).await;
    let st = c.status(&drone).await;
    assert_eq!(page["status"]["confirmed"], st.confirmed);
    assert_eq!(
        page["status"]["effective"].as_str().expect("effective"),
        status_of(&st).as_str_name()["STATUS_".len()..].to_lowercase()
    );
    assert_eq!(
        page["trace"].as_array().expect("trace").len(),
        st.trace.len()
    );
    assert_eq!(page["as_of_size"], size);
    let rec = c.record(&drone).await;
    assert_eq!(
        page["proofs"]["entries"].as_array().expect("entries").len(),
        rec.entry_indexes.len()
    );
    let html = get_ok(addr, &format!("/claims/{drone}")).await;
    assert!(html.contains("not confirmed"), "{html}");
    assert!(html.contains("did not count"), "{html}");
    assert!(html.contains("<svg class=\"timeline\""), "{html}");
    assert_no_other_host("/claims/…", &html);
    let claim_index = rec.claim.as_ref().expect("claim").index;
    let early = get_json(
        addr,
        &format!("/claims/{drone}.json?as_of={}", claim_index + 1),
    )
    .await;
    let st_early = c.status_at(&drone, claim_index + 1).await;
    assert_eq!(early["as_of_size"], claim_index + 1);
    assert_eq!(early["is_latest"], false);
    assert_eq!(
        early["status"]["computed"].as_str().expect("computed"),
        computed_of(&st_early).as_str_name()["STATUS_".len()..].to_lowercase()
    );
    assert_eq!(
        early["proofs"]["entries"]
            .as_array()
            .expect("entries")
            .len(),
        1,
        "only the claim's own entry at that size"
    );

    // Sources with their grade history.
    let reuters = get_json(addr, "/sources/reuters.json").await;
    let grpc_src = c
        .sources
        .get_source(pb::GetSourceRequest {
            id: "reuters".into(),
        })
        .await
        .expect("GetSource")
        .into_inner();
    assert_eq!(reuters["name"], "Reuters");
    assert_eq!(
        reuters["grades"].as_array().expect("grades").len(),
        grpc_src.grades.len()
    );
    assert!(get_ok(addr, "/sources/reuters")
        .await
        .contains("Grade history"));

    // Entries, decoded, with leaf hashes an auditor computes the same way.
    let entries = get_json(addr, "/entries.json?start=0").await;
    let mut stream = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 0, end: 3 })
        .await
        .expect("GetEntries")
        .into_inner();
    let mut i = 0;
    while let Some(e) = stream.next().await {
        let e = e.expect("an entry");
        let leaf = Sha256::new()
            .chain_update([0u8])
            .chain_update(&e.data)
            .finalize();
        let shown = &entries["entries"][i];
        assert_eq!(shown["index"], e.index);
        assert_eq!(
            shown["leaf_hash"].as_str().expect("leaf hash"),
            leaf.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        assert!(
            shown["entry"]["body"]["sourceRegistered"].is_object()
                || shown["entry"]["body"]["source_registered"].is_object(),
            "entry {i} decodes to its change: {}",
            shown["entry"]
        );
        i += 1;
    }
    assert_eq!(i, 3);
    assert!(get_ok(addr, "/entries").await.contains("leaf hash"));

    // Static files are ours.
    let js = http_get(addr, "/static/explorer.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").starts_with("text/javascript"));
    assert_eq!(http_get(addr, "/static/nothing.js").await.status, 404);

    // A claim whose text is markup shows as text.
    let evil = c
        .submit(
            "evil-markup",
            pb::Claim {
                text: "<script>alert(1)</script> and \"quotes\" & <b>tags</b>".into(),
                ..claim(
                    pb::ClaimKind::Statement,
                    "ru-mod",
                    "<script>document.title='pwned'</script> markup claim",
                )
            },
        )
        .await
        .claim
        .expect("claim")
        .id;
    let size = c.size().await;
    c.claims
        .list_claims(pb::ListClaimsRequest {
            min_size: size,
            ..Default::default()
        })
        .await
        .expect("indexed");
    let html = get_ok(addr, &format!("/claims/{evil}")).await;
    assert!(!html.contains("<script>alert(1)</script>"), "{html}");
    assert!(!html.contains("<b>tags</b>"));
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    let list = get_ok(addr, "/claims?q=markup").await;
    assert!(list.contains(&format!("href=\"/claims/{evil}\"")), "{list}");
    assert!(!list.contains("<script>document.title"), "{list}");
    // Markup in a query parameter is echoed as text too.
    let echoed = get_ok(addr, "/claims?place=%3Cb%3Ebold").await;
    assert!(echoed.contains("value=\"&lt;b&gt;bold\""), "{echoed}");
    assert!(!echoed.contains("<b>bold"), "{echoed}");
    // … and in the reason of a 400.
    let refused = http_get(addr, "/claims?kind=%3Cscript%3Ex%3C%2Fscript%3E").await;
    assert_eq!(refused.status, 400);
    assert!(!refused.text().contains("<script>x"), "{}", refused.text());
    assert!(
        refused.text().contains("&lt;script&gt;x"),
        "{}",
        refused.text()
    );

    // Unknown ids: 404 pages and JSON.
    for path in [
        "/claims/c-0000000000000000",
        "/claims/not!an!id",
        "/sources/nobody-here",
        "/sources/Not_A_Slug",
    ] {
        let a = http_get(addr, path).await;
        assert_eq!(a.status, 404, "GET {path}: {}", a.text());
        assert!(a.header("content-type").starts_with("text/html"));
        assert!(a.text().contains("id=\"error-message\""), "{}", a.text());
    }
    let a = http_get(addr, "/claims/c-0000000000000000.json").await;
    assert_eq!(a.status, 404);
    assert!(json_of(&a)["error"]
        .as_str()
        .expect("error")
        .contains("c-0000000000000000"));

    // Bad parameters: 400 with the reason.
    for (path, reason) in [
        ("/claims?kind=banana", "kind"),
        ("/claims?status=maybe", "status"),
        ("/claims?from=yesterday", "from"),
        ("/claims?bogus=1", "bogus"),
        ("/claims?page=not-a-token", "page_token"),
        ("/claims?q=drones&q=again", "more than once"),
        ("/entries?start=minus", "start"),
        ("/entries?start=999999", "beyond"),
    ] {
        let a = http_get(addr, path).await;
        assert_eq!(a.status, 400, "GET {path}: {}", a.text());
        assert!(a.text().contains(reason), "GET {path}: {}", a.text());
    }
    for (q, reason) in [
        ("as_of=soon", "as_of"),
        ("as_of=0", "as_of"),
        ("as_of=99999999", "beyond"),
    ] {
        let path = format!("/claims/{drone}.json?{q}");
        let a = http_get(addr, &path).await;
        assert_eq!(a.status, 400, "GET {path}: {}", a.text());
        let body = json_of(&a);
        assert!(
            body["error"].as_str().expect("error").contains(reason),
            "GET {path}: {body}"
        );
    }
    // A size before the claim existed: the claim was not there then.
    let a = http_get(addr, &format!("/claims/{drone}?as_of=1")).await;
    assert_eq!(a.status, 404, "{}", a.text());
}
}

// ---------------------------------------------------------------------------------------------
// The real browser
// ---------------------------------------------------------------------------------------------

const CHROMIUM: &str = "/usr/bin/chromium";

/// Where screenshots go: `$CARGO_TARGET_DIR/test-artifacts`, else `target/test-artifacts`.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

/// Headless Chromium with a fresh profile, run to completion (at most 120 s).
async fn chromium(profile: &Path, args: Vec<String>) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser test needs Debian's chromium \
         (apt-get install -y chromium; .ci/run installs it)"
    );
    let profile = profile.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(CHROMIUM);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(&args);
        run_bounded(&mut cmd, Duration::from_secs(120))
    })
    .await
    .expect("the chromium task");
    assert!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        out.stderr
    );
    out.stdout
}

/// The DOM of `url` after the page's scripts ran.
async fn dom(profile: &Path, url: &str) -> String {
    chromium(profile, vec!["--dump-dom".into(), url.into()]).await
}

/// Saves a screenshot of `url` as `STORE-NAME` (the store of the running test: the sled and
/// PostgreSQL runs of a test run side by side).
async fn screenshot(profile: &Path, url: &str, name: &str) -> PathBuf {
    let store = match current_store() {
        Store::Sled => "sled",
        Store::Postgres => "postgres",
    };
    let path = artifacts().join(format!("{store}-{name}"));
    let _ = std::fs::remove_file(&path);
    chromium(
        profile,
        vec![
            format!("--screenshot={}", path.display()),
            "--window-size=1280,2200".into(),
            url.into(),
        ],
    )
    .await;
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG"), "{} is a PNG", path.display());
    path
}

/// The element with `id` in a dumped DOM: its text (tags dropped) and its `data-result`.
fn element(dom: &str, id: &str) -> (String, String) {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in:\n{dom}"));
    let start = dom[..at].rfind('<').expect("the tag starts");
    let name: String = dom[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let open_end = at + dom[at..].find('>').expect("the tag ends");
    let result = dom[start..open_end]
        .split("data-result=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    // The matching end tag, counting nested elements of the same name.
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut depth = 1;
    let mut i = open_end + 1;
    let end = loop {
        let next_close = dom[i..].find(&close).map(|n| n + i).expect("an end tag");
        match dom[i..].find(&open).map(|n| n + i) {
            Some(o) if o < next_close => {
                depth += 1;
                i = o + open.len();
            }
            _ => {
                depth -= 1;
                if depth == 0 {
                    break next_close;
                }
                i = next_close + close.len();
            }
        }
    };
    let mut text = String::new();
    let mut in_tag = false;
    for ch in dom[open_end + 1..end].chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    (
        text.split_whitespace().collect::<Vec<_>>().join(" "),
        result,
    )
}

/// The link of the search result whose text contains `needle`.
fn result_link(dom: &str, needle: &str) -> String {
    for (at, _) in dom.match_indices("class=\"claim-link\" href=\"") {
        let rest = &dom[at + "class=\"claim-link\" href=\"".len()..];
        let href = rest.split('"').next().expect("href");
        let text = rest
            .split_once('>')
            .and_then(|(_, t)| t.split("</a>").next())
            .unwrap_or_default();
        if text.contains(needle) {
            return href.to_string();
        }
    }
    panic!("no search result about {needle:?} in:\n{dom}");
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_checks_the_proofs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = tempfile::tempdir().expect("a browser profile");
    let server = PagesServer::start(dir.path()).await;
    let (mut c, _imported, drone) = loaded(&server).await;
    let size = c.size().await;
    let base = format!("http://{}", server.addr);

    // The dashboard.
    let dash = dom(profile.path(), &format!("{base}/")).await;
    assert!(dash.contains("Latest checkpoint"), "{dash}");
    assert!(
        dash.contains(&format!("<div class=\"big\">{size}</div>")),
        "{dash}"
    );
    screenshot(profile.path(), &format!("{base}/"), "pages-dashboard.png").await;

    // Search "drones" and take the drone claim's link from the results.
    let results = dom(profile.path(), &format!("{base}/claims?q=drones")).await;
    let link = result_link(&results, "35 Ukrainian drones");
    assert_eq!(link, format!("/claims/{drone}"));
    screenshot(
        profile.path(),
        &format!("{base}/claims?q=drones"),
        "pages-search.png",
    )
    .await;

    // The claim page: status, trace, and the page's own proof check.
    let url = format!("{base}{link}");
    let page = dom(profile.path(), &url).await;
    let (confirmed, _) = element(&page, "confirmed");
    assert!(confirmed.contains("not confirmed"), "{confirmed}");
    let (status, _) = element(&page, "status");
    assert!(status.contains("claimed"), "{status}");
    let (trace, _) = element(&page, "trace");
    assert!(trace.contains("did not count"), "{trace}");
    let (summary, result) = element(&page, "proof-summary");
    assert_eq!(result, "ok", "the page's check: {summary}");
    assert!(
        summary.contains("Inclusion proofs verified in your browser")
            && summary.contains("SHA-256 by WebCrypto"),
        "{summary}"
    );
    let rec = c.record(&drone).await;
    for index in &rec.entry_indexes {
        let (cell, result) = element(&page, &format!("proof-{index}"));
        assert_eq!(result, "ok", "entry {index}: {cell}");
    }
    let (sig, sig_result) = element(&page, "signature-check");
    assert!(
        sig_result == "ok" || (sig_result == "unchecked" && sig.contains("no Ed25519")),
        "the signature check says what it did: {sig_result}: {sig}"
    );
    eprintln!("browser: {summary}\nbrowser: {sig}");
    let shot = screenshot(profile.path(), &url, "pages-claim.png").await;
    eprintln!("screenshot: {}", shot.display());

    // The same check with the page's own SHA-256 (what a browser without WebCrypto uses).
    let own = dom(profile.path(), &format!("{url}#own-sha256")).await;
    let (summary, result) = element(&own, "proof-summary");
    assert_eq!(result, "ok", "with the page's own SHA-256: {summary}");
    assert!(summary.contains("this page's own code"), "{summary}");

    // As of an earlier size: the page checks against that size's signed checkpoint.
    let claim_index = rec.claim.as_ref().expect("claim").index;
    let early = dom(profile.path(), &format!("{url}?as_of={}", claim_index + 1)).await;
    let (summary, result) = element(&early, "proof-summary");
    assert_eq!(result, "ok", "as of size {}: {summary}", claim_index + 1);
    assert!(
        summary.contains(&format!(
            "this claim's one entry is in the log of size {}",
            claim_index + 1
        )),
        "{summary}"
    );

    // An altered proof: the page must say the check failed.
    server.ctx.alter_page_proofs.store(true, Ordering::Relaxed);
    let bad = dom(profile.path(), &url).await;
    let (summary, result) = element(&bad, "proof-summary");
    assert_eq!(result, "failed", "with an altered proof: {summary}");
    assert!(
        summary.contains("Inclusion proof check FAILED"),
        "{summary}"
    );
    let failed = rec
        .entry_indexes
        .iter()
        .filter(|i| element(&bad, &format!("proof-{i}")).1 == "failed")
        .count();
    assert!(failed >= 1, "at least the altered entry fails");
    let own_bad = dom(profile.path(), &format!("{url}#own-sha256")).await;
    assert_eq!(element(&own_bad, "proof-summary").1, "failed");
    screenshot(profile.path(), &url, "pages-claim-altered-proof.png").await;
    eprintln!("browser, altered proof: {summary}");
    server.ctx.alter_page_proofs.store(false, Ordering::Relaxed);
}
}
