//! `claimledger claim …`: submit claims, add evidence, record verdicts and retractions, and
//! read claims and their status.

use std::process::ExitCode;

use clap::Subcommand;

use super::connect::{connect, ClientOpts};
use super::{cosigned, output, parse, proofs, request_id};
use crate::pb;

#[derive(Subcommand)]
pub enum ClaimCmd {
    /// Submit a claim given as proto3 JSON (`--data '{...}'` or `--data @file.json`).
    Submit {
        #[arg(long)]
        data: String,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Add evidence to a claim.
    Evidence {
        claim_id: String,
        /// Who provides it (source id).
        #[arg(long)]
        source: String,
        /// supports, contradicts, no-comment, context.
        #[arg(long)]
        stance: String,
        /// official-statement, media-report, on-scene-reporting, geolocated-media,
        /// satellite-imagery, osint-analysis, document, eyewitness, fact-check.
        #[arg(long)]
        kind: String,
        /// Information credibility 2–6.
        #[arg(long)]
        credibility: u32,
        #[arg(long, default_value = "")]
        url: String,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        geolocation_verified: bool,
        /// Attribution chain from origin on: source ids or unresolved names, repeatable.
        #[arg(long)]
        via: Vec<String>,
        /// A quantity as JSON, e.g. '{"measure":"destroyed","unit":"drones","qualifier":"QUALIFIER_EXACT","best":35}'.
        #[arg(long)]
        quantity: Option<String>,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Record a reviewer's verdict.
    Verdict {
        claim_id: String,
        /// confirmed, refuted, disputed, inconclusive.
        decision: String,
        #[arg(long)]
        rationale: String,
        /// Evidence ids the verdict relies on (repeatable).
        #[arg(long = "evidence")]
        evidence_ids: Vec<String>,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Retract a claim on behalf of its claimant.
    Retract {
        claim_id: String,
        /// A source in the claimant's cluster.
        #[arg(long)]
        source: String,
        #[arg(long, default_value = "")]
        url: String,
        #[arg(long, default_value = "")]
        note: String,
        /// Idempotency key: the same write sent again with it is done once. Without it a random
        /// one is made up and printed on stderr, to retry with.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Show a claim with its evidence, verdicts and entries.
    Get { id: String },
    /// Is it confirmed, and why? Prints the status and the policy's trace.
    Status {
        id: String,
        /// Answer as the log stood at this size.
        #[arg(long, default_value_t = 0)]
        as_of: u64,
        /// Include a checkpoint and inclusion proofs for the claim's entries (verified here).
        #[arg(long)]
        proof: bool,
    },
    /// List claims with filters.
    List {
        /// Claim kind, e.g. interception.
        #[arg(long)]
        kind: Option<String>,
        /// Status, e.g. confirmed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "")]
        claimant: String,
        #[arg(long, default_value = "")]
        place: String,
        /// RFC 3339 lower bound of the event time.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 upper bound of the event time.
        #[arg(long)]
        to: Option<String>,
        /// Free text in English: every word must match ("drone" finds "drones"), "double
        /// quotes" match a phrase, -word excludes a word.
        #[arg(long, default_value = "")]
        query: String,
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
        /// Answer only once the server's query index has read the log to this size (a write's
        /// index + 1, to see that write). Default: the log's size when the command starts, so
        /// the list shows every write made before it; 0 takes the index as it is.
        #[arg(long)]
        min_size: Option<u64>,
    },
}

pub async fn run(cmd: ClaimCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
    let mut c = connect(o).await?;
    match cmd {
        ClaimCmd::Submit { data, request_id } => {
            let claim: pb::Claim = parse::json_arg(&data)?;
            let r = c
                .claims
                .submit_claim(pb::SubmitClaimRequest {
                    request_id: request_id::or_new(request_id),
                    claim: Some(claim),
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::claim_submitted)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        ClaimCmd::Evidence {
            claim_id,
            source,
            stance,
            kind,
            credibility,
            url,
            note,
            geolocation_verified,
            via,
            quantity,
            request_id,
        } => {
            let evidence = pb::Evidence {
                source_id: source,
                attribution: parse::hops(&via),
                stance: parse::stance(&stance)?,
                kind: parse::evidence_kind(&kind)?,
                url,
                credibility,
                note,
                geolocation_verified,
                quantity: quantity.as_deref().map(parse::json_arg).transpose()?,
                ..Default::default()
            };
            let r = c
                .claims
                .add_evidence(pb::AddEvidenceRequest {
                    request_id: request_id::or_new(request_id),
                    claim_id,
                    evidence: Some(evidence),
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::evidence_added)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        ClaimCmd::Verdict {
            claim_id,
            decision,
            rationale,
            evidence_ids,
            request_id,
        } => {
            let verdict = pb::Verdict {
                decision: parse::decision(&decision)?,
                rationale,
                evidence_ids,
                ..Default::default()
            };
            let r = c
                .claims
                .record_verdict(pb::RecordVerdictRequest {
                    request_id: request_id::or_new(request_id),
                    claim_id,
                    verdict: Some(verdict),
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::verdict_recorded)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        ClaimCmd::Retract {
            claim_id,
            source,
            url,
            note,
            request_id,
        } => {
            let r = c
                .claims
                .retract_claim(pb::RetractClaimRequest {
                    request_id: request_id::or_new(request_id),
                    claim_id,
                    retraction: Some(pb::Retraction {
                        source_id: source,
                        url,
                        note,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            output::print(o.json, &r, output::retracted)?;
            cosigned::after_write(&mut c, o, &r.receipt).await;
        }
        ClaimCmd::Get { id } => {
            let r = c
                .claims
                .get_claim(pb::GetClaimRequest { id })
                .await?
                .into_inner();
            output::print(o.json, &r, output::claim)?;
        }
        ClaimCmd::Status { id, as_of, proof } => {
            let r = c
                .claims
                .get_claim_status(pb::GetClaimStatusRequest {
                    claim_id: id,
                    as_of_size: as_of,
                    with_proof: proof,
                })
                .await?
                .into_inner();
            let mut witnessing = None;
            if proof {
                let answer = proofs::verify_status_proofs(&mut c, o, &r).await?;
                let w = cosigned::fetch(&mut c, o).await?;
                let s = cosigned::prove_status(&mut c, &w, &r, answer).await?;
                witnessing = Some((s, w));
            }
            output::print(o.json, &r, |r| {
                output::claim_status(r, proof);
                if let Some((s, w)) = &witnessing {
                    output::status_witnessing(s, w);
                }
            })?;
        }
        ClaimCmd::List {
            kind,
            status,
            claimant,
            place,
            from,
            to,
            query,
            page_size,
            page_token,
            min_size,
        } => {
            let min_size = match min_size {
                Some(n) => n,
                None => {
                    c.log
                        .get_checkpoint(pb::GetCheckpointRequest {})
                        .await?
                        .into_inner()
                        .size
                }
            };
            let req = pb::ListClaimsRequest {
                kind: kind
                    .as_deref()
                    .map(parse::claim_kind)
                    .transpose()?
                    .unwrap_or(0),
                status: status
                    .as_deref()
                    .map(parse::status)
                    .transpose()?
                    .unwrap_or(0),
                claimant_id: claimant,
                place,
                event_time_from: from.as_deref().map(parse::timestamp).transpose()?,
                event_time_to: to.as_deref().map(parse::timestamp).transpose()?,
                query,
                page_size,
                page_token,
                min_size,
            };
            let r = c.claims.list_claims(req).await?.into_inner();
            output::print(o.json, &r, output::claims)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
