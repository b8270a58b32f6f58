//! The CLI over TLS: the real `claimledger` binary against in-process servers that serve the log
//! service with certificates from a test CA (made with rcgen), one of them requiring a client
//! certificate. Checks that `--ca-cert` verifies the server, that a server the CA did not sign
//! for is refused, that `--client-cert`/`--client-key` pass mutual TLS, and that TLS options
//! with an `http://` URL or unreadable files are errors that say what to fix.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use claimledger::api::{log::LogApi, Ctx};
use claimledger::pb::log_service_server::LogServiceServer;
use common::cli;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// PEM files of a test CA, a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: String,
    server_key: String,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write a PEM file");
    path
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("self-signed CA");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server certificate");
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = CertificateParams::new(vec!["reviewer.example".to_string()])
        .expect("client params")
        .signed_by(&client_key, &ca)
        .expect("client certificate");
    Pki {
        ca: write(dir, "ca.pem", &ca.pem()),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: write(dir, "client.pem", &client_cert.pem()),
        client_key: write(dir, "client-key.pem", &client_key.serialize_pem()),
    }
}

/// Serves the log service over TLS on a loopback port until the returned sender is dropped;
/// with `client_ca`, clients must present a certificate it signed.
async fn serve_tls(ctx: Ctx, pki: &Pki, client_ca: bool) -> (String, oneshot::Sender<()>) {
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&pki.server_cert, &pki.server_key));
    if client_ca {
        let ca = std::fs::read(&pki.ca).expect("read the CA");
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(tls)
        .expect("server TLS config")
        .add_service(LogServiceServer::new(LogApi(ctx)));
    tokio::spawn(router.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        async move {
            let _ = rx.await;
        },
    ));
    (format!("https://{addr}"), tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_connects_with_tls_and_mutual_tls() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pki = pki(tmp.path());
    let log = claimledger::log::Log::open(
        tmp.path().join("data"),
        claimledger::log::Options::default(),
        Arc::new(claimledger::ledger::LedgerApply),
    )
    .expect("open the log");
    let ctx = Ctx::open(log).expect("open the query index");
    let ca = pki.ca.to_str().expect("UTF-8 path");
    let client_cert = pki.client_cert.to_str().expect("UTF-8 path");
    let client_key = pki.client_key.to_str().expect("UTF-8 path");

    // TLS, the server verified with --ca-cert.
    let (url, _stop) = serve_tls(ctx.clone(), &pki, false).await;
    let out = cli(&["log", "checkpoint", "--server", &url, "--ca-cert", ca])
        .await
        .stdout();
    assert!(out.contains("verifier key"), "{out}");

    // Without --ca-cert the platform's roots are used, and they do not know the test CA.
    let run = cli(&["log", "checkpoint", "--server", &url]).await;
    assert!(!run.ok, "a server signed by an unknown CA was trusted");

    // TLS options with a plain http:// URL say to use https://.
    let plain = url.replacen("https://", "http://", 1);
    let run = cli(&["log", "checkpoint", "--server", &plain, "--ca-cert", ca]).await;
    assert!(!run.ok && run.stderr.contains("https://"), "{}", run.stderr);

    // Unreadable or wrong files are named.
    let missing = tmp.path().join("missing.pem");
    let missing = missing.to_str().expect("UTF-8 path");
    let run = cli(&["log", "checkpoint", "--server", &url, "--ca-cert", missing]).await;
    assert!(!run.ok && run.stderr.contains(missing), "{}", run.stderr);
    let run = cli(&[
        "log",
        "checkpoint",
        "--server",
        &url,
        "--ca-cert",
        client_key,
    ])
    .await;
    assert!(!run.ok && run.stderr.contains(client_key), "{}", run.stderr);

    // Mutual TLS: refused without a client certificate, accepted with one the CA signed.
    let (url, _stop) = serve_tls(ctx.clone(), &pki, true).await;
    let run = cli(&["log", "checkpoint", "--server", &url, "--ca-cert", ca]).await;
    assert!(
        !run.ok,
        "a server requiring client certificates accepted none"
    );
    let out = cli(&[
        "log",
        "checkpoint",
        "--server",
        &url,
        "--ca-cert",
        ca,
        "--client-cert",
        client_cert,
        "--client-key",
        client_key,
    ])
    .await
    .stdout();
    assert!(out.contains("verifier key"), "{out}");
    let run = cli(&[
        "log",
        "checkpoint",
        "--server",
        &url,
        "--ca-cert",
        ca,
        "--client-cert",
        client_cert,
    ])
    .await;
    assert!(
        !run.ok && run.stderr.contains("--client-key"),
        "{}",
        run.stderr
    );
}
