//! End-to-end tests of `SourceService` and `ClaimService` against a real server on a loopback
//! port over a temporary sled directory: the demo data's statuses, claims moving through the
//! confirmation policy as evidence, grades, verdicts and retractions arrive, idempotent retries,
//! every error code, list filters and pagination under concurrent writes, restart, and health.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use claimledger::pb;
use common::*;
use tokio::sync::watch;
use tonic::Code;

fn rfc3339(s: &str) -> pbjson_types::Timestamp {
    serde_json::from_str(&format!("{s:?}")).expect("an RFC 3339 time")
}

fn ids(resp: &pb::ListClaimsResponse) -> Vec<String> {
    resp.claims
        .iter()
        .map(|i| i.claim.as_ref().expect("claim").id.clone())
        .collect()
}

/// Registers a claimant on side RU and two independent B-graded agencies.
async fn claimant_and_agencies(c: &mut Clients) {
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "ru-state",
    ))
    .await;
    c.register(source(
        "tass",
        "RU",
        pb::Role::Affiliated,
        pb::Reliability::D,
        "ru-state",
    ))
    .await;
    c.register(source(
        "reuters",
        "",
        pb::Role::NonParty,
        pb::Reliability::B,
        "",
    ))
    .await;
    c.register(source("ap", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn article_claims_get_the_expected_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let art = import_article(&mut c).await;

    let drones = c.status(art.claim("claim-drones-35")).await;
    assert_eq!(status_of(&drones), pb::Status::Claimed, "{drones:?}");
    assert!(drones.flags.contains(&"no_comment:UA".to_string()));
    assert!(!drones.confirmed);
    assert_eq!(drones.policy, "v1");

    let villages = c.status(art.claim("claim-villages")).await;
    assert_eq!(
        status_of(&villages),
        pb::Status::Corroborated,
        "{villages:?}"
    );
    assert!(villages.flags.contains(&"denied_by_adversary".to_string()));
    let tass_ev = &art.evidence["ev-villages-tass"];
    let tass = villages
        .trace
        .iter()
        .find(|t| &t.evidence_id == tass_ev)
        .expect("the TASS item is in the trace");
    assert!(!tass.counted && !tass.independent, "{tass:?}");
    assert!(
        tass.reasons
            .iter()
            .any(|r| r.contains("same cluster as claimant")
                || r.contains("claimant in attribution chain")),
        "{tass:?}"
    );
    assert_eq!(tass.group, "ru-state");
    // Every piece of evidence is traced, counted or not.
    assert_eq!(villages.trace.len(), 4);

    let attack = c.status(art.claim("claim-largest-drone-attack")).await;
    assert_eq!(status_of(&attack), pb::Status::Corroborated, "{attack:?}");
    assert_eq!(attack.supporting_groups, 1);

    let swap = c.status(art.claim("claim-prisoner-swap")).await;
    assert_eq!(status_of(&swap), pb::Status::Confirmed, "{swap:?}");
    assert!(swap.confirmed);
    assert_eq!(swap.supporting_groups, 2);
    assert!(swap
        .trace
        .iter()
        .any(|t| t.reasons.iter().any(|r| r == "adverse-party admission")));

    let casualties = c.status(art.claim("claim-casualties-5000")).await;
    assert_eq!(
        status_of(&casualties),
        pb::Status::Disputed,
        "{casualties:?}"
    );
    let mismatch = casualties
        .trace
        .iter()
        .find(|t| t.reasons.iter().any(|r| r.contains("quantity mismatch")))
        .expect("a quantity mismatch in the trace");
    assert_eq!(mismatch.stance, pb::Stance::Supports as i32);
    assert_eq!(mismatch.effective_stance, pb::Stance::Contradicts as i32);

    let icbm = c.status(art.claim("claim-icbm-warning")).await;
    assert_eq!(status_of(&icbm), pb::Status::Inconclusive, "{icbm:?}");
    assert!(icbm.flags.contains(&"no_comment:RU".to_string()));

    // GetClaim agrees with GetClaimStatus and lists the claim's entries.
    let rec = c
        .claims
        .get_claim(pb::GetClaimRequest {
            id: art.claim("claim-prisoner-swap").into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.status, pb::Status::Confirmed as i32);
    assert_eq!(rec.evidence.len(), 2);
    assert_eq!(rec.entry_indexes.len(), 3);
    assert!(rec.entry_indexes.windows(2).all(|w| w[0] < w[1]));
    let claim = rec.claim.unwrap();
    assert_eq!(claim.index, rec.entry_indexes[0]);
    assert!(claim.logged_at.is_some());
    assert_eq!(claim.claimant_id, "ru-delegation");

    // Every source of the file is listed, in pages.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .sources
            .list_sources(pb::ListSourcesRequest {
                page_size: 5,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.sources.len() <= 5);
        listed.extend(page.sources.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = article_lines()
        .into_iter()
        .filter_map(|l| l.source.map(|s| s.id))
        .collect();
    assert_eq!(listed.len(), expected.len());
    assert_eq!(
        listed.iter().collect::<HashSet<_>>(),
        expected.iter().collect::<HashSet<_>>()
    );
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_moves_from_claimed_to_corroborated_to_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    let vk = c.verifier_key().await;

    let submitted = c
        .submit(
            "strike-1",
            claim(
                pb::ClaimKind::Strike,
                "ru-mod",
                "Strike on a depot near Belgorod",
            ),
        )
        .await;
    let id = submitted.claim.unwrap().id;
    assert!(!id.is_empty());
    let r0 = submitted.receipt.unwrap();
    verify_receipt(&r0, &vk);
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Claimed);
    assert_eq!(s.supporting_groups, 0);

    // The claimant's own state media repeating it counts for nothing.
    let mut circular = evidence("tass", pb::Stance::Supports, 2);
    circular.attribution = vec![pb::AttributionHop {
        source_id: "ru-mod".into(),
        relation: pb::Relation::Origin as i32,
        marker: "citing the ministry".into(),
        ..Default::default()
    }];
    c.add_evidence("ev-tass", &id, circular).await;
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Claimed);

    let first = c
        .add_evidence(
            "ev-reuters",
            &id,
            evidence("reuters", pb::Stance::Supports, 2),
        )
        .await;
    let ev = first.evidence.unwrap();
    assert_eq!(ev.claim_id, id);
    assert!(!ev.id.is_empty());
    let r1 = first.receipt.unwrap();
    verify_receipt(&r1, &vk);
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Corroborated);
    assert_eq!(s.supporting_groups, 1);
    assert!(!s.confirmed);

    // A second report from the same agency is the same group: no change.
    c.add_evidence(
        "ev-reuters-2",
        &id,
        evidence("reuters", pb::Stance::Supports, 3),
    )
    .await;
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Corroborated);
    assert!(s
        .trace
        .iter()
        .any(|t| !t.counted && t.reasons.iter().any(|r| r == "duplicate group")));

    let second = c
        .add_evidence("ev-ap", &id, evidence("ap", pb::Stance::Supports, 2))
        .await;
    verify_receipt(second.receipt.as_ref().unwrap(), &vk);
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Confirmed);
    assert_eq!(computed_of(&s), pb::Status::Confirmed);
    assert!(s.confirmed);
    assert_eq!(s.supporting_groups, 2);
    assert_eq!(s.contradicting_groups, 0);
    assert_eq!(s.trace.len(), 4);

    // As of earlier sizes the answer is what it was then.
    let then = c.status_at(&id, r0.index + 1).await;
    assert_eq!(status_of(&then), pb::Status::Claimed);
    assert_eq!(then.as_of_size, r0.index + 1);
    assert!(then.trace.is_empty());
    let then = c.status_at(&id, r1.index + 1).await;
    assert_eq!(status_of(&then), pb::Status::Corroborated);
    assert_eq!(then.trace.len(), 2);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grading_a_source_changes_statuses_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    c.register(source(
        "monitor",
        "",
        pb::Role::NonParty,
        pb::Reliability::C,
        "",
    ))
    .await;
    let vk = c.verifier_key().await;

    let id = c
        .submit(
            "claim-graded",
            claim(
                pb::ClaimKind::EquipmentLoss,
                "ru-mod",
                "Two tanks destroyed near Pokrovsk",
            ),
        )
        .await
        .claim
        .unwrap()
        .id;
    c.add_evidence(
        "ev-monitor",
        &id,
        evidence("monitor", pb::Stance::Supports, 2),
    )
    .await;
    let before = c.status(&id).await;
    assert_eq!(status_of(&before), pb::Status::Claimed);
    assert!(before.trace[0].independent && !before.trace[0].counted);
    assert!(before.trace[0].reasons.iter().any(|r| r == "grade below B"));
    let size_before_grade = c.size().await;

    let graded = c
        .sources
        .grade_source(pb::GradeSourceRequest {
            request_id: "grade-monitor".into(),
            source_id: "monitor".into(),
            reliability: pb::Reliability::B as i32,
            rationale: "a year of reports matching later imagery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        graded.source.unwrap().reliability,
        pb::Reliability::B as i32
    );
    let receipt = graded.receipt.unwrap();
    verify_receipt(&receipt, &vk);

    let after = c.status(&id).await;
    assert_eq!(status_of(&after), pb::Status::Corroborated, "{after:?}");
    assert!(after.trace[0].counted);
    // As of before the grade, the source was still C.
    let then = c.status_at(&id, size_before_grade).await;
    assert_eq!(status_of(&then), pb::Status::Claimed);
    // The query index follows the grade: the list filter finds the claim under its new status
    // once the index has read the grade (min_size).
    let size = c.size().await;
    let listed = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            status: pb::Status::Corroborated as i32,
            min_size: size,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&listed), vec![id.clone()]);

    let got = c
        .sources
        .get_source(pb::GetSourceRequest {
            id: "monitor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = got.source.unwrap();
    assert_eq!(s.reliability, pb::Reliability::B as i32);
    assert_eq!(s.cluster, "monitor", "the cluster defaults to the id");
    let grades: Vec<(i32, u64)> = got
        .grades
        .iter()
        .map(|g| (g.reliability, g.index))
        .collect();
    assert_eq!(
        grades,
        vec![
            (pb::Reliability::C as i32, s.registered_index),
            (pb::Reliability::B as i32, receipt.index),
        ]
    );
    assert_eq!(
        got.grades[1].rationale,
        "a year of reports matching later imagery"
    );
    assert_eq!(got.grades[1].actor, "anonymous");
    assert!(got.grades[1].logged_at.is_some());

    // Equipment losses need a visual group for CONFIRMED: a second agency is not enough, but
    // verified geolocated media is.
    c.add_evidence("ev-ap", &id, evidence("ap", pb::Stance::Supports, 2))
        .await;
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Corroborated);
    let mut geo = evidence("reuters", pb::Stance::Supports, 2);
    geo.kind = pb::EvidenceKind::GeolocatedMedia as i32;
    geo.geolocation_verified = true;
    c.add_evidence("ev-geo", &id, geo).await;
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Confirmed);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_decides_and_later_evidence_asks_for_review() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    let vk = c.verifier_key().await;
    let id = c
        .submit(
            "claim-verdict",
            claim(
                pb::ClaimKind::Interception,
                "ru-mod",
                "Twelve drones shot down over Kursk",
            ),
        )
        .await
        .claim
        .unwrap()
        .id;
    let ev_id = c
        .add_evidence("ev-r", &id, evidence("reuters", pb::Stance::Supports, 2))
        .await
        .evidence
        .unwrap()
        .id;

    // A verdict citing evidence that is not on this claim names what is missing.
    let bad = c
        .claims
        .record_verdict(pb::RecordVerdictRequest {
            request_id: "v-bad".into(),
            claim_id: id.clone(),
            verdict: Some(pb::Verdict {
                decision: pb::Decision::Confirmed as i32,
                rationale: "seen".into(),
                evidence_ids: vec!["e-000000000000".into()],
                ..Default::default()
            }),
        })
        .await;
    expect_err(bad, Code::NotFound, "e-000000000000");

    let v = c
        .claims
        .record_verdict(pb::RecordVerdictRequest {
            request_id: "v-1".into(),
            claim_id: id.clone(),
            verdict: Some(pb::Verdict {
                decision: pb::Decision::Confirmed as i32,
                rationale: "footage reviewed by the desk".into(),
                evidence_ids: vec![ev_id.clone()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let verdict = v.verdict.unwrap();
    assert!(!verdict.id.is_empty());
    assert_eq!(verdict.claim_id, id);
    assert_eq!(verdict.reviewer, "anonymous");
    verify_receipt(v.receipt.as_ref().unwrap(), &vk);

    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Confirmed);
    assert_eq!(computed_of(&s), pb::Status::Corroborated);
    assert!(s.confirmed);
    assert!(!s.needs_review);

    // Evidence that does not change the computed status needs no review...
    c.add_evidence("ev-r2", &id, evidence("reuters", pb::Stance::Supports, 3))
        .await;
    assert!(!c.status(&id).await.needs_review);
    // ...but a qualifying contradiction does.
    c.add_evidence("ev-ap", &id, evidence("ap", pb::Stance::Contradicts, 2))
        .await;
    let s = c.status(&id).await;
    assert_eq!(
        status_of(&s),
        pb::Status::Confirmed,
        "the verdict still rules"
    );
    assert_eq!(computed_of(&s), pb::Status::Disputed);
    assert!(s.needs_review);
    let rec = c
        .claims
        .get_claim(pb::GetClaimRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec.status, pb::Status::Confirmed as i32);
    assert_eq!(rec.computed_status, pb::Status::Disputed as i32);
    assert_eq!(rec.verdicts.len(), 1);

    // A newer verdict takes over and settles the review.
    c.claims
        .record_verdict(pb::RecordVerdictRequest {
            request_id: "v-2".into(),
            claim_id: id.clone(),
            verdict: Some(pb::Verdict {
                decision: pb::Decision::Disputed as i32,
                rationale: "AP contradicts the count".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Disputed);
    assert!(!s.confirmed);
    assert!(!s.needs_review);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_claimants_cluster_can_retract() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    let vk = c.verifier_key().await;
    let id = c
        .submit(
            "claim-retract",
            claim(
                pb::ClaimKind::TerritorialControl,
                "ru-mod",
                "Village of Example captured",
            ),
        )
        .await
        .claim
        .unwrap()
        .id;
    c.add_evidence("ev-r", &id, evidence("reuters", pb::Stance::Supports, 2))
        .await;
    let retract = |source_id: &str, rid: &str| pb::RetractClaimRequest {
        request_id: rid.into(),
        claim_id: id.clone(),
        retraction: Some(pb::Retraction {
            source_id: source_id.into(),
            url: "https://example.org/retraction".into(),
            note: "withdrawn".into(),
            ..Default::default()
        }),
    };

    let size = c.size().await;
    let outsider = c.claims.retract_claim(retract("reuters", "x-1")).await;
    expect_err(outsider, Code::FailedPrecondition, "cluster");
    assert_eq!(c.size().await, size, "a refused retraction writes nothing");
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Corroborated);

    // TASS shares the ministry's cluster, so it may retract on its behalf.
    let done = c
        .claims
        .retract_claim(retract("tass", "x-2"))
        .await
        .unwrap()
        .into_inner();
    let x = done.retraction.unwrap();
    assert_eq!(x.claim_id, id);
    assert_eq!(x.source_id, "tass");
    let r = done.receipt.unwrap();
    verify_receipt(&r, &vk);
    let s = c.status(&id).await;
    assert_eq!(status_of(&s), pb::Status::Retracted);
    assert_eq!(computed_of(&s), pb::Status::Corroborated);
    assert!(!s.confirmed);
    // As of before it, the claim was not retracted.
    let then = c.status_at(&id, r.index).await;
    assert_eq!(status_of(&then), pb::Status::Corroborated);

    let again = c.claims.retract_claim(retract("ru-mod", "x-3")).await;
    expect_err(again, Code::FailedPrecondition, "already retracted");
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent_and_reused_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let vk = c.verifier_key().await;

    let s = source("ru-mod", "RU", pb::Role::Party, pb::Reliability::D, "");
    let a = c.register(s.clone()).await;
    let size = c.size().await;
    let b = c.register(s.clone()).await;
    assert_eq!(
        a.receipt.as_ref().unwrap().index,
        b.receipt.as_ref().unwrap().index
    );
    assert_eq!(a.source, b.source);
    assert_eq!(c.size().await, size);
    verify_receipt(b.receipt.as_ref().unwrap(), &vk);

    let cl = claim(pb::ClaimKind::Strike, "ru-mod", "A strike on a bridge");
    let first = c.submit("req-1", cl.clone()).await;
    let size = c.size().await;
    let retry = c.submit("req-1", cl.clone()).await;
    assert_eq!(
        first.claim.as_ref().unwrap().id,
        retry.claim.as_ref().unwrap().id
    );
    let (r1, r2) = (first.receipt.unwrap(), retry.receipt.unwrap());
    assert_eq!(r1.index, r2.index);
    assert_eq!(r1.leaf_hash, r2.leaf_hash);
    verify_receipt(&r2, &vk);
    assert_eq!(c.size().await, size, "a retry writes nothing");

    let mut changed = cl.clone();
    changed.summary = "A strike on a different bridge".into();
    let reused = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "req-1".into(),
            claim: Some(changed),
        })
        .await;
    expect_err(reused, Code::AlreadyExists, "req-1");
    assert_eq!(c.size().await, size);

    // Evidence and grades retry the same way.
    let claim_id = first.claim.unwrap().id;
    c.register(source("ap", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let e1 = c
        .add_evidence("ev-1", &claim_id, evidence("ap", pb::Stance::Supports, 2))
        .await;
    let size = c.size().await;
    let e2 = c
        .add_evidence("ev-1", &claim_id, evidence("ap", pb::Stance::Supports, 2))
        .await;
    assert_eq!(e1.evidence, e2.evidence);
    assert_eq!(e1.receipt.unwrap().index, e2.receipt.unwrap().index);
    let e3 = c
        .claims
        .add_evidence(pb::AddEvidenceRequest {
            request_id: "ev-1".into(),
            claim_id: claim_id.clone(),
            evidence: Some(evidence("ap", pb::Stance::Contradicts, 2)),
        })
        .await;
    expect_err(e3, Code::AlreadyExists, "ev-1");
    let grade = pb::GradeSourceRequest {
        request_id: "g-1".into(),
        source_id: "ap".into(),
        reliability: pb::Reliability::A as i32,
        rationale: "r".into(),
    };
    let g1 = c
        .sources
        .grade_source(grade.clone())
        .await
        .unwrap()
        .into_inner();
    let g2 = c
        .sources
        .grade_source(grade.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g1.receipt.unwrap().index, g2.receipt.unwrap().index);
    assert_eq!(c.size().await, size + 1);
    let got = c
        .sources
        .get_source(pb::GetSourceRequest { id: "ap".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.grades.len(), 2, "the retried grade is recorded once");

    // Without a request id the server makes one up: two submissions are two claims.
    let x = c.submit("", cl.clone()).await.claim.unwrap().id;
    let y = c.submit("", cl.clone()).await.claim.unwrap().id;
    assert_ne!(x, y);
    assert_eq!(c.size().await, size + 3);

    // A request refused by the ledger does not burn its request id.
    let mut orphan = cl.clone();
    orphan.claimant_id = "nobody".into();
    let refused = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "req-2".into(),
            claim: Some(orphan),
        })
        .await;
    expect_err(refused, Code::NotFound, "nobody");
    c.submit("req-2", cl.clone()).await;
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_mistake_gets_its_code_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    let claim_id = c
        .submit(
            "ok",
            claim(pb::ClaimKind::Strike, "ru-mod", "A valid claim"),
        )
        .await
        .claim
        .unwrap()
        .id;
    let size = c.size().await;

    // INVALID_ARGUMENT, naming the field.
    let bad_slug = c
        .sources
        .register_source(pb::RegisterSourceRequest {
            request_id: "bad-slug".into(),
            source: Some(source(
                "Not_A_Slug",
                "",
                pb::Role::NonParty,
                pb::Reliability::B,
                "",
            )),
        })
        .await;
    expect_err(bad_slug, Code::InvalidArgument, "source.id");
    let no_source = c
        .sources
        .register_source(pb::RegisterSourceRequest::default())
        .await;
    expect_err(no_source, Code::InvalidArgument, "source");

    let mut no_summary = claim(pb::ClaimKind::Strike, "ru-mod", "");
    no_summary.summary.clear();
    let r = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "no-summary".into(),
            claim: Some(no_summary),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "claim.summary");
    let long = claim(pb::ClaimKind::Strike, "ru-mod", &"x".repeat(201));
    let r = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "long".into(),
            claim: Some(long),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "claim.summary");
    // Exactly 200 characters (not bytes) is fine.
    let max = claim(pb::ClaimKind::Strike, "ru-mod", &"é".repeat(200));
    let r = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "max".into(),
            claim: Some(max),
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
    let size = size + 1;

    let r = c
        .claims
        .add_evidence(pb::AddEvidenceRequest {
            request_id: "cred-1".into(),
            claim_id: claim_id.clone(),
            evidence: Some(evidence("reuters", pb::Stance::Supports, 1)),
        })
        .await;
    expect_err(r, Code::InvalidArgument, "evidence.credibility");

    let verdict = |decision: pb::Decision, rationale: &str| pb::RecordVerdictRequest {
        request_id: format!("v-{rationale}"),
        claim_id: claim_id.clone(),
        verdict: Some(pb::Verdict {
            decision: decision as i32,
            rationale: rationale.into(),
            ..Default::default()
        }),
    };
    let r = c
        .claims
        .record_verdict(verdict(pb::Decision::Confirmed, "looks right"))
        .await;
    expect_err(r, Code::InvalidArgument, "verdict.evidence_ids");
    let r = c
        .claims
        .record_verdict(verdict(pb::Decision::Disputed, ""))
        .await;
    expect_err(r, Code::InvalidArgument, "verdict.rationale");

    let r = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            page_token: "not-a-token!".into(),
            ..Default::default()
        })
        .await;
    expect_err(r, Code::InvalidArgument, "page_token");
    let r = c
        .sources
        .list_sources(pb::ListSourcesRequest {
            page_token: "AAAA".into(),
            ..Default::default()
        })
        .await;
    expect_err(r, Code::InvalidArgument, "page_token");
    let r = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest::default())
        .await;
    expect_err(r, Code::InvalidArgument, "claim_id");

    // NOT_FOUND.
    let r = c
        .claims
        .submit_claim(pb::SubmitClaimRequest {
            request_id: "orphan".into(),
            claim: Some(claim(pb::ClaimKind::Strike, "nobody", "Who said it?")),
        })
        .await;
    expect_err(r, Code::NotFound, "nobody");
    let r = c
        .claims
        .get_claim(pb::GetClaimRequest {
            id: "c-000000000000".into(),
        })
        .await;
    expect_err(r, Code::NotFound, "c-000000000000");
    let r = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest {
            claim_id: "c-000000000000".into(),
            ..Default::default()
        })
        .await;
    expect_err(r, Code::NotFound, "c-000000000000");
    let r = c
        .claims
        .add_evidence(pb::AddEvidenceRequest {
            request_id: "ev-nowhere".into(),
            claim_id: "c-000000000000".into(),
            evidence: Some(evidence("reuters", pb::Stance::Supports, 2)),
        })
        .await;
    expect_err(r, Code::NotFound, "c-000000000000");
    let r = c
        .claims
        .add_evidence(pb::AddEvidenceRequest {
            request_id: "ev-ghost".into(),
            claim_id: claim_id.clone(),
            evidence: Some(evidence("ghost", pb::Stance::Supports, 2)),
        })
        .await;
    expect_err(r, Code::NotFound, "ghost");
    let r = c
        .sources
        .get_source(pb::GetSourceRequest { id: "ghost".into() })
        .await;
    expect_err(r, Code::NotFound, "ghost");
    let r = c
        .sources
        .grade_source(pb::GradeSourceRequest {
            request_id: "g-ghost".into(),
            source_id: "ghost".into(),
            reliability: pb::Reliability::B as i32,
            rationale: "r".into(),
        })
        .await;
    expect_err(r, Code::NotFound, "ghost");

    // ALREADY_EXISTS: the same source id registered by another request.
    let r = c
        .sources
        .register_source(pb::RegisterSourceRequest {
            request_id: "another-request".into(),
            source: Some(source(
                "reuters",
                "",
                pb::Role::NonParty,
                pb::Reliability::A,
                "",
            )),
        })
        .await;
    expect_err(r, Code::AlreadyExists, "reuters");

    // FAILED_PRECONDITION: a retraction from outside the claimant's cluster.
    let r = c
        .claims
        .retract_claim(pb::RetractClaimRequest {
            request_id: "x".into(),
            claim_id: claim_id.clone(),
            retraction: Some(pb::Retraction {
                source_id: "ap".into(),
                ..Default::default()
            }),
        })
        .await;
    expect_err(r, Code::FailedPrecondition, "ap");

    // OUT_OF_RANGE: a status as of a size the log has not reached.
    let r = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest {
            claim_id: claim_id.clone(),
            as_of_size: size + 100,
            with_proof: true,
        })
        .await;
    expect_err(r, Code::OutOfRange, &format!("{}", size + 100));
    // As of a size before the claim existed, it is not there.
    let r = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest {
            claim_id: claim_id.clone(),
            as_of_size: 1,
            with_proof: false,
        })
        .await;
    expect_err(r, Code::NotFound, &claim_id);

    assert_eq!(c.size().await, size, "no bad request wrote anything");
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_claims_filters() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let art = import_article(&mut c).await;
    let id = |rid: &str| art.claim(rid).to_string();
    let size = c.size().await;
    let list = |mut req: pb::ListClaimsRequest| {
        let mut client = c.claims.clone();
        req.min_size = size;
        async move {
            let resp = client.list_claims(req).await.unwrap().into_inner();
            assert!(
                resp.indexed_size >= size,
                "read-your-writes through min_size"
            );
            assert!(resp.next_page_token.is_empty(), "one page holds it all");
            resp
        }
    };

    let all = list(pb::ListClaimsRequest::default()).await;
    assert_eq!(all.claims.len(), 8);
    let indexes: Vec<u64> = all
        .claims
        .iter()
        .map(|i| i.claim.as_ref().unwrap().index)
        .collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "log order");
    let swap = all
        .claims
        .iter()
        .find(|i| i.claim.as_ref().unwrap().id == id("claim-prisoner-swap"))
        .unwrap();
    assert_eq!(swap.status, pb::Status::Confirmed as i32);
    assert!(swap.confirmed);

    let r = list(pb::ListClaimsRequest {
        kind: pb::ClaimKind::Statement as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&r),
        vec![id("claim-vance-impasse"), id("claim-peskov-call")]
    );

    let r = list(pb::ListClaimsRequest {
        claimant_id: "ru-mod".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-villages"), id("claim-drones-35")]);

    let r = list(pb::ListClaimsRequest {
        claimant_id: "ru-mod".into(),
        kind: pb::ClaimKind::Interception as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-drones-35")]);

    for (status, expected) in [
        (
            pb::Status::Corroborated,
            vec![id("claim-villages"), id("claim-largest-drone-attack")],
        ),
        (pb::Status::Confirmed, vec![id("claim-prisoner-swap")]),
        (pb::Status::Disputed, vec![id("claim-casualties-5000")]),
        (pb::Status::Inconclusive, vec![id("claim-icbm-warning")]),
        (
            pb::Status::Claimed,
            vec![
                id("claim-drones-35"),
                id("claim-vance-impasse"),
                id("claim-peskov-call"),
            ],
        ),
        (pb::Status::Refuted, vec![]),
    ] {
        let r = list(pb::ListClaimsRequest {
            status: status as i32,
            ..Default::default()
        })
        .await;
        assert_eq!(ids(&r), expected, "status {status:?}");
        assert!(r.claims.iter().all(|i| i.status == status as i32));
    }

    let r = list(pb::ListClaimsRequest {
        place: "Istanbul".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-prisoner-swap")]);
    let r = list(pb::ListClaimsRequest {
        place: "donetsk".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-villages")]);
    let r = list(pb::ListClaimsRequest {
        place: "UA".into(),
        kind: pb::ClaimKind::Strike as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-largest-drone-attack")]);

    // Overlap with [from, to]: the week-long casualty figure and the day of the swap.
    let r = list(pb::ListClaimsRequest {
        event_time_from: Some(rfc3339("2025-05-16T12:00:00Z")),
        event_time_to: Some(rfc3339("2025-05-16T13:00:00Z")),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&r),
        vec![id("claim-casualties-5000"), id("claim-prisoner-swap")]
    );
    let r = list(pb::ListClaimsRequest {
        event_time_from: Some(rfc3339("2025-05-19T06:00:00Z")),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&r),
        vec![
            id("claim-villages"),
            id("claim-vance-impasse"),
            id("claim-peskov-call")
        ]
    );

    // Free text: every word must appear in the summary, text or tags.
    let r = list(pb::ListClaimsRequest {
        query: "drones".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&r),
        vec![id("claim-drones-35"), id("claim-largest-drone-attack")]
    );
    let r = list(pb::ListClaimsRequest {
        query: "Drones OVERNIGHT".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-drones-35")]);
    let r = list(pb::ListClaimsRequest {
        query: "istanbul".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ids(&r),
        vec![id("claim-prisoner-swap"), id("claim-peskov-call")]
    );
    let r = list(pb::ListClaimsRequest {
        query: "istanbul".into(),
        status: pb::Status::Claimed as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&r), vec![id("claim-peskov-call")]);
    let r = list(pb::ListClaimsRequest {
        query: "zeppelin".into(),
        ..Default::default()
    })
    .await;
    assert!(r.claims.is_empty());

    let r = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            kind: 999,
            ..Default::default()
        })
        .await;
    expect_err(r, Code::InvalidArgument, "kind");
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_has_no_duplicates_or_gaps_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "",
    ))
    .await;
    let mut before = Vec::new();
    for i in 0..20 {
        let cl = claim(
            pb::ClaimKind::Strike,
            "ru-mod",
            &format!("Strike number {i}"),
        );
        before.push(c.submit(&format!("p-{i}"), cl).await.claim.unwrap().id);
    }

    // A writer keeps submitting claims while the reader pages; the reader waits for at least
    // one new claim between pages so the two really interleave.
    let (count_tx, mut count_rx) = watch::channel(0u64);
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let mut c = c.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let cl = claim(pb::ClaimKind::Strike, "ru-mod", &format!("Late strike {n}"));
                tokio::select! {
                    _ = stop.notified() => return n,
                    r = c.claims.submit_claim(pb::SubmitClaimRequest {
                        request_id: format!("late-{n}"),
                        claim: Some(cl),
                    }) => { r.expect("concurrent SubmitClaim"); }
                }
                n += 1;
                count_tx.send_replace(n);
            }
        })
    };

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    let size_before = c.size().await;
    loop {
        let page = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                page_size: 3,
                page_token: token.clone(),
                min_size: size_before,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.claims.len() <= 3);
        seen.extend(ids(&page));
        pages += 1;
        if page.next_page_token.is_empty() || seen.len() >= before.len() + 6 {
            break;
        }
        token = page.next_page_token;
        let have = *count_rx.borrow_and_update();
        count_rx
            .wait_for(|n| *n > have)
            .await
            .expect("the writer is running");
    }
    stop.notify_one();
    let written = writer.await.unwrap();
    assert!(written > 0);
    assert!(pages >= 7, "20 claims at 3 a page take at least 7 pages");

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates across pages");
    assert_eq!(
        &seen[..before.len()],
        &before[..],
        "every claim that existed before paging, in order, without gaps"
    );
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_its_data_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    claimant_and_agencies(&mut c).await;
    let first = c
        .submit(
            "r-1",
            claim(pb::ClaimKind::Strike, "ru-mod", "Strike before the restart"),
        )
        .await;
    let id = first.claim.unwrap().id;
    c.add_evidence("ev-r", &id, evidence("reuters", pb::Stance::Supports, 2))
        .await;
    let cp_before = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let rec_before = c
        .claims
        .get_claim(pb::GetClaimRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    drop(c);
    srv.stop().await;

    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let cp_after = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp_after.size, cp_before.size);
    assert_eq!(cp_after.root_hash, cp_before.root_hash);
    assert_eq!(cp_after.verifier_key, cp_before.verifier_key, "same key");
    let rec_after = c
        .claims
        .get_claim(pb::GetClaimRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rec_after, rec_before);
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Corroborated);
    assert_eq!(
        c.sources
            .get_source(pb::GetSourceRequest { id: "tass".into() })
            .await
            .unwrap()
            .into_inner()
            .source
            .unwrap()
            .cluster,
        "ru-state"
    );

    // Idempotency survives the restart, and new writes continue the log.
    let retry = c
        .submit(
            "r-1",
            claim(pb::ClaimKind::Strike, "ru-mod", "Strike before the restart"),
        )
        .await;
    assert_eq!(retry.receipt.unwrap().index, first.receipt.unwrap().index);
    let next = c
        .add_evidence("ev-ap", &id, evidence("ap", pb::Stance::Supports, 2))
        .await
        .receipt
        .unwrap();
    assert_eq!(next.index, cp_before.size);
    let cp = verify_receipt(&next, &cp_after.verifier_key);
    assert_eq!(cp.size(), cp_before.size + 1);
    assert_eq!(status_of(&c.status(&id).await), pb::Status::Confirmed);
    // The new tree extends the old one.
    let proof = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: cp_before.size,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let hashes: Vec<tlog_tiles::Hash> = proof.hashes.iter().map(|h| hash(h)).collect();
    tlog_tiles::check_tree(
        &hashes,
        cp.size(),
        *cp.hash(),
        cp_before.size,
        hash(&cp_before.root_hash),
    )
    .expect("consistent across the restart");
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(srv.channel().await);
    for service in [
        "",
        "claimledger.v1.ClaimService",
        "claimledger.v1.LogService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    drop(health);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_request_all_get_its_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "",
    ))
    .await;
    let vk = c.verifier_key().await;
    let size = c.size().await;

    // A client that retries while its first attempt is still in flight: the attempts can land
    // in one commit group (a filler write keeps the writer busy so they queue together), and
    // every one of them must get the one entry's receipt.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(srv.claims().await);
    }
    let rounds = 4u64;
    for round in 0..rounds {
        let mut filler = c.clone();
        let filler = tokio::spawn(async move {
            let cl = claim(pb::ClaimKind::Strike, "ru-mod", &format!("Filler {round}"));
            filler.submit(&format!("filler-{round}"), cl).await
        });
        let cl = claim(
            pb::ClaimKind::Strike,
            "ru-mod",
            &format!("Strike {round}, sent many times"),
        );
        let mut tasks = Vec::new();
        for client in &clients {
            let mut client = client.clone();
            let cl = cl.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .submit_claim(pb::SubmitClaimRequest {
                        request_id: format!("racy-{round}"),
                        claim: Some(cl),
                    })
                    .await
            }));
        }
        filler.await.unwrap();
        let mut answers = Vec::new();
        for t in tasks {
            let r = t.await.unwrap().expect("every attempt succeeds");
            answers.push(r.into_inner());
        }
        let first = &answers[0];
        for a in &answers {
            assert_eq!(a.claim, first.claim);
            let r = a.receipt.as_ref().unwrap();
            assert_eq!(r.index, first.receipt.as_ref().unwrap().index);
            verify_receipt(r, &vk);
        }
    }
    assert_eq!(
        c.size().await,
        size + 2 * rounds,
        "each request written once"
    );
    drop(c);
    srv.stop().await;
}
}
