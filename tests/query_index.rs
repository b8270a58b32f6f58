//! The derived query index behind ListClaims (SPEC §8), end to end: stemmed text with phrases
//! and exclusions, read-your-writes through `min_size`, agreement with a status recomputed from
//! the public log alone (a property test over random histories), the indexer's process aborted
//! (as by kill -9) in the middle of a batch, and `claimledger reindex` or a deleted index directory giving the same
//! answers.
//!
//! The oracle of the property test never uses the server's ledger or index code: it reads the
//! entries over `LogService.GetEntries`, decodes them with the published `.proto` messages,
//! rebuilds every claim's record and every source's latest grade, and runs the pure policy
//! (`claims::policy::evaluate`) at the current time, as any auditor could.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use claimledger::claims::policy::{evaluate, Outcome, PolicyInput};
use claimledger::pb;
use claimledger::pb::claim_service_client::ClaimServiceClient;
use common::{
    claim, evidence, expect_err, source, ts, Clients, ServeProcess, Store, TestServer, STORE,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Every page of a ListClaims answer, followed through its page tokens.
async fn list_pages(
    claims: &mut ClaimServiceClient<Channel>,
    mut req: pb::ListClaimsRequest,
) -> Result<Vec<pb::ListClaimsResponse>, tonic::Status> {
    let mut pages = Vec::new();
    loop {
        let page = claims.list_claims(req.clone()).await?.into_inner();
        let next = page.next_page_token.clone();
        pages.push(page);
        if next.is_empty() {
            return Ok(pages);
        }
        assert!(pages.len() < 1000, "ListClaims pages never end: {req:?}");
        req.page_token = next;
    }
}

/// Every item a ListClaims request matches, in the order the pages give them.
async fn list_items(
    claims: &mut ClaimServiceClient<Channel>,
    req: pb::ListClaimsRequest,
) -> Vec<pb::ClaimListItem> {
    let what = format!("{req:?}");
    list_pages(claims, req)
        .await
        .unwrap_or_else(|e| panic!("ListClaims {what}: {e}"))
        .into_iter()
        .flat_map(|p| p.claims)
        .collect()
}

fn item_id(i: &pb::ClaimListItem) -> String {
    i.claim.as_ref().expect("a listed claim").id.clone()
}

/// The ids of the claims a request matches, read with `min_size = size`.
async fn ids_at(
    claims: &mut ClaimServiceClient<Channel>,
    size: u64,
    mut req: pb::ListClaimsRequest,
) -> Vec<String> {
    req.min_size = size;
    list_items(claims, req).await.iter().map(item_id).collect()
}

fn serve_args(dir: &Path) -> Vec<String> {
    vec![
        "--data-dir".into(),
        dir.to_string_lossy().into_owned(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Stemming, phrases, exclusions, and queries the parser refuses
// ---------------------------------------------------------------------------------------------

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_queries_are_stemmed_and_support_phrases_and_exclusions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    c.register(source(
        "ua-af",
        "UA",
        pb::Role::Party,
        pb::Reliability::C,
        "",
    ))
    .await;
    let texts = [
        ("drones", "Drones hit the refinery at night"),
        ("strike", "A drone strike on the fuel depot"),
        ("apart", "Strike by a lone drone near the port"),
        ("shot", "Air defence shot down two missiles"),
        ("shooting", "Units were shooting down drones over the city"),
        ("shelling", "Heavy shelling of the railway station"),
    ];
    let mut id = HashMap::new();
    for (key, text) in texts {
        let mut cl = claim(pb::ClaimKind::Strike, "ua-af", text);
        cl.tags = vec![format!("tag{key}")];
        let r = c.submit(&format!("text-{key}"), cl).await;
        id.insert(key, r.claim.expect("claim").id);
    }
    let ids = |keys: &[&str]| -> Vec<String> { keys.iter().map(|k| id[k].clone()).collect() };
    let size = c.size().await;
    let q = |query: &str| {
        let mut client = c.claims.clone();
        let query = query.to_string();
        async move {
            ids_at(
                &mut client,
                size,
                pb::ListClaimsRequest {
                    query,
                    ..Default::default()
                },
            )
            .await
        }
    };

    // Stemming both ways: the singular finds the plural and the plural the singular.
    let drones = ids(&["drones", "strike", "apart", "shooting"]);
    assert_eq!(q("drone").await, drones, "\"drone\" finds \"drones\"");
    assert_eq!(q("drones").await, drones, "\"drones\" finds \"drone\"");
    assert_eq!(q("DRONE").await, drones, "case does not matter");
    assert_eq!(
        q("shoot").await,
        ids(&["shooting"]),
        "\"shoot\" finds \"shooting\""
    );
    assert_eq!(q("shoots").await, ids(&["shooting"]));
    // Snowball stems regular suffixes only: "shot" stays "shot", so it does not find
    // "shooting".
    assert_eq!(q("shot down").await, ids(&["shot"]));
    assert_eq!(q("shooting down").await, ids(&["shooting"]));
    // Every word must appear.
    assert_eq!(q("drone refinery").await, ids(&["drones"]));
    assert_eq!(q("drone port").await, ids(&["apart"]));
    // Phrases: adjacent words only, stemmed like the text.
    assert_eq!(q("\"drone strike\"").await, ids(&["strike"]));
    assert_eq!(q("\"drones strikes\"").await, ids(&["strike"]));
    assert_eq!(q("\"strike drone\"").await, Vec::<String>::new());
    assert_eq!(q("\"shooting down\"").await, ids(&["shooting"]));
    assert_eq!(q("\"down shooting\"").await, Vec::<String>::new());
    // Exclusion.
    assert_eq!(q("drone -strike").await, ids(&["drones", "shooting"]));
    assert_eq!(q("strike -drone").await, Vec::<String>::new());
    // Tags are searched too.
    assert_eq!(q("tagshelling").await, ids(&["shelling"]));
    // Summary, text and tags are separate texts: a phrase never runs from one into the next
    // (the text here is the summary followed by "(full text)", then the tag).
    assert_eq!(q("\"night drones\"").await, Vec::<String>::new());
    assert_eq!(q("\"text tagdrones\"").await, Vec::<String>::new());
    assert_eq!(q("\"full text\"").await.len(), 6);
    assert_eq!(q("zeppelin").await, Vec::<String>::new());

    // A colon is text, never a field of the index: "status:3" is two words, not a filter.
    assert_eq!(q("Update: drones").await, Vec::<String>::new());
    assert_eq!(q("drone: strike").await, ids(&["strike", "apart"]));
    assert_eq!(q("status:3").await, Vec::<String>::new());
    assert_eq!(q("nosuchfield:drone").await, Vec::<String>::new());

    // What the search does not offer is refused, naming `query`: an excluded phrase (which
    // tantivy does not evaluate soundly), ranges.
    for (bad, why) in [
        ("drone -\"drone strike\"", "cannot exclude a phrase"),
        ("drone -drone-strike", "cannot exclude a phrase"),
        ("drone [a TO z]", "ranges and sets"),
    ] {
        let r = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                query: bad.into(),
                min_size: size,
                ..Default::default()
            })
            .await;
        let s = expect_err(r, Code::InvalidArgument, "query");
        assert!(s.message().contains(why), "{bad:?}: {}", s.message());
    }

    // Queries the parser refuses are the client's mistake, naming `query`: unbalanced quotes
    // and parentheses, a dangling operator, only exclusions.
    for bad in ["\"drone strike", "(drone", "drone)", "drone AND", "-drone"] {
        let r = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                query: bad.into(),
                min_size: size,
                ..Default::default()
            })
            .await;
        let s = expect_err(r, Code::InvalidArgument, "query");
        assert!(
            s.message().contains("cannot be parsed"),
            "{bad:?}: {}",
            s.message()
        );
    }
    srv.stop().await;
}
}

// ---------------------------------------------------------------------------------------------
// 2. Read-your-writes through `min_size`
// ---------------------------------------------------------------------------------------------

/// The item of claim `id` in a ListClaims answer read with `min_size`, which must cover it.
async fn listed_with_min_size(
    claims: &mut ClaimServiceClient<Channel>,
    min_size: u64,
    mut req: pb::ListClaimsRequest,
    id: &str,
) -> Option<pb::ClaimListItem> {
    req.min_size = min_size;
    req.page_size = 500;
    let what = format!("{req:?}");
    let resp = claims
        .list_claims(req)
        .await
        .unwrap_or_else(|e| panic!("ListClaims {what}: {e}"))
        .into_inner();
    assert!(
        resp.indexed_size >= min_size,
        "indexed_size {} below min_size {min_size}",
        resp.indexed_size
    );
    assert!(resp.next_page_token.is_empty(), "one page holds it all");
    resp.claims.into_iter().find(|i| item_id(i) == id)
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_size_gives_read_your_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
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
    c.register(source(
        "osint",
        "",
        pb::Role::NonParty,
        pb::Reliability::A,
        "",
    ))
    .await;

    // Each claim is searchable the moment its receipt's index is.
    let mut submitted = Vec::new();
    for i in 0..12 {
        let r = c
            .submit(
                &format!("ryw-{i}"),
                claim(
                    pb::ClaimKind::Strike,
                    "ru-mod",
                    &format!("Strike number item{i}"),
                ),
            )
            .await;
        let id = r.claim.expect("claim").id;
        let min = r.receipt.expect("receipt").index + 1;
        let all = listed_with_min_size(&mut c.claims, min, Default::default(), &id).await;
        let item = all.unwrap_or_else(|| panic!("claim {i} ({id}) not listed at min_size {min}"));
        assert_eq!(item.status, pb::Status::Claimed as i32);
        let by_word = listed_with_min_size(
            &mut c.claims,
            min,
            pb::ListClaimsRequest {
                query: format!("item{i}"),
                status: pb::Status::Claimed as i32,
                claimant_id: "ru-mod".into(),
                ..Default::default()
            },
            &id,
        )
        .await;
        assert!(by_word.is_some(), "claim {i} not found by its word");
        submitted.push(id);
    }

    // A status that evidence changes is filtered on at once too, …
    let target = submitted[3].clone();
    let r = c
        .add_evidence(
            "ryw-ev",
            &target,
            evidence("osint", pb::Stance::Supports, 2),
        )
        .await;
    let min = r.receipt.expect("receipt").index + 1;
    let corroborated = pb::ListClaimsRequest {
        status: pb::Status::Corroborated as i32,
        ..Default::default()
    };
    let claimed = pb::ListClaimsRequest {
        status: pb::Status::Claimed as i32,
        ..Default::default()
    };
    assert!(
        listed_with_min_size(&mut c.claims, min, corroborated.clone(), &target)
            .await
            .is_some(),
        "corroborated once the evidence is indexed"
    );
    assert!(
        listed_with_min_size(&mut c.claims, min, claimed.clone(), &target)
            .await
            .is_none()
    );

    // … and so is one a new grade of the evidence's source changes (no claim entry written).
    let g = c
        .sources
        .grade_source(pb::GradeSourceRequest {
            request_id: "ryw-grade".into(),
            source_id: "osint".into(),
            reliability: pb::Reliability::D as i32,
            rationale: "misattributed footage".into(),
        })
        .await
        .expect("GradeSource")
        .into_inner();
    let min = g.receipt.expect("receipt").index + 1;
    assert!(
        listed_with_min_size(&mut c.claims, min, claimed.clone(), &target)
            .await
            .is_some(),
        "back to CLAIMED once the grade is indexed"
    );
    assert!(
        listed_with_min_size(&mut c.claims, min, corroborated, &target)
            .await
            .is_none(),
        "no longer CORROBORATED once the grade is indexed"
    );

    // A size beyond the log is OUT_OF_RANGE, naming min_size.
    let size = c.size().await;
    for beyond in [size + 1, u64::MAX] {
        let r = c
            .claims
            .list_claims(pb::ListClaimsRequest {
                min_size: beyond,
                ..Default::default()
            })
            .await;
        expect_err(r, Code::OutOfRange, "min_size");
    }

    // Without min_size the call answers from wherever the index is, and says where that is.
    let resp = c
        .claims
        .list_claims(pb::ListClaimsRequest::default())
        .await
        .expect("ListClaims without min_size")
        .into_inner();
    assert!(
        resp.indexed_size <= size,
        "indexed_size {} beyond the log's size {size}",
        resp.indexed_size
    );
    for i in &resp.claims {
        let index = i.claim.as_ref().expect("claim").index;
        assert!(
            index < resp.indexed_size,
            "claim at {index} listed by an index at size {}",
            resp.indexed_size
        );
    }
    srv.stop().await;
}
}

both_stores! {
/// A warning's deadline passing changes its status with no write at all: the indexer's sweep
/// re-judges it, and the status filter follows within a bounded wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_is_reindexed_without_a_write() {
    let dir = tempfile::tempdir().expect("tempdir");
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
    let deadline = now_unix() + 2;
    let mut w = claim(
        pb::ClaimKind::MissileLaunchOrWarning,
        "ru-mod",
        "Warning of strikes on the capital",
    );
    w.modality = pb::Modality::IntentOrWarning as i32;
    w.resolve_by = Some(ts(deadline));
    // The same deadline on an asserted fact changes nothing.
    let mut f = claim(pb::ClaimKind::Strike, "ru-mod", "Strike on the capital");
    f.resolve_by = Some(ts(deadline));
    let w = c.submit("warning", w).await;
    let f = c.submit("fact", f).await;
    let (w, f) = (w.claim.expect("claim").id, f.claim.expect("claim").id);
    let size = c.size().await;
    let by_status = |status: pb::Status| pb::ListClaimsRequest {
        status: status as i32,
        ..Default::default()
    };
    if now_unix() < deadline {
        assert_eq!(
            ids_at(&mut c.claims, size, by_status(pb::Status::Claimed)).await,
            vec![w.clone(), f.clone()],
            "before the deadline both are CLAIMED"
        );
    }
    // Judged once before the deadline (the server keeps that judgement), then again after it
    // below: the kept judgement must not outlive the deadline.
    let before = common::status_of(&c.status(&w).await);
    if now_unix() <= deadline {
        assert_eq!(before, pb::Status::Claimed, "before the deadline");
    }
    let started = Instant::now();
    loop {
        let inconclusive = ids_at(&mut c.claims, size, by_status(pb::Status::Inconclusive)).await;
        let claimed = ids_at(&mut c.claims, size, by_status(pb::Status::Claimed)).await;
        assert!(
            inconclusive.is_empty() || now_unix() > deadline,
            "INCONCLUSIVE before the deadline: {inconclusive:?}"
        );
        if inconclusive == vec![w.clone()] && claimed == vec![f.clone()] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "10 s after a deadline 2 s away: INCONCLUSIVE {inconclusive:?}, CLAIMED {claimed:?}; \
             expected the warning {w} INCONCLUSIVE and the fact {f} CLAIMED"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.size().await, size, "nothing was written meanwhile");
    assert_eq!(
        common::status_of(&c.status(&w).await),
        pb::Status::Inconclusive
    );
    srv.stop().await;
}
}

both_stores! {
/// A deadline that passes while the server is stopped is judged once it is back: the sweep
/// resumes from the moment the index's last commit recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_passed_while_stopped_is_judged_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    c.register(source(
        "ua-af",
        "UA",
        pb::Role::Party,
        pb::Reliability::C,
        "",
    ))
    .await;
    let deadline = now_unix() + 2;
    let mut w = claim(
        pb::ClaimKind::MissileLaunchOrWarning,
        "ua-af",
        "Warning of a counteroffensive",
    );
    w.modality = pb::Modality::IntentOrWarning as i32;
    w.resolve_by = Some(ts(deadline));
    let w = c.submit("warning", w).await.claim.expect("claim").id;
    let size = c.size().await;
    let claimed = pb::ListClaimsRequest {
        status: pb::Status::Claimed as i32,
        ..Default::default()
    };
    assert_eq!(ids_at(&mut c.claims, size, claimed).await, vec![w.clone()]);
    srv.stop().await;
    while now_unix() <= deadline + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let inconclusive = pb::ListClaimsRequest {
        status: pb::Status::Inconclusive as i32,
        ..Default::default()
    };
    let started = Instant::now();
    loop {
        let got = ids_at(&mut c.claims, size, inconclusive.clone()).await;
        if got == vec![w.clone()] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "10 s after a restart past the deadline, INCONCLUSIVE lists {got:?}, not {w}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.stop().await;
}
}

// ---------------------------------------------------------------------------------------------
// Random histories
// ---------------------------------------------------------------------------------------------

const SIDES: [&str; 3] = ["RU", "UA", ""];
const ROLES: [pb::Role; 5] = [
    pb::Role::Party,
    pb::Role::Affiliated,
    pb::Role::Aligned,
    pb::Role::NonParty,
    pb::Role::Unknown,
];
const GRADES: [pb::Reliability; 6] = [
    pb::Reliability::A,
    pb::Reliability::B,
    pb::Reliability::C,
    pb::Reliability::D,
    pb::Reliability::E,
    pb::Reliability::F,
];
const KINDS: [pb::ClaimKind; 6] = [
    pb::ClaimKind::Strike,
    pb::ClaimKind::Interception,
    pb::ClaimKind::MissileLaunchOrWarning,
    pb::ClaimKind::TerritorialControl,
    pb::ClaimKind::EquipmentLoss,
    pb::ClaimKind::Statement,
];
/// Words of claim summaries; each stems to itself alone, and none is in every claim's text.
const WORDS: [&str; 8] = [
    "drone", "missile", "bridge", "convoy", "refinery", "depot", "harbour", "tank",
];
const PLACES: [&str; 3] = ["Kharkiv", "Odesa", "Belgorod"];
const STATUSES: [pb::Status; 7] = [
    pb::Status::Claimed,
    pb::Status::Corroborated,
    pb::Status::Confirmed,
    pb::Status::Disputed,
    pb::Status::Refuted,
    pb::Status::Retracted,
    pb::Status::Inconclusive,
];

#[derive(Debug, Clone)]
struct SourceSpec {
    side: &'static str,
    role: pb::Role,
    grade: pb::Reliability,
    /// A shared cluster `clN`, or the source's own.
    cluster: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// Hours before the submission.
    Past(u8),
    /// Seconds after the submission.
    Future(u8),
}

#[derive(Debug, Clone, Copy)]
enum Hop {
    Source(u8),
    /// A name no registered source answers to.
    Name,
}

#[derive(Debug, Clone, Copy)]
enum Cite {
    Nothing,
    /// The claim's own first piece of evidence (nothing if it has none).
    Own,
    /// Evidence on another claim (nothing if there is none): NOT_FOUND.
    Other,
}

/// One write of a history; `u8` references are taken modulo what exists when it is written.
#[derive(Debug, Clone)]
enum Op {
    Submit {
        claimant: u8,
        kind: pb::ClaimKind,
        warning: bool,
        deadline: Option<Deadline>,
        words: Vec<u8>,
        place: u8,
        hop: Option<u8>,
    },
    Evidence {
        claim: u8,
        source: u8,
        stance: pb::Stance,
        credibility: u32,
        visual: bool,
        hop: Option<Hop>,
    },
    Verdict {
        claim: u8,
        decision: pb::Decision,
        cite: Cite,
    },
    Retract {
        claim: u8,
        by: u8,
    },
    Grade {
        source: u8,
        grade: pb::Reliability,
    },
}

#[derive(Debug, Clone)]
struct History {
    sources: Vec<SourceSpec>,
    ops: Vec<Op>,
    /// Wait for the index to read every this many writes (ListClaims with `min_size`), so the
    /// indexer's batches are small and a grade finds its claims in the committed index; without
    /// it, batches are as large as the writes outrun the indexer.
    sync_every: Option<usize>,
}

fn source_spec() -> impl Strategy<Value = SourceSpec> {
    (
        prop::sample::select(SIDES.to_vec()),
        prop::sample::select(ROLES.to_vec()),
        prop::sample::select(GRADES.to_vec()),
        prop::option::weighted(0.4, 0u8..2),
    )
        .prop_map(|(side, role, grade, cluster)| SourceSpec {
            side,
            role,
            grade,
            cluster,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let deadline = prop_oneof![
        (1u8..48).prop_map(Deadline::Past),
        (1u8..=2).prop_map(Deadline::Future),
    ];
    let submit = (
        any::<u8>(),
        prop::sample::select(KINDS.to_vec()),
        prop::bool::weighted(0.4),
        prop::option::weighted(0.6, deadline),
        prop::collection::vec(0u8..WORDS.len() as u8, 1..=3),
        any::<u8>(),
        prop::option::weighted(0.2, any::<u8>()),
    )
        .prop_map(
            |(claimant, kind, warning, deadline, words, place, hop)| Op::Submit {
                claimant,
                kind,
                warning,
                deadline,
                words,
                place,
                hop,
            },
        );
    let stance = prop_oneof![
        5 => Just(pb::Stance::Supports),
        3 => Just(pb::Stance::Contradicts),
        1 => Just(pb::Stance::NoComment),
        1 => Just(pb::Stance::Context),
    ];
    let hop = prop::option::weighted(
        0.3,
        prop_oneof![3 => any::<u8>().prop_map(Hop::Source), 1 => Just(Hop::Name)],
    );
    let evidence = (
        any::<u8>(),
        any::<u8>(),
        stance,
        2u32..=6,
        prop::bool::weighted(0.25),
        hop,
    )
        .prop_map(
            |(claim, source, stance, credibility, visual, hop)| Op::Evidence {
                claim,
                source,
                stance,
                credibility,
                visual,
                hop,
            },
        );
    let verdict = (
        any::<u8>(),
        prop::sample::select(vec![
            pb::Decision::Confirmed,
            pb::Decision::Refuted,
            pb::Decision::Disputed,
            pb::Decision::Inconclusive,
        ]),
        prop_oneof![
            2 => Just(Cite::Nothing),
            5 => Just(Cite::Own),
            1 => Just(Cite::Other),
        ],
    )
        .prop_map(|(claim, decision, cite)| Op::Verdict {
            claim,
            decision,
            cite,
        });
    let retract = (any::<u8>(), any::<u8>()).prop_map(|(claim, by)| Op::Retract { claim, by });
    let grade = (any::<u8>(), prop::sample::select(GRADES.to_vec()))
        .prop_map(|(source, grade)| Op::Grade { source, grade });
    prop_oneof![
        4 => submit,
        6 => evidence,
        1 => verdict,
        1 => retract,
        2 => grade,
    ]
}

fn history() -> impl Strategy<Value = History> {
    (
        prop::collection::vec(source_spec(), 3..=5),
        prop::collection::vec(op(), 40..=80),
        prop::option::of(1usize..=4),
    )
        .prop_map(|(sources, ops, sync_every)| History {
            sources,
            ops,
            sync_every,
        })
}

/// The `n`th history of a deterministic run of the strategy (the same on every run).
fn fixed_history(n: usize) -> History {
    let mut runner = TestRunner::deterministic();
    let strategy = history();
    let mut h = None;
    for _ in 0..=n {
        h = Some(strategy.new_tree(&mut runner).expect("a history").current());
    }
    h.expect("n + 1 histories")
}

// ---------------------------------------------------------------------------------------------
// Writing a history over gRPC
// ---------------------------------------------------------------------------------------------

/// What the driver knows of what it wrote (to pick references and predict refusals).
struct ModelClaim {
    id: String,
    claimant_cluster: String,
    retracted: bool,
    evidence: Vec<String>,
}

#[derive(Default, Debug)]
struct Written {
    /// Claims whose submission was acknowledged, in log order.
    claims: Vec<String>,
    /// The latest `resolve_by` of any claim written, unix seconds.
    latest_deadline: Option<i64>,
    acknowledged: usize,
    refused: usize,
    /// The entry index of the claim written on purpose at `force_claim_at`, if it was.
    forced: Option<u64>,
    /// In crash mode: the error that ended the history (the server went away).
    ended_by: Option<tonic::Status>,
}

enum Settled<T> {
    Done(T),
    Refused,
    Gone(tonic::Status),
}

/// Checks a write's answer against the expected refusal (code and a word of its message), if
/// one was expected. In crash mode any other error means the server went away.
fn settle<T>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    refusal: Option<(Code, &str)>,
    crash_mode: bool,
) -> Settled<T> {
    match (r, refusal) {
        (Ok(resp), None) => Settled::Done(resp.into_inner()),
        (Ok(_), Some((code, needle))) => {
            panic!("{what}: expected {code:?} ({needle}), the server accepted it")
        }
        (Err(e), Some((code, needle))) if e.code() == code && e.message().contains(needle) => {
            Settled::Refused
        }
        (Err(e), _) if crash_mode => Settled::Gone(e),
        (Err(e), refusal) => panic!(
            "{what}: expected {refusal:?}, got {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

fn source_id(i: usize) -> String {
    format!("s{i}")
}

fn cluster_of(spec: &SourceSpec, i: usize) -> String {
    match spec.cluster {
        Some(k) => format!("cl{k}"),
        None => source_id(i),
    }
}

fn receipt_index(r: &Option<pb::Receipt>) -> u64 {
    r.as_ref().expect("a write returns a receipt").index
}

/// Writes `h` one call at a time, checking every answer: each write is acknowledged or refused
/// with the code the rules give, and every `h.sync_every` writes (every fourth in crash mode)
/// waits for the index to read them (ListClaims with `min_size`). With `crash_mode`, an
/// unexpected error ends the history (the server died); with `force_claim_at`, the entry at
/// that index is a claim submission.
async fn write_history(
    c: &mut Clients,
    h: &History,
    crash_mode: bool,
    force_claim_at: Option<u64>,
) -> Written {
    let mut w = Written::default();
    let mut next_index = c.size().await;
    let sync_every = if crash_mode { Some(4) } else { h.sync_every };
    let n = h.sources.len();
    for (i, spec) in h.sources.iter().enumerate() {
        let s = source(
            &source_id(i),
            spec.side,
            spec.role,
            spec.grade,
            &spec.cluster.map(|k| format!("cl{k}")).unwrap_or_default(),
        );
        let r = c
            .sources
            .register_source(pb::RegisterSourceRequest {
                request_id: format!("src-{i}"),
                source: Some(s),
            })
            .await;
        match settle("RegisterSource", r, None, crash_mode) {
            Settled::Done(r) => next_index = receipt_index(&r.receipt) + 1,
            Settled::Refused => unreachable!("no refusal expected"),
            Settled::Gone(e) => {
                w.ended_by = Some(e);
                return w;
            }
        }
        w.acknowledged += 1;
    }
    let mut claims: Vec<ModelClaim> = Vec::new();
    let mut forced_op = None;
    let mut ops = h.ops.iter().enumerate().peekable();
    while let Some((k, op)) = ops.peek().map(|(k, op)| (*k, (*op).clone())) {
        let op = if force_claim_at == Some(next_index) && forced_op.is_none() {
            forced_op = Some(k);
            Op::Submit {
                claimant: 0,
                kind: pb::ClaimKind::Strike,
                warning: false,
                deadline: None,
                words: vec![0],
                place: 0,
                hop: None,
            }
        } else {
            ops.next();
            op
        };
        let at = next_index;
        let what = format!("op {k} {op:?}");
        let settled: Settled<u64> = match op {
            Op::Submit {
                claimant,
                kind,
                warning,
                deadline,
                words,
                place,
                hop,
            } => {
                let claimant = claimant as usize % n;
                let summary: Vec<&str> = words.iter().map(|&x| WORDS[x as usize]).collect();
                let mut cl = claim(kind, &source_id(claimant), &summary.join(" "));
                if warning {
                    cl.modality = pb::Modality::IntentOrWarning as i32;
                }
                if let Some(d) = deadline {
                    let t = match d {
                        Deadline::Past(hours) => now_unix() - 3600 * i64::from(hours),
                        Deadline::Future(secs) => now_unix() + i64::from(secs),
                    };
                    w.latest_deadline = w.latest_deadline.max(Some(t));
                    cl.resolve_by = Some(ts(t));
                }
                cl.places = vec![pb::Place {
                    country: "UA".into(),
                    locality: PLACES[place as usize % PLACES.len()].into(),
                    ..Default::default()
                }];
                if let Some(s) = hop {
                    cl.attribution = vec![pb::AttributionHop {
                        source_id: source_id(s as usize % n),
                        relation: pb::Relation::Cited as i32,
                        ..Default::default()
                    }];
                }
                let r = c
                    .claims
                    .submit_claim(pb::SubmitClaimRequest {
                        request_id: format!("op-{k}-{at}"),
                        claim: Some(cl),
                    })
                    .await;
                match settle(&what, r, None, crash_mode) {
                    Settled::Done(r) => {
                        let id = r.claim.expect("claim").id;
                        claims.push(ModelClaim {
                            id: id.clone(),
                            claimant_cluster: cluster_of(&h.sources[claimant], claimant),
                            retracted: false,
                            evidence: Vec::new(),
                        });
                        w.claims.push(id);
                        if forced_op == Some(k) && w.forced.is_none() {
                            w.forced = Some(receipt_index(&r.receipt));
                        }
                        Settled::Done(receipt_index(&r.receipt))
                    }
                    Settled::Refused => Settled::Refused,
                    Settled::Gone(e) => Settled::Gone(e),
                }
            }
            Op::Evidence {
                claim,
                source,
                stance,
                credibility,
                visual,
                hop,
            } => {
                if claims.is_empty() {
                    continue;
                }
                let target = claim as usize % claims.len();
                let mut e = evidence(&source_id(source as usize % n), stance, credibility);
                if visual {
                    e.kind = pb::EvidenceKind::GeolocatedMedia as i32;
                    e.geolocation_verified = true;
                }
                e.attribution = match hop {
                    None => Vec::new(),
                    Some(Hop::Source(s)) => vec![pb::AttributionHop {
                        source_id: source_id(s as usize % n),
                        relation: pb::Relation::Origin as i32,
                        ..Default::default()
                    }],
                    Some(Hop::Name) => vec![pb::AttributionHop {
                        name: "agencies".into(),
                        relation: pb::Relation::Origin as i32,
                        ..Default::default()
                    }],
                };
                let r = c
                    .claims
                    .add_evidence(pb::AddEvidenceRequest {
                        request_id: format!("op-{k}-{at}"),
                        claim_id: claims[target].id.clone(),
                        evidence: Some(e),
                    })
                    .await;
                match settle(&what, r, None, crash_mode) {
                    Settled::Done(r) => {
                        claims[target]
                            .evidence
                            .push(r.evidence.expect("evidence").id);
                        Settled::Done(receipt_index(&r.receipt))
                    }
                    Settled::Refused => Settled::Refused,
                    Settled::Gone(e) => Settled::Gone(e),
                }
            }
            Op::Verdict {
                claim,
                decision,
                cite,
            } => {
                if claims.is_empty() {
                    continue;
                }
                let target = claim as usize % claims.len();
                let evidence_ids: Vec<String> = match cite {
                    Cite::Nothing => Vec::new(),
                    Cite::Own => claims[target].evidence.iter().take(1).cloned().collect(),
                    Cite::Other => claims
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != target)
                        .flat_map(|(_, m)| m.evidence.iter().take(1).cloned())
                        .take(1)
                        .collect(),
                };
                let must_cite = matches!(decision, pb::Decision::Confirmed | pb::Decision::Refuted);
                let refusal = if must_cite && evidence_ids.is_empty() {
                    Some((Code::InvalidArgument, "verdict.evidence_ids"))
                } else if matches!(cite, Cite::Other) && !evidence_ids.is_empty() {
                    Some((Code::NotFound, "is not evidence on claim"))
                } else {
                    None
                };
                let r = c
                    .claims
                    .record_verdict(pb::RecordVerdictRequest {
                        request_id: format!("op-{k}-{at}"),
                        claim_id: claims[target].id.clone(),
                        verdict: Some(pb::Verdict {
                            decision: decision as i32,
                            rationale: "reviewed".into(),
                            evidence_ids,
                            ..Default::default()
                        }),
                    })
                    .await;
                match settle(&what, r, refusal, crash_mode) {
                    Settled::Done(r) => Settled::Done(receipt_index(&r.receipt)),
                    Settled::Refused => Settled::Refused,
                    Settled::Gone(e) => Settled::Gone(e),
                }
            }
            Op::Retract { claim, by } => {
                if claims.is_empty() {
                    continue;
                }
                let target = claim as usize % claims.len();
                let by = by as usize % n;
                let refusal = if claims[target].retracted {
                    Some((Code::FailedPrecondition, "already retracted"))
                } else if cluster_of(&h.sources[by], by) != claims[target].claimant_cluster {
                    Some((Code::FailedPrecondition, "only the claimant's cluster"))
                } else {
                    None
                };
                let r = c
                    .claims
                    .retract_claim(pb::RetractClaimRequest {
                        request_id: format!("op-{k}-{at}"),
                        claim_id: claims[target].id.clone(),
                        retraction: Some(pb::Retraction {
                            source_id: source_id(by),
                            note: "withdrawn".into(),
                            ..Default::default()
                        }),
                    })
                    .await;
                match settle(&what, r, refusal, crash_mode) {
                    Settled::Done(r) => {
                        claims[target].retracted = true;
                        Settled::Done(receipt_index(&r.receipt))
                    }
                    Settled::Refused => Settled::Refused,
                    Settled::Gone(e) => Settled::Gone(e),
                }
            }
            Op::Grade { source, grade } => {
                let r = c
                    .sources
                    .grade_source(pb::GradeSourceRequest {
                        request_id: format!("op-{k}-{at}"),
                        source_id: source_id(source as usize % n),
                        reliability: grade as i32,
                        rationale: "regraded".into(),
                    })
                    .await;
                match settle(&what, r, None, crash_mode) {
                    Settled::Done(r) => Settled::Done(receipt_index(&r.receipt)),
                    Settled::Refused => Settled::Refused,
                    Settled::Gone(e) => Settled::Gone(e),
                }
            }
        };
        match settled {
            Settled::Done(index) => {
                assert_eq!(
                    index, at,
                    "{what}: the only writer's entries are consecutive"
                );
                next_index = index + 1;
                w.acknowledged += 1;
                // In crash mode this is how the indexer dies while the history is being
                // written, with several entries in its batch.
                if sync_every.is_some_and(|k| w.acknowledged % k == 0) {
                    let r = c
                        .claims
                        .list_claims(pb::ListClaimsRequest {
                            min_size: next_index,
                            page_size: 1,
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(r) => assert!(r.into_inner().indexed_size >= next_index),
                        Err(e) if crash_mode => {
                            w.ended_by = Some(e);
                            return w;
                        }
                        Err(e) => panic!("ListClaims with min_size {next_index}: {e}"),
                    }
                }
            }
            Settled::Refused => w.refused += 1,
            Settled::Gone(e) => {
                w.ended_by = Some(e);
                return w;
            }
        }
    }
    w
}

/// Sleeps until every deadline in `w` is at least 2 s in the past.
async fn outlive_deadlines(w: &Written) {
    if let Some(t) = w.latest_deadline {
        while now_unix() < t + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: statuses recomputed from the public log alone
// ---------------------------------------------------------------------------------------------

/// A claim's record rebuilt from the entries.
struct Record {
    claim: pb::Claim,
    evidence: Vec<pb::Evidence>,
    verdicts: Vec<pb::Verdict>,
    retraction: Option<pb::Retraction>,
}

struct Oracle {
    size: u64,
    /// How many grades and verdicts the log holds (besides registrations).
    grades: usize,
    verdicts: usize,
    /// Every registered source with its latest grade.
    sources: HashMap<String, pb::Source>,
    /// Claims in log order.
    claims: Vec<Record>,
}

impl Oracle {
    /// Reads entries `[0, size)` over GetEntries and replays them.
    async fn read(c: &mut Clients, size: u64) -> Oracle {
        let mut stream = c
            .log
            .get_entries(pb::GetEntriesRequest {
                start: 0,
                end: size,
            })
            .await
            .expect("GetEntries")
            .into_inner();
        let mut o = Oracle {
            size,
            grades: 0,
            verdicts: 0,
            sources: HashMap::new(),
            claims: Vec::new(),
        };
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut next = 0;
        while let Some(e) = stream.message().await.expect("the entry stream") {
            assert_eq!(e.index, next, "entries come in order without gaps");
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&e.data);
            assert_eq!(
                h.finalize().as_slice(),
                &e.leaf_hash[..],
                "leaf hash of entry {next}"
            );
            let entry = pb::Entry::decode(&e.data[..])
                .unwrap_or_else(|err| panic!("entry {next} is not an Entry: {err}"));
            assert_eq!(entry.index, next, "the entry says its own index");
            let index = entry.index;
            let body = entry
                .body
                .unwrap_or_else(|| panic!("entry {next} without a body"));
            match body
                .kind
                .unwrap_or_else(|| panic!("entry {next} without a change"))
            {
                pb::change::Kind::SourceRegistered(mut s) => {
                    if s.cluster.is_empty() {
                        s.cluster = s.id.clone();
                    }
                    s.registered_index = index;
                    assert!(
                        o.sources.insert(s.id.clone(), s).is_none(),
                        "entry {index}: a source registered twice"
                    );
                }
                pb::change::Kind::SourceGraded(g) => {
                    let s = o
                        .sources
                        .get_mut(&g.source_id)
                        .unwrap_or_else(|| panic!("entry {index}: grade of an unknown source"));
                    s.reliability = g.reliability;
                    o.grades += 1;
                }
                pb::change::Kind::ClaimSubmitted(mut cl) => {
                    cl.index = index;
                    cl.logged_at = entry.recorded_at;
                    at.insert(cl.id.clone(), o.claims.len());
                    o.claims.push(Record {
                        claim: cl,
                        evidence: Vec::new(),
                        verdicts: Vec::new(),
                        retraction: None,
                    });
                }
                pb::change::Kind::EvidenceAdded(mut ev) => {
                    ev.index = index;
                    ev.logged_at = entry.recorded_at;
                    let k = at[&ev.claim_id];
                    o.claims[k].evidence.push(ev);
                }
                pb::change::Kind::VerdictRecorded(mut v) => {
                    v.index = index;
                    v.logged_at = entry.recorded_at;
                    v.reviewer = entry.actor.clone();
                    let k = at[&v.claim_id];
                    o.claims[k].verdicts.push(v);
                    o.verdicts += 1;
                }
                pb::change::Kind::ClaimRetracted(mut r) => {
                    r.index = index;
                    r.logged_at = entry.recorded_at;
                    let k = at[&r.claim_id];
                    assert!(
                        o.claims[k].retraction.is_none(),
                        "entry {index}: a claim retracted twice"
                    );
                    o.claims[k].retraction = Some(r);
                }
            }
            next += 1;
        }
        assert_eq!(next, size, "GetEntries served the whole log");
        o
    }

    /// How many claims are in each status now.
    fn status_counts(&self) -> BTreeMap<i32, usize> {
        let now = now_unix();
        let mut m = BTreeMap::new();
        for r in &self.claims {
            *m.entry(self.outcome(r, now).status as i32).or_default() += 1;
        }
        m
    }

    fn outcome(&self, r: &Record, now: i64) -> Outcome {
        evaluate(&PolicyInput {
            claim: &r.claim,
            evidence: &r.evidence,
            verdicts: &r.verdicts,
            retraction: r.retraction.as_ref(),
            sources: &self.sources,
            now_unix: now,
        })
    }

    /// `(id, status)` of every claim matching `keep`, in log order, judged at `now`.
    fn expected(&self, now: i64, keep: impl Fn(&Record, pb::Status) -> bool) -> Vec<String> {
        self.claims
            .iter()
            .filter(|r| keep(r, self.outcome(r, now).status))
            .map(|r| r.claim.id.clone())
            .collect()
    }

    /// Every request compared, with the claims the oracle says it must list (in log order).
    fn cases(&self, now: i64) -> Vec<(pb::ListClaimsRequest, Vec<String>)> {
        let mut out = Vec::new();
        let req = |f: &dyn Fn(&mut pb::ListClaimsRequest)| {
            let mut r = pb::ListClaimsRequest {
                min_size: self.size,
                page_size: 7,
                ..Default::default()
            };
            f(&mut r);
            r
        };
        out.push((req(&|_| {}), self.expected(now, |_, _| true)));
        for status in STATUSES {
            out.push((
                req(&|r| r.status = status as i32),
                self.expected(now, |_, s| s == status),
            ));
        }
        for kind in KINDS {
            out.push((
                req(&|r| r.kind = kind as i32),
                self.expected(now, |r, _| r.claim.kind == kind as i32),
            ));
        }
        let mut claimants: Vec<&String> = self.sources.keys().collect();
        claimants.sort();
        for id in claimants {
            out.push((
                req(&|r| r.claimant_id = id.clone()),
                self.expected(now, |r, _| &r.claim.claimant_id == id),
            ));
        }
        for word in WORDS {
            let has = |r: &Record| r.claim.summary.split(' ').any(|w| w == word);
            out.push((
                req(&|r| r.query = word.to_string()),
                self.expected(now, |r, _| has(r)),
            ));
            // A word and a status together.
            out.push((
                req(&|r| {
                    r.query = word.to_string();
                    r.status = pb::Status::Claimed as i32;
                }),
                self.expected(now, |r, s| has(r) && s == pb::Status::Claimed),
            ));
        }
        for place in PLACES {
            out.push((
                req(&|r| r.place = place.to_lowercase()),
                self.expected(now, |r, _| {
                    r.claim.places.iter().any(|p| p.locality == place)
                }),
            ));
        }
        out
    }
}

/// The first disagreement between the server's ListClaims answers and the oracle at this
/// moment, if any.
async fn disagreement(c: &mut Clients, o: &Oracle) -> Option<String> {
    let now = now_unix();
    let statuses: HashMap<&str, pb::Status> = o
        .claims
        .iter()
        .map(|r| (r.claim.id.as_str(), o.outcome(r, now).status))
        .collect();
    let logged: HashMap<&str, &pb::Claim> = o
        .claims
        .iter()
        .map(|r| (r.claim.id.as_str(), &r.claim))
        .collect();
    let mut problems = Vec::new();
    for (req, want) in o.cases(now) {
        let what = format!("{req:?}");
        let pages = match list_pages(&mut c.claims, req).await {
            Ok(p) => p,
            Err(e) => return Some(format!("ListClaims {what}: {e}")),
        };
        let mut got = Vec::new();
        for p in &pages {
            if p.indexed_size < o.size {
                problems.push(format!(
                    "ListClaims {what}: indexed_size {} below min_size {}",
                    p.indexed_size, o.size
                ));
            }
            for i in &p.claims {
                let id = item_id(i);
                let want_status = statuses.get(id.as_str()).copied();
                if Some(i.status) != want_status.map(|s| s as i32)
                    || i.confirmed != (want_status == Some(pb::Status::Confirmed))
                {
                    problems.push(format!(
                        "ListClaims {what}: {id} listed as {:?} (confirmed {}), the oracle \
                         says {want_status:?}",
                        pb::Status::try_from(i.status),
                        i.confirmed
                    ));
                }
                if logged.get(id.as_str()).copied() != i.claim.as_ref() {
                    problems.push(format!(
                        "ListClaims {what}: {id} listed as {:?}, logged as {:?}",
                        i.claim,
                        logged.get(id.as_str())
                    ));
                }
                got.push(id);
            }
        }
        if got != want {
            let status = |id: &String| statuses.get(id.as_str()).copied();
            let missing: Vec<_> = want
                .iter()
                .filter(|id| !got.contains(id))
                .map(|id| (id, status(id)))
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|id| !want.contains(id))
                .map(|id| (id, status(id)))
                .collect();
            problems.push(format!(
                "ListClaims {what}:\n  listed {got:?}\n  oracle {want:?}\n  missing (with the \
                 oracle's status) {missing:?}\n  extra {extra:?}"
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// Checks, with a bounded wait for the indexer's deadline sweep, that every ListClaims answer
/// at `min_size` = the log's size is what the oracle recomputes from the log, and that
/// GetClaimStatus agrees with the oracle for every claim. Returns the oracle.
async fn assert_agrees_with_oracle(c: &mut Clients) -> Oracle {
    let size = c.size().await;
    let o = Oracle::read(c, size).await;
    let started = Instant::now();
    loop {
        match disagreement(c, &o).await {
            None => break,
            Some(diff) if started.elapsed() > Duration::from_secs(10) => panic!(
                "the query index disagrees with the oracle 10 s after the log stopped growing \
                 (size {size}, {} claims, now {}):\n{diff}",
                o.claims.len(),
                now_unix()
            ),
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    for r in &o.claims {
        let id = &r.claim.id;
        let got = c.status(id).await;
        let want = o.outcome(r, now_unix());
        let got_outcome = Outcome {
            status: common::status_of(&got),
            computed_status: common::computed_of(&got),
            confirmed: got.confirmed,
            flags: got.flags.clone(),
            needs_review: got.needs_review,
            trace: got.trace.clone(),
            supporting_groups: got.supporting_groups,
            contradicting_groups: got.contradicting_groups,
        };
        assert_eq!(got_outcome, want, "GetClaimStatus {id} against the oracle");
        assert_eq!(got.as_of_size, size, "GetClaimStatus {id}: as_of_size");
    }
    assert_eq!(c.size().await, size, "nothing was written while comparing");
    o
}

// ---------------------------------------------------------------------------------------------
// 3. The index agrees with a recomputation from the log
// ---------------------------------------------------------------------------------------------

async fn index_agrees_with_the_log(h: History) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let t = Instant::now();
    let w = write_history(&mut c, &h, false, None).await;
    let wrote = t.elapsed();
    outlive_deadlines(&w).await;
    let waited = t.elapsed();
    let o = assert_agrees_with_oracle(&mut c).await;
    eprintln!(
        "{} entries, {} refused, {} claims {:?}; wrote in {wrote:?}, deadlines by {waited:?}, \
         agreed by {:?}",
        o.size,
        w.refused,
        o.claims.len(),
        o.status_counts(),
        t.elapsed()
    );
    assert_eq!(
        o.claims
            .iter()
            .map(|r| r.claim.id.clone())
            .collect::<Vec<_>>(),
        w.claims,
        "the log holds exactly the acknowledged claims"
    );
    srv.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        // A case takes seconds (it waits for deadlines); a failure reports its whole history.
        max_shrink_iters: 0,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_index_agrees_with_the_policy_replayed_from_the_log(h in history()) {
        agrees_on(Store::Sled, h);
    }

    /// The same on PostgreSQL.
    #[test]
    fn the_index_agrees_with_the_policy_replayed_from_the_log_on_postgres(h in history()) {
        agrees_on(Store::Postgres, h);
    }
}

/// Runs [`index_agrees_with_the_log`] on a runtime of its own against `store`.
fn agrees_on(store: Store, h: History) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(STORE.scope(store, index_agrees_with_the_log(h)));
}

// ---------------------------------------------------------------------------------------------
// 4. The indexer killed in the middle of a batch
// ---------------------------------------------------------------------------------------------

/// The log size the index's last commit covers (its commit payload, `index::Mark`).
fn committed_size(data_dir: &Path) -> u64 {
    let path = data_dir.join("index").join("meta.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is JSON: {e}", path.display()));
    match meta.get("payload").and_then(|p| p.as_str()) {
        None => 0,
        Some(p) => {
            let mark: serde_json::Value =
                serde_json::from_str(p).unwrap_or_else(|e| panic!("the mark {p:?}: {e}"));
            mark.get("size")
                .and_then(|s| s.as_u64())
                .unwrap_or_else(|| panic!("a size in the mark {p:?}"))
        }
    }
}

#[test]
fn an_indexer_killed_mid_batch_recovers_the_same_answers() {
    use std::os::unix::process::ExitStatusExt;
    let h = fixed_history(0);
    let crash_at = h.sources.len() as u64 + 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let failpoint = format!("indexer-abort-before-commit:{crash_at}");
    let sp = ServeProcess::start_with_env(
        serve_args(dir.path()),
        &[("CLAIMLEDGER_FAILPOINT", failpoint.as_str())],
    );
    let w = rt.block_on(async {
        let mut c = common::connect(&sp.url).await;
        write_history(&mut c, &h, true, Some(crash_at)).await
    });
    assert!(
        w.ended_by.is_some(),
        "the server kept answering through the whole history ({} writes, forced {:?}) with \
         {failpoint}; stderr:\n{}",
        w.acknowledged,
        w.forced,
        sp.stderr_lines().join("\n")
    );

    // The failpoint fired in the batch reading entry `crash_at`, and the process aborted.
    let started = Instant::now();
    let (start, end) = loop {
        let line = sp
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("failpoint: aborting after indexing entries"));
        if let Some(line) = line {
            let range = line
                .rsplit("entries ")
                .next()
                .expect("a range")
                .trim()
                .to_string();
            let (a, b) = range
                .split_once("..")
                .unwrap_or_else(|| panic!("a range in {line:?}"));
            let number = |s: &str| -> u64 {
                let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits
                    .parse()
                    .unwrap_or_else(|e| panic!("a number in {line:?}: {e}"))
            };
            let a: String = a.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
            let a: String = a.chars().rev().collect();
            break (number(&a), number(b));
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no failpoint line 15 s after the history ended with {:?}",
            w.ended_by
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        start <= crash_at && crash_at < end,
        "the aborted batch {start}..{end} holds entry {crash_at}"
    );
    let status = sp.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "serve aborted: {status}"
    );
    let committed = committed_size(dir.path());
    eprintln!(
        "aborted in batch {start}..{end} (index committed to {committed}) after {} writes \
         and {} claims acknowledged; the client saw: {:?}",
        w.acknowledged,
        w.claims.len(),
        w.ended_by
    );
    assert!(
        committed <= start,
        "the aborted batch {start}..{end} was not committed, but the index says {committed}"
    );

    // Restarted without the failpoint: the index catches up and agrees with the log.
    let sp = ServeProcess::start(serve_args(dir.path()));
    rt.block_on(async {
        let mut c = common::connect(&sp.url).await;
        let size = c.size().await;
        assert!(
            size > crash_at,
            "entry {crash_at} is in the log (size {size})"
        );
        outlive_deadlines(&w).await;
        let o = assert_agrees_with_oracle(&mut c).await;
        let listed = ids_at(&mut c.claims, size, Default::default()).await;
        for id in &w.claims {
            assert!(
                listed.contains(id),
                "claim {id}, acknowledged before the crash, is not listed"
            );
        }
        assert!(
            o.claims.len() >= w.claims.len(),
            "the log holds every acknowledged claim"
        );
        if let Some(forced) = w.forced {
            assert_eq!(forced, crash_at, "the claim written at the failpoint");
        }
    });
    sp.stop();
}

// ---------------------------------------------------------------------------------------------
// 5. `claimledger reindex`, and an index directory deleted before a restart
// ---------------------------------------------------------------------------------------------

/// Every page of every request the oracle compares, read with `min_size` = the log's size.
async fn all_pages(c: &mut Clients, o: &Oracle) -> Vec<Vec<pb::ListClaimsResponse>> {
    let mut out = Vec::new();
    for (req, _) in o.cases(now_unix()) {
        let what = format!("{req:?}");
        out.push(
            list_pages(&mut c.claims, req)
                .await
                .unwrap_or_else(|e| panic!("ListClaims {what}: {e}")),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_and_a_deleted_index_give_the_same_answers() {
    let h = fixed_history(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("a UTF-8 path");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let w = write_history(&mut c, &h, false, None).await;
    outlive_deadlines(&w).await;
    let o = assert_agrees_with_oracle(&mut c).await;
    assert!(
        o.grades > 0 && o.verdicts > 0,
        "the history has grades ({}) and verdicts ({})",
        o.grades,
        o.verdicts
    );
    let before = all_pages(&mut c, &o).await;
    assert!(
        before[0].len() > 1,
        "the full list spans several pages of {}",
        o.cases(0)[0].0.page_size
    );
    srv.stop().await;

    let out = common::cli(&["reindex", "--data-dir", d]).await;
    assert!(out.ok, "reindex failed: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("query index: rebuilt from {} entries", o.size)),
        "{}",
        out.stdout
    );
    // reindex commits the index at the log's size, entries that change no document included.
    assert_eq!(
        committed_size(dir.path()),
        o.size,
        "reindex committed an index of the whole log"
    );
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    assert_eq!(
        all_pages(&mut c, &o).await,
        before,
        "the same pages after reindex"
    );
    srv.stop().await;

    let index = dir.path().join("index");
    std::fs::remove_dir_all(&index).expect("delete the index directory");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    assert_eq!(
        all_pages(&mut c, &o).await,
        before,
        "the same pages once a deleted index has caught up"
    );
    assert!(index.join("meta.json").exists(), "the index was rebuilt");
    srv.stop().await;
}

/// A data directory whose ledger state is not in this version's layout (here: none of its keys
/// at all, as after an upgrade from a layout with other keys) has its state rebuilt from the
/// log when `serve` starts: every record and page is back, the log unchanged.
#[test]
fn serve_rebuilds_a_ledger_state_of_another_layout() {
    let h = fixed_history(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let (o, before, claim_id, root) = rt.block_on(async {
        let srv = TestServer::start(dir.path()).await;
        let mut c = srv.clients().await;
        let w = write_history(&mut c, &h, false, None).await;
        outlive_deadlines(&w).await;
        let o = assert_agrees_with_oracle(&mut c).await;
        let before = all_pages(&mut c, &o).await;
        let claim_id = w.claims.first().expect("the history has claims").clone();
        let root = c
            .log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("GetCheckpoint")
            .into_inner()
            .root_hash;
        srv.stop().await;
        (o, before, claim_id, root)
    });
    // Strip the ledger state: a rebuild with a hook that writes nothing leaves no ledger key,
    // not even the layout's version.
    {
        let offline = claimledger::log::Offline::open(dir.path()).expect("open offline");
        offline
            .reindex(&claimledger::log::NoApply, &mut |_, _| {})
            .expect("strip the state");
    }
    let sp = ServeProcess::start(serve_args(dir.path()));
    rt.block_on(async {
        let mut c = common::connect(&sp.url).await;
        let got = c
            .claims
            .get_claim(pb::GetClaimRequest {
                id: claim_id.clone(),
            })
            .await
            .expect("the claim's record is back")
            .into_inner();
        assert_eq!(got.claim.expect("claim").id, claim_id);
        let cp = c
            .log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("GetCheckpoint")
            .into_inner();
        assert_eq!(
            (cp.size, cp.root_hash),
            (o.size, root),
            "the log is unchanged"
        );
        assert_eq!(all_pages(&mut c, &o).await, before, "the same pages");
    });
    sp.stop();
}

both_stores! {
/// An entry is found by its leaf hash both once the index has read it (its entry document) and
/// before (the entries past the watermark are read directly), and the answer is its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_found_by_leaf_hash_before_and_after_the_index_reads_them() {
    use pb::get_inclusion_proof_request::Leaf;
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let reg = c
        .register(source(
            "ua-af",
            "UA",
            pb::Role::Party,
            pb::Reliability::C,
            "",
        ))
        .await;
    let mut receipts = vec![reg.receipt.expect("receipt")];
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = c
            .submit(
                &format!("leaf-{i}"),
                claim(pb::ClaimKind::Strike, "ua-af", &format!("Strike {i}")),
            )
            .await;
        receipts.push(r.receipt.expect("receipt"));
        ids.push(r.claim.expect("claim").id);
    }
    let log = c.log.clone();
    let find = |leaf: Vec<u8>| {
        let mut log = log.clone();
        async move {
            log.get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(Leaf::LeafHash(leaf)),
                tree_size: 0,
            })
            .await
            .map(|r| r.into_inner().index)
        }
    };
    // Right after the writes, whatever the index has read.
    for r in &receipts {
        assert_eq!(find(r.leaf_hash.clone()).await.expect("found"), r.index);
    }
    // Once the index has read them all.
    c.list_when_indexed().await;
    for r in &receipts {
        assert_eq!(find(r.leaf_hash.clone()).await.expect("found"), r.index);
    }
    // A submission is found through its claim's document: still so once evidence has replaced
    // that document, and the evidence is found too.
    for (i, id) in ids.iter().take(5).enumerate() {
        let e = c
            .add_evidence(
                &format!("leaf-ev-{i}"),
                id,
                evidence("ua-af", pb::Stance::Supports, 3),
            )
            .await;
        receipts.push(e.receipt.expect("receipt"));
    }
    c.list_when_indexed().await;
    for r in &receipts {
        assert_eq!(find(r.leaf_hash.clone()).await.expect("found"), r.index);
    }
    // A hash of no entry.
    let r = find(vec![7; 32]).await;
    assert_eq!(r.expect_err("no such entry").code(), Code::NotFound);
    srv.stop().await;
}
}
