//! Validation of what clients send, before anything reaches the log: formats, required fields
//! and value ranges (SPEC §2, §4). Checks that need the current state (does the source exist?)
//! happen in the ledger, inside the writer, so they cannot race with other writes.

use crate::pb;

/// A request field that is missing or malformed; the API maps it to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Maximum length of the claim summary, in characters.
pub const MAX_SUMMARY: usize = 200;
/// Generous bounds on free text and lists so one request cannot bloat the log.
const MAX_TEXT: usize = 20_000;
const MAX_SHORT: usize = 512;
const MAX_LIST: usize = 64;
const MAX_REQUEST_ID: usize = 128;
/// How much of a bad value an error message quotes.
const QUOTE: usize = 64;
/// Timestamps must fall within years 0001–9999 (RFC 3339's range, which every client and the
/// proto3 JSON mapping can print): 0001-01-01T00:00:00Z …
const MIN_SECONDS: i64 = -62_135_596_800;
/// … to 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;
/// The longest event span: a hundred years (of 365.25 days).
const MAX_SPAN_SECONDS: i64 = 100 * 31_557_600;

/// A bad value as an error message shows it: debug-escaped (control characters visible) and cut
/// to its first `QUOTE` characters, so a huge or hostile value is never echoed whole.
pub fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE).collect();
    if chars.next().is_some() {
        format!("{head:?}… ({} bytes)", s.len())
    } else {
        format!("{head:?}")
    }
}

/// Characters that change how text around them is shown rather than being text: C0/C1 control
/// characters and DEL, and the Unicode bidirectional overrides and isolates (which can make a
/// stored summary read backwards). `multiline` text may hold newlines and tabs.
fn is_forbidden(c: char, multiline: bool) -> bool {
    if multiline && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
/// `[a-z0-9][a-z0-9-]{0,63}`.
pub fn is_slug(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn slug(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(err(field, "is required"));
    }
    if !is_slug(s) {
        return Err(err(
            field,
            format!("{} must match [a-z0-9][a-z0-9-]{{0,63}}", quote(s)),
        ));
    }
    Ok(())
}

/// Free text of at most `max` characters. Long fields (full wording, notes, rationales) may
/// have several lines; nothing may hold other control characters.
fn text(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.chars().count() > max {
        return Err(err(field, format!("is longer than {max} characters")));
    }
    let multiline = max >= MAX_TEXT;
    if let Some((at, c)) = s.char_indices().find(|(_, c)| is_forbidden(*c, multiline)) {
        let allowed = if multiline {
            " (newlines and tabs are allowed)"
        } else {
            ""
        };
        return Err(err(
            field,
            format!("control character {c:?} at byte {at} is not allowed{allowed}"),
        ));
    }
    Ok(())
}

fn required(field: &str, s: &str, max: usize) -> Result<(), FieldError> {
    if s.trim().is_empty() {
        return Err(err(field, "is required"));
    }
    text(field, s, max)
}

fn list<T>(field: &str, v: &[T]) -> Result<(), FieldError> {
    if v.len() > MAX_LIST {
        return Err(err(field, format!("has more than {MAX_LIST} items")));
    }
    Ok(())
}

fn enum_value<E: TryFrom<i32>>(field: &str, v: i32, required: bool) -> Result<(), FieldError> {
    if E::try_from(v).is_err() {
        return Err(err(field, format!("{v} is not a known value")));
    }
    if required && v == 0 {
        return Err(err(field, "is required (must not be UNSPECIFIED)"));
    }
    Ok(())
}

fn url(field: &str, s: &str) -> Result<(), FieldError> {
    text(field, s, MAX_SHORT)?;
    let web = s.starts_with("https://") || s.starts_with("http://");
    if !s.is_empty() && !web {
        return Err(err(field, format!("{} is not an http(s) URL", quote(s))));
    }
    Ok(())
}

/// Checks a client-supplied idempotency key (empty means the server makes one up).
pub fn request_id(s: &str) -> Result<(), FieldError> {
    if s.len() > MAX_REQUEST_ID || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err(
            "request_id",
            format!("must be at most {MAX_REQUEST_ID} characters without spaces"),
        ));
    }
    Ok(())
}

pub fn source(s: &pb::Source) -> Result<(), FieldError> {
    slug("source.id", &s.id)?;
    required("source.name", &s.name, MAX_SHORT)?;
    enum_value::<pb::SourceKind>("source.kind", s.kind, true)?;
    text("source.side", &s.side, 16)?;
    if s.side.chars().any(|c| c.is_whitespace()) {
        return Err(err("source.side", "must not contain spaces"));
    }
    enum_value::<pb::Role>("source.role", s.role, true)?;
    if !s.cluster.is_empty() {
        slug("source.cluster", &s.cluster)?;
    }
    enum_value::<pb::Reliability>("source.reliability", s.reliability, true)?;
    Ok(())
}

pub fn grade(source_id: &str, reliability: i32, rationale: &str) -> Result<(), FieldError> {
    slug("source_id", source_id)?;
    enum_value::<pb::Reliability>("reliability", reliability, true)?;
    required("rationale", rationale, MAX_TEXT)
}

fn hops(field: &str, hops: &[pb::AttributionHop]) -> Result<(), FieldError> {
    list(field, hops)?;
    for (i, h) in hops.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if h.source_id.is_empty() && h.name.trim().is_empty() {
            return Err(err(&f, "needs a source_id or a name"));
        }
        if !h.source_id.is_empty() {
            slug(&format!("{f}.source_id"), &h.source_id)?;
        }
        text(&format!("{f}.name"), &h.name, MAX_SHORT)?;
        text(&format!("{f}.marker"), &h.marker, MAX_SHORT)?;
        enum_value::<pb::Relation>(&format!("{f}.relation"), h.relation, false)?;
    }
    Ok(())
}

fn finite(field: &str, v: f64) -> Result<(), FieldError> {
    if !v.is_finite() || v < 0.0 {
        return Err(err(field, "must be a finite, non-negative number"));
    }
    Ok(())
}

pub fn quantity(field: &str, q: &pb::Quantity) -> Result<(), FieldError> {
    required(&format!("{field}.measure"), &q.measure, 64)?;
    required(&format!("{field}.unit"), &q.unit, 64)?;
    text(&format!("{field}.period"), &q.period, 64)?;
    enum_value::<pb::Qualifier>(&format!("{field}.qualifier"), q.qualifier, true)?;
    finite(&format!("{field}.low"), q.low)?;
    finite(&format!("{field}.best"), q.best)?;
    finite(&format!("{field}.high"), q.high)?;
    if q.qualifier == pb::Qualifier::Range as i32 && q.low > q.high {
        return Err(err(field, "RANGE needs low <= high"));
    }
    Ok(())
}

/// A timestamp, if given, within years 0001–9999.
pub fn timestamp(field: &str, t: &Option<pbjson_types::Timestamp>) -> Result<(), FieldError> {
    if let Some(t) = t {
        if !(0..1_000_000_000).contains(&t.nanos) {
            return Err(err(field, "nanos out of range"));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
            return Err(err(
                field,
                format!(
                    "{} seconds is outside years 0001–9999 (from {MIN_SECONDS} to {MAX_SECONDS})",
                    t.seconds
                ),
            ));
        }
    }
    Ok(())
}

/// An id the server assigned (a claim's, say): short, and without anything to echo.
pub fn id(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() {
        return Err(err(field, "is required"));
    }
    if s.len() > QUOTE || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(err(field, format!("{} is not an id", quote(s))));
    }
    Ok(())
}

/// A query's free text (ListClaims `query`, `place`).
pub fn query_text(field: &str, s: &str) -> Result<(), FieldError> {
    text(field, s, MAX_SHORT)
}

pub fn claim(c: &pb::Claim) -> Result<(), FieldError> {
    enum_value::<pb::ClaimKind>("claim.kind", c.kind, true)?;
    enum_value::<pb::Modality>("claim.modality", c.modality, true)?;
    required("claim.summary", &c.summary, MAX_SUMMARY)?;
    text("claim.text", &c.text, MAX_TEXT)?;
    slug("claim.claimant_id", &c.claimant_id)?;
    hops("claim.attribution", &c.attribution)?;
    list("claim.urls", &c.urls)?;
    for (i, u) in c.urls.iter().enumerate() {
        url(&format!("claim.urls[{i}]"), u)?;
    }
    if let Some(t) = &c.event_time {
        timestamp("claim.event_time.start", &t.start)?;
        timestamp("claim.event_time.end", &t.end)?;
        enum_value::<pb::TimePrecision>("claim.event_time.precision", t.precision, false)?;
        text("claim.event_time.expression", &t.expression, MAX_SHORT)?;
        if let (Some(s), Some(e)) = (&t.start, &t.end) {
            if (e.seconds, e.nanos) < (s.seconds, s.nanos) {
                return Err(err("claim.event_time.end", "is before start"));
            }
            if e.seconds - s.seconds > MAX_SPAN_SECONDS {
                return Err(err(
                    "claim.event_time.end",
                    "is more than 100 years after start",
                ));
            }
        }
    }
    list("claim.places", &c.places)?;
    for (i, p) in c.places.iter().enumerate() {
        let f = format!("claim.places[{i}]");
        for (name, v) in [
            ("country", &p.country),
            ("admin1", &p.admin1),
            ("admin2", &p.admin2),
            ("locality", &p.locality),
        ] {
            text(&format!("{f}.{name}"), v, MAX_SHORT)?;
        }
        if let Some(lat) = p.lat {
            if !(-90.0..=90.0).contains(&lat) {
                return Err(err(format!("{f}.lat"), "must be within [-90, 90]"));
            }
        }
        if let Some(lon) = p.lon {
            if !(-180.0..=180.0).contains(&lon) {
                return Err(err(format!("{f}.lon"), "must be within [-180, 180]"));
            }
        }
        enum_value::<pb::PlacePrecision>(&format!("{f}.precision"), p.precision, false)?;
    }
    list("claim.quantities", &c.quantities)?;
    for (i, q) in c.quantities.iter().enumerate() {
        quantity(&format!("claim.quantities[{i}]"), q)?;
    }
    timestamp("claim.resolve_by", &c.resolve_by)?;
    list("claim.tags", &c.tags)?;
    for (i, t) in c.tags.iter().enumerate() {
        required(&format!("claim.tags[{i}]"), t, 64)?;
    }
    Ok(())
}

pub fn evidence(e: &pb::Evidence) -> Result<(), FieldError> {
    slug("evidence.source_id", &e.source_id)?;
    hops("evidence.attribution", &e.attribution)?;
    enum_value::<pb::Stance>("evidence.stance", e.stance, true)?;
    enum_value::<pb::EvidenceKind>("evidence.kind", e.kind, true)?;
    url("evidence.url", &e.url)?;
    let hex = e.content_sha256.len() == 64
        && e.content_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !e.content_sha256.is_empty() && !hex {
        return Err(err(
            "evidence.content_sha256",
            "must be 64 lowercase hex digits",
        ));
    }
    if !(2..=6).contains(&e.credibility) {
        return Err(err(
            "evidence.credibility",
            "must be 2–6 (1, confirmed by other sources, is derived by the policy)",
        ));
    }
    if let Some(q) = &e.quantity {
        quantity("evidence.quantity", q)?;
    }
    text("evidence.note", &e.note, MAX_TEXT)
}

pub fn verdict(v: &pb::Verdict) -> Result<(), FieldError> {
    enum_value::<pb::Decision>("verdict.decision", v.decision, true)?;
    required("verdict.rationale", &v.rationale, MAX_TEXT)?;
    list("verdict.evidence_ids", &v.evidence_ids)?;
    for (i, e) in v.evidence_ids.iter().enumerate() {
        id(&format!("verdict.evidence_ids[{i}]"), e)?;
    }
    let must_cite = [pb::Decision::Confirmed as i32, pb::Decision::Refuted as i32];
    if must_cite.contains(&v.decision) && v.evidence_ids.is_empty() {
        return Err(err(
            "verdict.evidence_ids",
            "CONFIRMED and REFUTED must cite at least one piece of evidence",
        ));
    }
    Ok(())
}

pub fn retraction(r: &pb::Retraction) -> Result<(), FieldError> {
    slug("retraction.source_id", &r.source_id)?;
    url("retraction.url", &r.url)?;
    text("retraction.note", &r.note, MAX_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("ru-mod"));
        assert!(is_slug("a"));
        assert!(!is_slug("-a"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
        assert!(!is_slug(&"a".repeat(65)));
    }

    #[test]
    fn verdict_rules() {
        let mut v = pb::Verdict {
            decision: pb::Decision::Confirmed as i32,
            rationale: "seen".into(),
            ..Default::default()
        };
        assert_eq!(verdict(&v).unwrap_err().field, "verdict.evidence_ids");
        v.evidence_ids.push("e1".into());
        assert!(verdict(&v).is_ok());
        v.rationale.clear();
        assert_eq!(verdict(&v).unwrap_err().field, "verdict.rationale");
    }
}
