//! Printing responses: proto3 JSON with `--json`, otherwise short human-readable text.

use serde::Serialize;

use crate::pb;

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn name<E: TryFrom<i32>>(v: i32, f: impl Fn(E) -> &'static str, prefix: &str) -> String {
    match E::try_from(v) {
        Ok(e) => f(e).trim_start_matches(prefix).to_string(),
        Err(_) => v.to_string(),
    }
}

pub fn status(v: i32) -> String {
    name(v, |s: pb::Status| s.as_str_name(), "STATUS_")
}

pub fn stance(v: i32) -> String {
    name(v, |s: pb::Stance| s.as_str_name(), "STANCE_")
}

fn kind(v: i32) -> String {
    name(v, |s: pb::ClaimKind| s.as_str_name(), "CLAIM_KIND_")
}

pub fn reliability(v: i32) -> String {
    name(v, |s: pb::Reliability| s.as_str_name(), "RELIABILITY_")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn receipt(r: &Option<pb::Receipt>) {
    if let Some(r) = r {
        println!(
            "  logged at index {} (leaf {}), checkpoint size {}, proof of {} hashes",
            r.index,
            hex(&r.leaf_hash),
            r.tree_size,
            r.inclusion_proof.len()
        );
    }
}

pub fn source(s: &pb::Source) {
    println!(
        "{:<20} {:<40} side={:<4} role={:<10} cluster={:<14} grade={}",
        s.id,
        s.name,
        if s.side.is_empty() { "-" } else { &s.side },
        name(s.role, |r: pb::Role| r.as_str_name(), "ROLE_"),
        s.cluster,
        reliability(s.reliability)
    );
}

pub fn claim_line(c: &pb::Claim, st: i32) {
    println!(
        "{:<16} {:<13} {:<26} {:<12} {}",
        c.id,
        status(st),
        kind(c.kind),
        c.claimant_id,
        c.summary
    );
}

pub fn claim(r: &pb::GetClaimResponse) {
    let Some(c) = &r.claim else { return };
    println!(
        "{}  [{}]  (computed: {})",
        c.id,
        status(r.status),
        status(r.computed_status)
    );
    println!("  {}", c.summary);
    println!(
        "  kind {}  claimant {}  logged at index {}",
        kind(c.kind),
        c.claimant_id,
        c.index
    );
    if !c.attribution.is_empty() {
        let chain: Vec<String> = c
            .attribution
            .iter()
            .map(|h| {
                if h.source_id.is_empty() {
                    h.name.clone()
                } else {
                    h.source_id.clone()
                }
            })
            .collect();
        println!("  attribution: {}", chain.join(" → "));
    }
    for e in &r.evidence {
        println!(
            "  evidence {} from {} {} credibility {} {}",
            e.id,
            e.source_id,
            stance(e.stance),
            e.credibility,
            e.url
        );
    }
    for v in &r.verdicts {
        println!(
            "  verdict {} {} by {}: {}",
            v.id,
            name(v.decision, |d: pb::Decision| d.as_str_name(), "DECISION_"),
            v.reviewer,
            v.rationale
        );
    }
    if let Some(x) = &r.retraction {
        println!("  retracted by {}: {}", x.source_id, x.note);
    }
    println!("  entries: {:?}", r.entry_indexes);
}

pub fn claim_status(s: &pb::GetClaimStatusResponse) {
    println!(
        "{}: {}{}  (computed {}, policy {}, as of log size {})",
        s.claim_id,
        status(s.status),
        if s.confirmed {
            " — confirmed"
        } else {
            " — not confirmed"
        },
        status(s.computed_status),
        s.policy,
        s.as_of_size
    );
    println!(
        "  qualifying groups: {} supporting, {} contradicting",
        s.supporting_groups, s.contradicting_groups
    );
    if !s.flags.is_empty() {
        println!("  flags: {}", s.flags.join(", "));
    }
    if s.needs_review {
        println!("  needs review: evidence after the latest verdict changes the computed status");
    }
    if s.trace.is_empty() {
        println!("  no evidence yet");
    }
    for t in &s.trace {
        println!(
            "  {} {:<10} {} origin {} group {} → {}: {}",
            if t.counted { "✔" } else { "✘" },
            stance(t.effective_stance),
            t.evidence_id,
            t.origin,
            t.group,
            if t.counted { "counted" } else { "not counted" },
            t.reasons.join("; ")
        );
    }
    if !s.checkpoint.is_empty() {
        println!("  checkpoint:\n{}", indent(&s.checkpoint));
        for p in &s.proofs {
            println!("  proof for entry {}: {} hashes", p.index, p.hashes.len());
        }
    }
}

pub fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
