//! The confirmation policy `v1` (SPEC §2.4): a pure function from a claim, its evidence, verdicts,
//! retraction and the sources as of one log size to an effective status and a trace.
//!
//! The policy answers one question — "has this claim been confirmed by someone other than the
//! people who made it?" — and it must give the same answer to anyone who replays the public log.
//! It therefore reads no clock, no storage and no configuration: the caller filters everything
//! (evidence, verdicts, the retraction and the source registry with its grades) to the log size
//! being asked about and passes the time that log size stood at as `now_unix`.
//!
//! # How a status is derived
//!
//! 1. **Origin.** Each piece of evidence is traced back to where it came from: the first hop of its
//!    attribution chain. If that hop names a registered source, that source is the origin; if it is
//!    only a name ("agencies") or an id that is not registered, the origin is UNKNOWN and recorded
//!    as `unknown:<name>`. Evidence without a chain originates with its own `source_id`.
//! 2. **Groups.** Evidence collapses by the affiliation cluster of its origin, so the Russian MoD,
//!    TASS and RIA (all `ru-state`) count once, however many outlets repeat them.
//! 3. **Independence.** An item is independent of the claim when its origin is known, sits in a
//!    different cluster from the claimant, is not a party, affiliate or ally on the claimant's side,
//!    and the claimant appears nowhere in the item's chain (a claimant quoting itself is circular).
//! 4. **Qualification.** An independent item qualifies when it has credibility 2–3 from an origin
//!    graded A or B, or it is geolocation-verified media or satellite imagery, or it is an
//!    adverse-party admission (the other side supporting a claim against its own interest).
//! 5. **Denials and silence.** The other side contradicting a claim is routine and never
//!    qualifies; it raises the flag `denied_by_adversary`. NO_COMMENT raises `no_comment:<side>`.
//!    CONTEXT never counts.
//! 6. **Numbers.** When the claim and the evidence both carry a quantity for the same measure,
//!    unit and period, they are compared as intervals; a SUPPORTS whose interval is disjoint from
//!    the claim's is treated as CONTRADICTS.
//! 7. **Status.** With S and C the numbers of qualifying supporting and contradicting groups:
//!    CONFIRMED when S ≥ 2 and C = 0 (territorial control and equipment losses also need a
//!    verified visual group or an adverse-party admission), CORROBORATED when S ≥ 1 and C = 0,
//!    DISPUTED when both are present or C = 1 alone, REFUTED when C ≥ 2 and S = 0, else CLAIMED.
//!    A warning or intent still CLAIMED after its `resolve_by` deadline becomes INCONCLUSIVE.
//! 8. **Precedence.** A retraction makes the claim RETRACTED; otherwise the latest reviewer verdict
//!    decides the effective status. The computed status is always reported beside it, and
//!    `needs_review` says that evidence logged after the verdict changed the computed status.
//! 9. **Answer.** `confirmed` is true exactly when the effective status is CONFIRMED, and the trace
//!    says for every piece of evidence which group it fell into, whether it counted and why.
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use claimledger::claims::policy::{evaluate, PolicyInput};
//! use claimledger::pb;
//!
//! let claim = pb::Claim { claimant_id: "ru-mod".into(), ..Default::default() };
//! let sources = HashMap::new();
//! let outcome = evaluate(&PolicyInput {
//!     claim: &claim,
//!     evidence: &[],
//!     verdicts: &[],
//!     retraction: None,
//!     sources: &sources,
//!     now_unix: 0,
//! });
//! assert_eq!(outcome.status, pb::Status::Claimed);
//! assert!(!outcome.confirmed);
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::pb;

/// The identifier of this policy, reported with every status so a reader knows which rules
/// produced it.
pub const POLICY_ID: &str = "v1";

/// Everything the policy looks at, already filtered by the caller to one log size.
pub struct PolicyInput<'a> {
    /// The claim being assessed.
    pub claim: &'a pb::Claim,
    /// Its evidence in log order, each with `index` set.
    pub evidence: &'a [pb::Evidence],
    /// Its verdicts in log order, each with `index` set.
    pub verdicts: &'a [pb::Verdict],
    /// The claimant's retraction, if one was logged.
    pub retraction: Option<&'a pb::Retraction>,
    /// The source registry as of the log size asked about, keyed by source id; each source's
    /// `reliability` is its grade as of then.
    pub sources: &'a HashMap<String, pb::Source>,
    /// "Now" in unix seconds: the time the log stood at the size asked about.
    pub now_unix: i64,
}

/// What the policy concluded about one claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The effective status: retraction, else the latest verdict, else the computed status.
    pub status: pb::Status,
    /// The status derived from the evidence alone (rules 1–7 and the resolve-by deadline).
    pub computed_status: pb::Status,
    /// Whether the effective status is CONFIRMED.
    pub confirmed: bool,
    /// Sorted, deduplicated flags such as `denied_by_adversary` or `no_comment:RU`.
    pub flags: Vec<String>,
    /// True when evidence logged after the latest verdict changed the computed status.
    pub needs_review: bool,
    /// How each piece of evidence was treated, in input order.
    pub trace: Vec<pb::TraceItem>,
    /// S: the number of qualifying supporting groups.
    pub supporting_groups: u32,
    /// C: the number of qualifying contradicting groups.
    pub contradicting_groups: u32,
}

/// Applies the confirmation policy `v1` to one claim.
pub fn evaluate(input: &PolicyInput<'_>) -> Outcome {
    let claimant = Claimant::of(input);
    let all: Vec<&pb::Evidence> = input.evidence.iter().collect();
    let assessment = assess(input, &claimant, &all);
    let computed_status = apply_deadline(input, assessment.status);

    // Verdicts with an unspecified decision carry no decision to defer to, so they are skipped
    // rather than turned into a status. `max_by_key` keeps the last of equal indexes, which is
    // the latest in log order.
    let latest_verdict = input
        .verdicts
        .iter()
        .filter_map(|v| decision_status(v.decision).map(|status| (v, status)))
        .max_by_key(|(v, _)| v.index);

    let (status, needs_review) = if input.retraction.is_some() {
        // A retracted claim is withdrawn by its own author; there is nothing left for a reviewer
        // to revisit, so new evidence does not ask for review.
        (pb::Status::Retracted, false)
    } else if let Some((verdict, decided)) = latest_verdict {
        // Recompute with only the evidence the reviewer could have seen. Sources and "now" stay
        // the same on both sides so that only evidence logged after the verdict can make the
        // two differ, which is what the flag is meant to say.
        let seen: Vec<&pb::Evidence> = input
            .evidence
            .iter()
            .filter(|e| e.index < verdict.index)
            .collect();
        let at_verdict = apply_deadline(input, assess(input, &claimant, &seen).status);
        (decided, at_verdict != computed_status)
    } else {
        (computed_status, false)
    };

    Outcome {
        status,
        computed_status,
        confirmed: status == pb::Status::Confirmed,
        flags: assessment.flags.into_iter().collect(),
        needs_review,
        trace: assessment.trace,
        supporting_groups: assessment.supporting_groups,
        contradicting_groups: assessment.contradicting_groups,
    }
}

/// The facts about the claimant that independence is judged against.
struct Claimant<'a> {
    id: &'a str,
    name: &'a str,
    cluster: &'a str,
    side: &'a str,
}

impl<'a> Claimant<'a> {
    fn of(input: &PolicyInput<'a>) -> Self {
        let id = input.claim.claimant_id.as_str();
        match input.sources.get(id) {
            Some(source) => Claimant {
                id,
                name: source.name.as_str(),
                cluster: cluster_of(source),
                side: source.side.trim(),
            },
            // The server only accepts claims by registered sources, so this is a defensive
            // fallback: the claimant is then its own cluster and on no side.
            None => Claimant {
                id,
                name: "",
                cluster: id,
                side: "",
            },
        }
    }
}

/// Where a piece of evidence came from.
enum Origin<'a> {
    /// A registered source.
    Known(&'a pb::Source),
    /// A name or id that no registered source answers to; the label is what the chain said.
    Unknown(String),
}

/// Rule 1: the first meaningful hop of the chain decides the origin; without a chain, the
/// evidence originates with its own source.
fn resolve_origin<'a>(
    evidence: &pb::Evidence,
    sources: &'a HashMap<String, pb::Source>,
) -> Origin<'a> {
    for hop in &evidence.attribution {
        let id = hop.source_id.trim();
        let name = hop.name.trim();
        if id.is_empty() && name.is_empty() {
            // A blank hop says nothing about provenance, so it cannot be the origin.
            continue;
        }
        if !id.is_empty() {
            if let Some(source) = sources.get(id) {
                return Origin::Known(source);
            }
        }
        // The chain starts with someone we cannot identify; whatever registered outlets relayed
        // it afterwards, they are not where it came from.
        let label = if name.is_empty() { id } else { name };
        return Origin::Unknown(label.to_string());
    }
    match sources.get(&evidence.source_id) {
        Some(source) => Origin::Known(source),
        None => Origin::Unknown(evidence.source_id.clone()),
    }
}

/// The affiliation cluster of a source, which defaults to its id.
fn cluster_of(source: &pb::Source) -> &str {
    let cluster = source.cluster.trim();
    if cluster.is_empty() {
        source.id.as_str()
    } else {
        cluster
    }
}

fn role_of(source: &pb::Source) -> pb::Role {
    pb::Role::try_from(source.role).unwrap_or(pb::Role::Unspecified)
}

fn same_side(a: &str, b: &str) -> bool {
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

/// Rule 3: a party, affiliate or ally of the claimant's own side is not independent of it.
fn on_claimants_side(origin: &pb::Source, claimant: &Claimant<'_>) -> bool {
    matches!(
        role_of(origin),
        pb::Role::Party | pb::Role::Affiliated | pb::Role::Aligned
    ) && same_side(origin.side.trim(), claimant.side)
}

/// Rules 4–5: a party or affiliate of a different side. Both sides must be known, because
/// "against its own interest" only has a meaning when the claim comes from one side.
fn is_adverse(origin: &pb::Source, claimant: &Claimant<'_>) -> bool {
    let side = origin.side.trim();
    matches!(role_of(origin), pb::Role::Party | pb::Role::Affiliated)
        && !side.is_empty()
        && !claimant.side.is_empty()
        && !side.eq_ignore_ascii_case(claimant.side)
}

/// Rule 3: the claimant relaying or being cited anywhere in the chain makes the evidence
/// circular, even when the nominal origin is someone else.
fn claimant_in_chain(evidence: &pb::Evidence, claimant: &Claimant<'_>) -> bool {
    if evidence.source_id == claimant.id {
        return true;
    }
    let claimant_name = claimant.name.trim();
    evidence.attribution.iter().any(|hop| {
        hop.source_id.trim() == claimant.id
            || (!claimant_name.is_empty() && hop.name.trim().eq_ignore_ascii_case(claimant_name))
    })
}

fn graded_a_or_b(source: &pb::Source) -> bool {
    matches!(
        pb::Reliability::try_from(source.reliability),
        Ok(pb::Reliability::A | pb::Reliability::B)
    )
}

fn is_visual(kind: i32) -> bool {
    matches!(
        pb::EvidenceKind::try_from(kind),
        Ok(pb::EvidenceKind::GeolocatedMedia | pb::EvidenceKind::SatelliteImagery)
    )
}

/// Says why an entered credibility is not 2 or 3, in the trace's words.
fn credibility_reason(credibility: u32) -> String {
    match credibility {
        0 => "credibility not entered".to_string(),
        1 => "credibility 1 is derived, never entered".to_string(),
        4..=6 => "credibility 4-6".to_string(),
        n => format!("credibility {n} out of range"),
    }
}

/// A numeric interval with optionally open ends; the upper end may be infinite.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    lo: f64,
    lo_open: bool,
    hi: f64,
    hi_open: bool,
}

impl Interval {
    fn closed(lo: f64, hi: f64) -> Self {
        Interval {
            lo,
            lo_open: false,
            hi,
            hi_open: false,
        }
    }

    fn unbounded_above(lo: f64, lo_open: bool) -> Self {
        Interval {
            lo,
            lo_open,
            hi: f64::INFINITY,
            hi_open: true,
        }
    }

    /// Rule 6: reads a quantity as the interval its qualifier denotes. Returns `None` when the
    /// qualifier is unspecified or the numbers are not usable, so that a malformed quantity never
    /// turns support into contradiction.
    fn of(quantity: &pb::Quantity) -> Option<Self> {
        let best = quantity.best;
        // Clients may put the bound of a one-sided qualifier in `low` or `high` rather than in
        // `best`; a zero `best` is read as "not given" for those qualifiers only.
        let or_bound = |bound: f64| if best == 0.0 { bound } else { best };
        let interval = match pb::Qualifier::try_from(quantity.qualifier).ok()? {
            pb::Qualifier::Unspecified => return None,
            pb::Qualifier::Exact => Interval::closed(best, best),
            pb::Qualifier::AtLeast => Interval::unbounded_above(or_bound(quantity.low), false),
            pb::Qualifier::MoreThan => Interval::unbounded_above(or_bound(quantity.low), true),
            pb::Qualifier::AtMost => Interval::closed(0.0, or_bound(quantity.high)),
            pb::Qualifier::Approx => {
                let spread = best.abs() * 0.1;
                Interval::closed(best - spread, best + spread)
            }
            pb::Qualifier::Range => Interval::closed(
                quantity.low.min(quantity.high),
                quantity.low.max(quantity.high),
            ),
        };
        let finite_hi = interval.hi.is_finite() || interval.hi_open;
        (interval.lo.is_finite() && finite_hi && interval.lo <= interval.hi).then_some(interval)
    }

    fn overlaps(&self, other: &Interval) -> bool {
        // Two intervals meet when each starts before the other ends; touching ends meet only
        // if both are closed there, which is why MORE_THAN 5000 misses EXACT 5000.
        fn starts_before(lo: f64, lo_open: bool, hi: f64, hi_open: bool) -> bool {
            lo < hi || (lo == hi && !lo_open && !hi_open)
        }
        starts_before(self.lo, self.lo_open, other.hi, other.hi_open)
            && starts_before(other.lo, other.lo_open, self.hi, self.hi_open)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = if self.lo_open { '(' } else { '[' };
        let close = if self.hi_open { ')' } else { ']' };
        if self.hi.is_infinite() {
            write!(f, "{open}{}, ∞{close}", self.lo)
        } else {
            write!(f, "{open}{}, {}{close}", self.lo, self.hi)
        }
    }
}

fn same_label(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Rule 6: returns the trace reason when the evidence's quantity is disjoint from every
/// comparable quantity of the claim. Quantities are comparable when measure, unit and period
/// agree; a rate per week and a total are different numbers, so they are never compared.
fn quantity_mismatch(claim: &pb::Claim, evidence: &pb::Evidence) -> Option<String> {
    let quantity = evidence.quantity.as_ref()?;
    let found = Interval::of(quantity)?;
    let mut first_disjoint = None;
    for claimed in &claim.quantities {
        if !(same_label(&claimed.measure, &quantity.measure)
            && same_label(&claimed.unit, &quantity.unit)
            && same_label(&claimed.period, &quantity.period))
        {
            continue;
        }
        let Some(claimed_interval) = Interval::of(claimed) else {
            continue;
        };
        if claimed_interval.overlaps(&found) {
            // One agreeing figure is enough: a claim can state the same measure more than once
            // (for example per place), and the evidence may speak to any of them.
            return None;
        }
        first_disjoint.get_or_insert(claimed_interval);
    }
    first_disjoint.map(|claimed_interval| {
        format!(
            "quantity mismatch: {} {} {found} vs claimed {claimed_interval}",
            quantity.measure.trim(),
            quantity.unit.trim(),
        )
    })
}

/// The result of rules 1–7 over one set of evidence.
struct Assessment {
    status: pb::Status,
    flags: BTreeSet<String>,
    trace: Vec<pb::TraceItem>,
    supporting_groups: u32,
    contradicting_groups: u32,
}

/// Rules 1–7 over the given evidence, without precedence or the deadline.
fn assess(
    input: &PolicyInput<'_>,
    claimant: &Claimant<'_>,
    evidence: &[&pb::Evidence],
) -> Assessment {
    let mut flags = BTreeSet::new();
    let mut trace = Vec::with_capacity(evidence.len());
    // Groups already counted for a stance, so later items of the same group are duplicates.
    let mut counted_groups: HashSet<(String, pb::Stance)> = HashSet::new();
    let mut supporting: HashSet<String> = HashSet::new();
    let mut contradicting: HashSet<String> = HashSet::new();
    // Whether some qualifying supporting group holds verified imagery or an admission.
    let mut visual_bar_met = false;

    for item in evidence {
        let origin = resolve_origin(item, input.sources);
        let (origin_label, group) = match &origin {
            Origin::Known(source) => (source.id.clone(), cluster_of(source).to_string()),
            // Unknown origins cannot be told apart or merged, so each is its own group; they
            // never qualify anyway.
            Origin::Unknown(label) => {
                let label = format!("unknown:{label}");
                (label.clone(), label)
            }
        };
        let stance = pb::Stance::try_from(item.stance).unwrap_or(pb::Stance::Unspecified);
        let mut reasons: Vec<String> = Vec::new();

        // Rule 3: independence. Every failing condition is listed, not only the first, so the
        // trace explains the whole picture.
        let mut independent = true;
        match &origin {
            Origin::Unknown(_) => {
                independent = false;
                reasons.push("unknown origin".to_string());
            }
            Origin::Known(source) => {
                if cluster_of(source) == claimant.cluster {
                    independent = false;
                    reasons.push("same cluster as claimant".to_string());
                }
                if on_claimants_side(source, claimant) {
                    independent = false;
                    reasons.push("same side as claimant".to_string());
                }
            }
        }
        if claimant_in_chain(item, claimant) {
            independent = false;
            reasons.push("claimant in attribution chain".to_string());
        }

        // Rule 6: only support can be undermined by its own numbers.
        let mut effective = stance;
        if stance == pb::Stance::Supports {
            if let Some(reason) = quantity_mismatch(input.claim, item) {
                effective = pb::Stance::Contradicts;
                reasons.push(reason);
            }
        }

        let adverse = matches!(&origin, Origin::Known(source) if is_adverse(source, claimant));

        // Rules 4–5: what the item's stance lets it count for.
        let mut qualifying = false;
        let mut meets_visual_bar = false;
        match effective {
            pb::Stance::Context => reasons.push("context never counts".to_string()),
            pb::Stance::NoComment => {
                reasons.push("no comment".to_string());
                // The flag names the side that declined; an origin without a side is named
                // instead so the flag still says who it was.
                let who = match &origin {
                    Origin::Known(source) if !source.side.trim().is_empty() => {
                        source.side.trim().to_string()
                    }
                    _ => origin_label.clone(),
                };
                flags.insert(format!("no_comment:{who}"));
            }
            pb::Stance::Unspecified => reasons.push("no stance given".to_string()),
            pb::Stance::Contradicts if adverse => {
                reasons.push("adversary denial".to_string());
                flags.insert("denied_by_adversary".to_string());
            }
            pb::Stance::Supports | pb::Stance::Contradicts => {
                if let (true, Origin::Known(source)) = (independent, &origin) {
                    let credible = matches!(item.credibility, 2 | 3) && graded_a_or_b(source);
                    let visual = is_visual(item.kind) && item.geolocation_verified;
                    // A contradicting adverse item was handled above, so an adverse item that
                    // reaches here supports the claim: an admission against interest.
                    let admission = adverse;
                    if credible {
                        reasons.push("credible, graded source".to_string());
                    }
                    if visual {
                        reasons.push("verified visual evidence".to_string());
                    }
                    if admission {
                        reasons.push("adverse-party admission".to_string());
                    }
                    qualifying = credible || visual || admission;
                    meets_visual_bar = visual || admission;
                    if !qualifying {
                        if !matches!(item.credibility, 2 | 3) {
                            reasons.push(credibility_reason(item.credibility));
                        }
                        if !graded_a_or_b(source) {
                            reasons.push("grade below B".to_string());
                        }
                        if is_visual(item.kind) && !item.geolocation_verified {
                            reasons.push("geolocation not verified".to_string());
                        }
                    }
                }
            }
        }

        // Rule 2: a group counts once per stance, through its first qualifying item.
        let mut counted = false;
        if qualifying {
            if counted_groups.insert((group.clone(), effective)) {
                counted = true;
                if effective == pb::Stance::Supports {
                    supporting.insert(group.clone());
                } else {
                    contradicting.insert(group.clone());
                }
            } else {
                reasons.push("duplicate group".to_string());
            }
            // The visual bar is about the group, so a duplicate item that carries the imagery
            // still lifts it.
            if effective == pb::Stance::Supports && meets_visual_bar {
                visual_bar_met = true;
            }
        }

        trace.push(pb::TraceItem {
            evidence_id: item.id.clone(),
            source_id: item.source_id.clone(),
            origin: origin_label,
            group,
            stance: stance as i32,
            effective_stance: effective as i32,
            independent,
            counted,
            reasons,
            index: item.index,
        });
    }

    let supporting_groups = u32::try_from(supporting.len()).unwrap_or(u32::MAX);
    let contradicting_groups = u32::try_from(contradicting.len()).unwrap_or(u32::MAX);
    let needs_visual = matches!(
        pb::ClaimKind::try_from(input.claim.kind),
        Ok(pb::ClaimKind::TerritorialControl | pb::ClaimKind::EquipmentLoss)
    );
    let status = status_from_counts(
        supporting_groups,
        contradicting_groups,
        !needs_visual || visual_bar_met,
    );
    Assessment {
        status,
        flags,
        trace,
        supporting_groups,
        contradicting_groups,
    }
}

/// Rule 7, from the group counts and whether the claim kind's visual bar is met.
fn status_from_counts(supporting: u32, contradicting: u32, visual_bar_met: bool) -> pb::Status {
    match (supporting, contradicting) {
        (s, 0) if s >= 2 && visual_bar_met => pb::Status::Confirmed,
        (s, 0) if s >= 1 => pb::Status::Corroborated,
        (s, c) if s >= 1 && c >= 1 => pb::Status::Disputed,
        (0, 1) => pb::Status::Disputed,
        (0, c) if c >= 2 => pb::Status::Refuted,
        _ => pb::Status::Claimed,
    }
}

/// The time the outcome of `claim` can change at with time alone, if there is one: the
/// resolve-by deadline of a warning or intent (rule 8). An outcome judged at one `now_unix`
/// holds at another on the same side of it (both at or before, or both after); without a
/// deadline it holds at any time.
pub fn deadline(claim: &pb::Claim) -> Option<i64> {
    let is_warning = pb::Modality::try_from(claim.modality) == Ok(pb::Modality::IntentOrWarning);
    // An all-zero timestamp is what an unset deadline looks like after some JSON round trips,
    // so it is treated as no deadline rather than as 1970. `now_unix` is whole seconds, so it
    // is past `seconds + nanos` exactly when it is past `seconds`.
    claim
        .resolve_by
        .as_ref()
        .filter(|t| is_warning && (t.seconds != 0 || t.nanos != 0))
        .map(|t| t.seconds)
}

/// Rule 8, last sentence: a warning or intent that nothing has settled by its deadline is
/// INCONCLUSIVE rather than still pending.
fn apply_deadline(input: &PolicyInput<'_>, status: pb::Status) -> pb::Status {
    match deadline(input.claim) {
        Some(t) if status == pb::Status::Claimed && input.now_unix > t => pb::Status::Inconclusive,
        _ => status,
    }
}

/// Rule 8: the status a reviewer's decision stands for.
fn decision_status(decision: i32) -> Option<pb::Status> {
    match pb::Decision::try_from(decision).ok()? {
        pb::Decision::Confirmed => Some(pb::Status::Confirmed),
        pb::Decision::Refuted => Some(pb::Status::Refuted),
        pb::Decision::Disputed => Some(pb::Status::Disputed),
        pb::Decision::Inconclusive => Some(pb::Status::Inconclusive),
        pb::Decision::Unspecified => None,
    }
}

#[cfg(test)]
mod tests;
