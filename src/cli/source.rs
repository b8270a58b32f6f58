//! `claimledger source …`: register, grade, get and list sources.

use std::process::ExitCode;

use clap::Subcommand;

use super::connect::{connect, ClientOpts};
use super::{cosigned, output, parse, request_id};
use crate::pb;

#[derive(Subcommand)]
pub enum SourceCmd {
    /// Register a source.
    Register {
        /// Slug id, e.g. ru-mod.
        id: String,
        #[arg(long)]
        name: String,
        /// head-of-state, government, military, intelligence-service, state-media, news-agency,
        /// independent-media, aggregator, osint-group, international-organization, ngo,
        /// individual, other.
        #[arg(long)]
        kind: String,
        /// Side code such as RU, UA, US; omit for none.
        #[arg(long, default_value = "")]
        side: String,
        /// party, affiliated, aligned, non-party, unknown.
        #[arg(long)]
        role: String,
        /// Affiliation cluster (defaults to the id).
        #[arg(long, default_value = "")]
        cluster: String,
        /// Reliability grade A–F.
        #[arg(long, default_value = "F")]
        grade: String,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Change a source's reliability grade, with a rationale.
    Grade {
        id: String,
        /// A–F.
        grade: String,
        #[arg(long)]
        rationale: String,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Show a source and its grade history.
    Get { id: String },
    /// List sources.
    List {
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

pub async fn run(cmd: SourceCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
    let mut c = connect(o).await?;
    match cmd {
        SourceCmd::Register {
            id,
            name,
            kind,
            side,
            role,
            cluster,
            grade,
            request_id,
        } => {
            let source = pb::Source {
                id,
                name,
                kind: parse::source_kind(&kind)?,
                side,
                role: parse::role(&role)?,
                cluster,
                reliability: parse::reliability(&grade)?,
                registered_index: 0,
            };
            let r = c
                .sources
                .register_source(pb::RegisterSourceRequest {
                    request_id: request_id::or_new(request_id),
                    source: Some(source),
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::source_registered)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        SourceCmd::Grade {
            id,
            grade,
            rationale,
            request_id,
        } => {
            let reliability = parse::reliability(&grade)?;
            let r = c
                .sources
                .grade_source(pb::GradeSourceRequest {
                    request_id: request_id::or_new(request_id),
                    source_id: id,
                    reliability,
                    rationale,
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::source_graded)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        SourceCmd::Get { id } => {
            let r = c
                .sources
                .get_source(pb::GetSourceRequest { id })
                .await?
                .into_inner();
            output::print(o.json, &r, output::source_with_grades)?;
        }
        SourceCmd::List {
            page_size,
            page_token,
        } => {
            let r = c
                .sources
                .list_sources(pb::ListSourcesRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::sources)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
