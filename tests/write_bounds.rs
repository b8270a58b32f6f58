//! Write work is bounded: however big a claim, however much evidence a claim already has (when
//! more evidence, a verdict or a retraction comes) and however many claims cite a source, each
//! write puts the same small number of ledger keys in its batch (counted through an `Apply`
//! hook wrapping `LedgerApply`), and the statuses read afterwards (GetClaimStatus now and as of
//! an earlier size, GetClaim, ListClaims through the derived query index) are still what the
//! policy says.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claimledger::ledger::LedgerApply;
use claimledger::log::{Apply, Ctx, EntryMeta, Rejection};
use claimledger::pb::{self, change::Kind};
use common::*;
use futures::stream::{self, StreamExt};
use prost::Message;
use tonic::Code;

/// The most keys a write may stage (`ledger::keys`: "at most three").
const MAX_KEYS: usize = 3;
/// SubmitClaim: the claim record and the request id.
const SUBMIT_KEYS: usize = 2;
/// AddEvidence: the evidence id, the item on the claim and the request id.
const EVIDENCE_KEYS: usize = 3;
/// GradeSource: the grade, the source's record and the request id.
const GRADE_KEYS: usize = 3;
/// RegisterSource: the initial grade, the source's record and the request id.
const REGISTER_KEYS: usize = 3;
/// RecordVerdict: the item on the claim and the request id.
const VERDICT_KEYS: usize = 2;
/// RetractClaim: the claim's retraction mark, the item on the claim and the request id.
const RETRACT_KEYS: usize = 3;

/// The kind of a logged change, as the counting hook records it.
fn kind_name(body: &[u8]) -> &'static str {
    match pb::Change::decode(body).ok().and_then(|c| c.kind) {
        Some(Kind::SourceRegistered(_)) => "RegisterSource",
        Some(Kind::SourceGraded(_)) => "GradeSource",
        Some(Kind::ClaimSubmitted(_)) => "SubmitClaim",
        Some(Kind::EvidenceAdded(_)) => "AddEvidence",
        Some(Kind::VerdictRecorded(_)) => "RecordVerdict",
        Some(Kind::ClaimRetracted(_)) => "RetractClaim",
        None => "undecodable",
    }
}

/// `LedgerApply`, recording for every entry it accepted how many keys the entry staged.
#[derive(Default)]
struct Counting {
    /// Entry index → (kind of change, keys staged).
    staged: Mutex<BTreeMap<u64, (&'static str, usize)>>,
}

impl Apply for Counting {
    fn apply(&self, ctx: &mut Ctx<'_>, meta: &EntryMeta, body: &[u8]) -> Result<(), Rejection> {
        LedgerApply.apply(ctx, meta, body)?;
        let n = ctx.staged();
        // A group whose commit failed is applied again at the same indexes, so the last
        // application of an index is the one that counts.
        self.staged
            .lock()
            .expect("the counts' lock")
            .insert(meta.index, (kind_name(body), n));
        Ok(())
    }
}

impl Counting {
    /// The keys the entry at `index` staged, and its kind.
    fn at(&self, index: u64) -> (&'static str, usize) {
        *self
            .staged
            .lock()
            .expect("the counts' lock")
            .get(&index)
            .unwrap_or_else(|| panic!("the hook saw no entry {index}"))
    }

    fn keys(&self, index: u64, kind: &str) -> usize {
        let (k, n) = self.at(index);
        assert_eq!(k, kind, "entry {index}");
        n
    }

    /// How many entries the hook saw.
    fn entries(&self) -> usize {
        self.staged.lock().expect("the counts' lock").len()
    }

    /// Per kind of change, every distinct number of keys its entries staged. Entry 0 also
    /// writes the layout marker (`keys::LAYOUT_KEY`), which is not counted here.
    fn by_kind(&self) -> BTreeMap<&'static str, BTreeSet<usize>> {
        let mut out: BTreeMap<&'static str, BTreeSet<usize>> = BTreeMap::new();
        for (&i, &(kind, n)) in self.staged.lock().expect("the counts' lock").iter() {
            let n = if i == 0 {
                n.checked_sub(1).expect("entry 0 writes the layout marker")
            } else {
                n
            };
            out.entry(kind).or_default().insert(n);
        }
        out
    }

    /// Asserts every kind staged one number of keys, the expected one (entry 0 one more, for
    /// the layout marker), and that only the expected kinds were logged; prints what was
    /// measured.
    fn assert_constant(&self, test: &str, expected: &[(&str, usize)]) {
        let by_kind = self.by_kind();
        println!("{test}: keys staged per request kind: {by_kind:?}");
        for (kind, want) in expected {
            assert!(*want <= MAX_KEYS, "{kind}: {want} keys is above the bound");
            let got = by_kind
                .get(kind)
                .unwrap_or_else(|| panic!("no {kind} entry was logged"));
            assert_eq!(
                got,
                &BTreeSet::from([*want]),
                "{kind} entries must each stage {want} keys, whatever their size"
            );
        }
        let kinds: Vec<&str> = by_kind.keys().copied().collect();
        let mut want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
        want.sort_unstable();
        assert_eq!(kinds, want, "the kinds of change logged");
    }
}

/// A server over a fresh directory with the counting hook.
async fn start() -> (tempfile::TempDir, TestServer, Arc<Counting>, Clients) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let counting = Arc::new(Counting::default());
    let srv = TestServer::start_with_apply(dir.path(), counting.clone()).await;
    let c = srv.clients().await;
    (dir, srv, counting, c)
}

/// The `i`th of 17,576 distinct three-letter words ("aaa", "aab", …).
fn word(i: usize) -> String {
    let l = |n: usize| char::from(b'a' + (n % 26) as u8);
    [l(i / 676), l(i / 26), l(i)].iter().collect()
}

async fn grade(c: &mut Clients, rid: &str, id: &str, r: pb::Reliability) -> pb::Receipt {
    c.sources
        .grade_source(pb::GradeSourceRequest {
            request_id: rid.into(),
            source_id: id.into(),
            reliability: r as i32,
            rationale: format!("regraded {r:?} by the test"),
        })
        .await
        .unwrap_or_else(|e| panic!("GradeSource {id}: {e}"))
        .into_inner()
        .receipt
        .expect("a receipt")
}

/// Every claim ListClaims lists with `status` once the index has read the log to `min_size`,
/// paging 500 at a time. The indexer may take longer than the server's own wait for `min_size`
/// to re-judge thousands of claims, so UNAVAILABLE ("retry") is retried for a while.
async fn list_all(c: &mut Clients, status: pb::Status, min_size: u64) -> Vec<pb::ClaimListItem> {
    let mut out = Vec::new();
    let mut token = String::new();
    let give_up = Instant::now() + Duration::from_secs(180);
    loop {
        let req = pb::ListClaimsRequest {
            status: status as i32,
            page_size: 500,
            page_token: token.clone(),
            min_size,
            ..Default::default()
        };
        let page = match c.claims.list_claims(req).await {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == Code::Unavailable && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => panic!("ListClaims {status:?} min_size {min_size}: {e}"),
        };
        assert!(page.indexed_size >= min_size, "min_size is honoured");
        assert!(page.claims.len() <= 500);
        for item in &page.claims {
            assert_eq!(item.status, status as i32, "the status filter holds");
        }
        out.extend(page.claims);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_of_5000_words_writes_the_keys_of_a_3_word_one() {
    let (_dir, srv, counting, mut c) = start().await;
    let reg = c
        .register(source(
            "ru-mod",
            "RU",
            pb::Role::Party,
            pb::Reliability::D,
            "ru-state",
        ))
        .await;
    assert_eq!(reg.receipt.expect("a receipt").index, 0);

    let mut tiny = claim(pb::ClaimKind::Strike, "ru-mod", "Depot hit overnight");
    tiny.text = "Depot hit overnight".into();
    let tiny = c.submit("tiny", tiny).await;

    // 5,000 distinct words of three letters and a space each: 19,999 characters, within the
    // 20,000 a claim's text may hold (`claims::validate`), so all 5,000 fit.
    let words: Vec<String> = (0..5000).map(word).collect();
    assert_eq!(words.iter().collect::<HashSet<_>>().len(), 5000);
    let text = words.join(" ");
    assert!(text.chars().count() <= 20_000, "{}", text.len());
    let mut huge = claim(
        pb::ClaimKind::Strike,
        "ru-mod",
        "A claim of five thousand words",
    );
    huge.text = text.clone();
    let huge = c.submit("huge", huge).await;

    let tiny_keys = counting.keys(tiny.receipt.expect("a receipt").index, "SubmitClaim");
    let huge_receipt = huge.receipt.expect("a receipt");
    let huge_keys = counting.keys(huge_receipt.index, "SubmitClaim");
    println!("SubmitClaim: 3 words {tiny_keys} keys, 5,000 words {huge_keys} keys");
    assert_eq!(
        tiny_keys, huge_keys,
        "a claim's size does not change its keys"
    );
    assert_eq!(huge_keys, SUBMIT_KEYS);
    counting.assert_constant(
        "5,000 words",
        &[
            ("RegisterSource", REGISTER_KEYS),
            ("SubmitClaim", SUBMIT_KEYS),
        ],
    );
    assert_eq!(
        counting.entries() as u64,
        c.size().await,
        "the hook saw every entry"
    );

    // Both are logged whole and judged by the policy: without evidence, CLAIMED.
    let tiny_id = tiny.claim.expect("the claim").id;
    let huge_id = huge.claim.expect("the claim").id;
    let rec = c.record(&huge_id).await;
    assert_eq!(rec.claim.expect("the claim").text, text);
    assert_eq!(rec.status, pb::Status::Claimed as i32);
    for id in [&tiny_id, &huge_id] {
        let s = c.status(id).await;
        assert_eq!(status_of(&s), pb::Status::Claimed, "{id}: {s:?}");
    }
    // The query index read the whole text: its last three words are found as a phrase.
    let last = words[4997..].join(" ");
    let found = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            query: format!("\"{last}\""),
            min_size: huge_receipt.index + 1,
            ..Default::default()
        })
        .await
        .expect("ListClaims by the huge claim's last words")
        .into_inner();
    let found: Vec<String> = found
        .claims
        .iter()
        .map(|i| i.claim.as_ref().expect("a claim").id.clone())
        .collect();
    assert_eq!(found, vec![huge_id]);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_500th_evidence_writes_the_keys_of_the_first() {
    let (_dir, srv, counting, mut c) = start().await;
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "ru-state",
    ))
    .await;
    // Ten independent agencies graded B, each its own cluster.
    let agencies: Vec<String> = (0..10).map(|i| format!("agency-{i}")).collect();
    for a in &agencies {
        c.register(source(a, "", pb::Role::NonParty, pb::Reliability::B, ""))
            .await;
    }
    let submitted = c
        .submit(
            "strike",
            claim(pb::ClaimKind::Strike, "ru-mod", "Strike on a bridge"),
        )
        .await;
    let claim_id = submitted.claim.expect("the claim").id;
    let claim_index = submitted.receipt.expect("a receipt").index;

    // 500 supporting reports at credibility 2, 50 from each agency, 16 in flight at a time.
    let added: Vec<pb::AddEvidenceResponse> = stream::iter(0..500)
        .map(|i| {
            let mut c = c.clone();
            let agency = agencies[i % agencies.len()].clone();
            let claim_id = claim_id.clone();
            async move {
                c.add_evidence(
                    &format!("ev-{i}"),
                    &claim_id,
                    evidence(&agency, pb::Stance::Supports, 2),
                )
                .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(added.len(), 500);
    let mut by_index: Vec<(u64, String)> = added
        .iter()
        .map(|r| {
            (
                r.receipt.as_ref().expect("a receipt").index,
                r.evidence.as_ref().expect("the evidence").id.clone(),
            )
        })
        .collect();
    by_index.sort();

    let keys: Vec<usize> = by_index
        .iter()
        .map(|(i, _)| counting.keys(*i, "AddEvidence"))
        .collect();
    let (first, last) = (keys[0], keys[499]);
    println!("AddEvidence: 1st on the claim {first} keys, 500th {last} keys");
    assert_eq!(
        first, last,
        "the evidence already on a claim does not add keys"
    );
    assert_eq!(first, EVIDENCE_KEYS);
    assert!(keys.iter().all(|&n| n == first), "{keys:?}");
    counting.assert_constant(
        "500 evidence",
        &[
            ("RegisterSource", REGISTER_KEYS),
            ("SubmitClaim", SUBMIT_KEYS),
            ("AddEvidence", EVIDENCE_KEYS),
        ],
    );
    assert_eq!(
        counting.entries() as u64,
        c.size().await,
        "the hook saw every entry"
    );

    // Policy v1: ten independent clusters, each with credible (2) support from a B-graded
    // origin, and nothing contradicting: S = 10, C = 0, and a strike needs no visual group, so
    // CONFIRMED. Each agency counts once; its 49 other reports are duplicates of its group.
    let s = c.status(&claim_id).await;
    assert_eq!(status_of(&s), pb::Status::Confirmed, "{:?}", s.flags);
    assert_eq!(computed_of(&s), pb::Status::Confirmed);
    assert!(s.confirmed);
    assert_eq!((s.supporting_groups, s.contradicting_groups), (10, 0));
    assert_eq!(s.trace.len(), 500);
    assert_eq!(s.trace.iter().filter(|t| t.counted).count(), 10);
    assert!(s
        .trace
        .iter()
        .filter(|t| !t.counted)
        .all(|t| t.independent && t.reasons.iter().any(|r| r == "duplicate group")));
    let trace_order: Vec<u64> = s.trace.iter().map(|t| t.index).collect();
    assert!(
        trace_order.windows(2).all(|w| w[0] < w[1]),
        "traced in log order"
    );

    // GetClaim returns all 500 in log order.
    let rec = c.record(&claim_id).await;
    assert_eq!(rec.status, pb::Status::Confirmed as i32);
    assert_eq!(rec.evidence.len(), 500);
    let got: Vec<(u64, String)> = rec
        .evidence
        .iter()
        .map(|e| (e.index, e.id.clone()))
        .collect();
    assert_eq!(got, by_index, "every evidence, in log order");
    let mut entries = vec![claim_index];
    entries.extend(by_index.iter().map(|(i, _)| *i));
    assert_eq!(rec.entry_indexes, entries);
    assert!(rec.evidence.iter().all(|e| e.claim_id == claim_id));

    // A verdict, then a retraction, on this claim write the keys of the same on a claim with
    // no evidence.
    let bare = c
        .submit(
            "bare",
            claim(pb::ClaimKind::Strike, "ru-mod", "Strike on a depot"),
        )
        .await
        .claim
        .expect("the claim")
        .id;
    let mut keys = Vec::new();
    for id in [&bare, &claim_id] {
        let verdict = pb::RecordVerdictRequest {
            request_id: format!("verdict-{id}"),
            claim_id: id.clone(),
            verdict: Some(pb::Verdict {
                decision: pb::Decision::Inconclusive as i32,
                rationale: "the desk could not tell".into(),
                ..Default::default()
            }),
        };
        let v = c.claims.record_verdict(verdict).await.expect("a verdict");
        let retraction = pb::RetractClaimRequest {
            request_id: format!("retraction-{id}"),
            claim_id: id.clone(),
            retraction: Some(pb::Retraction {
                source_id: "ru-mod".into(),
                url: "https://example.org/retraction".into(),
                note: "withdrawn".into(),
                ..Default::default()
            }),
        };
        let x = c.claims.retract_claim(retraction).await.expect("a retraction");
        let index = |r: Option<pb::Receipt>| r.expect("a receipt").index;
        keys.push((
            counting.keys(index(v.into_inner().receipt), "RecordVerdict"),
            counting.keys(index(x.into_inner().receipt), "RetractClaim"),
        ));
    }
    println!("RecordVerdict, RetractClaim: on a bare claim {:?}, on 500 evidence {:?}", keys[0], keys[1]);
    assert_eq!(keys[0], keys[1], "the evidence on a claim does not add keys");
    assert_eq!(keys[0], (VERDICT_KEYS, RETRACT_KEYS));
    counting.assert_constant(
        "500 evidence, a verdict and a retraction",
        &[
            ("RegisterSource", REGISTER_KEYS),
            ("SubmitClaim", SUBMIT_KEYS),
            ("AddEvidence", EVIDENCE_KEYS),
            ("RecordVerdict", VERDICT_KEYS),
            ("RetractClaim", RETRACT_KEYS),
        ],
    );
    let retracted = c.status(&claim_id).await;
    assert_eq!(status_of(&retracted), pb::Status::Retracted, "{retracted:?}");
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grading_a_source_cited_by_10000_claims_writes_the_keys_of_grading_an_uncited_one() {
    const N: usize = 10_000;
    let (_dir, srv, counting, mut c) = start().await;
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "ru-state",
    ))
    .await;
    // An independent wire service graded C: its reports do not qualify yet (rule 4).
    c.register(source(
        "wire",
        "",
        pb::Role::NonParty,
        pb::Reliability::C,
        "",
    ))
    .await;
    c.register(source(
        "idle",
        "",
        pb::Role::NonParty,
        pb::Reliability::C,
        "",
    ))
    .await;

    // N claims (kept in log order), each with one supporting report from the wire service at
    // credibility 2, with 64 requests in flight.
    let ids: Vec<String> = stream::iter(0..N)
        .map(|i| {
            let mut c = c.clone();
            async move {
                let r = c
                    .submit(
                        &format!("c-{i}"),
                        claim(pb::ClaimKind::Strike, "ru-mod", &format!("Strike {i}")),
                    )
                    .await;
                let id = r.claim.expect("the claim").id;
                c.add_evidence(
                    &format!("e-{i}"),
                    &id,
                    evidence("wire", pb::Stance::Supports, 2),
                )
                .await;
                (r.receipt.expect("a receipt").index, id)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    assert_eq!(ids.len(), N);
    let sample: Vec<&String> = ids.iter().step_by(N / 20).chain(ids.last()).collect();
    for id in &sample {
        let s = c.status(id).await;
        assert_eq!(status_of(&s), pb::Status::Claimed, "{id}: {s:?}");
        assert!(s.trace[0].independent && !s.trace[0].counted);
        assert!(s.trace[0].reasons.iter().any(|r| r == "grade below B"));
    }

    // The query index has them all as CLAIMED before the grade.
    let written = c.size().await;
    let listed: Vec<String> = list_all(&mut c, pb::Status::Claimed, written)
        .await
        .into_iter()
        .map(|i| i.claim.expect("a claim").id)
        .collect();
    assert_eq!(
        listed, ids,
        "every claim is listed CLAIMED before the grade"
    );

    // Grading the source no claim cites, then the one all N cite.
    let idle = grade(&mut c, "grade-idle", "idle", pb::Reliability::B).await;
    let before_grade = c.size().await;
    let wire = grade(&mut c, "grade-wire", "wire", pb::Reliability::B).await;
    assert_eq!(wire.index, before_grade);
    let idle_keys = counting.keys(idle.index, "GradeSource");
    let wire_keys = counting.keys(wire.index, "GradeSource");
    println!("GradeSource: cited by none {idle_keys} keys, cited by {N} claims {wire_keys} keys");
    assert_eq!(
        idle_keys, wire_keys,
        "the claims citing a source do not add keys"
    );
    assert_eq!(wire_keys, GRADE_KEYS);
    counting.assert_constant(
        "10,000 citing claims",
        &[
            ("RegisterSource", REGISTER_KEYS),
            ("SubmitClaim", SUBMIT_KEYS),
            ("AddEvidence", EVIDENCE_KEYS),
            ("GradeSource", GRADE_KEYS),
        ],
    );
    let size = c.size().await;
    assert_eq!(size, (3 + 2 * N + 2) as u64);
    assert_eq!(counting.entries() as u64, size, "the hook saw every entry");

    // Read now, the wire service is B and its report qualifies: S = 1, C = 0, CORROBORATED.
    // As of the size before its grade, it was C and the claim CLAIMED.
    for id in &sample {
        let now = c.status(id).await;
        assert_eq!(status_of(&now), pb::Status::Corroborated, "{id}: {now:?}");
        assert_eq!(now.supporting_groups, 1);
        assert!(now.trace[0].counted);
        let then = c.status_at(id, before_grade).await;
        assert_eq!(
            status_of(&then),
            pb::Status::Claimed,
            "{id} as of {before_grade}"
        );
        assert_eq!(then.as_of_size, before_grade);
    }

    // The query index re-judges every citing claim after reading the grade: all N are listed
    // as CORROBORATED, in log order, and none as CLAIMED any more.
    let listed = list_all(&mut c, pb::Status::Corroborated, size).await;
    let listed: Vec<String> = listed
        .into_iter()
        .map(|i| i.claim.expect("a claim").id)
        .collect();
    assert_eq!(listed.len(), N, "every citing claim is listed CORROBORATED");
    assert_eq!(listed, ids, "in log order, without gaps or duplicates");
    let still_claimed = list_all(&mut c, pb::Status::Claimed, size).await;
    assert!(
        still_claimed.is_empty(),
        "{} claims still listed CLAIMED",
        still_claimed.len()
    );
    srv.stop().await;
}
}
