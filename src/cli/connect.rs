//! Reaching the server: the options every client command shares, the channel, and the
//! interceptor that puts the bearer token on every call.

use anyhow::{anyhow, Context};
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::pb::{
    claim_service_client::ClaimServiceClient, log_service_client::LogServiceClient,
    source_service_client::SourceServiceClient,
};

/// Options of every client command.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// The server to talk to.
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

/// The three service clients, on one channel.
pub struct Clients {
    pub sources: SourceServiceClient<Svc>,
    pub claims: ClaimServiceClient<Svc>,
    pub log: LogServiceClient<Svc>,
}

/// Connects to `--server` and wraps the channel in the token interceptor.
pub async fn connect(o: &ClientOpts) -> anyhow::Result<Clients> {
    let ch = Channel::from_shared(o.server.clone())
        .map_err(|e| anyhow!("--server {:?}: {e}", o.server))?
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
        log: LogServiceClient::with_interceptor(ch, i),
    })
}
