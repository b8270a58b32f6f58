//! Turning command-line text into request fields: enum names, JSON arguments, attribution
//! chains, times and hex.

use anyhow::{anyhow, Context};

use crate::pb;

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

/// A reliability grade, `A`–`F`.
pub fn reliability(s: &str) -> anyhow::Result<i32> {
    parse_enum("RELIABILITY_", s, |x| {
        pb::Reliability::from_str_name(x).map(|v| v as i32)
    })
}

pub fn source_kind(s: &str) -> anyhow::Result<i32> {
    parse_enum("SOURCE_KIND_", s, |x| {
        pb::SourceKind::from_str_name(x).map(|v| v as i32)
    })
}

pub fn role(s: &str) -> anyhow::Result<i32> {
    parse_enum("ROLE_", s, |x| pb::Role::from_str_name(x).map(|v| v as i32))
}

pub fn stance(s: &str) -> anyhow::Result<i32> {
    parse_enum("STANCE_", s, |x| {
        pb::Stance::from_str_name(x).map(|v| v as i32)
    })
}

pub fn evidence_kind(s: &str) -> anyhow::Result<i32> {
    parse_enum("EVIDENCE_KIND_", s, |x| {
        pb::EvidenceKind::from_str_name(x).map(|v| v as i32)
    })
}

pub fn decision(s: &str) -> anyhow::Result<i32> {
    parse_enum("DECISION_", s, |x| {
        pb::Decision::from_str_name(x).map(|v| v as i32)
    })
}

pub fn claim_kind(s: &str) -> anyhow::Result<i32> {
    parse_enum("CLAIM_KIND_", s, |x| {
        pb::ClaimKind::from_str_name(x).map(|v| v as i32)
    })
}

pub fn status(s: &str) -> anyhow::Result<i32> {
    parse_enum("STATUS_", s, |x| {
        pb::Status::from_str_name(x).map(|v| v as i32)
    })
}

/// Proto3 JSON given inline or, as `@path`, in a file.
pub fn json_arg<T: serde::de::DeserializeOwned>(data: &str) -> anyhow::Result<T> {
    let text = match data.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
        None => data.to_string(),
    };
    serde_json::from_str(&text).context("parsing the JSON")
}

/// An attribution chain from `--via` values: the first is the origin, the rest cited it; a
/// slug names a registered source, anything else is an unresolved name.
pub fn hops(via: &[String]) -> Vec<pb::AttributionHop> {
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

/// An RFC 3339 time.
pub fn timestamp(s: &str) -> anyhow::Result<pbjson_types::Timestamp> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| anyhow!("{s:?} is not an RFC 3339 time such as 2025-05-19T00:00:00Z"))
}

/// Bytes written as hex (`what` names the option in the error).
pub fn hex(s: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| anyhow!("{what} must be hex"))
}
