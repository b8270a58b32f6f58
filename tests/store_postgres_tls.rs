//! `serve --store postgres://…` over TLS, with libpq's `sslmode` meanings, against the test
//! process's own PostgreSQL with TLS turned on ([`common::pg::PgCluster::enable_tls`], a
//! certificate for `127.0.0.1` from a CA made here with rcgen). Its `pg_hba.conf` refuses
//! unencrypted TCP connections, and one database (`certdb`) takes only clients with a
//! certificate from that CA for the user `postgres`.
//!
//! 1. `verify-full` with the CA connects, and every connection of the process (the readers and
//!    the sequencer's) is encrypted, as `pg_stat_ssl` shows;
//! 2. what is refused says why: `disable` (the server wants TLS), a CA that did not sign the
//!    server's certificate, `verify-full` to a host name the certificate is not for, a
//!    database that wants a client certificate without one;
//! 3. what libpq accepts, we accept: `verify-ca` to that other host name, `require` with no
//!    CA at all, a Unix-domain socket (never TLS), and the client certificate with
//!    `sslcert`/`sslkey`;
//! 4. processes serving TLS forward writes to the sequencer's `https://` URL, checked with
//!    `--peer-ca`; without it (the platform's roots) a process refuses to forward.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use claimledger::pb;
use common::pg::{cluster, PgCluster};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
};

/// The PEM files the clients use (the server's are in its data directory).
struct Pki {
    /// Kept until the process ends: the files below are in it.
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("a CA")
}

/// Turns TLS on in this process's PostgreSQL, once, and returns it with the clients' files.
fn setup() -> (&'static PgCluster, &'static Pki) {
    static SETUP: OnceLock<Pki> = OnceLock::new();
    let pg = cluster().unwrap_or_else(|e| panic!("PostgreSQL did not start: {e}"));
    let pki = SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            write_private(&path, pem);
            path
        };
        let ca = ca("claimledger test CA");
        let other = ca_pem_only("another CA");
        // For 127.0.0.1 only: `localhost` is another name for it.
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("server params")
            .signed_by(&server_key, &ca)
            .expect("the server's certificate");
        // `cert` authentication takes the user from the certificate's common name.
        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "postgres");
        client_params.distinguished_name = dn;
        let client = client_params
            .signed_by(&client_key, &ca)
            .expect("the client's certificate");
        pg.create_database("certdb").expect("create certdb");
        pg.enable_tls(
            &server.pem(),
            &server_key.serialize_pem(),
            &ca.pem(),
            "local all all trust\n\
             hostssl certdb all 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap_or_else(|e| panic!("TLS in PostgreSQL: {e}"));
        Pki {
            ca: write("ca.pem", &ca.pem()),
            other_ca: write("other-ca.pem", &other),
            client_cert: write("client.pem", &client.pem()),
            client_key: write("client-key.pem", &client_key.serialize_pem()),
            _dir: dir,
        }
    });
    (pg, pki)
}

fn ca_pem_only(name: &str) -> String {
    ca(name).pem()
}

/// `url` with `params` added to its query.
fn with(url: &str, params: &[(&str, &str)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    format!("{url}?{}", query.join("&"))
}

/// A new database and its URL, with the host written as `host`.
fn database(pg: &PgCluster, name: &str, host: &str) -> String {
    pg.create_database(name)
        .unwrap_or_else(|e| panic!("create {name}: {e}"))
        .replace("127.0.0.1", host)
}

/// Runs `serve --store URL` that must refuse to start, and returns what it printed.
fn refused(dir: &Path, store: &str) -> String {
    let done = run_bounded(
        std::process::Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--store", store])
            .env("RUST_LOG", "warn"),
        Duration::from_secs(60),
    );
    assert!(
        !done.status.success(),
        "serve --store {store} started; it should have been refused: {}",
        done.stderr
    );
    done.stderr
}

/// Starts `serve --store URL`, writes through it, and returns it (killed on drop).
async fn serves(dir: &Path, store: &str) -> ServeProcess {
    let args = vec![
        "--addr".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--store".into(),
        store.to_string(),
    ];
    let p = tokio::task::spawn_blocking(move || ServeProcess::start(args))
        .await
        .unwrap_or_else(|e| panic!("serve --store {store} did not start: {e}"));
    let mut c = connect(&p.url).await;
    c.register(source(
        "mod-ua",
        "UA",
        pb::Role::NonParty,
        pb::Reliability::B,
        "mod",
    ))
    .await;
    p
}

/// `(encrypted, unencrypted)` connections of claimledger in `database`.
fn connections(pg: &PgCluster, database: &str) -> (u64, u64) {
    let out = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = '{database}' AND a.application_name LIKE 'claimledger%'"
            ),
        )
        .expect("pg_stat_ssl");
    let (yes, no) = out.split_once('|').expect("two columns");
    (yes.parse().expect("a count"), no.parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_ca_encrypts_every_connection() {
    let (pg, pki) = setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki.ca.display().to_string();
    let url = database(pg, "tls_full", "127.0.0.1");
    let store = with(&url, &[("sslmode", "verify-full"), ("sslrootcert", &ca)]);
    let server = serves(dir.path(), &store).await;
    let (encrypted, plain) = connections(pg, "tls_full");
    // The readers and the sequencer's connection, which holds the lock after the write.
    assert!(
        encrypted >= 2 && plain == 0,
        "{encrypted} encrypted and {plain} unencrypted connections"
    );
    // The write went through the encrypted connections into the database's head.
    let head = pg
        .psql("tls_full", "SELECT count(*) FROM head WHERE tree_size = 1")
        .expect("read the head");
    assert_eq!(head, "1", "the write committed through TLS");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_refused_says_why() {
    let (pg, pki) = setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = pki.ca.display().to_string();
    let other = pki.other_ca.display().to_string();

    // The server takes no unencrypted connection.
    let url = database(pg, "tls_refused", "127.0.0.1");
    let e = refused(dir.path(), &with(&url, &[("sslmode", "disable")]));
    assert!(
        e.contains("pg_hba.conf rejects connection") && e.contains("no encryption"),
        "{e}"
    );
    // A CA that did not sign the server's certificate.
    let e = refused(
        dir.path(),
        &with(&url, &[("sslmode", "verify-full"), ("sslrootcert", &other)]),
    );
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("UnknownIssuer"), "{e}");
    // With a root certificate named, `require` checks the CA too (as libpq).
    let e = refused(
        dir.path(),
        &with(&url, &[("sslmode", "require"), ("sslrootcert", &other)]),
    );
    assert!(e.contains("UnknownIssuer"), "{e}");
    // The certificate is for 127.0.0.1, not for `localhost`.
    let local = database(pg, "tls_refused", "localhost");
    let e = refused(
        dir.path(),
        &with(&local, &[("sslmode", "verify-full"), ("sslrootcert", &ca)]),
    );
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("localhost"), "{e}");
    // A database that wants a client certificate.
    let cert_url = pg.url("certdb");
    let e = refused(
        dir.path(),
        &with(
            &cert_url,
            &[("sslmode", "verify-full"), ("sslrootcert", &ca)],
        ),
    );
    assert!(e.contains("certificate"), "{e}");
    // Nothing was made in the refused database.
    assert_eq!(
        pg.psql(
            "tls_refused",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'head'"
        )
        .expect("list tables"),
        "0"
    );
    // The password never shows, wherever it was written.
    let e = refused(
        dir.path(),
        &format!("{}&password=hunter2", with(&url, &[("sslmode", "disable")])),
    );
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_libpq_accepts_is_accepted() {
    let (pg, pki) = setup();
    let ca = pki.ca.display().to_string();

    // verify-ca: the CA signed it; the name is not checked.
    let dir = tempfile::tempdir().expect("temp dir");
    let local = database(pg, "tls_ca", "localhost");
    let p = serves(
        dir.path(),
        &with(&local, &[("sslmode", "verify-ca"), ("sslrootcert", &ca)]),
    )
    .await;
    let (encrypted, plain) = connections(pg, "tls_ca");
    assert!(encrypted >= 2 && plain == 0, "{encrypted} / {plain}");
    drop(p);

    // require without a root certificate: encrypted, the certificate taken as it is.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = database(pg, "tls_require", "127.0.0.1");
    let p = serves(dir.path(), &with(&url, &[("sslmode", "require")])).await;
    let (encrypted, plain) = connections(pg, "tls_require");
    assert!(encrypted >= 2 && plain == 0, "{encrypted} / {plain}");
    drop(p);

    // The default (prefer) takes TLS when the server offers it.
    let dir = tempfile::tempdir().expect("temp dir");
    let url = database(pg, "tls_prefer", "127.0.0.1");
    let p = serves(dir.path(), &url).await;
    let (encrypted, plain) = connections(pg, "tls_prefer");
    assert!(encrypted >= 2 && plain == 0, "{encrypted} / {plain}");
    drop(p);

    // A Unix-domain socket: never TLS (as libpq), whatever sslmode says.
    let dir = tempfile::tempdir().expect("temp dir");
    pg.create_database("tls_socket").expect("create tls_socket");
    let socket_dir: String =
        form_urlencoded::byte_serialize(pg.dir().display().to_string().as_bytes()).collect();
    let p = serves(
        dir.path(),
        &format!(
            "postgres://postgres@{socket_dir}:{}/tls_socket?sslmode=require",
            pg.port()
        ),
    )
    .await;
    let (encrypted, plain) = connections(pg, "tls_socket");
    assert!(plain >= 2 && encrypted == 0, "{encrypted} / {plain}");
    drop(p);

    // A client certificate for the user, where the database wants one.
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let p = serves(
        dir.path(),
        &with(
            &pg.url("certdb"),
            &[
                ("sslmode", "verify-full"),
                ("sslrootcert", &ca),
                ("sslcert", &cert),
                ("sslkey", &key),
            ],
        ),
    )
    .await;
    let (encrypted, plain) = connections(pg, "certdb");
    assert!(encrypted >= 2 && plain == 0, "{encrypted} / {plain}");
    drop(p);
}

/// A `serve` process with TLS (a certificate for 127.0.0.1 from `ca`) on the log of `store`,
/// with more flags; its data directory gets `key` as its `log.key` if given.
async fn tls_node(
    dir: &Path,
    store: &str,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> ServeProcess {
    let mut args = vec![
        "--addr".to_string(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--store".into(),
        store.to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || ServeProcess::start(args))
        .await
        .expect("serve starts")
}

/// A client of an `https://` server whose certificate `ca` signed.
async fn tls_clients(url: &str, ca: &str) -> Clients {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    let ch = tonic::transport::Channel::from_shared(url.to_string())
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    Clients {
        sources: pb::source_service_client::SourceServiceClient::new(ch.clone()),
        claims: pb::claim_service_client::ClaimServiceClient::new(ch.clone()),
        log: pb::log_service_client::LogServiceClient::new(ch),
    }
}

fn register(id: &str) -> pb::RegisterSourceRequest {
    pb::RegisterSourceRequest {
        request_id: format!("src-{id}"),
        source: Some(source(id, "", pb::Role::NonParty, pb::Reliability::B, "")),
    }
}

/// Processes serving TLS forward writes to the sequencer's `https://` URL, checking its
/// certificate against `--peer-ca`; a process without it (the platform's roots, which do not
/// hold our CA) refuses to forward, saying why, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_forwarded_over_tls_checked_with_the_peer_ca() {
    let (pg, _) = setup();
    let root = tempfile::tempdir().expect("temp dir");
    let peers = ca("claimledger peers CA");
    let key = KeyPair::generate().expect("a key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &peers)
        .expect("a certificate");
    let ca_path = root.path().join("peers-ca.pem");
    std::fs::write(&ca_path, peers.pem()).expect("write the CA");
    let cert_path = root.path().join("node.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
    let key_path = root.path().join("node-key.pem");
    write_private(&key_path, &key.serialize_pem());
    let peer_ca = ca_path.display().to_string();
    let store = database(pg, "tls_forward", "127.0.0.1");

    let a = tls_node(
        &root.path().join("a"),
        &store,
        &cert_path,
        &key_path,
        &["--peer-ca", &peer_ca],
    )
    .await;
    assert!(a.url.starts_with("https://"), "{}", a.url);
    let mut ca_clients = tls_clients(&a.url, &peers.pem()).await;
    ca_clients
        .sources
        .register_source(register("first"))
        .await
        .expect("A takes the lead");
    for name in ["b", "c"] {
        std::fs::create_dir_all(root.path().join(name)).expect("mkdir");
        std::fs::copy(
            root.path().join("a").join("log.key"),
            root.path().join(name).join("log.key"),
        )
        .expect("copy the key");
    }
    let b = tls_node(
        &root.path().join("b"),
        &store,
        &cert_path,
        &key_path,
        &["--peer-ca", &peer_ca],
    )
    .await;
    let c = tls_node(&root.path().join("c"), &store, &cert_path, &key_path, &[]).await;

    let mut cb = tls_clients(&b.url, &peers.pem()).await;
    let r = cb
        .sources
        .register_source(register("via-b"))
        .await
        .expect("B forwards to A over TLS")
        .into_inner();
    let receipt = r.receipt.expect("a receipt");
    assert_eq!(receipt.index, 1);

    let mut cc = tls_clients(&c.url, &peers.pem()).await;
    let e = cc
        .sources
        .register_source(register("via-c"))
        .await
        .expect_err("C cannot check A's certificate");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("cannot be reached"), "{e:?}");
    assert!(e.message().contains("UnknownIssuer"), "{e:?}");
    assert_eq!(
        pg.psql("tls_forward", "SELECT tree_size FROM head")
            .expect("the head"),
        "2",
        "C's write was not appended"
    );
    drop((a, b, c));
}
