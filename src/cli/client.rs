//! Client subcommands: one per RPC, plus `import` and `bench`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::output::{self, hex};
use super::ClientOpts;
use crate::pb::{
    self, claim_service_client::ClaimServiceClient, log_service_client::LogServiceClient,
    source_service_client::SourceServiceClient,
};

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub struct AddToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, AddToken>;

struct Clients {
    sources: SourceServiceClient<Svc>,
    claims: ClaimServiceClient<Svc>,
    log: LogServiceClient<Svc>,
}

async fn connect(o: &ClientOpts) -> anyhow::Result<Clients> {
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

/// Parses `supports`, `SUPPORTS` or `STANCE_SUPPORTS` (dashes for underscores) as an enum.
fn parse_enum(prefix: &str, s: &str, from: impl Fn(&str) -> Option<i32>) -> anyhow::Result<i32> {
    let up = s.trim().to_uppercase().replace('-', "_");
    from(&up)
        .or_else(|| from(&format!("{prefix}{up}")))
        .ok_or_else(|| {
            anyhow!(
                "{s:?} is not a {}",
                prefix.trim_end_matches('_').to_lowercase()
            )
        })
}

fn rel(s: &str) -> anyhow::Result<i32> {
    parse_enum("RELIABILITY_", s, |x| {
        pb::Reliability::from_str_name(x).map(|v| v as i32)
    })
}

fn json_arg<T: serde::de::DeserializeOwned>(data: &str) -> anyhow::Result<T> {
    let text = match data.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => data.to_string(),
    };
    serde_json::from_str(&text).context("parsing the JSON")
}

fn hops(via: &[String]) -> Vec<pb::AttributionHop> {
    via.iter()
        .enumerate()
        .map(|(i, v)| {
            let relation = if i == 0 {
                pb::Relation::Origin
            } else {
                pb::Relation::Cited
            } as i32;
            if crate::claims::validate::is_slug(v) {
                pb::AttributionHop {
                    source_id: v.clone(),
                    relation,
                    ..Default::default()
                }
            } else {
                pb::AttributionHop {
                    name: v.clone(),
                    relation,
                    ..Default::default()
                }
            }
        })
        .collect()
}

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

#[derive(Subcommand)]
pub enum ClaimCmd {
    /// Submit a claim given as proto3 JSON (`--data '{...}'` or `--data @file.json`).
    Submit {
        #[arg(long)]
        data: String,
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
        /// Free text; every word must match.
        #[arg(long, default_value = "")]
        query: String,
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
}

#[derive(Subcommand)]
pub enum LogCmd {
    /// The latest signed checkpoint and the verifier key.
    Checkpoint,
    /// Entries [start, end) as JSON lines (decoded) or index/leaf lines.
    Entries {
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Exclusive; 0 means the current size.
        #[arg(long, default_value_t = 0)]
        end: u64,
    },
    /// Inclusion proof of an entry (by index or leaf hash in hex), verified here.
    Proof {
        #[arg(
            long,
            conflicts_with = "leaf_hash",
            required_unless_present = "leaf_hash"
        )]
        index: Option<u64>,
        #[arg(long)]
        leaf_hash: Option<String>,
        /// Tree size; 0 means the current size.
        #[arg(long, default_value_t = 0)]
        size: u64,
    },
    /// Consistency proof between two sizes, verified here.
    Consistency {
        old_size: u64,
        /// 0 means the current size.
        #[arg(default_value_t = 0)]
        new_size: u64,
    },
    /// Follow the log live from an index.
    Watch {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Ask the server to audit the whole log.
    Verify,
}

#[derive(Args)]
pub struct ImportArgs {
    /// JSON lines of claimledger.v1.ImportLine (see examples/article.jsonl).
    file: std::path::PathBuf,
    #[command(flatten)]
    opts: ClientOpts,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Claims to submit (each with one piece of evidence).
    #[arg(long, default_value_t = 2000)]
    claims: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn source(cmd: SourceCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
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
                kind: parse_enum("SOURCE_KIND_", &kind, |x| {
                    pb::SourceKind::from_str_name(x).map(|v| v as i32)
                })?,
                side,
                role: parse_enum("ROLE_", &role, |x| {
                    pb::Role::from_str_name(x).map(|v| v as i32)
                })?,
                cluster,
                reliability: rel(&grade)?,
                registered_index: 0,
            };
            let r = c
                .sources
                .register_source(pb::RegisterSourceRequest {
                    request_id,
                    source: Some(source),
                })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(s) = &r.source {
                output::source(s);
            }
            output::receipt(&r.receipt);
        }
        SourceCmd::Grade {
            id,
            grade,
            rationale,
            request_id,
        } => {
            let r = c
                .sources
                .grade_source(pb::GradeSourceRequest {
                    request_id,
                    source_id: id,
                    reliability: rel(&grade)?,
                    rationale,
                })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(s) = &r.source {
                output::source(s);
            }
            output::receipt(&r.receipt);
        }
        SourceCmd::Get { id } => {
            let r = c
                .sources
                .get_source(pb::GetSourceRequest { id })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(s) = &r.source {
                output::source(s);
            }
            for g in &r.grades {
                println!(
                    "  grade {} at index {} by {}: {}",
                    output::reliability(g.reliability),
                    g.index,
                    g.actor,
                    g.rationale
                );
            }
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
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            for s in &r.sources {
                output::source(s);
            }
            if !r.next_page_token.is_empty() {
                println!("next page: --page-token {}", r.next_page_token);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(s: &str) -> anyhow::Result<pbjson_types::Timestamp> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| anyhow!("{s:?} is not an RFC 3339 time such as 2025-05-19T00:00:00Z"))
}

pub async fn claim(cmd: ClaimCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
    let mut c = connect(o).await?;
    match cmd {
        ClaimCmd::Submit { data, request_id } => {
            let claim: pb::Claim = json_arg(&data)?;
            let r = c
                .claims
                .submit_claim(pb::SubmitClaimRequest {
                    request_id,
                    claim: Some(claim),
                })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(cl) = &r.claim {
                println!("submitted claim {}", cl.id);
            }
            output::receipt(&r.receipt);
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
                attribution: hops(&via),
                stance: parse_enum("STANCE_", &stance, |x| {
                    pb::Stance::from_str_name(x).map(|v| v as i32)
                })?,
                kind: parse_enum("EVIDENCE_KIND_", &kind, |x| {
                    pb::EvidenceKind::from_str_name(x).map(|v| v as i32)
                })?,
                url,
                credibility,
                note,
                geolocation_verified,
                quantity: quantity.as_deref().map(json_arg).transpose()?,
                ..Default::default()
            };
            let r = c
                .claims
                .add_evidence(pb::AddEvidenceRequest {
                    request_id,
                    claim_id,
                    evidence: Some(evidence),
                })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(e) = &r.evidence {
                println!("added evidence {} to claim {}", e.id, e.claim_id);
            }
            output::receipt(&r.receipt);
        }
        ClaimCmd::Verdict {
            claim_id,
            decision,
            rationale,
            evidence_ids,
            request_id,
        } => {
            let verdict = pb::Verdict {
                decision: parse_enum("DECISION_", &decision, |x| {
                    pb::Decision::from_str_name(x).map(|v| v as i32)
                })?,
                rationale,
                evidence_ids,
                ..Default::default()
            };
            let r = c
                .claims
                .record_verdict(pb::RecordVerdictRequest {
                    request_id,
                    claim_id,
                    verdict: Some(verdict),
                })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            if let Some(v) = &r.verdict {
                println!("recorded verdict {} on claim {}", v.id, v.claim_id);
            }
            output::receipt(&r.receipt);
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
                    request_id,
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
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            println!("retracted");
            output::receipt(&r.receipt);
        }
        ClaimCmd::Get { id } => {
            let r = c
                .claims
                .get_claim(pb::GetClaimRequest { id })
                .await?
                .into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            output::claim(&r);
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
            if proof {
                verify_status_proofs(&mut c, o, &r).await?;
            }
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            output::claim_status(&r);
            if proof {
                println!(
                    "  all {} proofs verified against the signed checkpoint",
                    r.proofs.len()
                );
            }
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
        } => {
            let req = pb::ListClaimsRequest {
                kind: match kind {
                    Some(k) => parse_enum("CLAIM_KIND_", &k, |x| {
                        pb::ClaimKind::from_str_name(x).map(|v| v as i32)
                    })?,
                    None => 0,
                },
                status: match status {
                    Some(s) => parse_enum("STATUS_", &s, |x| {
                        pb::Status::from_str_name(x).map(|v| v as i32)
                    })?,
                    None => 0,
                },
                claimant_id: claimant,
                place,
                event_time_from: from.as_deref().map(timestamp).transpose()?,
                event_time_to: to.as_deref().map(timestamp).transpose()?,
                query,
                page_size,
                page_token,
            };
            let r = c.claims.list_claims(req).await?.into_inner();
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            for item in &r.claims {
                if let Some(cl) = &item.claim {
                    output::claim_line(cl, item.status);
                }
            }
            if !r.next_page_token.is_empty() {
                println!("next page: --page-token {}", r.next_page_token);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hash32(b: &[u8]) -> anyhow::Result<tlog_tiles::Hash> {
    Ok(tlog_tiles::Hash(b.try_into().map_err(|_| {
        anyhow!("server sent a hash that is not 32 bytes")
    })?))
}

/// Verifies a checkpoint note with `--verifier-key`, or else the key the server reports, and
/// returns (size, root).
async fn checked_checkpoint(
    c: &mut Clients,
    o: &ClientOpts,
    note: &str,
) -> anyhow::Result<(u64, tlog_tiles::Hash)> {
    let info = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner();
    let key = o.verifier_key.as_deref().unwrap_or(&info.verifier_key);
    let origin = key.split('+').next().unwrap_or_default();
    let cp = crate::log::checkpoint::verify_checkpoint(note.as_bytes(), key, origin)?;
    Ok((cp.size, cp.root))
}

/// The latest checkpoint, signature checked: (note, size, root).
async fn signed_head(
    c: &mut Clients,
    o: &ClientOpts,
) -> anyhow::Result<(String, u64, tlog_tiles::Hash)> {
    let note = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner()
        .note;
    let (size, root) = checked_checkpoint(c, o, &note).await?;
    Ok((note, size, root))
}

async fn verify_status_proofs(
    c: &mut Clients,
    o: &ClientOpts,
    r: &pb::GetClaimStatusResponse,
) -> anyhow::Result<()> {
    let (size, root) = checked_checkpoint(c, o, &r.checkpoint).await?;
    for p in &r.proofs {
        let proof: Vec<tlog_tiles::Hash> = p
            .hashes
            .iter()
            .map(|h| hash32(h))
            .collect::<Result<_, _>>()?;
        tlog_tiles::check_record(&proof, size, root, p.index, hash32(&p.leaf_hash)?)
            .map_err(|e| anyhow!("proof for entry {} does not verify: {e}", p.index))?;
    }
    Ok(())
}

fn print_entry(e: &pb::LogEntry, json: bool) -> anyhow::Result<()> {
    use prost::Message;
    if json {
        let entry = pb::Entry::decode(&e.data[..])?;
        println!("{}", serde_json::to_string(&entry)?);
    } else {
        let entry = pb::Entry::decode(&e.data[..])?;
        let what = match entry.body.and_then(|b| b.kind) {
            Some(pb::change::Kind::SourceRegistered(s)) => format!("source registered {}", s.id),
            Some(pb::change::Kind::SourceGraded(g)) => format!("source graded {}", g.source_id),
            Some(pb::change::Kind::ClaimSubmitted(c)) => {
                format!("claim submitted {}: {}", c.id, c.summary)
            }
            Some(pb::change::Kind::EvidenceAdded(x)) => {
                format!("evidence {} on {}", x.id, x.claim_id)
            }
            Some(pb::change::Kind::VerdictRecorded(v)) => {
                format!("verdict {} on {}", v.id, v.claim_id)
            }
            Some(pb::change::Kind::ClaimRetracted(x)) => format!("retraction of {}", x.claim_id),
            None => "(empty)".into(),
        };
        println!(
            "{:>8} {} {:<10} {}",
            e.index,
            hex(&e.leaf_hash).get(..16).unwrap_or_default(),
            entry.actor,
            what
        );
    }
    Ok(())
}

pub async fn log(cmd: LogCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
    let mut c = connect(o).await?;
    match cmd {
        LogCmd::Checkpoint => {
            let r = c
                .log
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await?
                .into_inner();
            checked_checkpoint(&mut c, o, &r.note).await?;
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            print!("{}", r.note);
            println!("size {}  root {}", r.size, hex(&r.root_hash));
            println!("verifier key {}", r.verifier_key);
        }
        LogCmd::Entries { start, end } => {
            let mut s = c
                .log
                .get_entries(pb::GetEntriesRequest { start, end })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                print_entry(&e, o.json)?;
            }
        }
        LogCmd::Proof {
            index,
            leaf_hash,
            size,
        } => {
            let leaf = match (index, leaf_hash) {
                (Some(i), _) => pb::get_inclusion_proof_request::Leaf::Index(i),
                (None, Some(h)) => pb::get_inclusion_proof_request::Leaf::LeafHash(
                    (0..h.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(h.get(i..i + 2).unwrap_or("zz"), 16))
                        .collect::<Result<Vec<u8>, _>>()
                        .map_err(|_| anyhow!("--leaf-hash must be hex"))?,
                ),
                (None, None) => bail!("give --index or --leaf-hash"),
            };
            // Without --size, prove against the latest signed checkpoint, so the root the proof
            // is checked against is one the log signed.
            let signed = if size == 0 {
                let (_, s, root) = signed_head(&mut c, o).await?;
                Some((s, root))
            } else {
                None
            };
            let r = c
                .log
                .get_inclusion_proof(pb::GetInclusionProofRequest {
                    leaf: Some(leaf),
                    tree_size: signed.map_or(size, |(s, _)| s),
                })
                .await?
                .into_inner();
            let root = match signed {
                Some((_, root)) => root,
                None => hash32(&r.root_hash)?,
            };
            let proof: Vec<tlog_tiles::Hash> = r
                .hashes
                .iter()
                .map(|h| hash32(h))
                .collect::<Result<_, _>>()?;
            tlog_tiles::check_record(&proof, r.tree_size, root, r.index, hash32(&r.leaf_hash)?)
                .map_err(|e| anyhow!("the proof does not verify: {e}"))?;
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "entry {} in tree of size {} (root {})",
                r.index,
                r.tree_size,
                hex(&r.root_hash)
            );
            for h in &r.hashes {
                println!("  {}", hex(h));
            }
            if signed.is_some() {
                println!(
                    "verified against the signed checkpoint of size {}",
                    r.tree_size
                );
            } else {
                println!(
                    "verified against the server's root at size {} (not signed: compare it with a \
                     checkpoint you hold)",
                    r.tree_size
                );
            }
        }
        LogCmd::Consistency { old_size, new_size } => {
            // Without a new size, the new root is the latest signed checkpoint's.
            let signed = if new_size == 0 {
                let (_, s, root) = signed_head(&mut c, o).await?;
                Some((s, root))
            } else {
                None
            };
            let r = c
                .log
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    old_size,
                    new_size: signed.map_or(new_size, |(s, _)| s),
                })
                .await?
                .into_inner();
            if let Some((_, root)) = signed {
                if hash32(&r.new_root)? != root {
                    bail!("the server's new root differs from its signed checkpoint");
                }
            }
            if r.old_size > 0 && r.old_size < r.new_size {
                let proof: Vec<tlog_tiles::Hash> = r
                    .hashes
                    .iter()
                    .map(|h| hash32(h))
                    .collect::<Result<_, _>>()?;
                tlog_tiles::check_tree(
                    &proof,
                    r.new_size,
                    hash32(&r.new_root)?,
                    r.old_size,
                    hash32(&r.old_root)?,
                )
                .map_err(|e| anyhow!("the proof does not verify: {e}"))?;
            }
            if o.json {
                return output::json(&r).map(|_| ExitCode::SUCCESS);
            }
            println!(
                "{} → {}: {} hashes, verified",
                r.old_size,
                r.new_size,
                r.hashes.len()
            );
            println!(
                "  old root {} (as the server reports it: compare with your checkpoint)\n  new root {}{}",
                hex(&r.old_root),
                hex(&r.new_root),
                if signed.is_some() { " (the signed checkpoint's)" } else { "" }
            );
        }
        LogCmd::Watch { from } => {
            let mut s = c
                .log
                .watch_entries(pb::WatchEntriesRequest { from_index: from })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                print_entry(&e, o.json)?;
            }
        }
        LogCmd::Verify => {
            let mut s = c
                .log
                .verify_log(pb::VerifyLogRequest {})
                .await?
                .into_inner();
            while let Some(p) = s.message().await? {
                if o.json {
                    println!("{}", serde_json::to_string(&p)?);
                } else if !p.done {
                    eprintln!("checked {}/{}", p.checked, p.total);
                }
                if p.done {
                    if !o.json {
                        if p.ok {
                            println!(
                                "ok: {} entries verified, root {}",
                                p.checked,
                                hex(&p.root_hash)
                            );
                        } else {
                            println!("FAILED at index {:?}: {}", p.first_bad_index, p.error);
                        }
                    }
                    return Ok(if p.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    });
                }
            }
            bail!("the server ended the audit without a result");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves `@request-id` claim references of an import file to server ids.
fn resolve(refs: &HashMap<String, String>, claim_id: &mut String) -> anyhow::Result<()> {
    if let Some(r) = claim_id.strip_prefix('@') {
        *claim_id = refs
            .get(r)
            .cloned()
            .ok_or_else(|| anyhow!("{claim_id:?} refers to no earlier claim line"))?;
    }
    Ok(())
}

pub async fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut c = connect(&a.opts).await?;
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", a.file.display(), n + 1);
        let item: pb::ImportLine = serde_json::from_str(line).with_context(at)?;
        let what = match item {
            pb::ImportLine {
                source: Some(s), ..
            } => {
                // Source lines carry no request id; the source id makes re-imports idempotent.
                let request_id = format!("src-{}", s.id);
                c.sources
                    .register_source(pb::RegisterSourceRequest {
                        request_id,
                        source: Some(s),
                    })
                    .await
                    .with_context(at)?;
                "sources"
            }
            pb::ImportLine {
                claim: Some(req), ..
            } => {
                let rid = req.request_id.clone();
                let r = c
                    .claims
                    .submit_claim(req)
                    .await
                    .with_context(at)?
                    .into_inner();
                if let Some(cl) = r.claim {
                    refs.insert(rid, cl.id);
                }
                "claims"
            }
            pb::ImportLine {
                evidence: Some(mut req),
                ..
            } => {
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.add_evidence(req).await.with_context(at)?;
                "evidence"
            }
            pb::ImportLine {
                grade: Some(req), ..
            } => {
                c.sources.grade_source(req).await.with_context(at)?;
                "grades"
            }
            pb::ImportLine {
                verdict: Some(mut req),
                ..
            } => {
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.record_verdict(req).await.with_context(at)?;
                "verdicts"
            }
            pb::ImportLine {
                retraction: Some(mut req),
                ..
            } => {
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.retract_claim(req).await.with_context(at)?;
                "retractions"
            }
            _ => bail!("{}: the line sets none of the ImportLine fields", at()),
        };
        *counts.entry(what).or_default() += 1;
    }
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort();
    let summary: Vec<String> = keys.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("imported {}", summary.join(", "));
    let mut ids: Vec<_> = refs.into_iter().collect();
    ids.sort();
    for (rid, id) in ids {
        println!("  {rid:<32} → {id}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let c = connect(&a.opts).await?;
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let mut sources = c.sources.clone();
    for (id, side, role, grade) in [
        (
            format!("bench-claimant-{run}"),
            "RU",
            pb::Role::Party,
            pb::Reliability::D,
        ),
        (
            format!("bench-agency-{run}"),
            "",
            pb::Role::NonParty,
            pb::Reliability::B,
        ),
    ] {
        sources
            .register_source(pb::RegisterSourceRequest {
                request_id: String::new(),
                source: Some(pb::Source {
                    id,
                    name: "bench".into(),
                    kind: pb::SourceKind::Other as i32,
                    side: side.into(),
                    role: role as i32,
                    reliability: grade as i32,
                    ..Default::default()
                }),
            })
            .await?;
    }
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(a.claims * 2)));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let mut claims = c.claims.clone();
        let next = next.clone();
        let lat = lat.clone();
        let run = run.clone();
        let total = a.claims;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), Status>(());
                }
                let t = Instant::now();
                let r = claims
                    .submit_claim(pb::SubmitClaimRequest {
                        request_id: String::new(),
                        claim: Some(pb::Claim {
                            kind: pb::ClaimKind::Interception as i32,
                            modality: pb::Modality::AssertedFact as i32,
                            summary: format!("bench claim {i}: drones destroyed overnight"),
                            claimant_id: format!("bench-claimant-{run}"),
                            ..Default::default()
                        }),
                    })
                    .await?
                    .into_inner();
                let t2 = Instant::now();
                let claim_id = r.claim.map(|c| c.id).unwrap_or_default();
                claims
                    .add_evidence(pb::AddEvidenceRequest {
                        request_id: String::new(),
                        claim_id,
                        evidence: Some(pb::Evidence {
                            source_id: format!("bench-agency-{run}"),
                            stance: pb::Stance::Supports as i32,
                            kind: pb::EvidenceKind::MediaReport as i32,
                            credibility: 2,
                            ..Default::default()
                        }),
                    })
                    .await?;
                if let Ok(mut l) = lat.lock() {
                    l.push(t2 - t);
                    l.push(t2.elapsed());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = lat
        .lock()
        .map_err(|_| anyhow!("latency lock poisoned"))?
        .clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let writes = a.claims * 2;
    println!(
        "{} writes ({} claims + evidence) with {} clients in {:.2} s: {:.0} writes/s; latency p50 {:?} p99 {:?}",
        writes,
        a.claims,
        a.concurrency,
        secs,
        writes as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    Ok(ExitCode::SUCCESS)
}
