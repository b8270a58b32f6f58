//! Printing responses: proto3 JSON with `--json`, otherwise short human-readable text. Every
//! line a client command prints to stdout is written here.
//!
//! Text that came from the server (ids, names, summaries, notes, rationales, urls, actors,
//! error messages…) goes through [`clean`] before it reaches the terminal, so a stored string
//! cannot move the cursor, clear a line or fake a status with control characters. `--json`
//! needs no such care: JSON escapes control characters itself.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::cosigned::{StatusWitnessing, Witnessed};
use crate::pb;

/// Prints `v` as pretty proto3 JSON with `json`, otherwise with `human`.
pub fn print<T: Serialize>(json: bool, v: &T, human: impl FnOnce(&T)) -> anyhow::Result<()> {
    if json {
        self::json(v)
    } else {
        human(v);
        Ok(())
    }
}

pub fn json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `s` made safe to print as one line of a terminal: control characters (C0, DEL and C1,
/// including ESC, CR and LF), the line and paragraph separators and the bidirectional
/// embedding, override and isolate characters are shown as escapes (`\n`, `\r`, `\t`, else
/// `\u{1b}` style). Everything else, including any non-ASCII letter, is kept as it is; text
/// that needs nothing escaped is not copied.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters that could change what a terminal shows beyond themselves.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// [`clean`] each of `items`, joined with `sep`.
fn clean_join(items: &[String], sep: &str) -> String {
    items.iter().map(|s| clean(s)).collect::<Vec<_>>().join(sep)
}

/// A multi-line text from the server (a signed note), each line cleaned and indented by
/// `prefix`.
fn clean_lines(s: &str, prefix: &str) -> String {
    s.lines()
        .map(|l| format!("{prefix}{}", clean(l)))
        .collect::<Vec<_>>()
        .join("\n")
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

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// A request id the CLI made up, on stderr so stdout stays the answer (and JSON with `--json`).
pub fn generated_request_id(id: &str) {
    eprintln!("request_id: {id} (to retry this command safely, add --request-id {id})");
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

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

pub fn source(s: &pb::Source) {
    println!(
        "{:<20} {:<40} side={:<4} role={:<10} cluster={:<14} grade={}",
        clean(&s.id),
        clean(&s.name),
        if s.side.is_empty() {
            "-".into()
        } else {
            clean(&s.side)
        },
        name(s.role, |r: pb::Role| r.as_str_name(), "ROLE_"),
        clean(&s.cluster),
        reliability(s.reliability)
    );
}

pub fn source_registered(r: &pb::RegisterSourceResponse) {
    if let Some(s) = &r.source {
        source(s);
    }
    receipt(&r.receipt);
}

pub fn source_graded(r: &pb::GradeSourceResponse) {
    if let Some(s) = &r.source {
        source(s);
    }
    receipt(&r.receipt);
}

pub fn source_with_grades(r: &pb::GetSourceResponse) {
    if let Some(s) = &r.source {
        source(s);
    }
    for g in &r.grades {
        println!(
            "  grade {} at index {} by {}: {}",
            reliability(g.reliability),
            g.index,
            clean(&g.actor),
            clean(&g.rationale)
        );
    }
}

pub fn sources(r: &pb::ListSourcesResponse) {
    for s in &r.sources {
        source(s);
    }
    next_page(&r.next_page_token);
}

fn next_page(token: &str) {
    if !token.is_empty() {
        println!("next page: --page-token {}", clean(token));
    }
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

pub fn claim_submitted(r: &pb::SubmitClaimResponse) {
    if let Some(cl) = &r.claim {
        println!("submitted claim {}", clean(&cl.id));
    }
    receipt(&r.receipt);
}

pub fn evidence_added(r: &pb::AddEvidenceResponse) {
    if let Some(e) = &r.evidence {
        println!(
            "added evidence {} to claim {}",
            clean(&e.id),
            clean(&e.claim_id)
        );
    }
    receipt(&r.receipt);
}

pub fn verdict_recorded(r: &pb::RecordVerdictResponse) {
    if let Some(v) = &r.verdict {
        println!(
            "recorded verdict {} on claim {}",
            clean(&v.id),
            clean(&v.claim_id)
        );
    }
    receipt(&r.receipt);
}

pub fn retracted(r: &pb::RetractClaimResponse) {
    println!("retracted");
    receipt(&r.receipt);
}

pub fn claim_line(c: &pb::Claim, st: i32) {
    println!(
        "{:<16} {:<13} {:<26} {:<12} {}",
        clean(&c.id),
        status(st),
        kind(c.kind),
        clean(&c.claimant_id),
        clean(&c.summary)
    );
}

pub fn claims(r: &pb::ListClaimsResponse) {
    for item in &r.claims {
        if let Some(cl) = &item.claim {
            claim_line(cl, item.status);
        }
    }
    next_page(&r.next_page_token);
}

pub fn claim(r: &pb::GetClaimResponse) {
    let Some(c) = &r.claim else { return };
    println!(
        "{}  [{}]  (computed: {})",
        clean(&c.id),
        status(r.status),
        status(r.computed_status)
    );
    println!("  {}", clean(&c.summary));
    println!(
        "  kind {}  claimant {}  logged at index {}",
        kind(c.kind),
        clean(&c.claimant_id),
        c.index
    );
    if !c.attribution.is_empty() {
        let chain: Vec<Cow<str>> = c
            .attribution
            .iter()
            .map(|h| {
                if h.source_id.is_empty() {
                    clean(&h.name)
                } else {
                    clean(&h.source_id)
                }
            })
            .collect();
        println!("  attribution: {}", chain.join(" → "));
    }
    for e in &r.evidence {
        println!(
            "  evidence {} from {} {} credibility {} {}",
            clean(&e.id),
            clean(&e.source_id),
            stance(e.stance),
            e.credibility,
            clean(&e.url)
        );
    }
    for v in &r.verdicts {
        println!(
            "  verdict {} {} by {}: {}",
            clean(&v.id),
            name(v.decision, |d: pb::Decision| d.as_str_name(), "DECISION_"),
            clean(&v.reviewer),
            clean(&v.rationale)
        );
    }
    if let Some(x) = &r.retraction {
        println!("  retracted by {}: {}", clean(&x.source_id), clean(&x.note));
    }
    println!("  entries: {:?}", r.entry_indexes);
}

/// A claim's status and trace; `proofs_verified` adds the line saying the CLI checked every
/// proof of a `--proof` answer.
pub fn claim_status(s: &pb::GetClaimStatusResponse, proofs_verified: bool) {
    println!(
        "{}: {}{}  (computed {}, policy {}, as of log size {})",
        clean(&s.claim_id),
        status(s.status),
        if s.confirmed {
            " — confirmed"
        } else {
            " — not confirmed"
        },
        status(s.computed_status),
        clean(&s.policy),
        s.as_of_size
    );
    println!(
        "  qualifying groups: {} supporting, {} contradicting",
        s.supporting_groups, s.contradicting_groups
    );
    if !s.flags.is_empty() {
        println!("  flags: {}", clean_join(&s.flags, ", "));
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
            clean(&t.evidence_id),
            clean(&t.origin),
            clean(&t.group),
            if t.counted { "counted" } else { "not counted" },
            clean_join(&t.reasons, "; ")
        );
    }
    if !s.checkpoint.is_empty() {
        println!("  checkpoint:\n{}", clean_lines(&s.checkpoint, "    "));
        for p in &s.proofs {
            println!("  proof for entry {}: {} hashes", p.index, p.hashes.len());
        }
    }
    if proofs_verified {
        println!(
            "  all {} proofs verified against the signed checkpoint",
            s.proofs.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The log
// ---------------------------------------------------------------------------------------------

pub fn checkpoint(r: &pb::GetCheckpointResponse, w: &Witnessed) {
    println!("{}", clean_lines(&r.note, ""));
    println!("size {}  root {}", r.size, hex(&r.root_hash));
    println!("verifier key {}", clean(&r.verifier_key));
    if w.quorum == 0 {
        return;
    }
    let Some((size, _)) = w.cosigned else {
        println!(
            "witnesses: none has cosigned a checkpoint yet (quorum {})",
            w.quorum
        );
        return;
    };
    println!(
        "cosigned checkpoint: size {size}{} (quorum {}; the latest checkpoint extends it, checked)",
        if r.cosigned_is_latest {
            ", the latest"
        } else {
            ""
        },
        w.quorum
    );
    cosigners(w, "  ");
    println!("{}", clean_lines(&r.cosigned_note, "  "));
}

/// The `--witness-key` witnesses and whether each cosigned, or how many cosignatures went
/// unchecked.
fn cosigners(w: &Witnessed, indent: &str) {
    for (name, at) in &w.checked {
        match at {
            Some(t) => println!(
                "{indent}cosigned by {} at {} (verified with --witness-key)",
                clean(name),
                unix_time(*t)
            ),
            None => println!("{indent}not cosigned by {}", clean(name)),
        }
    }
    if w.checked.is_empty() {
        println!(
            "{indent}{} cosignature(s), not checked: pass --witness-key KEY for the witnesses you trust",
            w.unchecked
        );
    }
}

/// A cosignature's time (Unix seconds) in RFC 3339.
fn unix_time(t: u64) -> String {
    let ts = pbjson_types::Timestamp {
        seconds: i64::try_from(t).unwrap_or(i64::MAX),
        nanos: 0,
    };
    crate::http::export::rfc3339(Some(&ts)).unwrap_or_else(|| format!("{t} (Unix seconds)"))
}

/// Whether a receipt's checkpoint is cosigned (only for a log with witnesses).
pub fn receipt_witnessing(r: &Option<pb::Receipt>, w: &Witnessed) {
    let Some(r) = r else { return };
    if w.quorum == 0 {
        return;
    }
    let size = r.tree_size;
    match w.cosigned {
        Some((c, _)) if c == size => {
            println!("  checkpoint size {size} is cosigned");
            cosigners(w, "    ");
        }
        Some((c, _)) if c > size => println!(
            "  checkpoint size {size} (not cosigned itself; the cosigned checkpoint of size {c} \
             covers the entry: `claimledger log proof --index {} --size {c}`)",
            r.index
        ),
        Some((c, _)) => {
            println!("  checkpoint size {size} (not yet cosigned; latest cosigned size {c})")
        }
        None => println!("  checkpoint size {size} (not yet cosigned; no cosigned checkpoint yet)"),
    }
}

/// How a `claim status --proof` answer stands with the witnesses.
pub fn status_witnessing(s: &StatusWitnessing, w: &Witnessed) {
    match s {
        StatusWitnessing::None => {}
        StatusWitnessing::Cosigned { size } => {
            println!("  the checkpoint of size {size} is cosigned");
            cosigners(w, "    ");
        }
        StatusWitnessing::ProvenAgainst { size, answer_size } => println!(
            "  entries also proven against the cosigned checkpoint of size {size} \
             (checkpoint size {answer_size} is not yet cosigned; it is consistent with it)"
        ),
        StatusWitnessing::NotYet {
            answer_size,
            cosigned: Some(c),
        } => println!(
            "  checkpoint size {answer_size} (not yet cosigned; latest cosigned size {c} \
             does not cover every entry)"
        ),
        StatusWitnessing::NotYet {
            answer_size,
            cosigned: None,
        } => println!(
            "  checkpoint size {answer_size} (not yet cosigned; no cosigned checkpoint yet)"
        ),
    }
    if let StatusWitnessing::ProvenAgainst { .. } = s {
        cosigners(w, "    ");
    }
}

/// The witnesses could not be checked after a write (the write itself succeeded).
pub fn witnessing_unchecked(e: &anyhow::Error) {
    eprintln!("  witnesses: not checked: {}", clean(&format!("{e:#}")));
}

/// One log entry: decoded as a JSON line with `json`, otherwise index, leaf, actor and a
/// one-line description of the change.
pub fn entry(e: &pb::LogEntry, json: bool) -> anyhow::Result<()> {
    use prost::Message;
    let entry = pb::Entry::decode(&e.data[..])?;
    if json {
        println!("{}", serde_json::to_string(&entry)?);
        return Ok(());
    }
    let what = match entry.body.and_then(|b| b.kind) {
        Some(pb::change::Kind::SourceRegistered(s)) => format!("source registered {}", s.id),
        Some(pb::change::Kind::SourceGraded(g)) => format!("source graded {}", g.source_id),
        Some(pb::change::Kind::ClaimSubmitted(c)) => {
            format!("claim submitted {}: {}", c.id, c.summary)
        }
        Some(pb::change::Kind::EvidenceAdded(x)) => format!("evidence {} on {}", x.id, x.claim_id),
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
        clean(&entry.actor),
        clean(&what)
    );
    Ok(())
}

/// A checked inclusion proof; `signed` says whether its root was a signed checkpoint's.
pub fn inclusion_proof(r: &pb::GetInclusionProofResponse, signed: bool) {
    println!(
        "entry {} in tree of size {} (root {})",
        r.index,
        r.tree_size,
        hex(&r.root_hash)
    );
    for h in &r.hashes {
        println!("  {}", hex(h));
    }
    if signed {
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

/// A checked consistency proof; `signed` says whether its new root was a signed checkpoint's.
pub fn consistency_proof(r: &pb::GetConsistencyProofResponse, signed: bool) {
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
        if signed {
            " (the signed checkpoint's)"
        } else {
            ""
        }
    );
}

/// One message of a server-side audit: progress on stderr, the result on stdout.
pub fn audit(p: &pb::VerifyLogResponse, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(p)?);
    } else if !p.done {
        eprintln!("checked {}/{}", p.checked, p.total);
    } else if p.ok {
        println!(
            "ok: {} entries verified, root {}",
            p.checked,
            hex(&p.root_hash)
        );
    } else {
        println!(
            "FAILED at index {:?}: {}",
            p.first_bad_index,
            clean(&p.error)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import and bench
// ---------------------------------------------------------------------------------------------

/// What an import wrote, by kind, and the claim id each claim line's request id got.
pub fn imported(counts: HashMap<&str, usize>, refs: HashMap<String, String>) {
    let mut keys: Vec<_> = counts.into_iter().collect();
    keys.sort();
    let summary: Vec<String> = keys.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("imported {}", summary.join(", "));
    let mut ids: Vec<_> = refs.into_iter().collect();
    ids.sort();
    for (rid, id) in ids {
        println!("  {:<32} → {}", clean(&rid), clean(&id));
    }
}

/// The figures of a bench run.
/// One figure of `claimledger bench`: a table row, or a JSON line with `json`.
pub fn bench_figure(f: &super::bench::Figure, json: bool) {
    if json {
        let line = serde_json::json!({
            "call": f.call.method(),
            "concurrency": f.concurrency,
            "ok": f.ok,
            "errors": f.errors,
            "first_error": f.first_error,
            "per_sec": f.per_sec,
            "p50_us": f.p50.as_micros() as u64,
            "p99_us": f.p99.as_micros() as u64,
            "vs_health": f.vs_health,
            "index_lag_p50_us": f.index_lag.as_ref().map(|l| l.p50.as_micros() as u64),
            "index_lag_max_us": f.index_lag.as_ref().map(|l| l.max.as_micros() as u64),
            "index_catch_up_us": f.index_lag.as_ref().map(|l| l.catch_up.as_micros() as u64),
            "server_cpu_us_per_call": f.server_cpu.map(|d| d.as_secs_f64() * 1e6),
        });
        println!("{line}");
        return;
    }
    let vs = f
        .vs_health
        .map(|r| format!("{:>5.0} %", 100.0 * r))
        .unwrap_or_else(|| "      –".into());
    let errors = match (&f.first_error, f.errors) {
        (_, 0) => String::new(),
        (Some(e), n) => format!("  {n} errors, first: {}", clean(e)),
        (None, n) => format!("  {n} errors"),
    };
    let lag = match &f.index_lag {
        Some(l) => format!(
            "  index lag p50 {:.0} ms max {:.0} ms, caught up {:.0} ms after",
            l.p50.as_secs_f64() * 1e3,
            l.max.as_secs_f64() * 1e3,
            l.catch_up.as_secs_f64() * 1e3
        ),
        None => String::new(),
    };
    let cpu = f
        .server_cpu
        .map(|d| format!("{:>7.1} µs", d.as_secs_f64() * 1e6))
        .unwrap_or_else(|| "      – µs".into());
    println!(
        "{:>3} streams  {:<24} {:>9.0}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  vs health {vs}  server CPU/call {cpu}{lag}{errors}",
        f.concurrency,
        f.call.method(),
        f.per_sec,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
    );
}

#[cfg(test)]
mod tests {
    use super::clean;
    use std::borrow::Cow;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "Russian MoD: 35 drones destroyed over Kursk",
            "Минобороны России: сбиты 35 беспилотников",
            "quotes \" and back\\slashes, emoji 🛰️, arrows → ✔",
        ] {
            assert!(matches!(clean(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn a_fake_status_line_cannot_rewrite_the_terminal() {
        let summary = "ok\r\u{1b}[2Kfake CONFIRMED";
        let shown = clean(summary);
        assert_eq!(shown, "ok\\r\\u{1b}[2Kfake CONFIRMED");
        assert!(!shown.chars().any(char::is_control));
    }

    #[test]
    fn line_breaks_and_tabs_get_their_short_escapes() {
        assert_eq!(clean("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(clean("line\r\n"), "line\\r\\n");
    }

    #[test]
    fn every_c0_and_c1_control_and_del_is_escaped() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let shown = clean(&c.to_string()).into_owned();
            assert!(shown.starts_with('\\'), "{c:?} shown as {shown:?}");
            assert!(!shown.chars().any(char::is_control), "{c:?} → {shown:?}");
        }
        assert_eq!(clean("\u{0}"), "\\u{0}");
        assert_eq!(clean("\u{7f}"), "\\u{7f}");
        assert_eq!(clean("\u{9b}31m"), "\\u{9b}31m");
    }

    #[test]
    fn line_separators_and_bidi_overrides_are_escaped() {
        assert_eq!(clean("a\u{2028}b\u{2029}"), "a\\u{2028}b\\u{2029}");
        assert_eq!(clean("\u{202e}DEMRIFNOC"), "\\u{202e}DEMRIFNOC");
        assert_eq!(clean("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn padding_still_applies_to_cleaned_text() {
        assert_eq!(format!("[{:<6}]", clean("a\u{1b}")), "[a\\u{1b}]");
        assert_eq!(format!("[{:<6}]", clean("ab")), "[ab    ]");
    }
}
