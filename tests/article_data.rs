//! The demo data set built from `seed/article.txt` (`examples/article.jsonl`) must stay loadable:
//! every line is one `claimledger.v1.ImportLine` in proto3 JSON, sources are registered before
//! they are used, `@request_id` claim references point back to earlier claim lines, and the six
//! claims of the article are all there. This test needs no server; the import itself is tested
//! elsewhere.

use std::collections::{HashMap, HashSet};

use claimledger::pb::{AttributionHop, ClaimKind, ImportLine};

fn article_lines() -> Vec<(usize, ImportLine)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/article.jsonl");
    let text = std::fs::read_to_string(path).expect("read examples/article.jsonl");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let line: ImportLine = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("line {}: not an ImportLine: {e}\n{l}", i + 1));
            (i + 1, line)
        })
        .collect()
}

fn valid_source_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Tracks what earlier lines defined, so later lines can be checked against it.
#[derive(Default)]
struct Seen {
    sources: HashSet<String>,
    claims: HashMap<String, ClaimKind>,
    request_ids: HashSet<String>,
}

impl Seen {
    fn source(&self, n: usize, what: &str, id: &str) {
        assert!(
            self.sources.contains(id),
            "line {n}: {what} {id:?} is not registered on an earlier line"
        );
    }

    fn hops(&self, n: usize, what: &str, hops: &[AttributionHop]) {
        for (h, hop) in hops.iter().enumerate() {
            if hop.source_id.is_empty() {
                assert!(
                    !hop.name.is_empty(),
                    "line {n}: {what} hop {h} has neither source_id nor name"
                );
            } else {
                self.source(n, &format!("{what} hop {h} source_id"), &hop.source_id);
            }
        }
    }

    fn claim_ref(&self, n: usize, claim_id: &str) {
        let rid = claim_id.strip_prefix('@').unwrap_or_else(|| {
            panic!("line {n}: claim_id {claim_id:?} must be an @request_id reference")
        });
        assert!(
            self.claims.contains_key(rid),
            "line {n}: claim_id {claim_id:?} does not name an earlier claim line"
        );
    }

    fn request_id(&mut self, n: usize, rid: &str) {
        assert!(!rid.is_empty(), "line {n}: request_id is empty");
        assert!(
            self.request_ids.insert(rid.to_owned()),
            "line {n}: request_id {rid:?} is used twice"
        );
    }
}

#[test]
fn article_jsonl_parses_and_is_self_consistent() {
    let lines = article_lines();
    assert!(!lines.is_empty(), "examples/article.jsonl is empty");
    let mut seen = Seen::default();
    let mut evidence = 0;

    for (n, line) in &lines {
        let n = *n;
        let set = [
            line.source.is_some(),
            line.claim.is_some(),
            line.evidence.is_some(),
            line.grade.is_some(),
            line.verdict.is_some(),
            line.retraction.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        assert_eq!(set, 1, "line {n}: exactly one ImportLine field must be set");

        if let Some(source) = &line.source {
            assert!(
                valid_source_id(&source.id),
                "line {n}: bad source id {:?}",
                source.id
            );
            assert!(!source.name.is_empty(), "line {n}: source without a name");
            assert!(
                seen.sources.insert(source.id.clone()),
                "line {n}: source {:?} registered twice",
                source.id
            );
        }
        if let Some(req) = &line.claim {
            seen.request_id(n, &req.request_id);
            let claim = req
                .claim
                .as_ref()
                .unwrap_or_else(|| panic!("line {n}: claim line without a claim"));
            assert!(
                claim.id.is_empty(),
                "line {n}: claim ids are server-assigned"
            );
            assert_ne!(claim.kind(), ClaimKind::Unspecified, "line {n}: claim kind");
            assert!(!claim.text.is_empty(), "line {n}: claim without text");
            assert!(
                !claim.summary.is_empty() && claim.summary.chars().count() <= 200,
                "line {n}: summary must be 1-200 characters"
            );
            seen.source(n, "claimant_id", &claim.claimant_id);
            seen.hops(n, "claim attribution", &claim.attribution);
            seen.claims.insert(req.request_id.clone(), claim.kind());
        }
        if let Some(req) = &line.evidence {
            seen.request_id(n, &req.request_id);
            seen.claim_ref(n, &req.claim_id);
            let ev = req
                .evidence
                .as_ref()
                .unwrap_or_else(|| panic!("line {n}: evidence line without evidence"));
            seen.source(n, "evidence source_id", &ev.source_id);
            seen.hops(n, "evidence attribution", &ev.attribution);
            assert!(
                (2..=6).contains(&ev.credibility),
                "line {n}: credibility must be 2-6"
            );
            assert!(
                ev.note.contains("demo evidence"),
                "line {n}: demo evidence must say so in its note"
            );
            evidence += 1;
        }
        if let Some(req) = &line.grade {
            seen.request_id(n, &req.request_id);
            seen.source(n, "grade source_id", &req.source_id);
            assert!(
                !req.rationale.is_empty(),
                "line {n}: grade without rationale"
            );
        }
        if let Some(req) = &line.verdict {
            seen.request_id(n, &req.request_id);
            seen.claim_ref(n, &req.claim_id);
        }
        if let Some(req) = &line.retraction {
            seen.request_id(n, &req.request_id);
            seen.claim_ref(n, &req.claim_id);
            if let Some(r) = &req.retraction {
                seen.source(n, "retraction source_id", &r.source_id);
            }
        }
    }

    assert!(
        seen.claims.len() >= 6,
        "expected the article's six claims, found {}",
        seen.claims.len()
    );
    for (rid, kind) in [
        ("claim-villages", ClaimKind::TerritorialControl),
        ("claim-drones-35", ClaimKind::Interception),
        ("claim-icbm-warning", ClaimKind::MissileLaunchOrWarning),
        ("claim-casualties-5000", ClaimKind::CasualtyFigure),
        ("claim-prisoner-swap", ClaimKind::PrisonerExchange),
        ("claim-largest-drone-attack", ClaimKind::Strike),
    ] {
        assert_eq!(
            seen.claims.get(rid),
            Some(&kind),
            "article claim {rid} missing or of the wrong kind"
        );
    }
    assert!(evidence > 0, "the demo should carry some evidence");
}
