//! The C2SP tlog-tiles endpoints (`/checkpoint`, `/tile/…`), read by a client written here from
//! the spec (<https://c2sp.org/tlog-tiles>), not from the server's code: it rebuilds the tree's
//! root from tiles at several sizes, full and partial, and checks it against checkpoints the
//! log signed; entry bundles decode to the bytes GetEntries serves. Also: gRPC and HTTP on one
//! port, the maximum entry size the bundles impose, bad paths, and health endpoints.

mod common;

use std::net::SocketAddr;

use claimledger::pb;
use common::*;
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;
use tonic::Code;

type H = [u8; 32];

/// A tile's path as the spec spells it: N in groups of three digits, all but the last with
/// an `x`, and `.p/W` for a partial tile.
fn tile_path(level: &str, n: u64, width: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    let mut p = format!("/tile/{level}/{}", groups.join("/"));
    if width < 256 {
        p += &format!(".p/{width}");
    }
    p
}

fn leaf(entry: &[u8]) -> H {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(entry)
        .finalize()
        .into()
}

fn node(l: &H, r: &H) -> H {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}

/// RFC 6962's MTH over leaves `[lo, hi)`, taking a whole aligned run of 256 leaves from the
/// level-1 tile's hashes when there is one.
fn mth(leaves: &[H], level1: &[H], lo: usize, hi: usize) -> H {
    let n = hi - lo;
    if n == 1 {
        return leaves[lo];
    }
    if n == 256 && lo % 256 == 0 && lo / 256 < level1.len() {
        return level1[lo / 256];
    }
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    node(
        &mth(leaves, level1, lo, lo + k),
        &mth(leaves, level1, lo + k, hi),
    )
}

async fn get_ok(addr: SocketAddr, path: &str) -> HttpAnswer {
    let a = http_get(addr, path).await;
    assert_eq!(
        a.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&a.body)
    );
    a
}

/// The tiles of one level for a tree of `size` entries at that level: full ones, then the
/// partial one if the size is not a multiple of 256. Checks the caching headers on the way.
async fn level_tiles(addr: SocketAddr, level: &str, size: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let path = tile_path(level, n, width);
        let a = get_ok(addr, &path).await;
        let cache = a.header("cache-control");
        if width == 256 {
            assert!(
                cache.contains("immutable"),
                "{path}: a full tile is immutable: {cache}"
            );
        } else {
            assert!(
                !cache.contains("immutable"),
                "{path}: a partial tile is not: {cache}"
            );
        }
        out.push(a.body);
    }
    out
}

/// The leaf hashes of a tree of `size` entries, from the level-0 tiles.
async fn leaves(addr: SocketAddr, size: u64) -> Vec<H> {
    let mut out = Vec::new();
    for (n, t) in level_tiles(addr, "0", size).await.into_iter().enumerate() {
        let width = (size - n as u64 * 256).min(256) as usize;
        assert_eq!(t.len(), width * 32, "level-0 tile {n} holds {width} hashes");
        out.extend(t.chunks(32).map(|c| H::try_from(c).expect("32 bytes")));
    }
    out
}

/// The entries of a tree of `size` entries, from the entry bundles: each a big-endian u16
/// length and the entry's bytes.
async fn bundle_entries(addr: SocketAddr, size: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (n, b) in level_tiles(addr, "entries", size)
        .await
        .into_iter()
        .enumerate()
    {
        let width = (size - n as u64 * 256).min(256) as usize;
        let mut at = 0;
        let mut got = 0;
        while at < b.len() {
            assert!(at + 2 <= b.len(), "bundle {n}: a length prefix is cut off");
            let len = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
            at += 2;
            assert!(at + len <= b.len(), "bundle {n}: an entry is cut off");
            out.push(b[at..at + len].to_vec());
            at += len;
            got += 1;
        }
        assert_eq!(got, width, "bundle {n} holds {width} entries");
    }
    out
}

/// Rebuilds the root of the tree of `cp`'s size from tiles alone and checks it against the
/// signed checkpoint; returns the entries the bundles hold.
async fn check_size(addr: SocketAddr, note: &str, key: &str) -> Vec<Vec<u8>> {
    let cp = verify_note(note, key);
    let size = cp.size();
    let leaves = leaves(addr, size).await;
    let entries = bundle_entries(addr, size).await;
    assert_eq!(entries.len() as u64, size);
    for (i, (e, h)) in entries.iter().zip(&leaves).enumerate() {
        assert_eq!(
            &leaf(e),
            h,
            "size {size}: entry {i}'s bundle bytes hash to its leaf"
        );
    }
    let level1: Vec<H> = if size >= 256 {
        let tiles = level_tiles(addr, "1", size / 256).await;
        let hashes: Vec<H> = tiles
            .concat()
            .chunks(32)
            .map(|c| H::try_from(c).expect("32 bytes"))
            .collect();
        assert_eq!(
            hashes.len() as u64,
            size / 256,
            "one level-1 hash per full level-0 tile"
        );
        for (k, h) in hashes.iter().enumerate() {
            let run = &leaves[k * 256..(k + 1) * 256];
            assert_eq!(
                h,
                &mth(run, &[], 0, 256),
                "level-1 hash {k} is its tile's root"
            );
        }
        hashes
    } else {
        Vec::new()
    };
    let root = mth(&leaves, &level1, 0, size as usize);
    assert_eq!(
        &root,
        &cp.hash().0,
        "the tiles rebuild the signed root at size {size}"
    );
    entries
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_rebuild_the_signed_tree_at_every_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    let key = c.verifier_key().await;

    // An empty log: a checkpoint of size 0, and no tile yet.
    let a = get_ok(addr, "/checkpoint").await;
    assert_eq!(a.header("cache-control"), "no-store");
    assert!(a.header("content-type").starts_with("text/plain"));
    assert_eq!(verify_note(&a.text(), &key).size(), 0);
    assert_eq!(http_get(addr, "/tile/0/000.p/1").await.status, 404);
    assert_eq!(http_get(addr, "/tile/entries/000.p/1").await.status, 404);

    // 600 entries, one at a time, so every receipt carries the checkpoint of its own size.
    let r = c
        .register(source("t", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let receipt = r.receipt.expect("a receipt");
    let mut notes = vec![(receipt.tree_size, receipt.checkpoint)];
    for i in 0..599 {
        let r = c
            .submit(
                &format!("t-{i}"),
                claim(pb::ClaimKind::Strike, "t", &format!("strike number {i}")),
            )
            .await;
        let receipt = r.receipt.expect("a receipt");
        notes.push((receipt.tree_size, receipt.checkpoint));
    }
    let size = c.size().await;
    assert_eq!(size, 600);

    // Sizes around tile edges and in between, each against the checkpoint signed for it.
    for want in [1u64, 2, 255, 256, 257, 300, 511, 512, 513, 600] {
        let (_, note) = notes
            .iter()
            .find(|(s, _)| *s == want)
            .unwrap_or_else(|| panic!("a receipt of size {want}"));
        check_size(addr, note, &key).await;
    }

    // /checkpoint is the latest checkpoint, the one GetCheckpoint serves.
    let latest = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("GetCheckpoint")
        .into_inner();
    let a = get_ok(addr, "/checkpoint").await;
    assert_eq!(a.text(), latest.note);
    let bundled = check_size(addr, &a.text(), &key).await;

    // The bundles hold exactly the bytes GetEntries serves.
    let mut stream = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 0, end: 0 })
        .await
        .expect("GetEntries")
        .into_inner();
    let mut served = Vec::new();
    while let Some(e) = stream.next().await {
        served.push(e.expect("an entry").data);
    }
    assert_eq!(served, bundled, "entry bundles decode to GetEntries' bytes");

    // A tile beyond the tree, or a partial one wider than the tree has, is not there yet.
    for path in [
        "/tile/0/002.p/89",
        "/tile/0/003",
        "/tile/entries/002",
        "/tile/1/000.p/3",
        "/tile/2/000.p/1",
    ] {
        let a = http_get(addr, path).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text());
    }
    // Narrower partial tiles of full ones are served: a tile at a width is a prefix.
    let full = get_ok(addr, "/tile/0/000").await.body;
    let part = get_ok(addr, "/tile/0/000.p/7").await.body;
    assert_eq!(&full[..7 * 32], &part[..]);

    server.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tile_paths_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    c.register(source("t", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    for path in [
        "/tile/0/0",
        "/tile/0/1",
        "/tile/0/x000/001",
        "/tile/0/001/",
        "/tile/0/x1/001",
        "/tile/0/00a",
        "/tile/0/000.p/0",
        "/tile/0/000.p/256",
        "/tile/0/000.p/01",
        "/tile/0/000.p/",
        "/tile/0/000.p/1/2",
        "/tile/64/000",
        "/tile/-1/000",
        "/tile/256/000",
        "/tile/entries/x999/x999/x999/x999/x999/x999/x999/999",
        "/tile/entries",
        "/tile/data/000",
        "/tile/8/0/000",
    ] {
        let a = http_get(addr, path).await;
        assert_eq!(a.status, 400, "{path}: {}", a.text());
        assert!(a.text().contains("not a tile path"), "{path}: {}", a.text());
    }
    // Nothing was written, and the server still answers.
    assert_eq!(c.size().await, 1);
    assert_eq!(get_ok(addr, "/tile/0/000.p/1").await.body.len(), 32);
    server.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_holds_at_most_what_a_bundle_can() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    c.register(source("t", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;

    // 15,000 four-byte characters: a 60 kB entry, within the limit.
    let mut big = claim(pb::ClaimKind::Strike, "t", "a long claim");
    big.text = "𝄞".repeat(15_000);
    let r = c.submit("big", big).await;
    let index = r.receipt.expect("a receipt").index;

    // 20,000 of them (allowed by the text field's limit of characters): 80 kB, refused.
    let mut huge = claim(pb::ClaimKind::Strike, "t", "a claim too long");
    huge.text = "𝄞".repeat(20_000);
    let before = c.size().await;
    let err = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "huge".into(),
            claim: Some(huge),
        })
        .await
        .expect_err("an entry over 65,535 bytes is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("65535"), "{}", err.message());
    assert_eq!(c.size().await, before, "nothing was written");

    // The big entry travels in its bundle whole.
    let bundle = get_ok(addr, &format!("/tile/entries/000.p/{}", index + 1))
        .await
        .body;
    let mut at = 0;
    let mut last = Vec::new();
    while at < bundle.len() {
        let len = u16::from_be_bytes([bundle[at], bundle[at + 1]]) as usize;
        last = bundle[at + 2..at + 2 + len].to_vec();
        at += 2 + len;
    }
    assert!(last.len() > 60_000, "the big entry is {} bytes", last.len());
    assert_eq!(
        hash(&leaf(&last)),
        hash(&r_leaf(&mut c, index).await),
        "the bundle holds the entry's exact bytes"
    );
    server.stop().await;
}
}

async fn r_leaf(c: &mut Clients, index: u64) -> Vec<u8> {
    let mut s = c
        .log
        .get_entries(pb::GetEntriesRequest {
            start: index,
            end: index + 1,
        })
        .await
        .expect("GetEntries")
        .into_inner();
    s.next()
        .await
        .expect("one entry")
        .expect("an entry")
        .leaf_hash
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_share_the_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path()).await;
    let addr = server.addr;
    let mut c = server.clients().await;
    // gRPC works (the clients above), and so does plain HTTP/1.1 on the same address.
    assert_eq!(c.size().await, 0);
    let a = get_ok(addr, "/healthz").await;
    assert_eq!(a.text(), "ok\n");
    let a = get_ok(addr, "/readyz").await;
    assert_eq!(a.text(), "ready\n");
    // Unknown paths are 404 for people, UNIMPLEMENTED for gRPC clients.
    let a = http_get(addr, "/no/such/page").await;
    assert_eq!(a.status, 404);
    let a = http_get_with(
        addr,
        "/claimledger.v1.ClaimService/NoSuchMethod",
        &[("content-type", "application/grpc")],
    )
    .await;
    assert_eq!(
        a.header("grpc-status"),
        (Code::Unimplemented as i32).to_string()
    );
    server.stop().await;

    // With tokens: reads stay open to callers without one; an unknown or malformed token is
    // refused in HTTP's terms, not with a gRPC status.
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = token_auth(&[("reader-token-0123456789", "alice", "submitter", &[])]);
    let server = TestServer::start_with_auth(dir.path(), auth).await;
    let addr = server.addr;
    assert_eq!(get_ok(addr, "/checkpoint").await.status, 200);
    let ok = http_get_with(
        addr,
        "/checkpoint",
        &[("authorization", "Bearer reader-token-0123456789")],
    )
    .await;
    assert_eq!(ok.status, 200);
    for bad in ["Bearer not-a-known-token", "Basic abc"] {
        let a = http_get_with(addr, "/checkpoint", &[("authorization", bad)]).await;
        assert_eq!(a.status, 401, "{bad}: {}", a.text());
        assert!(a.header("grpc-status").is_empty());
    }
    server.stop().await;
}
}

both_stores! {
/// The HTTP reads use the gRPC port's TLS: over TLS (HTTP/2 by ALPN) `/checkpoint` answers;
/// plaintext HTTP to the same port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reads_share_the_grpc_tls() {
    use http_body_util::BodyExt;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
    use tower::ServiceExt;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("a self-signed CA");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("a server certificate");

    let dir = tempfile::tempdir().expect("tempdir");
    let log = claimledger::log::Log::open(
        dir.path(),
        claimledger::log::Options::default(),
        std::sync::Arc::new(claimledger::ledger::LedgerApply),
    )
    .expect("open the log");
    let ctx = claimledger::api::Ctx::open(log).expect("open the query index");
    let (listener, addr) = claimledger::api::server::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = claimledger::api::server::Config {
        tls: Some(
            ServerTlsConfig::new().identity(Identity::from_pem(cert.pem(), key.serialize_pem())),
        ),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(claimledger::api::server::serve(
        ctx,
        listener,
        config,
        async move {
            let _ = rx.await;
        },
    ));

    let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())))
        .expect("client TLS")
        .connect()
        .await
        .expect("a TLS connection");
    let req = http::Request::get(format!("https://{addr}/checkpoint"))
        .body(tonic::body::Body::empty())
        .expect("a request");
    let resp = channel
        .oneshot(req)
        .await
        .expect("GET /checkpoint over TLS");
    assert_eq!(resp.status(), 200);
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    let note = String::from_utf8(body.to_vec()).expect("text");
    assert!(note.starts_with("claimledger.example/log\n0\n"), "{note}");

    // Plaintext HTTP/1.1 to the TLS port: no answer.
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let got = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        plain.get(format!("http://{addr}/checkpoint").parse().expect("uri")),
    )
    .await
    .expect("refused within 15 s");
    assert!(got.is_err(), "plaintext HTTP to a TLS port is not served");

    let _ = tx.send(());
    server.await.expect("join").expect("clean shutdown");
}
}
