//! End-to-end tests of access and transport (SPEC §7): who may write what, the cluster rules,
//! per-principal request ids and the actor recorded in the log, against a real server on a
//! loopback port with a tokens file; then the `serve` command's exposure rules, `token new`,
//! TLS and mutual TLS through the real binary.
//!
//! Every refusal is checked twice: the exact gRPC code, and that the log did not grow.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use claimledger::pb;
use common::*;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status};

// ---------------------------------------------------------------------------------------------
// Principals and the state they act on
// ---------------------------------------------------------------------------------------------

const ADMIN: &str = "tok-admin";
const REGISTRAR: &str = "tok-registrar";
const SUBMITTER: &str = "tok-submitter";
const REVIEWER: &str = "tok-reviewer";
/// A reviewer bound to the claimant's cluster (`ru-state`).
const RU_REVIEWER: &str = "tok-ru-reviewer";
/// A submitter bound to `ru-state`, without the reviewer role.
const RU_PRESS: &str = "tok-ru-press";

/// A caller: its principal name and bearer token (`None` for `anonymous`).
type Caller = (&'static str, Option<&'static str>);

const ANONYMOUS: Caller = ("anonymous", None);
const CALLERS: [Caller; 7] = [
    ANONYMOUS,
    ("registrar", Some(REGISTRAR)),
    ("submitter", Some(SUBMITTER)),
    ("reviewer", Some(REVIEWER)),
    ("admin", Some(ADMIN)),
    ("ru-reviewer", Some(RU_REVIEWER)),
    ("ru-press", Some(RU_PRESS)),
];

fn auth() -> claimledger::api::auth::Auth {
    token_auth(&[
        (ADMIN, "admin", "admin", &[]),
        (REGISTRAR, "registrar", "registrar", &[]),
        (SUBMITTER, "submitter", "submitter", &[]),
        (REVIEWER, "reviewer", "reviewer", &[]),
        (RU_REVIEWER, "ru-reviewer", "reviewer", &["ru-state"]),
        (RU_PRESS, "ru-press", "submitter", &["ru-state"]),
    ])
}

/// A server with the principals above, and its clients.
async fn start(dir: &Path) -> (TestServer, Clients) {
    let srv = TestServer::start_with_auth(dir, auth()).await;
    let c = srv.clients().await;
    (srv, c)
}

/// As admin: the ministry `ru-mod` and its agency `tass` (cluster `ru-state`), `reuters`
/// (non-party, grade B), a claim by `ru-mod` with evidence from Reuters. Returns the claim id.
async fn setup(c: &mut Clients) -> String {
    for s in [
        source(
            "ru-mod",
            "RU",
            pb::Role::Party,
            pb::Reliability::D,
            "ru-state",
        ),
        source(
            "tass",
            "RU",
            pb::Role::Affiliated,
            pb::Reliability::D,
            "ru-state",
        ),
        source("reuters", "", pb::Role::NonParty, pb::Reliability::B, ""),
    ] {
        let id = s.id.clone();
        c.sources
            .register_source(bearer(
                pb::RegisterSourceRequest {
                    request_id: format!("src-{id}"),
                    source: Some(s),
                },
                ADMIN,
            ))
            .await
            .unwrap_or_else(|e| panic!("admin registers {id}: {e}"));
    }
    let id = submit_as(
        c,
        ADMIN,
        "setup-claim",
        "ru-mod",
        "Depot near Belgorod destroyed",
    )
    .await
    .expect("admin submits the claim")
    .claim
    .expect("claim")
    .id;
    c.claims
        .add_evidence(bearer(
            pb::AddEvidenceRequest {
                request_id: "setup-ev".into(),
                claim_id: id.clone(),
                evidence: Some(evidence("reuters", pb::Stance::Supports, 2)),
            },
            ADMIN,
        ))
        .await
        .expect("admin adds evidence");
    id
}

async fn submit_as(
    c: &mut Clients,
    token: &str,
    request_id: &str,
    claimant: &str,
    summary: &str,
) -> Result<pb::SubmitClaimResponse, Status> {
    c.claims
        .submit_claim(bearer(submit_req(request_id, claimant, summary), token))
        .await
        .map(|r| r.into_inner())
}

fn submit_req(request_id: &str, claimant: &str, summary: &str) -> pb::SubmitClaimRequest {
    pb::SubmitClaimRequest {
        request_id: request_id.into(),
        claim: Some(claim(pb::ClaimKind::Strike, claimant, summary)),
    }
}

fn verdict_req(request_id: &str, claim_id: &str) -> pb::RecordVerdictRequest {
    pb::RecordVerdictRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        verdict: Some(pb::Verdict {
            decision: pb::Decision::Inconclusive as i32,
            rationale: "imagery does not settle it".into(),
            ..Default::default()
        }),
    }
}

/// A retraction on behalf of `source_id`, which must be in the claimant's cluster.
fn retract_req(request_id: &str, claim_id: &str, source_id: &str) -> pb::RetractClaimRequest {
    pb::RetractClaimRequest {
        request_id: request_id.into(),
        claim_id: claim_id.into(),
        retraction: Some(pb::Retraction {
            source_id: source_id.into(),
            url: "https://example.org/retraction".into(),
            note: "withdrawn".into(),
            ..Default::default()
        }),
    }
}

fn get_claim(id: &str) -> pb::GetClaimRequest {
    pb::GetClaimRequest { id: id.into() }
}

// ---------------------------------------------------------------------------------------------
// 1. The role matrix
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Write {
    Register,
    Grade,
    Submit,
    Evidence,
    Verdict,
    Retract,
}

const WRITES: [Write; 6] = [
    Write::Register,
    Write::Grade,
    Write::Submit,
    Write::Evidence,
    Write::Verdict,
    Write::Retract,
];

const OK: Code = Code::Ok;
const NO: Code = Code::PermissionDenied;

/// SPEC §7, on a claim by `ru-mod` (cluster `ru-state`), in the order of [`WRITES`]:
/// Register, Grade, Submit, AddEvidence, RecordVerdict, RetractClaim.
const MATRIX: [(&str, [Code; 6]); 7] = [
    ("anonymous", [NO, NO, NO, NO, NO, NO]),
    ("registrar", [OK, OK, NO, NO, NO, NO]),
    ("submitter", [NO, NO, OK, OK, NO, NO]),
    ("reviewer", [NO, NO, NO, NO, OK, OK]),
    ("admin", [OK, OK, OK, OK, OK, OK]),
    // Bound to the claimant's cluster: may retract, may not judge (conflict of interest).
    ("ru-reviewer", [NO, NO, NO, NO, NO, OK]),
    // A bound submitter: may retract its own cluster's claim without the reviewer role.
    ("ru-press", [NO, NO, OK, OK, NO, OK]),
];

/// Sends `w` as `token` with request id `rid`. Each call has valid content and fresh ids, so
/// whatever refuses it is access control. A retraction gets a fresh claim (made by admin before
/// this is called) because retraction is permanent.
async fn attempt(
    c: &mut Clients,
    w: Write,
    token: Option<&str>,
    rid: &str,
    claim_id: &str,
) -> Result<(), Status> {
    match w {
        Write::Register => {
            let s = source(rid, "", pb::Role::NonParty, pb::Reliability::C, "");
            let req = pb::RegisterSourceRequest {
                request_id: rid.into(),
                source: Some(s),
            };
            c.sources
                .register_source(as_caller(req, token))
                .await
                .map(drop)
        }
        Write::Grade => {
            let req = pb::GradeSourceRequest {
                request_id: rid.into(),
                source_id: "reuters".into(),
                reliability: pb::Reliability::B as i32,
                rationale: "track record reviewed".into(),
            };
            c.sources
                .grade_source(as_caller(req, token))
                .await
                .map(drop)
        }
        Write::Submit => {
            let req = submit_req(rid, "ru-mod", &format!("Claim {rid}"));
            c.claims.submit_claim(as_caller(req, token)).await.map(drop)
        }
        Write::Evidence => {
            let req = pb::AddEvidenceRequest {
                request_id: rid.into(),
                claim_id: claim_id.into(),
                evidence: Some(evidence("reuters", pb::Stance::Supports, 3)),
            };
            c.claims.add_evidence(as_caller(req, token)).await.map(drop)
        }
        Write::Verdict => {
            let req = verdict_req(rid, claim_id);
            c.claims
                .record_verdict(as_caller(req, token))
                .await
                .map(drop)
        }
        Write::Retract => {
            let req = retract_req(rid, claim_id, "ru-mod");
            c.claims
                .retract_claim(as_caller(req, token))
                .await
                .map(drop)
        }
    }
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;

    let mut wrong = Vec::new();
    let mut n = 0;
    for (caller, want) in MATRIX {
        let token = CALLERS
            .iter()
            .find(|(name, _)| *name == caller)
            .expect("a caller of the matrix")
            .1;
        for (w, want) in WRITES.into_iter().zip(want) {
            n += 1;
            let rid = format!("m-{n}");
            let target = match w {
                Write::Retract => {
                    submit_as(
                        &mut c,
                        ADMIN,
                        &format!("{rid}-target"),
                        "ru-mod",
                        &format!("To retract {n}"),
                    )
                    .await
                    .expect("admin submits a claim to retract")
                    .claim
                    .expect("claim")
                    .id
                }
                _ => claim_id.clone(),
            };
            let before = c.size().await;
            let got = attempt(&mut c, w, token, &rid, &target).await;
            let after = c.size().await;
            let code = got.as_ref().err().map_or(Code::Ok, Status::code);
            let msg = got.as_ref().err().map(|s| s.message().to_string());
            if code != want {
                wrong.push(format!(
                    "{caller} {w:?}: want {want:?}, got {code:?} {msg:?}"
                ));
            }
            let grew = after - before;
            if code == Code::Ok && grew != 1 {
                wrong.push(format!("{caller} {w:?}: OK but the log grew by {grew}"));
            }
            if code != Code::Ok && grew != 0 {
                wrong.push(format!(
                    "{caller} {w:?}: refused but the log grew by {grew}"
                ));
            }
            if caller == "ru-reviewer" && matches!(w, Write::Verdict) {
                let msg = msg.unwrap_or_default();
                if !msg.contains("conflict of interest") {
                    wrong.push(format!(
                        "ru-reviewer Verdict: message does not say conflict of interest: {msg:?}"
                    ));
                }
            }
            // A refused retraction leaves the claim as it was.
            if matches!(w, Write::Retract) && code != Code::Ok {
                let rec = c.record(&target).await;
                if rec.retraction.is_some() {
                    wrong.push(format!(
                        "{caller} Retract: refused, yet the claim is retracted"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "role matrix:\n{}", wrong.join("\n"));
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rules_follow_the_claimants_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    setup(&mut c).await;
    // Claims by Reuters: outside ru-state.
    let mut reuters = Vec::new();
    for n in 0..2 {
        let rid = format!("reuters-claim-{n}");
        let id = submit_as(&mut c, ADMIN, &rid, "reuters", "Reuters saw the depot")
            .await
            .expect("admin submits a Reuters claim")
            .claim
            .expect("claim")
            .id;
        reuters.push(id);
    }

    // The ru-state reviewer has no conflict on a Reuters claim.
    let size = c.size().await;
    c.claims
        .record_verdict(bearer(verdict_req("v-ru", &reuters[0]), RU_REVIEWER))
        .await
        .expect("a bound reviewer judges a claim outside its cluster");
    assert_eq!(c.size().await, size + 1);

    // The ru-state press office may not retract someone else's claim.
    let size = c.size().await;
    let r = c
        .claims
        .retract_claim(bearer(
            retract_req("x-press", &reuters[1], "reuters"),
            RU_PRESS,
        ))
        .await;
    expect_err(r, Code::PermissionDenied, "ru-press");
    assert_eq!(c.size().await, size, "a refused retraction writes nothing");
    // Nor may an unbound submitter, while a reviewer may.
    let r = c
        .claims
        .retract_claim(bearer(
            retract_req("x-sub", &reuters[1], "reuters"),
            SUBMITTER,
        ))
        .await;
    expect_err(r, Code::PermissionDenied, "submitter");
    assert_eq!(c.size().await, size);
    c.claims
        .retract_claim(bearer(
            retract_req("x-rev", &reuters[1], "reuters"),
            REVIEWER,
        ))
        .await
        .expect("a reviewer retracts");
    assert_eq!(c.size().await, size + 1);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_malformed_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;
    let size = c.size().await;

    let r = submit_as(&mut c, "tok-nobody", "u-1", "ru-mod", "Unknown caller").await;
    expect_err(r, Code::Unauthenticated, "unknown token");
    assert_eq!(c.size().await, size);

    // Not a bearer token at all.
    let mut req = tonic::Request::new(submit_req("u-2", "ru-mod", "Basic caller"));
    req.metadata_mut().insert(
        "authorization",
        "Basic YWRtaW46YWRtaW4=".parse().expect("header"),
    );
    let r = c.claims.submit_claim(req).await;
    expect_err(r, Code::Unauthenticated, "Bearer");
    assert_eq!(c.size().await, size);

    // A token that is a prefix of a real one is not that one.
    let r = submit_as(&mut c, "tok-admi", "u-3", "ru-mod", "Prefix caller").await;
    expect_err(r, Code::Unauthenticated, "unknown token");
    assert_eq!(c.size().await, size);

    // A bad token is refused even for a read: it is a client bug or an attack, not anonymity.
    let r = c
        .claims
        .get_claim(bearer(get_claim(&claim_id), "tok-nobody"))
        .await;
    expect_err(r, Code::Unauthenticated, "unknown token");
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_open_to_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;

    let rec = c.record(&claim_id).await;
    assert_eq!(rec.evidence.len(), 1);
    let status = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest {
            claim_id: claim_id.clone(),
            as_of_size: 0,
            with_proof: true,
        })
        .await
        .expect("GetClaimStatus")
        .into_inner();
    assert_eq!(status.proofs.len(), 2);
    let list = c.list_when_indexed().await;
    assert_eq!(list.claims.len(), 1);
    let size = c.size().await;
    assert_eq!(size, 5);
    let entries = entries(&mut c).await;
    assert_eq!(entries.len(), 5);
    c.sources
        .get_source(pb::GetSourceRequest {
            id: "ru-mod".into(),
        })
        .await
        .expect("GetSource");
    let sources = c
        .sources
        .list_sources(pb::ListSourcesRequest::default())
        .await
        .expect("ListSources")
        .into_inner();
    assert_eq!(sources.sources.len(), 3);
    srv.stop().await;
}
}

/// Every entry of the log, decoded.
async fn entries(c: &mut Clients) -> Vec<pb::Entry> {
    let mut stream = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 0, end: 0 })
        .await
        .expect("GetEntries")
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.expect("an entry") {
        out.push(pb::Entry::decode(e.data.as_slice()).expect("an Entry"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 2. Attacks
// ---------------------------------------------------------------------------------------------

both_stores! {
/// (a) B sends A's request id first, with other content: A is unaffected, B learns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_belongs_to_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    setup(&mut c).await;
    let rid = "press-2024-001";

    // B (submitter) squats on A's (ru-press's) request id.
    let b = submit_as(&mut c, SUBMITTER, rid, "ru-mod", "Squatted by B")
        .await
        .expect("B's own request");
    let b_claim = b.claim.expect("claim");

    // A's request succeeds as if B had never sent anything.
    let size = c.size().await;
    let a_req = submit_req(rid, "ru-mod", "A's real statement");
    let a = c
        .claims
        .submit_claim(bearer(a_req.clone(), RU_PRESS))
        .await
        .expect("A's request is not blocked by B's")
        .into_inner();
    assert_eq!(c.size().await, size + 1, "A's request is written");
    let a_claim = a.claim.expect("claim");
    let a_receipt = a.receipt.expect("receipt");
    assert_ne!(a_claim.id, b_claim.id, "A and B get different claims");
    let stored = c.record(&a_claim.id).await.claim.expect("claim");
    assert_eq!(stored.summary, "A's real statement");
    assert_eq!(stored.text, "A's real statement (full text)");
    let b_stored = c.record(&b_claim.id).await.claim.expect("claim");
    assert_eq!(b_stored.summary, "Squatted by B");

    // B replaying A's exact request stays in B's own scope: it never gets A's claim or receipt.
    let size = c.size().await;
    match c
        .claims
        .submit_claim(bearer(a_req.clone(), SUBMITTER))
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            let id = r.claim.expect("claim").id;
            let index = r.receipt.expect("receipt").index;
            assert_ne!(id, a_claim.id, "B was handed A's claim");
            assert_ne!(index, a_receipt.index, "B was handed A's receipt");
        }
        Err(s) => {
            assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
            assert!(!s.message().contains(&a_claim.id), "{s:?}");
            assert_eq!(c.size().await, size);
        }
    }

    // A third principal that never used the id gets a claim of its own from A's request.
    let size = c.size().await;
    let third = c
        .claims
        .submit_claim(bearer(a_req.clone(), ADMIN))
        .await
        .expect("a third principal's own request")
        .into_inner();
    let third_id = third.claim.expect("claim").id;
    assert_ne!(third_id, a_claim.id);
    assert_ne!(third_id, b_claim.id);
    assert_ne!(third.receipt.expect("receipt").index, a_receipt.index);
    assert_eq!(c.size().await, size + 1);

    // A's own retry is still idempotent: the same claim and receipt, nothing written.
    let size = c.size().await;
    let again = c
        .claims
        .submit_claim(bearer(a_req, RU_PRESS))
        .await
        .expect("A's retry")
        .into_inner();
    assert_eq!(again.claim.expect("claim").id, a_claim.id);
    assert_eq!(again.receipt.expect("receipt").index, a_receipt.index);
    assert_eq!(c.size().await, size, "a retry writes nothing");
    srv.stop().await;
}
}

both_stores! {
/// (b) A submitter cannot vouch for its own claims by inventing a neutral source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_cannot_register_a_fake_neutral_source() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    setup(&mut c).await;
    let size = c.size().await;
    let fake = source(
        "independent-observer",
        "",
        pb::Role::NonParty,
        pb::Reliability::A,
        "",
    );
    let r = c
        .sources
        .register_source(bearer(
            pb::RegisterSourceRequest {
                request_id: "fake-1".into(),
                source: Some(fake),
            },
            SUBMITTER,
        ))
        .await;
    expect_err(r, Code::PermissionDenied, "registrar");
    assert_eq!(c.size().await, size, "nothing is written");
    let r = c
        .sources
        .get_source(pb::GetSourceRequest {
            id: "independent-observer".into(),
        })
        .await;
    expect_err(r, Code::NotFound, "independent-observer");
    srv.stop().await;
}
}

both_stores! {
/// (c) A submitter outside the claimant's cluster cannot retract someone else's claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_submitter_cannot_retract() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;
    let size = c.size().await;
    let r = c
        .claims
        .retract_claim(bearer(retract_req("x-1", &claim_id, "ru-mod"), SUBMITTER))
        .await;
    expect_err(r, Code::PermissionDenied, "submitter");
    assert_eq!(c.size().await, size, "nothing is written");
    let rec = c.record(&claim_id).await;
    assert!(rec.retraction.is_none(), "{rec:?}");
    assert_eq!(
        status_of(&c.status(&claim_id).await),
        pb::Status::Corroborated
    );
    srv.stop().await;
}
}

both_stores! {
/// (d) A reviewer bound to the claimant's cluster may not judge it; an unbound one may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_reviewer_cannot_judge_its_own_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;
    let ev = c.record(&claim_id).await.evidence[0].id.clone();
    let confirm = pb::RecordVerdictRequest {
        request_id: "verdict-1".into(),
        claim_id: claim_id.clone(),
        verdict: Some(pb::Verdict {
            decision: pb::Decision::Confirmed as i32,
            rationale: "geolocated footage".into(),
            evidence_ids: vec![ev],
            ..Default::default()
        }),
    };
    let size = c.size().await;
    let r = c
        .claims
        .record_verdict(bearer(confirm.clone(), RU_REVIEWER))
        .await;
    expect_err(r, Code::PermissionDenied, "conflict of interest");
    assert_eq!(c.size().await, size, "nothing is written");
    assert_eq!(
        status_of(&c.status(&claim_id).await),
        pb::Status::Corroborated
    );

    let done = c
        .claims
        .record_verdict(bearer(confirm, REVIEWER))
        .await
        .expect("an unbound reviewer records the same verdict")
        .into_inner();
    assert_eq!(c.size().await, size + 1);
    assert_eq!(done.verdict.expect("verdict").reviewer, "reviewer");
    assert_eq!(status_of(&c.status(&claim_id).await), pb::Status::Confirmed);
    srv.stop().await;
}
}

both_stores! {
/// (e) Each entry's actor is the principal that wrote it, whatever the request says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_of_each_entry_is_its_principal() {
    let dir = tempfile::tempdir().unwrap();
    let (srv, mut c) = start(dir.path()).await;
    let claim_id = setup(&mut c).await;
    let mut want = vec!["admin"; 5];

    let grade = c
        .sources
        .grade_source(bearer(
            pb::GradeSourceRequest {
                request_id: "g-1".into(),
                source_id: "tass".into(),
                reliability: pb::Reliability::E as i32,
                rationale: "repeats the ministry".into(),
            },
            REGISTRAR,
        ))
        .await
        .expect("registrar grades")
        .into_inner();
    want.push("registrar");
    let graded = grade.receipt.expect("receipt").index;

    let sub = submit_as(&mut c, SUBMITTER, "s-1", "ru-mod", "Bridge hit")
        .await
        .expect("submitter submits");
    want.push("submitter");
    let sub_id = sub.claim.expect("claim").id;

    // A reviewer naming someone else as the verdict's reviewer is recorded as itself.
    let mut forged = verdict_req("v-1", &claim_id);
    if let Some(v) = forged.verdict.as_mut() {
        v.reviewer = "admin".into();
    }
    let v = c
        .claims
        .record_verdict(bearer(forged, REVIEWER))
        .await
        .expect("reviewer records a verdict")
        .into_inner();
    want.push("reviewer");
    assert_eq!(v.verdict.expect("verdict").reviewer, "reviewer");

    c.claims
        .retract_claim(bearer(retract_req("x-1", &sub_id, "tass"), RU_PRESS))
        .await
        .expect("the bound press office retracts");
    want.push("ru-press");

    let actors: Vec<String> = entries(&mut c).await.into_iter().map(|e| e.actor).collect();
    assert_eq!(actors, want);
    let rec = c
        .sources
        .get_source(pb::GetSourceRequest { id: "tass".into() })
        .await
        .unwrap()
        .into_inner();
    let last = rec.grades.last().expect("a grade");
    assert_eq!((last.index, last.actor.as_str()), (graded, "registrar"));
    srv.stop().await;
}
}

// ---------------------------------------------------------------------------------------------
// 3. The `serve` command's rules and `token new`, through the real binary
// ---------------------------------------------------------------------------------------------

/// A tokens file in `dir` with an admin token `tok-admin`, mode 0600.
fn admin_tokens_file(dir: &Path) -> PathBuf {
    let path = dir.join("tokens");
    write_private(&path, &tokens_text(&[(ADMIN, "root", "admin", &[])]));
    path
}

fn assert_refused(f: &Finished, needles: &[&str]) {
    assert!(
        !f.status.success(),
        "expected a refusal naming {needles:?}, but it succeeded; stderr:\n{}",
        f.stderr
    );
    for n in needles {
        assert!(
            f.stderr.contains(n),
            "the refusal does not mention {n:?}:\n{}",
            f.stderr
        );
    }
}

/// `serve`'s flags: the data directory and `extra`.
fn serve_flags(data: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data.into()];
    args.extend(extra.iter().map(Into::into));
    args
}

/// Runs `serve` with `flags`, expecting it to refuse to start (it is killed after 60 s).
fn serve_refused(flags: Vec<std::ffi::OsString>) -> Finished {
    claimledger(std::iter::once("serve".into()).chain(flags))
}

/// The log size of `log checkpoint --json` output (a proto3 JSON uint64: a string).
fn json_size(stdout: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    match &v["size"] {
        serde_json::Value::String(s) => s.parse().expect("a size"),
        // proto3 JSON leaves zero values out.
        serde_json::Value::Null => 0,
        other => other.as_u64().expect("a size"),
    }
}

#[test]
fn serve_refuses_open_mode_off_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let f = serve_refused(serve_flags(&data, &["--addr", "0.0.0.0:0"]));
    assert_refused(&f, &["loopback"]);
    assert!(!data.join("log.key").exists(), "no log was opened");
}

#[test]
fn serve_refuses_plaintext_tokens_off_loopback_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let tokens = admin_tokens_file(tmp.path());
    let tokens = tokens.to_str().expect("a UTF-8 path");
    let f = serve_refused(serve_flags(
        &data,
        &["--addr", "0.0.0.0:0", "--tokens-file", tokens],
    ));
    assert_refused(&f, &["TLS", "--allow-plaintext"]);

    // On purpose, behind a TLS-terminating proxy, it starts.
    let srv = ServeProcess::start(serve_flags(
        &data,
        &[
            "--addr",
            "0.0.0.0:0",
            "--tokens-file",
            tokens,
            "--allow-plaintext",
        ],
    ));
    assert!(srv.url.starts_with("http://"), "{}", srv.url);
    srv.stop();
}

#[test]
fn serve_refuses_secrets_others_can_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let loopback = ["--addr", "127.0.0.1:0"];

    // A tokens file readable by others.
    let tokens = admin_tokens_file(tmp.path());
    chmod(&tokens, 0o644);
    let t = tokens.to_str().expect("a UTF-8 path");
    let mut args = loopback.to_vec();
    args.extend(["--tokens-file", t]);
    let f = serve_refused(serve_flags(&data, &args));
    assert_refused(&f, &["chmod 600"]);
    chmod(&tokens, 0o600);

    // A TLS key readable by others.
    let pki = Pki::new();
    let tls = pki.write(tmp.path());
    chmod(&tls.server_key, 0o644);
    let (cert, key) = (
        tls.server_cert.to_str().unwrap(),
        tls.server_key.to_str().unwrap(),
    );
    let mut args = loopback.to_vec();
    args.extend(["--tls-cert", cert, "--tls-key", key]);
    let f = serve_refused(serve_flags(&data, &args));
    assert_refused(&f, &["chmod 600"]);

    // The log's signing key of an existing data directory, readable by others.
    let srv = ServeProcess::start(serve_flags(&data, &loopback));
    srv.stop();
    let log_key = data.join("log.key");
    assert!(log_key.exists(), "serve created {}", log_key.display());
    chmod(&log_key, 0o644);
    let f = serve_refused(serve_flags(&data, &loopback));
    assert_refused(&f, &["chmod 600"]);
}

/// SPEC §7: on SIGTERM the process exits 0, however soon after it announced its address (a
/// supervisor may stop a server it has just started). Before it exits, it has opened its sled
/// directory once more, which advances sled's snapshot: the next start has nothing of this
/// run's to replay.
#[test]
fn sigterm_right_after_start_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for _ in 0..5 {
        let flags = serve_flags(&data, &["--addr", "127.0.0.1:0"]);
        let rest = ServeProcess::start_with_env(flags, &[("RUST_LOG", "info")]).stop();
        assert!(
            rest.iter()
                .any(|l| l.contains("sled's snapshot advanced for the next start")),
            "{}",
            rest.join("\n")
        );
    }
}

/// `claimledger … --token T --server URL`, within 60 s.
fn client(url: &str, token: &str, args: &[&str]) -> Finished {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--token", token, "--server", url]);
    claimledger(all)
}

fn assert_ok(f: &Finished, what: &str) {
    assert!(f.status.success(), "{what} failed:\n{}", f.stderr);
}

#[test]
fn token_new_makes_a_token_the_server_accepts() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let file = tmp.path().join("tokens");
    let f = file.to_str().expect("a UTF-8 path");

    let made = claimledger([
        "token",
        "new",
        "alice",
        "--roles",
        "submitter",
        "--clusters",
        "ru-state",
        "--tokens-file",
        f,
    ]);
    assert_ok(&made, "token new alice");
    let alice = made.stdout.trim().to_string();
    assert!(
        !alice.is_empty() && !alice.contains(char::is_whitespace),
        "{alice:?}"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a new tokens file is private");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().next().expect("a line");
    assert!(line.starts_with("sha256:"), "{line}");
    assert!(
        line.ends_with(" alice submitter clusters=ru-state"),
        "{line}"
    );
    assert!(!text.contains(&alice), "the token itself is not stored");

    // A second token is appended to the same file.
    let made = claimledger([
        "token",
        "new",
        "root",
        "--roles",
        "admin",
        "--tokens-file",
        f,
    ]);
    assert_ok(&made, "token new root");
    let root = made.stdout.trim().to_string();
    assert_ne!(root, alice);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(&root));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let srv = ServeProcess::start(serve_flags(
        &data,
        &["--addr", "127.0.0.1:0", "--tokens-file", f],
    ));
    let url = srv.url.clone();
    assert_ok(
        &client(
            &url,
            &root,
            &[
                "source",
                "register",
                "ru-mod",
                "--name",
                "Ministry",
                "--kind",
                "military",
                "--role",
                "party",
                "--side",
                "RU",
                "--cluster",
                "ru-state",
            ],
        ),
        "root registers ru-mod",
    );
    let data_json = r#"{"kind":"CLAIM_KIND_STRIKE","modality":"MODALITY_ASSERTED_FACT","summary":"Depot hit","claimantId":"ru-mod"}"#;
    let submitted = client(&url, &alice, &["claim", "submit", "--data", data_json]);
    assert_ok(&submitted, "alice submits a claim");
    assert!(
        submitted.stdout.contains("submitted claim c-"),
        "{}",
        submitted.stdout
    );

    let refused = client(
        &url,
        &alice,
        &[
            "source",
            "register",
            "fake-observer",
            "--name",
            "Observer",
            "--kind",
            "ngo",
            "--role",
            "non-party",
            "--grade",
            "A",
        ],
    );
    assert!(!refused.status.success(), "alice may not register sources");
    assert!(
        refused.stderr.contains("PermissionDenied"),
        "{}",
        refused.stderr
    );
    // Without a token the CLI is anonymous: reads only.
    let anon = claimledger(["claim", "submit", "--data", data_json, "--server", &url]);
    assert!(!anon.status.success());
    assert!(anon.stderr.contains("PermissionDenied"), "{}", anon.stderr);
    let cp = claimledger(["log", "checkpoint", "--json", "--server", &url]);
    assert_ok(&cp, "anonymous reads the checkpoint");
    assert_eq!(json_size(&cp.stdout), 2, "ru-mod and alice's claim");
    srv.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. TLS
// ---------------------------------------------------------------------------------------------

/// Certificates made at run time: a server CA and its `localhost` server certificate, a client
/// CA and its client certificate, and an unrelated CA that signed a second client certificate.
struct Pki {
    server_ca: String,
    server_cert: String,
    server_key: String,
    client_ca: String,
    client_cert: String,
    client_key: String,
    other_ca: String,
    other_client_cert: String,
    other_client_key: String,
}

/// The PEM files of a [`Pki`] in a directory.
struct TlsFiles {
    server_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_ca: PathBuf,
}

fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("a self-signed CA");
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// A leaf certificate for `names` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair, KeyUsagePurpose};
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("a leaf key");
    let cert = params.signed_by(&key, issuer).expect("a signed leaf");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new() -> Pki {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let (server_ca, server_issuer) = ca("claimledger test server CA");
        let (server_cert, server_key) =
            leaf(&["localhost", "127.0.0.1"], ServerAuth, &server_issuer);
        let (client_ca, client_issuer) = ca("claimledger test client CA");
        let (client_cert, client_key) = leaf(&["newsroom-client"], ClientAuth, &client_issuer);
        let (other_ca, other_issuer) = ca("some other CA");
        let (other_client_cert, other_client_key) =
            leaf(&["stranger-client"], ClientAuth, &other_issuer);
        Pki {
            server_ca,
            server_cert,
            server_key,
            client_ca,
            client_cert,
            client_key,
            other_ca,
            other_client_cert,
            other_client_key,
        }
    }

    /// Writes the server's files to `dir`, the key with mode 0600.
    fn write(&self, dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            server_ca: dir.join("server-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_ca: dir.join("client-ca.pem"),
        };
        std::fs::write(&files.server_ca, &self.server_ca).unwrap();
        std::fs::write(&files.server_cert, &self.server_cert).unwrap();
        write_private(&files.server_key, &self.server_key);
        std::fs::write(&files.client_ca, &self.client_ca).unwrap();
        files
    }
}

/// Starts `serve` over TLS on a loopback port with a tokens file, optionally requiring client
/// certificates signed by `client_ca`.
fn serve_tls(dir: &Path, files: &TlsFiles, client_ca: bool) -> ServeProcess {
    let data = dir.join("data");
    let tokens = admin_tokens_file(dir);
    let mut args: Vec<std::ffi::OsString> = vec![
        "--data-dir".into(),
        data.into(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--tokens-file".into(),
        tokens.into(),
        "--tls-cert".into(),
        files.server_cert.clone().into(),
        "--tls-key".into(),
        files.server_key.clone().into(),
    ];
    if client_ca {
        args.extend(["--client-ca".into(), files.client_ca.clone().into()]);
    }
    ServeProcess::start(args)
}

/// Connects to `url` with `tls` (none: plaintext) and reads the checkpoint's size, within
/// 15 s; any failure, a timeout included, is an `Err` that says what happened.
async fn checkpoint_size(url: &str, tls: Option<ClientTlsConfig>) -> Result<u64, String> {
    let call = async {
        let mut ep = Channel::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            ep = ep.tls_config(tls).map_err(|e| format!("tls config: {e}"))?;
        }
        let ch = ep.connect().await.map_err(|e| format!("connect: {e:?}"))?;
        let mut log = pb::log_service_client::LogServiceClient::new(ch);
        log.get_checkpoint(bearer(pb::GetCheckpointRequest {}, ADMIN))
            .await
            .map(|r| r.into_inner().size)
            .map_err(|s| format!("call: {s:?}"))
    };
    tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

fn trusting(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_ca_only() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let files = pki.write(tmp.path());
    let srv = serve_tls(tmp.path(), &files, false);
    assert!(srv.url.starts_with("https://"), "{}", srv.url);
    let https = format!("https://{}", srv.addr());

    let size = checkpoint_size(&https, Some(trusting(&pki.server_ca))).await;
    assert_eq!(size, Ok(0), "a client trusting the CA reads the checkpoint");

    let plain = checkpoint_size(&format!("http://{}", srv.addr()), None).await;
    assert!(plain.is_err(), "a plaintext client got {plain:?}");

    let stranger = checkpoint_size(&https, Some(trusting(&pki.other_ca))).await;
    assert!(
        stranger.is_err(),
        "a client trusting another CA got {stranger:?}"
    );

    let no_roots = checkpoint_size(
        &https,
        Some(ClientTlsConfig::new().domain_name("localhost")),
    )
    .await;
    assert!(
        no_roots.is_err(),
        "a client trusting nothing got {no_roots:?}"
    );

    // The certificate is for localhost, not for some other name.
    let wrong_name = checkpoint_size(
        &https,
        Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.server_ca))
                .domain_name("claimledger.example"),
        ),
    )
    .await;
    assert!(
        wrong_name.is_err(),
        "a client expecting another name got {wrong_name:?}"
    );
    srv.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let files = pki.write(tmp.path());
    let srv = serve_tls(tmp.path(), &files, true);
    let https = format!("https://{}", srv.addr());

    let anonymous = checkpoint_size(&https, Some(trusting(&pki.server_ca))).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got {anonymous:?}"
    );

    let stranger = checkpoint_size(
        &https,
        Some(trusting(&pki.server_ca).identity(Identity::from_pem(
            &pki.other_client_cert,
            &pki.other_client_key,
        ))),
    )
    .await;
    assert!(
        stranger.is_err(),
        "a client with a certificate from another CA got {stranger:?}"
    );

    let member = checkpoint_size(
        &https,
        Some(
            trusting(&pki.server_ca)
                .identity(Identity::from_pem(&pki.client_cert, &pki.client_key)),
        ),
    )
    .await;
    assert_eq!(
        member,
        Ok(0),
        "a client with a certificate from the client CA"
    );
    srv.stop();
}

/// SPEC §7: "The CLI takes `--ca-cert FILE` for `https://` servers."
#[test]
fn the_cli_reaches_a_tls_server_with_ca_cert() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let files = pki.write(tmp.path());
    let srv = serve_tls(tmp.path(), &files, false);
    let https = format!("https://{}", srv.addr());
    let ca = files.server_ca.to_str().expect("a UTF-8 path");

    let cp = claimledger([
        "log",
        "checkpoint",
        "--json",
        "--server",
        &https,
        "--ca-cert",
        ca,
    ]);
    assert_ok(&cp, "log checkpoint over TLS with --ca-cert");
    assert_eq!(json_size(&cp.stdout), 0);

    // A token goes over TLS like over plaintext: admin writes.
    let reg = client(
        &https,
        ADMIN,
        &[
            "source",
            "register",
            "ru-mod",
            "--name",
            "Ministry",
            "--kind",
            "military",
            "--role",
            "party",
            "--ca-cert",
            ca,
        ],
    );
    assert_ok(&reg, "admin registers a source over TLS");

    // Without the CA the server's certificate is not trusted.
    let untrusted = claimledger(["log", "checkpoint", "--server", &https]);
    assert!(!untrusted.status.success(), "{}", untrusted.stdout);
    srv.stop();
}
