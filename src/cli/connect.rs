//! Reaching the server: the options every client command shares, the channel (TLS for an
//! `https://` server, verified with `--ca-cert` or the platform's roots, with an optional client
//! certificate), and the interceptor that puts the bearer token on every call.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::pb::{
    claim_service_client::ClaimServiceClient, log_service_client::LogServiceClient,
    source_service_client::SourceServiceClient,
};

/// Options of every client command.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// The server to talk to; `https://` connects with TLS.
    #[arg(
        long,
        global = true,
        env = "CLAIMLEDGER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Print proto3 JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token (the server maps it to the principal recorded as the entry's actor).
    #[arg(long, global = true, env = "CLAIMLEDGER_TOKEN")]
    pub token: Option<String>,
    /// The log's verifier key (`origin+hash+base64`) to check checkpoints against; without it
    /// the key the server itself reports is used, which proves consistency but not identity.
    #[arg(long, global = true, env = "CLAIMLEDGER_VERIFIER_KEY")]
    pub verifier_key: Option<String>,
    /// A witness's cosignature verifier key (`name+hash+base64`, as `claimledger witness`
    /// prints it). `log checkpoint` fails unless the cosigned checkpoint carries a valid
    /// cosignature by it; receipts and `claim status --proof` say which of these cosigned.
    /// Repeatable (or comma-separated in the environment variable).
    #[arg(
        long = "witness-key",
        global = true,
        env = "CLAIMLEDGER_WITNESS_KEYS",
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub witness_keys: Vec<String>,
    /// PEM CA certificate(s) to verify an `https://` server with, instead of the platform's
    /// root certificates.
    #[arg(long, global = true, env = "CLAIMLEDGER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (mutual TLS); needs
    /// `--client-key`.
    #[arg(
        long,
        global = true,
        env = "CLAIMLEDGER_CLIENT_CERT",
        value_name = "FILE"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `--client-cert`.
    #[arg(
        long,
        global = true,
        env = "CLAIMLEDGER_CLIENT_KEY",
        value_name = "FILE"
    )]
    pub client_key: Option<PathBuf>,
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct AddToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, AddToken>;

/// The service clients, on one channel.
#[derive(Clone)]
pub struct Clients {
    pub sources: SourceServiceClient<Svc>,
    pub claims: ClaimServiceClient<Svc>,
    pub log: LogServiceClient<Svc>,
    /// `grpc.health.v1.Health`: the no-op call `bench` measures everything against.
    pub health: tonic_health::pb::health_client::HealthClient<Svc>,
    /// The channel itself, for HTTP requests to the same port (`bench` reads `/metrics`).
    pub channel: Channel,
}

/// Connects to `--server` and wraps the channel in the token interceptor.
pub async fn connect(o: &ClientOpts) -> anyhow::Result<Clients> {
    let ch = endpoint(o)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", o.server))?;
    let token = match &o.token {
        None => None,
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| anyhow!("--token has characters a header cannot carry"))?,
        ),
    };
    let i = AddToken(token);
    Ok(Clients {
        sources: SourceServiceClient::with_interceptor(ch.clone(), i.clone()),
        claims: ClaimServiceClient::with_interceptor(ch.clone(), i.clone()),
        log: LogServiceClient::with_interceptor(ch.clone(), i.clone()),
        health: tonic_health::pb::health_client::HealthClient::with_interceptor(ch.clone(), i),
        channel: ch,
    })
}

/// The endpoint of `--server`, with TLS when its scheme is `https`.
fn endpoint(o: &ClientOpts) -> anyhow::Result<Endpoint> {
    let ep = Endpoint::from_shared(o.server.clone())
        .map_err(|e| anyhow!("--server {:?}: {e}", o.server))?;
    if ep.uri().scheme_str() != Some("https") {
        if let Some((name, _)) = tls_files(o).next() {
            bail!(
                "{name} is for TLS, but --server {:?} is not https://: use an https:// URL",
                o.server
            );
        }
        return Ok(ep);
    }
    let files = tls_files(o)
        .map(|(name, p)| format!("{name} {}", p.display()))
        .collect::<Vec<_>>();
    let files = if files.is_empty() {
        "the platform's root certificates".to_string()
    } else {
        files.join(", ")
    };
    ep.tls_config(tls_config(o)?)
        .with_context(|| format!("setting up TLS with {files}"))
}

/// The TLS options given, as (option, file).
fn tls_files(o: &ClientOpts) -> impl Iterator<Item = (&'static str, &Path)> {
    [
        ("--ca-cert", &o.ca_cert),
        ("--client-cert", &o.client_cert),
        ("--client-key", &o.client_key),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.as_deref().map(|p| (name, p)))
}

/// Trust `--ca-cert` or else the platform's roots, and present `--client-cert` if given.
fn tls_config(o: &ClientOpts) -> anyhow::Result<ClientTlsConfig> {
    let cfg = ClientTlsConfig::new();
    let cfg = match &o.ca_cert {
        Some(path) => cfg.ca_certificate(Certificate::from_pem(read_pem(
            "--ca-cert",
            path,
            "CERTIFICATE-----",
        )?)),
        None => cfg.with_native_roots(),
    };
    Ok(match (&o.client_cert, &o.client_key) {
        (Some(cert), Some(key)) => cfg.identity(Identity::from_pem(
            read_pem("--client-cert", cert, "CERTIFICATE-----")?,
            read_pem("--client-key", key, "PRIVATE KEY-----")?,
        )),
        (None, None) => cfg,
        (Some(_), None) => bail!("--client-cert needs --client-key"),
        (None, Some(_)) => bail!("--client-key needs --client-cert"),
    })
}

/// Reads a PEM file given as `option`, which must hold a block whose BEGIN line ends with
/// `label` (tonic would otherwise skip what it cannot parse and fail later, less clearly).
fn read_pem(option: &str, path: &Path, label: &str) -> anyhow::Result<Vec<u8>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading {option} {}", path.display()))?;
    let has_block = String::from_utf8_lossy(&pem)
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(label));
    if !has_block {
        bail!(
            "{option} {}: no PEM block \"-----BEGIN …{label}\" in it",
            path.display()
        );
    }
    Ok(pem)
}
