//! The record in words for people: enum values as plain words, the policy's trace as
//! sentences, places and quantities as phrases, and one line per log entry.

use crate::pb::{self, change::Kind};

/// An enum value's name without its prefix, in lower case with spaces: `STATUS_CONFIRMED`
/// with prefix `STATUS_` is "confirmed". An unknown number is said as such.
fn plain(name: Option<&'static str>, prefix: &str, n: i32) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_lowercase()
            .replace('_', " "),
        None => format!("unknown value {n}"),
    }
}

pub(super) fn status(n: i32) -> String {
    plain(
        pb::Status::try_from(n).ok().map(|s| s.as_str_name()),
        "STATUS_",
        n,
    )
}

pub(super) fn claim_kind(n: i32) -> String {
    plain(
        pb::ClaimKind::try_from(n).ok().map(|s| s.as_str_name()),
        "CLAIM_KIND_",
        n,
    )
}

pub(super) fn modality(n: i32) -> String {
    plain(
        pb::Modality::try_from(n).ok().map(|s| s.as_str_name()),
        "MODALITY_",
        n,
    )
}

pub(super) fn stance(n: i32) -> String {
    plain(
        pb::Stance::try_from(n).ok().map(|s| s.as_str_name()),
        "STANCE_",
        n,
    )
}

pub(super) fn evidence_kind(n: i32) -> String {
    plain(
        pb::EvidenceKind::try_from(n).ok().map(|s| s.as_str_name()),
        "EVIDENCE_KIND_",
        n,
    )
}

pub(super) fn relation(n: i32) -> String {
    plain(
        pb::Relation::try_from(n).ok().map(|s| s.as_str_name()),
        "RELATION_",
        n,
    )
}

pub(super) fn decision(n: i32) -> String {
    plain(
        pb::Decision::try_from(n).ok().map(|s| s.as_str_name()),
        "DECISION_",
        n,
    )
}

pub(super) fn source_kind(n: i32) -> String {
    plain(
        pb::SourceKind::try_from(n).ok().map(|s| s.as_str_name()),
        "SOURCE_KIND_",
        n,
    )
}

pub(super) fn role(n: i32) -> String {
    plain(
        pb::Role::try_from(n).ok().map(|s| s.as_str_name()),
        "ROLE_",
        n,
    )
}

/// A reliability grade as its letter ("A" … "F"), or "ungraded".
pub(super) fn grade(n: i32) -> String {
    match pb::Reliability::try_from(n) {
        Ok(pb::Reliability::Unspecified) | Err(_) => "ungraded".to_string(),
        Ok(r) => r
            .as_str_name()
            .strip_prefix("RELIABILITY_")
            .unwrap_or("?")
            .to_string(),
    }
}

/// The possessive of a name: "Reuters'" for a name ending in s, else "TASS's"-style "'s".
fn possessive(name: &str) -> String {
    if name.ends_with('s') {
        format!("{name}'")
    } else {
        format!("{name}'s")
    }
}

/// What the page knows of the origin of a piece of evidence, for its trace sentence.
pub(super) struct OriginInfo {
    /// The source's name, or the unresolved label ("Agencies").
    pub name: String,
    /// The origin's grade as of the size judged at, when it is a registered source.
    pub grade: Option<String>,
}

/// One trace item as a sentence: "Reuters' media report (supports) counted for group reuters
/// (credible, graded source): independent, grade B, credibility 2." or "TASS's media report
/// (supports) did not count (same cluster as claimant; credibility 4-6): not independent,
/// grade D, credibility 4."
pub(super) fn trace_sentence(
    item: &pb::TraceItem,
    evidence: Option<&pb::Evidence>,
    origin: &OriginInfo,
) -> String {
    let what = evidence.map_or("evidence".to_string(), |e| evidence_kind(e.kind));
    let mut stance_words = stance(item.stance);
    if item.effective_stance != item.stance {
        stance_words = format!("{stance_words}, taken as {}", stance(item.effective_stance));
    }
    let subject = format!("{} {what} ({stance_words})", possessive(&origin.name));
    let mut facts = Vec::new();
    facts.push(if item.independent {
        "independent".to_string()
    } else {
        "not independent".to_string()
    });
    if let Some(g) = &origin.grade {
        facts.push(format!("grade {g}"));
    }
    if let Some(e) = evidence {
        if e.credibility > 0 {
            facts.push(format!("credibility {}", e.credibility));
        }
    }
    // A reason that only repeats the stance ("no comment") is said once, with the stance.
    let reasons: Vec<&str> = item
        .reasons
        .iter()
        .map(String::as_str)
        .filter(|r| *r != stance_words)
        .collect();
    let why = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    };
    if item.counted {
        format!(
            "{subject} counted for group {}{why}: {}.",
            item.group,
            facts.join(", ")
        )
    } else {
        format!("{subject} did not count{why}: {}.", facts.join(", "))
    }
}

/// A place as a phrase: "Sumy, Sumy Oblast, UA (locality) at 50.91, 34.80".
pub(super) fn place(p: &pb::Place) -> String {
    let mut parts: Vec<&str> = [&p.locality, &p.admin2, &p.admin1, &p.country]
        .into_iter()
        .map(|s| s.as_str())
        .filter(|s| !s.trim().is_empty())
        .collect();
    if parts.is_empty() {
        parts.push("(no name)");
    }
    let mut s = parts.join(", ");
    let precision = plain(
        pb::PlacePrecision::try_from(p.precision)
            .ok()
            .map(|x| x.as_str_name()),
        "PLACE_PRECISION_",
        p.precision,
    );
    if p.precision != 0 {
        s.push_str(&format!(" ({precision})"));
    }
    if let (Some(lat), Some(lon)) = (p.lat, p.lon) {
        s.push_str(&format!(" at {lat:.4}, {lon:.4}"));
    }
    s
}

/// A quantity as a phrase: "destroyed: exactly 35 drones", "killed: about 5000 soldiers per
/// week", "captured: 2 to 3 villages".
pub(super) fn quantity(q: &pb::Quantity) -> String {
    let n = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            format!("{x}")
        }
    };
    let amount = match pb::Qualifier::try_from(q.qualifier) {
        Ok(pb::Qualifier::Exact) => format!("exactly {}", n(q.best)),
        Ok(pb::Qualifier::AtLeast) => format!("at least {}", n(q.best)),
        Ok(pb::Qualifier::MoreThan) => format!("more than {}", n(q.best)),
        Ok(pb::Qualifier::AtMost) => format!("at most {}", n(q.best)),
        Ok(pb::Qualifier::Approx) => format!("about {}", n(q.best)),
        Ok(pb::Qualifier::Range) => format!("{} to {}", n(q.low), n(q.high)),
        _ => n(q.best),
    };
    let mut s = format!("{}: {amount} {}", q.measure, q.unit);
    if !q.period.is_empty() {
        s.push_str(&format!(" ({})", q.period.replace('_', " ")));
    }
    s
}

/// What an entry's change did, in a few words, and the page it is about (if any).
pub(super) fn change(c: Option<&pb::Change>) -> (String, Option<String>) {
    let Some(kind) = c.and_then(|c| c.kind.as_ref()) else {
        return ("an entry without a change".to_string(), None);
    };
    match kind {
        Kind::SourceRegistered(s) => (
            format!("source {} registered: {}", s.id, s.name),
            Some(format!("/sources/{}", s.id)),
        ),
        Kind::SourceGraded(g) => (
            format!(
                "source {} graded {}: {}",
                g.source_id,
                grade(g.reliability),
                g.rationale
            ),
            Some(format!("/sources/{}", g.source_id)),
        ),
        Kind::ClaimSubmitted(c) => (
            format!("claim {} submitted: {}", c.id, c.summary),
            Some(format!("/claims/{}", c.id)),
        ),
        Kind::EvidenceAdded(e) => (
            format!(
                "evidence {} on claim {}: {} {} by {}",
                e.id,
                e.claim_id,
                evidence_kind(e.kind),
                stance(e.stance),
                e.source_id
            ),
            Some(format!("/claims/{}", e.claim_id)),
        ),
        Kind::VerdictRecorded(v) => (
            format!(
                "verdict {} on claim {}: {}",
                v.id,
                v.claim_id,
                decision(v.decision)
            ),
            Some(format!("/claims/{}", v.claim_id)),
        ),
        Kind::ClaimRetracted(r) => (
            format!("claim {} retracted by {}", r.claim_id, r.source_id),
            Some(format!("/claims/{}", r.claim_id)),
        ),
    }
}
