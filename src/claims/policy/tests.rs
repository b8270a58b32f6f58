//! Table-driven tests of the confirmation policy `v1`, one group of cases per rule of SPEC §2.4.
//!
//! Every case names the rule it exercises and asserts a specific status, group counts, flags and,
//! for the items that matter, whether they counted and the words the trace gives for it.

use std::collections::HashMap;

use super::*;
use pb::{
    ClaimKind, Decision, EvidenceKind, Modality, Qualifier, Reliability, Role, Stance, Status,
};

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

fn source(id: &str, side: &str, role: Role, cluster: &str, grade: Reliability) -> pb::Source {
    pb::Source {
        id: id.to_string(),
        name: id.to_uppercase(),
        side: side.to_string(),
        role: role as i32,
        cluster: cluster.to_string(),
        reliability: grade as i32,
        ..Default::default()
    }
}

/// The registry every case uses: the Russian state cluster, two Ukrainian parties, an ally of
/// Russia, independent outlets of various grades and an outlet with no explicit cluster.
fn registry() -> HashMap<String, pb::Source> {
    [
        source("ru-mod", "RU", Role::Party, "ru-state", Reliability::D),
        source("tass", "RU", Role::Affiliated, "ru-state", Reliability::D),
        source("ria", "RU", Role::Affiliated, "ru-state", Reliability::D),
        source("ua-gov", "UA", Role::Party, "ua-state", Reliability::C),
        source("ua-gs", "UA", Role::Party, "ua-state", Reliability::B),
        source("ru-ally", "RU", Role::Aligned, "", Reliability::B),
        source("reuters", "", Role::NonParty, "", Reliability::B),
        source("ap", "", Role::NonParty, "", Reliability::A),
        source("bbc", "", Role::NonParty, "", Reliability::B),
        source("isw", "", Role::NonParty, "", Reliability::B),
        source("geoconfirmed", "", Role::NonParty, "", Reliability::C),
        source("xinhua", "CN", Role::NonParty, "", Reliability::C),
        source("local-blog", "", Role::Unknown, "", Reliability::C),
    ]
    .into_iter()
    .map(|s| (s.id.clone(), s))
    .collect()
}

fn claim(kind: ClaimKind, claimant: &str) -> pb::Claim {
    pb::Claim {
        id: "c1".to_string(),
        kind: kind as i32,
        modality: Modality::AssertedFact as i32,
        claimant_id: claimant.to_string(),
        index: 1,
        ..Default::default()
    }
}

fn warning(claimant: &str, resolve_by: i64) -> pb::Claim {
    pb::Claim {
        modality: Modality::IntentOrWarning as i32,
        resolve_by: Some(pbjson_types::Timestamp {
            seconds: resolve_by,
            nanos: 0,
        }),
        ..claim(ClaimKind::MissileLaunchOrWarning, claimant)
    }
}

fn with_qty(mut c: pb::Claim, q: pb::Quantity) -> pb::Claim {
    c.quantities.push(q);
    c
}

fn qty(measure: &str, unit: &str, qualifier: Qualifier, best: f64) -> pb::Quantity {
    pb::Quantity {
        measure: measure.to_string(),
        unit: unit.to_string(),
        qualifier: qualifier as i32,
        best,
        ..Default::default()
    }
}

fn range(measure: &str, unit: &str, low: f64, high: f64) -> pb::Quantity {
    pb::Quantity {
        low,
        high,
        ..qty(measure, unit, Qualifier::Range, 0.0)
    }
}

/// A media report with credibility 2 by `source`, with no chain and index 0.
fn ev(id: &str, source: &str, stance: Stance) -> pb::Evidence {
    pb::Evidence {
        id: id.to_string(),
        claim_id: "c1".to_string(),
        source_id: source.to_string(),
        stance: stance as i32,
        kind: EvidenceKind::MediaReport as i32,
        credibility: 2,
        ..Default::default()
    }
}

fn hop(id: &str) -> pb::AttributionHop {
    pb::AttributionHop {
        source_id: id.to_string(),
        ..Default::default()
    }
}

fn named(name: &str) -> pb::AttributionHop {
    pb::AttributionHop {
        name: name.to_string(),
        ..Default::default()
    }
}

/// Small fluent setters so that each table row reads as a sentence.
trait EvidenceExt {
    fn via(self, hops: Vec<pb::AttributionHop>) -> Self;
    fn cred(self, credibility: u32) -> Self;
    fn visual(self, kind: EvidenceKind, verified: bool) -> Self;
    fn qty(self, q: pb::Quantity) -> Self;
    fn at(self, index: u64) -> Self;
}

impl EvidenceExt for pb::Evidence {
    /// Sets the chain; the first hop is the ORIGIN and the others CITED it in turn.
    fn via(mut self, hops: Vec<pb::AttributionHop>) -> Self {
        self.attribution = hops
            .into_iter()
            .enumerate()
            .map(|(i, mut h)| {
                h.relation = if i == 0 {
                    pb::Relation::Origin as i32
                } else {
                    pb::Relation::Cited as i32
                };
                h
            })
            .collect();
        self
    }
    fn cred(mut self, credibility: u32) -> Self {
        self.credibility = credibility;
        self
    }
    fn visual(mut self, kind: EvidenceKind, verified: bool) -> Self {
        self.kind = kind as i32;
        self.geolocation_verified = verified;
        self
    }
    fn qty(mut self, q: pb::Quantity) -> Self {
        self.quantity = Some(q);
        self
    }
    fn at(mut self, index: u64) -> Self {
        self.index = index;
        self
    }
}

fn verdict(decision: Decision, index: u64) -> pb::Verdict {
    pb::Verdict {
        id: format!("v{index}"),
        claim_id: "c1".to_string(),
        decision: decision as i32,
        rationale: "reviewed".to_string(),
        index,
        ..Default::default()
    }
}

fn retraction(source: &str, index: u64) -> pb::Retraction {
    pb::Retraction {
        claim_id: "c1".to_string(),
        source_id: source.to_string(),
        index,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// What one trace item must show. `reason` must appear among the item's reasons (empty: no
/// check); `origin`, `group` and `effective` are checked when given.
#[derive(Default)]
struct Expect {
    id: &'static str,
    counted: bool,
    independent: bool,
    reason: &'static str,
    origin: Option<&'static str>,
    group: Option<&'static str>,
    effective: Option<Stance>,
}

fn t(id: &'static str, counted: bool, independent: bool, reason: &'static str) -> Expect {
    Expect {
        id,
        counted,
        independent,
        reason,
        ..Default::default()
    }
}

#[derive(Default)]
struct Case {
    name: &'static str,
    claim: pb::Claim,
    evidence: Vec<pb::Evidence>,
    verdicts: Vec<pb::Verdict>,
    retraction: Option<pb::Retraction>,
    now: i64,
    status: Status,
    /// The computed status when it differs from the effective one.
    computed: Option<Status>,
    /// (S, C).
    groups: (u32, u32),
    flags: &'static [&'static str],
    needs_review: bool,
    trace: Vec<Expect>,
}

fn run(case: &Case, sources: &HashMap<String, pb::Source>) -> Outcome {
    evaluate(&PolicyInput {
        claim: &case.claim,
        evidence: &case.evidence,
        verdicts: &case.verdicts,
        retraction: case.retraction.as_ref(),
        sources,
        now_unix: case.now,
    })
}

fn check(case: &Case) {
    let sources = registry();
    let out = run(case, &sources);
    let name = case.name;
    assert_eq!(out.status, case.status, "{name}: status; {out:#?}");
    assert_eq!(
        out.computed_status,
        case.computed.unwrap_or(case.status),
        "{name}: computed status; {out:#?}"
    );
    // Rule 9 holds in every case, not only the ones about it.
    assert_eq!(
        out.confirmed,
        out.status == Status::Confirmed,
        "{name}: confirmed"
    );
    assert_eq!(
        (out.supporting_groups, out.contradicting_groups),
        case.groups,
        "{name}: (S, C); {out:#?}"
    );
    assert_eq!(out.flags, case.flags, "{name}: flags");
    assert_eq!(out.needs_review, case.needs_review, "{name}: needs_review");
    // The trace has one item per piece of evidence, in input order.
    let ids: Vec<&str> = out.trace.iter().map(|t| t.evidence_id.as_str()).collect();
    let want_ids: Vec<&str> = case.evidence.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, want_ids, "{name}: trace order");
    for want in &case.trace {
        let Some(got) = out.trace.iter().find(|t| t.evidence_id == want.id) else {
            panic!("{name}: no trace item for {}", want.id);
        };
        let id = want.id;
        assert_eq!(got.counted, want.counted, "{name}/{id}: counted; {got:#?}");
        assert_eq!(
            got.independent, want.independent,
            "{name}/{id}: independent; {got:#?}"
        );
        if !want.reason.is_empty() {
            assert!(
                got.reasons.iter().any(|r| r.contains(want.reason)),
                "{name}/{id}: reason {:?} missing from {:?}",
                want.reason,
                got.reasons
            );
        }
        if let Some(origin) = want.origin {
            assert_eq!(got.origin, origin, "{name}/{id}: origin");
        }
        if let Some(group) = want.group {
            assert_eq!(got.group, group, "{name}/{id}: group");
        }
        if let Some(effective) = want.effective {
            assert_eq!(
                got.effective_stance, effective as i32,
                "{name}/{id}: effective stance"
            );
        }
    }
}

fn check_all(cases: &[Case]) {
    for case in cases {
        check(case);
    }
}

use ClaimKind::{EquipmentLoss, Strike, TerritorialControl};
use Stance::{Context, Contradicts, NoComment, Supports};

// ---------------------------------------------------------------------------------------------
// Rules 1–3: origin, groups, independence
// ---------------------------------------------------------------------------------------------

#[test]
fn origin_groups_and_independence() {
    check_all(&[
        Case {
            name: "circular reporting MoD -> TASS -> RIA is not independent of an MoD claim",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("tass", "tass", Supports).via(vec![hop("ru-mod"), hop("tass")]),
                ev("ria", "ria", Supports).via(vec![hop("ru-mod"), hop("tass"), hop("ria")]),
            ],
            status: Status::Claimed,
            trace: vec![
                Expect {
                    origin: Some("ru-mod"),
                    group: Some("ru-state"),
                    ..t("tass", false, false, "same cluster as claimant")
                },
                t("ria", false, false, "claimant in attribution chain"),
            ],
            ..Default::default()
        },
        Case {
            name: "circular reporting of an admission counts once for the ru-state group",
            claim: claim(Strike, "ua-gs"),
            evidence: vec![
                ev("mod", "ru-mod", Supports).cred(3),
                ev("tass", "tass", Supports).via(vec![hop("ru-mod"), hop("tass")]),
                ev("ria", "ria", Supports).via(vec![hop("ru-mod"), hop("tass"), hop("ria")]),
            ],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![
                t("mod", true, true, "adverse-party admission"),
                Expect {
                    group: Some("ru-state"),
                    ..t("tass", false, true, "duplicate group")
                },
                t("ria", false, true, "duplicate group"),
            ],
            ..Default::default()
        },
        Case {
            name: "an independent outlet relaying the claimant has the claimant as origin",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).via(vec![hop("ru-mod"), hop("reuters")])],
            status: Status::Claimed,
            trace: vec![Expect {
                origin: Some("ru-mod"),
                ..t("r", false, false, "claimant in attribution chain")
            }],
            ..Default::default()
        },
        Case {
            name: "the claimant relaying an enemy 'admission' is circular",
            claim: claim(TerritorialControl, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).via(vec![
                hop("ua-gov"),
                hop("ru-mod"),
                hop("reuters"),
            ])],
            status: Status::Claimed,
            trace: vec![Expect {
                origin: Some("ua-gov"),
                ..t("r", false, false, "claimant in attribution chain")
            }],
            ..Default::default()
        },
        Case {
            name: "a chain naming the claimant by its unresolved name is circular",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).via(vec![
                hop("isw"),
                named("ru-mod"),
                hop("reuters"),
            ])],
            status: Status::Claimed,
            trace: vec![t("r", false, false, "claimant in attribution chain")],
            ..Default::default()
        },
        Case {
            name: "an ally on the claimant's side is not independent",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("a", "ru-ally", Supports)],
            status: Status::Claimed,
            trace: vec![t("a", false, false, "same side as claimant")],
            ..Default::default()
        },
        Case {
            name: "'agencies via Xinhua' has an unknown origin",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("x", "xinhua", Supports).via(vec![named("agencies"), hop("xinhua")])],
            status: Status::Claimed,
            trace: vec![Expect {
                origin: Some("unknown:agencies"),
                group: Some("unknown:agencies"),
                ..t("x", false, false, "unknown origin")
            }],
            ..Default::default()
        },
        Case {
            name:
                "an unregistered first hop is an unknown origin even if a registered outlet follows",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("b", "bbc", Supports).via(vec![hop("kyiv-indy"), hop("reuters")])],
            status: Status::Claimed,
            trace: vec![Expect {
                origin: Some("unknown:kyiv-indy"),
                ..t("b", false, false, "unknown origin")
            }],
            ..Default::default()
        },
        Case {
            name: "blank hops are skipped and the first registered hop is the origin",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("b", "bbc", Supports).via(vec![hop(""), hop("reuters"), hop("bbc")]),
                ev("a", "ap", Supports).via(vec![hop("reuters"), hop("ap")]),
            ],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![
                Expect {
                    origin: Some("reuters"),
                    group: Some("reuters"),
                    ..t("b", true, true, "credible, graded source")
                },
                t("a", false, true, "duplicate group"),
            ],
            ..Default::default()
        },
        Case {
            name: "evidence without a chain originates with its own source",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("i", "isw", Supports)],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![Expect {
                origin: Some("isw"),
                group: Some("isw"),
                ..t("i", true, true, "credible, graded source")
            }],
            ..Default::default()
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// Rules 4–5: qualification, denials, silence, context
// ---------------------------------------------------------------------------------------------

#[test]
fn qualification_denials_and_silence() {
    check_all(&[
        Case {
            name: "grade C origin with credibility 2 does not qualify",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("g", "local-blog", Supports)],
            status: Status::Claimed,
            trace: vec![t("g", false, true, "grade below B")],
            ..Default::default()
        },
        Case {
            name: "credibility 4 does not qualify even from a grade A origin",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("a", "ap", Supports).cred(4)],
            status: Status::Claimed,
            trace: vec![t("a", false, true, "credibility 4-6")],
            ..Default::default()
        },
        Case {
            name: "verified geolocated media qualifies whatever the grade",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("geo", "geoconfirmed", Supports)
                .cred(5)
                .visual(EvidenceKind::GeolocatedMedia, true)],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![t("geo", true, true, "verified visual evidence")],
            ..Default::default()
        },
        Case {
            name: "unverified imagery from a grade C origin does not qualify",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("geo", "geoconfirmed", Supports).visual(EvidenceKind::SatelliteImagery, false)
            ],
            status: Status::Claimed,
            trace: vec![t("geo", false, true, "geolocation not verified")],
            ..Default::default()
        },
        Case {
            name: "the UA government confirming a RU claim is an adverse-party admission",
            claim: claim(Strike, "ru-mod"),
            // Grade C and credibility 5: the admission qualifies on its own.
            evidence: vec![ev("ua", "ua-gov", Supports).cred(5)],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![t("ua", true, true, "adverse-party admission")],
            ..Default::default()
        },
        Case {
            name: "an adversary's denial does not count and is flagged",
            claim: claim(Strike, "ru-mod"),
            // The General Staff is graded B, so only the denial rule keeps it from counting.
            evidence: vec![
                ev("d1", "ua-gs", Contradicts),
                ev("d2", "ua-gov", Contradicts),
            ],
            status: Status::Claimed,
            groups: (0, 0),
            flags: &["denied_by_adversary"],
            trace: vec![
                t("d1", false, true, "adversary denial"),
                t("d2", false, true, "adversary denial"),
            ],
            ..Default::default()
        },
        Case {
            name: "a non-party claimant has no adversary: a graded party's denial counts",
            claim: claim(Strike, "isw"),
            evidence: vec![ev("d", "ua-gs", Contradicts)],
            status: Status::Disputed,
            groups: (0, 1),
            trace: vec![t("d", true, true, "credible, graded source")],
            ..Default::default()
        },
        Case {
            name: "no comment flags the silent side, or the origin when it has none",
            claim: claim(Strike, "ua-gs"),
            evidence: vec![
                ev("n1", "ru-mod", NoComment),
                ev("n2", "tass", NoComment).via(vec![hop("ru-mod"), hop("tass")]),
                ev("n3", "reuters", NoComment),
            ],
            status: Status::Claimed,
            flags: &["no_comment:RU", "no_comment:reuters"],
            trace: vec![t("n1", false, true, "no comment")],
            ..Default::default()
        },
        Case {
            name: "context never counts",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("c", "ap", Context), ev("d", "reuters", Context)],
            status: Status::Claimed,
            trace: vec![t("c", false, true, "context never counts")],
            ..Default::default()
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// Rule 6: quantities as intervals
// ---------------------------------------------------------------------------------------------

#[test]
fn quantities_compare_as_intervals() {
    let drones = |q| with_qty(claim(Strike, "ru-mod"), q);
    check_all(&[
        Case {
            name: "EXACT 35 drones claimed vs EXACT 20 reported: support becomes contradiction",
            claim: drones(qty("destroyed", "drones", Qualifier::Exact, 35.0)),
            evidence: vec![ev("r", "reuters", Supports).qty(qty(
                "Destroyed",
                "Drones",
                Qualifier::Exact,
                20.0,
            ))],
            status: Status::Disputed,
            groups: (0, 1),
            trace: vec![Expect {
                effective: Some(Contradicts),
                ..t(
                    "r",
                    true,
                    true,
                    "quantity mismatch: Destroyed Drones [20, 20] vs claimed [35, 35]",
                )
            }],
            ..Default::default()
        },
        Case {
            name: "AT_LEAST 5000 vs APPROX 5200 overlap",
            claim: with_qty(
                claim(ClaimKind::CasualtyFigure, "ru-mod"),
                qty("killed", "soldiers", Qualifier::AtLeast, 5000.0),
            ),
            evidence: vec![ev("r", "reuters", Supports).qty(qty(
                "killed",
                "soldiers",
                Qualifier::Approx,
                5200.0,
            ))],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![Expect {
                effective: Some(Supports),
                ..t("r", true, true, "credible, graded source")
            }],
            ..Default::default()
        },
        Case {
            name: "MORE_THAN 5000 vs EXACT 5000 are disjoint (open bound)",
            claim: with_qty(
                claim(ClaimKind::CasualtyFigure, "ru-mod"),
                qty("killed", "soldiers", Qualifier::MoreThan, 5000.0),
            ),
            evidence: vec![ev("r", "reuters", Supports).qty(qty(
                "killed",
                "soldiers",
                Qualifier::Exact,
                5000.0,
            ))],
            status: Status::Disputed,
            groups: (0, 1),
            trace: vec![Expect {
                effective: Some(Contradicts),
                ..t(
                    "r",
                    true,
                    true,
                    "quantity mismatch: killed soldiers [5000, 5000] vs claimed (5000, ∞)",
                )
            }],
            ..Default::default()
        },
        Case {
            name: "a different unit is not compared",
            claim: drones(qty("destroyed", "drones", Qualifier::Exact, 35.0)),
            evidence: vec![ev("r", "reuters", Supports).qty(qty(
                "destroyed",
                "missiles",
                Qualifier::Exact,
                2.0,
            ))],
            status: Status::Corroborated,
            groups: (1, 0),
            trace: vec![Expect {
                effective: Some(Supports),
                ..t("r", true, true, "")
            }],
            ..Default::default()
        },
        Case {
            name: "a rate per week is not compared with a total",
            claim: with_qty(
                claim(ClaimKind::CasualtyFigure, "ru-mod"),
                pb::Quantity {
                    period: "per_week".to_string(),
                    ..qty("killed", "soldiers", Qualifier::Exact, 5000.0)
                },
            ),
            evidence: vec![ev("r", "reuters", Supports).qty(qty(
                "killed",
                "soldiers",
                Qualifier::Exact,
                1_000_000.0,
            ))],
            status: Status::Corroborated,
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "a contradicting item keeps its stance whatever its numbers",
            claim: drones(qty("destroyed", "drones", Qualifier::Exact, 35.0)),
            evidence: vec![ev("r", "reuters", Contradicts).qty(qty(
                "destroyed",
                "drones",
                Qualifier::Exact,
                35.0,
            ))],
            status: Status::Disputed,
            groups: (0, 1),
            trace: vec![Expect {
                effective: Some(Contradicts),
                ..t("r", true, true, "")
            }],
            ..Default::default()
        },
        Case {
            name: "an adverse party's lower figure is a routine denial",
            claim: drones(qty("destroyed", "drones", Qualifier::Exact, 35.0)),
            evidence: vec![ev("ua", "ua-gs", Supports).qty(qty(
                "destroyed",
                "drones",
                Qualifier::Exact,
                20.0,
            ))],
            status: Status::Claimed,
            flags: &["denied_by_adversary"],
            trace: vec![Expect {
                effective: Some(Contradicts),
                ..t("ua", false, true, "adversary denial")
            }],
            ..Default::default()
        },
    ]);
}

#[test]
fn interval_overlap_table() {
    use Qualifier::{Approx, AtLeast, AtMost, Exact, MoreThan};
    let q = |qualifier, best| qty("m", "u", qualifier, best);
    let rows: Vec<(pb::Quantity, pb::Quantity, bool)> = vec![
        (q(Exact, 35.0), q(Exact, 35.0), true),
        (q(Exact, 35.0), q(Exact, 20.0), false),
        (q(AtLeast, 5000.0), q(Exact, 5000.0), true),
        (q(AtLeast, 5000.0), q(Exact, 4999.0), false),
        (q(MoreThan, 5000.0), q(Exact, 5000.0), false),
        (q(MoreThan, 5000.0), q(Exact, 5000.5), true),
        (q(MoreThan, 5000.0), q(AtMost, 5000.0), false),
        (q(AtLeast, 5000.0), q(AtMost, 5000.0), true),
        (q(AtMost, 100.0), q(Exact, 100.0), true),
        (q(AtMost, 100.0), q(Exact, 101.0), false),
        // APPROX 1000 is [900, 1100].
        (q(Approx, 1000.0), q(Exact, 1100.0), true),
        (q(Approx, 1000.0), q(Exact, 1101.0), false),
        (q(Approx, 1000.0), q(Exact, 899.0), false),
        (range("m", "u", 900.0, 1100.0), q(Exact, 1000.0), true),
        (range("m", "u", 1100.0, 900.0), q(Exact, 1000.0), true),
        (range("m", "u", 900.0, 1100.0), q(MoreThan, 1100.0), false),
        (range("m", "u", 900.0, 1100.0), q(AtLeast, 1100.0), true),
        // A one-sided bound given in `low` / `high` instead of `best` is still read.
        (
            pb::Quantity {
                low: 5000.0,
                ..q(AtLeast, 0.0)
            },
            q(Exact, 10.0),
            false,
        ),
        (
            pb::Quantity {
                high: 10.0,
                ..q(AtMost, 0.0)
            },
            q(Exact, 20.0),
            false,
        ),
    ];
    for (claimed, found, want) in rows {
        let (Some(a), Some(b)) = (Interval::of(&claimed), Interval::of(&found)) else {
            panic!("unreadable quantity in {claimed:?} / {found:?}");
        };
        assert_eq!(a.overlaps(&b), want, "{a} vs {b}");
        assert_eq!(b.overlaps(&a), want, "overlap is symmetric: {b} vs {a}");
    }
    // Unusable quantities are not compared at all rather than read as zero.
    assert_eq!(Interval::of(&q(Qualifier::Unspecified, 5.0)), None);
    assert_eq!(Interval::of(&q(Exact, f64::NAN)), None);
}

// ---------------------------------------------------------------------------------------------
// Rule 7: status from group counts, and the visual bar
// ---------------------------------------------------------------------------------------------

#[test]
fn status_from_groups() {
    check_all(&[
        Case {
            name: "no evidence: CLAIMED",
            claim: claim(Strike, "ru-mod"),
            status: Status::Claimed,
            ..Default::default()
        },
        Case {
            name: "S=1, C=0: CORROBORATED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports)],
            status: Status::Corroborated,
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "S=2, C=0 for a strike: CONFIRMED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports), ev("a", "ap", Supports)],
            status: Status::Confirmed,
            groups: (2, 0),
            trace: vec![
                t("r", true, true, "credible, graded source"),
                t("a", true, true, "credible, graded source"),
            ],
            ..Default::default()
        },
        Case {
            name: "S=0, C=1: DISPUTED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Contradicts)],
            status: Status::Disputed,
            groups: (0, 1),
            ..Default::default()
        },
        Case {
            name: "S=1, C=1: DISPUTED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports), ev("a", "ap", Contradicts)],
            status: Status::Disputed,
            groups: (1, 1),
            ..Default::default()
        },
        Case {
            name: "S=2, C=1: DISPUTED, not CONFIRMED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports),
                ev("a", "ap", Supports),
                ev("b", "bbc", Contradicts),
            ],
            status: Status::Disputed,
            groups: (2, 1),
            ..Default::default()
        },
        Case {
            name: "S=0, C=2: REFUTED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Contradicts), ev("a", "ap", Contradicts)],
            status: Status::Refuted,
            groups: (0, 2),
            ..Default::default()
        },
        Case {
            name: "two contradictions from one group: C=1, DISPUTED not REFUTED",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Contradicts),
                ev("b", "bbc", Contradicts).via(vec![hop("reuters"), hop("bbc")]),
            ],
            status: Status::Disputed,
            groups: (0, 1),
            trace: vec![t("b", false, true, "duplicate group")],
            ..Default::default()
        },
        Case {
            name: "territory with two non-visual groups: only CORROBORATED",
            claim: claim(TerritorialControl, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports), ev("a", "ap", Supports)],
            status: Status::Corroborated,
            groups: (2, 0),
            ..Default::default()
        },
        Case {
            name: "territory with a verified geolocated group as well: CONFIRMED",
            claim: claim(TerritorialControl, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports),
                ev("a", "ap", Supports),
                ev("geo", "geoconfirmed", Supports).visual(EvidenceKind::GeolocatedMedia, true),
            ],
            status: Status::Confirmed,
            groups: (3, 0),
            trace: vec![t("geo", true, true, "verified visual evidence")],
            ..Default::default()
        },
        Case {
            name: "territory with an adverse-party admission meets the bar",
            claim: claim(TerritorialControl, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports),
                ev("ua", "ua-gov", Supports).cred(3),
            ],
            status: Status::Confirmed,
            groups: (2, 0),
            trace: vec![t("ua", true, true, "adverse-party admission")],
            ..Default::default()
        },
        Case {
            name: "territory: unverified imagery does not meet the bar",
            claim: claim(TerritorialControl, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports),
                ev("sat", "ap", Supports).visual(EvidenceKind::SatelliteImagery, false),
            ],
            status: Status::Corroborated,
            groups: (2, 0),
            ..Default::default()
        },
        Case {
            name:
                "equipment loss: verified imagery duplicating a counted group still meets the bar",
            claim: claim(EquipmentLoss, "ua-gs"),
            evidence: vec![
                ev("r", "reuters", Supports),
                ev("a", "ap", Supports),
                ev("sat", "ap", Supports).visual(EvidenceKind::SatelliteImagery, true),
            ],
            status: Status::Confirmed,
            groups: (2, 0),
            trace: vec![t("sat", false, true, "duplicate group")],
            ..Default::default()
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// Rules 8–9: precedence, review, deadline
// ---------------------------------------------------------------------------------------------

#[test]
fn precedence_review_and_deadline() {
    check_all(&[
        Case {
            name: "a retraction wins over everything, the computed status is still reported",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports).at(2),
                ev("a", "ap", Supports).at(3),
            ],
            verdicts: vec![verdict(Decision::Confirmed, 4)],
            retraction: Some(retraction("tass", 5)),
            status: Status::Retracted,
            computed: Some(Status::Confirmed),
            groups: (2, 0),
            ..Default::default()
        },
        Case {
            name: "a verdict decides the effective status",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).at(2)],
            verdicts: vec![verdict(Decision::Confirmed, 3)],
            status: Status::Confirmed,
            computed: Some(Status::Corroborated),
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "the latest verdict wins",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).at(2)],
            verdicts: vec![
                verdict(Decision::Confirmed, 3),
                verdict(Decision::Refuted, 4),
            ],
            status: Status::Refuted,
            computed: Some(Status::Corroborated),
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "an unspecified decision is ignored",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![ev("r", "reuters", Supports).at(2)],
            verdicts: vec![
                verdict(Decision::Disputed, 3),
                verdict(Decision::Unspecified, 4),
            ],
            status: Status::Disputed,
            computed: Some(Status::Corroborated),
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "evidence after the verdict that changes the computed status needs review",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports).at(2),
                ev("a", "ap", Contradicts).at(5),
            ],
            verdicts: vec![verdict(Decision::Confirmed, 3)],
            status: Status::Confirmed,
            computed: Some(Status::Disputed),
            groups: (1, 1),
            needs_review: true,
            ..Default::default()
        },
        Case {
            name: "evidence after the verdict that changes nothing does not need review",
            claim: claim(Strike, "ru-mod"),
            evidence: vec![
                ev("r", "reuters", Supports).at(2),
                ev("b", "bbc", Supports)
                    .via(vec![hop("reuters"), hop("bbc")])
                    .at(5),
                ev("g", "local-blog", Contradicts).at(6),
            ],
            verdicts: vec![verdict(Decision::Confirmed, 3)],
            status: Status::Confirmed,
            computed: Some(Status::Corroborated),
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "a warning past resolve_by and still CLAIMED is INCONCLUSIVE",
            claim: warning("ru-mod", 1_000),
            evidence: vec![ev("t", "tass", Supports)],
            now: 1_001,
            status: Status::Inconclusive,
            ..Default::default()
        },
        Case {
            name: "a warning at its resolve_by is still CLAIMED",
            claim: warning("ru-mod", 1_000),
            now: 1_000,
            status: Status::Claimed,
            ..Default::default()
        },
        Case {
            name: "a warning before resolve_by is still CLAIMED",
            claim: warning("ru-mod", 1_000),
            now: 10,
            status: Status::Claimed,
            ..Default::default()
        },
        Case {
            name: "a corroborated warning past resolve_by stays CORROBORATED",
            claim: warning("ru-mod", 1_000),
            evidence: vec![ev("r", "reuters", Supports)],
            now: 2_000,
            status: Status::Corroborated,
            groups: (1, 0),
            ..Default::default()
        },
        Case {
            name: "an asserted fact has no deadline",
            claim: pb::Claim {
                modality: Modality::AssertedFact as i32,
                ..warning("ru-mod", 1_000)
            },
            now: 2_000,
            status: Status::Claimed,
            ..Default::default()
        },
        Case {
            name: "the passing of a deadline alone does not ask for review",
            claim: warning("ru-mod", 1_000),
            verdicts: vec![verdict(Decision::Disputed, 3)],
            now: 2_000,
            status: Status::Disputed,
            computed: Some(Status::Inconclusive),
            ..Default::default()
        },
    ]);
}

// ---------------------------------------------------------------------------------------------
// "As of" an earlier log size, and determinism
// ---------------------------------------------------------------------------------------------

/// One entry of a miniature log, enough to replay the policy's inputs at any size.
enum Entry {
    Source(pb::Source),
    Grade(&'static str, Reliability),
    Evidence(pb::Evidence),
}

#[test]
fn as_of_an_earlier_size_gives_the_earlier_status() {
    let c = claim(TerritorialControl, "ru-mod");
    // Indexes 0 and 1 hold the registry and the claim; the entries below follow them.
    let log: Vec<(u64, Entry)> = vec![
        (2, Entry::Evidence(ev("r", "reuters", Supports).at(2))),
        (
            3,
            Entry::Source(source("kyiv-indy", "", Role::NonParty, "", Reliability::C)),
        ),
        (4, Entry::Evidence(ev("k", "kyiv-indy", Supports).at(4))),
        (5, Entry::Grade("kyiv-indy", Reliability::B)),
        (
            6,
            Entry::Evidence(
                ev("geo", "geoconfirmed", Supports)
                    .visual(EvidenceKind::GeolocatedMedia, true)
                    .at(6),
            ),
        ),
    ];
    // The caller's job, done here by hand: keep what was logged before `size`, with grades as
    // they stood then, and "now" as the time of that size.
    let state_at = |size: u64| {
        let mut sources = registry();
        let mut evidence = Vec::new();
        for (index, entry) in log.iter().filter(|(i, _)| *i < size) {
            match entry {
                Entry::Source(s) => {
                    sources.insert(
                        s.id.clone(),
                        pb::Source {
                            registered_index: *index,
                            ..s.clone()
                        },
                    );
                }
                Entry::Grade(id, grade) => {
                    if let Some(s) = sources.get_mut(*id) {
                        s.reliability = *grade as i32;
                    }
                }
                Entry::Evidence(e) => evidence.push(e.clone()),
            }
        }
        (sources, evidence)
    };
    let status_at = |size: u64| {
        let (sources, evidence) = state_at(size);
        let out = evaluate(&PolicyInput {
            claim: &c,
            evidence: &evidence,
            verdicts: &[],
            retraction: None,
            sources: &sources,
            now_unix: i64::try_from(size).unwrap_or(i64::MAX),
        });
        (out.status, out.supporting_groups)
    };
    // Only the claim: nothing yet.
    assert_eq!(status_at(2), (Status::Claimed, 0));
    // Reuters alone.
    assert_eq!(status_at(3), (Status::Corroborated, 1));
    // kyiv-indy is still graded C at size 5, so its report does not count yet.
    assert_eq!(status_at(5), (Status::Corroborated, 1));
    // Regraded B at index 5: as of size 6 it counts, but territory lacks a visual group.
    assert_eq!(status_at(6), (Status::Corroborated, 2));
    // The geolocated video completes the bar.
    assert_eq!(status_at(7), (Status::Confirmed, 3));

    // Asking again about an earlier size gives the same answer as before.
    assert_eq!(status_at(5), (Status::Corroborated, 1));
}

#[test]
fn evaluation_is_deterministic_and_flags_are_sorted_and_deduplicated() {
    let sources = registry();
    let c = claim(Strike, "ru-mod");
    let evidence = vec![
        ev("n1", "xinhua", NoComment),
        ev("d1", "ua-gov", Contradicts),
        ev("n2", "ua-gs", NoComment),
        ev("d2", "ua-gs", Contradicts),
        ev("n3", "xinhua", NoComment),
    ];
    let input = PolicyInput {
        claim: &c,
        evidence: &evidence,
        verdicts: &[],
        retraction: None,
        sources: &sources,
        now_unix: 0,
    };
    let first = evaluate(&input);
    assert_eq!(
        first.flags,
        vec!["denied_by_adversary", "no_comment:CN", "no_comment:UA"]
    );
    assert_eq!(first, evaluate(&input));
    assert_eq!(POLICY_ID, "v1");
}
