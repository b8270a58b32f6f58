//! End-to-end tests of `LogService` and of what auditors verify offline, against a real server
//! on a loopback port: checkpoints and their signatures, the entry stream (leaf hashes, the hash
//! chain, the tree root), receipts, inclusion and consistency proofs, GetClaimStatus proofs, the
//! live tail, the server-side audit, and the OUT_OF_RANGE edges.

mod common;

use claimledger::pb;
use common::*;
use futures::StreamExt;
use prost::Message;
use tlog_tiles::{check_record, check_tree};
use tonic::Code;

async fn checkpoint(c: &mut Clients) -> pb::GetCheckpointResponse {
    c.log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("GetCheckpoint")
        .into_inner()
}

/// A few sources, for tests that only need some entries.
async fn some_sources(c: &mut Clients, prefix: &str, n: usize) -> Vec<pb::Receipt> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = c
            .register(source(
                &format!("{prefix}-{i}"),
                "",
                pb::Role::NonParty,
                pb::Reliability::B,
                "",
            ))
            .await;
        out.push(r.receipt.expect("receipt"));
    }
    out
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_by_the_served_key() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;

    let empty = checkpoint(&mut c).await;
    assert_eq!(empty.size, 0);
    assert_eq!(empty.origin, claimledger::log::DEFAULT_ORIGIN);
    assert!(empty
        .verifier_key
        .starts_with(&format!("{}+", empty.origin)));
    let cp = verify_note(&empty.note, &empty.verifier_key);
    assert_eq!(cp.size(), 0);
    assert_eq!(cp.origin(), empty.origin);
    assert_eq!(cp.hash().0, tree_root(&[]));
    assert_eq!(empty.root_hash, tree_root(&[]).to_vec());
    assert!(entries(&mut c, 0, 0).await.is_empty());

    some_sources(&mut c, "s", 3).await;
    let now = checkpoint(&mut c).await;
    assert_eq!(now.size, 3);
    assert_eq!(now.verifier_key, empty.verifier_key);
    let cp = verify_note(&now.note, &now.verifier_key);
    assert_eq!(cp.size(), 3);
    assert_eq!(cp.hash().0.to_vec(), now.root_hash);

    // A note altered in transit does not verify.
    let forged = now.note.replacen("\n3\n", "\n4\n", 1);
    let parsed = signed_note::Note::from_bytes(forged.as_bytes()).unwrap();
    let verifier = signed_note::StandardVerifier::new(&now.verifier_key).unwrap();
    assert!(parsed
        .verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .is_err());
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_hash_chained_and_make_the_signed_tree() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let art = import_article(&mut c).await;
    let cp = checkpoint(&mut c).await;

    let all = entries(&mut c, 0, 0).await;
    assert_eq!(all.len() as u64, cp.size);
    let mut prev = [0u8; 32];
    let mut leaves = Vec::new();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.index, i as u64);
        let leaf = leaf_hash(&e.data);
        assert_eq!(e.leaf_hash, leaf.to_vec(), "leaf hash of entry {i}");
        let entry = pb::Entry::decode(&e.data[..]).expect("the data is an Entry");
        assert_eq!(entry.index, i as u64);
        assert_eq!(entry.prev_hash, prev.to_vec(), "hash chain at entry {i}");
        assert_eq!(entry.actor, "anonymous");
        assert!(entry.recorded_at.is_some());
        let change = entry.body.expect("a Change body");
        assert!(change.kind.is_some());
        assert_eq!(change.request_digest.len(), 32);
        prev = leaf;
        leaves.push(leaf);
    }
    assert_eq!(tree_root(&leaves).to_vec(), cp.root_hash, "the signed root");

    // The first line of the article registers the Russian MoD.
    let first = pb::Entry::decode(&all[0].data[..]).unwrap().body.unwrap();
    assert_eq!(first.request_id, "src-ru-mod");
    match first.kind {
        Some(pb::change::Kind::SourceRegistered(s)) => assert_eq!(s.id, "ru-mod"),
        other => panic!("entry 0 is {other:?}"),
    }
    // Receipts name the entries the stream serves.
    for r in &art.receipts {
        assert_eq!(r.leaf_hash, all[r.index as usize].leaf_hash);
    }

    // A sub-range is the same bytes.
    let part = entries(&mut c, 3, 7).await;
    assert_eq!(
        part.iter().map(|e| e.index).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );
    for e in &part {
        assert_eq!(e.data, all[e.index as usize].data);
    }
    let r = c
        .log
        .get_entries(pb::GetEntriesRequest {
            start: 0,
            end: cp.size + 1,
        })
        .await;
    expect_err(r.map(|_| ()), Code::OutOfRange, "beyond");
    let r = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 5, end: 2 })
        .await;
    expect_err(r.map(|_| ()), Code::InvalidArgument, "start");
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_claim_status_proofs_verify_offline() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let art = import_article(&mut c).await;
    let vk = c.verifier_key().await;

    for (i, r) in art.receipts.iter().enumerate() {
        assert_eq!(
            r.index, i as u64,
            "sequential writes get sequential indexes"
        );
        verify_receipt(r, &vk);
    }

    let size = c.size().await;
    for claim_id in art.claims.values() {
        let s = c
            .claims
            .get_claim_status(pb::GetClaimStatusRequest {
                claim_id: claim_id.clone(),
                as_of_size: 0,
                with_proof: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.as_of_size, size);
        let cp = verify_note(&s.checkpoint, &vk);
        assert_eq!(cp.size(), size);
        let rec = c
            .claims
            .get_claim(pb::GetClaimRequest {
                id: claim_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let proved: Vec<u64> = s.proofs.iter().map(|p| p.index).collect();
        assert_eq!(
            proved, rec.entry_indexes,
            "one proof per entry of the claim"
        );
        for p in &s.proofs {
            check_record(
                &hashes(&p.hashes),
                cp.size(),
                *cp.hash(),
                p.index,
                hash(&p.leaf_hash),
            )
            .unwrap_or_else(|e| panic!("proof of entry {} for {claim_id}: {e}", p.index));
        }
    }

    // As of the size just after the swap claim was logged: no evidence yet, and the proofs are
    // against a checkpoint of exactly that size.
    let swap = art.claim("claim-prisoner-swap");
    let rec = c
        .claims
        .get_claim(pb::GetClaimRequest { id: swap.into() })
        .await
        .unwrap()
        .into_inner();
    let as_of = rec.entry_indexes[0] + 1;
    let then = c
        .claims
        .get_claim_status(pb::GetClaimStatusRequest {
            claim_id: swap.into(),
            as_of_size: as_of,
            with_proof: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&then), pb::Status::Claimed);
    assert!(!then.confirmed);
    assert!(then.trace.is_empty());
    assert_eq!(then.as_of_size, as_of);
    let cp = verify_note(&then.checkpoint, &vk);
    assert_eq!(cp.size(), as_of);
    assert_eq!(then.proofs.len(), 1);
    let p = &then.proofs[0];
    check_record(
        &hashes(&p.hashes),
        as_of,
        *cp.hash(),
        p.index,
        hash(&p.leaf_hash),
    )
    .expect("the claim's entry is in the tree of that size");
    // Before it was logged the claim is not there, and an unknown id is unknown at any size.
    let ask = |claim_id: &str, as_of_size| pb::GetClaimStatusRequest {
        claim_id: claim_id.into(),
        as_of_size,
        with_proof: false,
    };
    let r = c.claims.get_claim_status(ask(swap, as_of - 1)).await;
    expect_err(r, Code::NotFound, "was not in the log at size");
    let r = c.claims.get_claim_status(ask("c-0000000000000000", 1)).await;
    expect_err(r, Code::NotFound, "c-0000000000000000");
    // And now it is confirmed.
    assert!(c.status(swap).await.confirmed);
    drop(c);
    srv.stop().await;
}
}

/// With `as_of`, a claim is looked up before the entry that dates the answer is read: a damaged
/// entry does not turn a question about an unknown claim into DATA_LOSS.
#[tokio::test]
async fn an_unknown_claim_as_of_a_damaged_entry_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without the full re-hash on open, which would refuse the damaged log.
    let opts = || claimledger::log::Options {
        rehash_on_open: false,
        ..claimledger::log::Options::default()
    };
    let srv = TestServer::start_with_options(dir.path(), opts()).await;
    let mut c = srv.clients().await;
    some_sources(&mut c, "d", 4).await;
    drop(c);
    srv.stop().await;
    // The last byte of entry 1 (inside its envelope; the stored hashes before it stay whole).
    let ends = std::fs::read(dir.path().join("entries/ends")).expect("ends");
    let end = u64::from_be_bytes(ends[8..16].try_into().expect("8 bytes"));
    let data = dir.path().join("entries/data");
    let mut bytes = std::fs::read(&data).expect("data");
    bytes[end as usize - 1] ^= 0x10;
    std::fs::write(&data, bytes).expect("write data");

    let srv = TestServer::start_with_options(dir.path(), opts()).await;
    let mut c = srv.clients().await;
    let ask = |claim_id: &str, as_of_size| pb::GetClaimStatusRequest {
        claim_id: claim_id.into(),
        as_of_size,
        with_proof: false,
    };
    // As of size 2 the answer would be dated by entry 1.
    let r = c
        .claims
        .get_claim_status(ask("c-0000000000000000", 2))
        .await;
    expect_err(r, Code::NotFound, "c-0000000000000000");
    // The damage is real: reading entry 1 is refused.
    let mut entries = c
        .log
        .get_entries(pb::GetEntriesRequest { start: 1, end: 2 })
        .await
        .expect("GetEntries")
        .into_inner();
    let first = entries.next().await.expect("an answer");
    assert_eq!(
        first.expect_err("entry 1 is damaged").code(),
        Code::DataLoss
    );
    drop(c);
    srv.stop().await;
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusion_and_consistency_proofs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let vk = c.verifier_key().await;
    let receipts = some_sources(&mut c, "a", 5).await;
    let old = checkpoint(&mut c).await;
    some_sources(&mut c, "b", 4).await;
    let new = checkpoint(&mut c).await;
    assert_eq!((old.size, new.size), (5, 9));
    let old_cp = verify_note(&old.note, &vk);
    let new_cp = verify_note(&new.note, &vk);

    // By index, at the current size and at the old size.
    for tree_size in [0, old.size] {
        let p = c
            .log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::Index(2)),
                tree_size,
            })
            .await
            .unwrap()
            .into_inner();
        let (size, root) = if tree_size == 0 {
            (new.size, *new_cp.hash())
        } else {
            (old.size, *old_cp.hash())
        };
        assert_eq!(p.tree_size, size);
        assert_eq!(p.root_hash, root.0.to_vec());
        assert_eq!(p.leaf_hash, receipts[2].leaf_hash);
        check_record(&hashes(&p.hashes), size, root, 2, hash(&p.leaf_hash))
            .expect("inclusion by index");
    }
    // By leaf hash.
    let p = c
        .log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(pb::get_inclusion_proof_request::Leaf::LeafHash(
                receipts[4].leaf_hash.clone(),
            )),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.index, 4);
    check_record(
        &hashes(&p.hashes),
        new.size,
        *new_cp.hash(),
        4,
        hash(&receipts[4].leaf_hash),
    )
    .expect("inclusion by leaf hash");

    // Once the query index holds the entries, a hash is found through it, by its first 8 bytes;
    // a hash sharing them with entry 4 but not the rest is no entry.
    c.claims
        .list_claims(pb::ListClaimsRequest {
            min_size: new.size,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut near = receipts[4].leaf_hash.clone();
    near[31] ^= 1;
    for (leaf, found) in [(receipts[4].leaf_hash.clone(), true), (near, false)] {
        let r = c
            .log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::LeafHash(leaf)),
                tree_size: 0,
            })
            .await;
        match r {
            Ok(p) if found => assert_eq!(p.into_inner().index, 4),
            Err(e) if !found => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
            other => panic!("found {found}: {other:?}"),
        }
    }

    let ask = |leaf, tree_size| pb::GetInclusionProofRequest {
        leaf: Some(leaf),
        tree_size,
    };
    use pb::get_inclusion_proof_request::Leaf;
    let r = c.log.get_inclusion_proof(ask(Leaf::Index(0), 10)).await;
    expect_err(r, Code::OutOfRange, "10");
    let r = c.log.get_inclusion_proof(ask(Leaf::Index(9), 0)).await;
    expect_err(r, Code::OutOfRange, "9");
    let r = c.log.get_inclusion_proof(ask(Leaf::Index(6), 5)).await;
    expect_err(r, Code::OutOfRange, "6");
    let r = c
        .log
        .get_inclusion_proof(ask(Leaf::LeafHash(vec![7; 32]), 0))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    let r = c
        .log
        .get_inclusion_proof(ask(Leaf::LeafHash(vec![7; 3]), 0))
        .await;
    expect_err(r, Code::InvalidArgument, "leaf_hash");
    let r = c
        .log
        .get_inclusion_proof(pb::GetInclusionProofRequest::default())
        .await;
    expect_err(r, Code::InvalidArgument, "index");

    // Consistency between the two checkpoints.
    let p = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old.size,
            new_size: new.size,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.old_root, old.root_hash);
    assert_eq!(p.new_root, new.root_hash);
    check_tree(
        &hashes(&p.hashes),
        new.size,
        *new_cp.hash(),
        old.size,
        *old_cp.hash(),
    )
    .expect("the new tree extends the old one");
    // Every pair of sizes, against roots the server reports.
    for n in 1..=new.size {
        for m in n..=new.size {
            let p = c
                .log
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    old_size: n,
                    new_size: m,
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((p.old_size, p.new_size), (n, m));
            check_tree(
                &hashes(&p.hashes),
                m,
                hash(&p.new_root),
                n,
                hash(&p.old_root),
            )
            .unwrap_or_else(|e| panic!("consistency {n} -> {m}: {e}"));
        }
    }
    let r = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: 1,
            new_size: 10,
        })
        .await;
    expect_err(r, Code::OutOfRange, "10");
    let r = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: 8,
            new_size: 3,
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(c.size().await, 9, "reads write nothing");
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_entries_follows_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    some_sources(&mut c, "old", 2).await;

    let mut from_start = c
        .log
        .watch_entries(pb::WatchEntriesRequest { from_index: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut from_now = c
        .log
        .watch_entries(pb::WatchEntriesRequest { from_index: 2 })
        .await
        .unwrap()
        .into_inner();
    // The backlog first.
    for i in 0..2 {
        let e = from_start.next().await.unwrap().unwrap();
        assert_eq!(e.index, i);
    }
    // Then what is written after subscribing, in order, as the exact stored bytes.
    let written = some_sources(&mut c, "new", 3).await;
    for stream in [&mut from_start, &mut from_now] {
        for r in &written {
            let e = stream.next().await.unwrap().unwrap();
            assert_eq!(e.index, r.index);
            assert_eq!(e.leaf_hash, r.leaf_hash);
            assert_eq!(leaf_hash(&e.data).to_vec(), r.leaf_hash);
            let entry = pb::Entry::decode(&e.data[..]).unwrap();
            match entry.body.unwrap().kind {
                Some(pb::change::Kind::SourceRegistered(s)) => {
                    assert_eq!(s.id, format!("new-{}", r.index - 2))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let r = c
        .log
        .watch_entries(pb::WatchEntriesRequest { from_index: 6 })
        .await;
    expect_err(r.map(|_| ()), Code::OutOfRange, "from_index");
    drop(from_start);
    drop(from_now);
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_live_watch_streams() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    some_sources(&mut c, "s", 1).await;
    let mut watch = c
        .log
        .watch_entries(pb::WatchEntriesRequest { from_index: 1 })
        .await
        .unwrap()
        .into_inner();
    // A follower still connected must not keep the server (and its data directory) from
    // shutting down. The generous bound only turns a hang into a failure.
    tokio::time::timeout(std::time::Duration::from_secs(60), srv.stop())
        .await
        .expect("graceful shutdown finishes while a watcher is connected");
    // The follower is told the stream ended rather than left waiting.
    match watch.next().await {
        None => {}
        Some(Err(s)) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Some(Ok(e)) => panic!("unexpected entry {e:?}"),
    }
    // The directory can be reopened.
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    assert_eq!(c.size().await, 1);
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_log_audits_everything_and_says_ok() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    import_article(&mut c).await;
    let cp = checkpoint(&mut c).await;
    let mut stream = c
        .log
        .verify_log(pb::VerifyLogRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut msgs = Vec::new();
    while let Some(m) = stream.next().await {
        msgs.push(m.expect("a progress message"));
    }
    let (last, progress) = msgs.split_last().expect("at least the final message");
    assert!(last.done && last.ok, "{last:?}");
    assert_eq!(last.first_bad_index, None);
    assert!(last.error.is_empty());
    assert_eq!(last.checked, cp.size);
    assert_eq!(last.total, cp.size);
    assert_eq!(last.root_hash, cp.root_hash);
    assert!(progress.iter().all(|m| !m.done && m.checked <= m.total));
    assert!(progress.windows(2).all(|w| w[0].checked <= w[1].checked));
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_record_the_authenticated_principal() {
    let dir = tempfile::tempdir().unwrap();
    use claimledger::api::auth::{tokens, Auth, Principal, Tokens};
    let alice = Principal {
        name: "alice".into(),
        roles: tokens::parse_roles("registrar").unwrap(),
        clusters: vec![],
    };
    let text = format!("# tokens\n{}\n", tokens::line_for("tok-alice", &alice));
    let auth = Auth::Tokens(std::sync::Arc::new(Tokens::parse(&text).unwrap()));
    let srv = TestServer::start_with_auth(dir.path(), auth).await;
    let mut c = srv.clients().await;
    fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }
    let reg = |id: &str| pb::RegisterSourceRequest {
        request_id: format!("src-{id}"),
        source: Some(source(id, "", pb::Role::NonParty, pb::Reliability::B, "")),
    };

    c.sources
        .register_source(bearer(reg("by-alice"), "tok-alice"))
        .await
        .unwrap();
    let r = c.sources.register_source(reg("by-nobody")).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    let r = c
        .sources
        .register_source(bearer(reg("by-mallory"), "tok-forged"))
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);

    let actors: Vec<String> = entries(&mut c, 0, 0)
        .await
        .iter()
        .map(|e| pb::Entry::decode(&e.data[..]).unwrap().actor)
        .collect();
    assert_eq!(actors, ["alice"], "the refused calls wrote nothing");
    let got = c
        .sources
        .get_source(pb::GetSourceRequest {
            id: "by-alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.grades[0].actor, "alice");
    drop(c);
    srv.stop().await;
}
}

both_stores! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_writes_are_consistent_with_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    let vk = c.verifier_key().await;
    c.register(source(
        "ru-mod",
        "RU",
        pb::Role::Party,
        pb::Reliability::D,
        "",
    ))
    .await;
    c.register(source("ap", "", pb::Role::NonParty, pb::Reliability::B, ""))
        .await;
    let id = c
        .submit(
            "busy",
            claim(pb::ClaimKind::Strike, "ru-mod", "A claim under load"),
        )
        .await
        .claim
        .unwrap()
        .id;

    // Evidence keeps arriving on the claim while an auditor reads checkpoints, proofs and the
    // claim's status with proofs: every answer must hold together at the size it names.
    let writes = 40;
    let writer = {
        let mut c = c.clone();
        let id = id.clone();
        tokio::spawn(async move {
            for i in 0..writes {
                c.add_evidence(
                    &format!("ev-{i}"),
                    &id,
                    evidence("ap", pb::Stance::Supports, 2),
                )
                .await;
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 5 {
        reads += 1;
        let cp = checkpoint(&mut c).await;
        let parsed = verify_note(&cp.note, &vk);
        assert_eq!(parsed.size(), cp.size);
        let p = c
            .log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::Index(cp.size - 1)),
                tree_size: cp.size,
            })
            .await
            .unwrap_or_else(|e| panic!("proof in the checkpoint's tree of {}: {e}", cp.size))
            .into_inner();
        check_record(
            &hashes(&p.hashes),
            cp.size,
            *parsed.hash(),
            cp.size - 1,
            hash(&p.leaf_hash),
        )
        .expect("the proof verifies against the served checkpoint");

        let s = c
            .claims
            .get_claim_status(pb::GetClaimStatusRequest {
                claim_id: id.clone(),
                as_of_size: 0,
                with_proof: true,
            })
            .await
            .unwrap_or_else(|e| panic!("status with proof under load: {e}"))
            .into_inner();
        let scp = verify_note(&s.checkpoint, &vk);
        assert_eq!(scp.size(), s.as_of_size);
        assert_eq!(s.proofs.len(), s.trace.len() + 1, "one proof per entry");
        for e in &s.proofs {
            check_record(
                &hashes(&e.hashes),
                scp.size(),
                *scp.hash(),
                e.index,
                hash(&e.leaf_hash),
            )
            .expect("every entry proof verifies against the returned checkpoint");
        }
    }
    writer.await.unwrap();
    assert_eq!(c.status(&id).await.trace.len(), writes);
    drop(c);
    srv.stop().await;
}
}

both_stores! {
/// Sizes and starts beyond the tree are OUT_OF_RANGE whichever field is too large, and a forged
/// page token is INVALID_ARGUMENT (not a panic or a repeat of page one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_tree_and_forged_tokens_are_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(dir.path()).await;
    let mut c = srv.clients().await;
    some_sources(&mut c, "oor", 3).await;
    let size = c.size().await;

    let r = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: size + 5,
            new_size: 0,
        })
        .await;
    expect_err(r, Code::OutOfRange, "beyond the tree");
    let r = c
        .log
        .get_entries(pb::GetEntriesRequest {
            start: size + 5,
            end: 0,
        })
        .await;
    expect_err(r, Code::OutOfRange, "beyond the log");

    // A token for "after claim index u64::MAX", in the server's own token format.
    use base64::Engine;
    let mut raw = vec![b'c'];
    raw.extend_from_slice(&u64::MAX.to_be_bytes());
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let r = c
        .claims
        .list_claims(pb::ListClaimsRequest {
            page_token: token,
            ..Default::default()
        })
        .await;
    expect_err(r, Code::InvalidArgument, "page_token");
    srv.stop().await;
}
}
