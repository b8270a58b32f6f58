//! `claimledger token new`: make a bearer token for a principal and append its hash to the
//! tokens file. The token itself is printed once and stored nowhere.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::auth::{tokens, Principal};

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a token for PRINCIPAL, append its line to the tokens file, print the token once.
    New(NewArgs),
}

#[derive(Args)]
pub struct NewArgs {
    /// The principal the token acts as (recorded as the actor of its entries).
    principal: String,
    /// Comma-separated roles: registrar, submitter, reviewer, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// Comma-separated source clusters the principal is bound to (its own outlets).
    #[arg(long, value_delimiter = ',')]
    clusters: Vec<String>,
    /// The tokens file to append to (created with mode 0600 if missing).
    #[arg(long, env = "CLAIMLEDGER_TOKENS_FILE")]
    tokens_file: PathBuf,
}

pub fn run(cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::New(a) => {
            let principal = Principal {
                name: a.principal,
                roles: tokens::parse_roles(&a.roles.join(",")).map_err(anyhow::Error::msg)?,
                clusters: if a.clusters.is_empty() {
                    Vec::new()
                } else {
                    tokens::parse_clusters(&a.clusters.join(",")).map_err(anyhow::Error::msg)?
                },
            };
            let token =
                tokens::append_new(&a.tokens_file, &principal).map_err(anyhow::Error::msg)?;
            eprintln!(
                "added {} ({}) to {}; the token is shown only this once:",
                principal.name,
                principal.roles,
                a.tokens_file.display()
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
