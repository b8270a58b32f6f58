//! `claimledger import FILE`: sends JSON lines of `claimledger.v1.ImportLine` one by one, and
//! resolves `"claim_id": "@REQUEST_ID"` references to the ids earlier claim lines got.
//!
//! Every write carries a request id, so importing a file again writes nothing new: source lines
//! use `src-<source id>`, other lines their own `request_id` or else one derived from the line
//! ([`request_id::for_import_line`]).

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;

use super::connect::{connect, ClientOpts};
use super::{output, request_id};
use crate::pb;

#[derive(Args)]
pub struct ImportArgs {
    /// JSON lines of claimledger.v1.ImportLine (see examples/article.jsonl).
    file: std::path::PathBuf,
    #[command(flatten)]
    opts: ClientOpts,
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

pub async fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let mut c = connect(&a.opts).await?;
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    // How many times each line was seen, so identical lines get different derived ids.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", a.file.display(), n + 1);
        let item: pb::ImportLine = serde_json::from_str(line).with_context(at)?;
        let occurrence = seen.entry(line).or_default();
        let derived = request_id::for_import_line(line, *occurrence);
        *occurrence += 1;
        let or_derived = |rid: &mut String| {
            if rid.is_empty() {
                *rid = derived.clone();
            }
        };
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
                claim: Some(mut req),
                ..
            } => {
                or_derived(&mut req.request_id);
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
                or_derived(&mut req.request_id);
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.add_evidence(req).await.with_context(at)?;
                "evidence"
            }
            pb::ImportLine {
                grade: Some(mut req),
                ..
            } => {
                or_derived(&mut req.request_id);
                c.sources.grade_source(req).await.with_context(at)?;
                "grades"
            }
            pb::ImportLine {
                verdict: Some(mut req),
                ..
            } => {
                or_derived(&mut req.request_id);
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.record_verdict(req).await.with_context(at)?;
                "verdicts"
            }
            pb::ImportLine {
                retraction: Some(mut req),
                ..
            } => {
                or_derived(&mut req.request_id);
                resolve(&refs, &mut req.claim_id).with_context(at)?;
                c.claims.retract_claim(req).await.with_context(at)?;
                "retractions"
            }
            _ => bail!("{}: the line sets none of the ImportLine fields", at()),
        };
        *counts.entry(what).or_default() += 1;
    }
    output::imported(counts, refs);
    Ok(ExitCode::SUCCESS)
}
