//! Tests of the log engine (`claimledger::log`): the RFC 6962 tree math against published
//! vectors, proofs (property-tested and against a real log), receipts and checkpoint
//! signatures, typed out-of-range errors, tamper detection, reopening, and many concurrent
//! appends.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use claimledger::log::checkpoint::verify_checkpoint;
use claimledger::log::leaf_hash;
use claimledger::log::{
    Envelope, Log, LogError, NoApply, Offline, Options, Receipt, DEFAULT_ORIGIN,
};
use common::KeepBodies;
use proptest::prelude::*;
use prost::Message;
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::{
    check_record, check_tree, prove_record, prove_tree, record_hash, stored_hashes, tree_hash,
    Hash, HashReader, EMPTY_HASH,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn h(s: &str) -> Hash {
    Hash(unhex(s).try_into().expect("32-byte hash"))
}

/// Stored hashes in Go sumdb's stored-hash-index order, in memory: an independent tree built
/// only with `tlog_tiles`, sharing no code with `claimledger::log`.
#[derive(Default)]
struct MemTree {
    hashes: Vec<Hash>,
    n: u64,
}

impl HashReader for MemTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.hashes
                    .get(i as usize)
                    .copied()
                    .ok_or_else(|| tlog_tiles::Error::InvalidInput(format!("no hash {i}")))
            })
            .collect()
    }
}

impl MemTree {
    fn push(&mut self, data: &[u8]) {
        let new = stored_hashes(self.n, data, self).expect("stored_hashes");
        assert_eq!(
            self.hashes.len() as u64,
            tlog_tiles::stored_hash_index(0, self.n),
            "stored hashes are appended in sumdb order"
        );
        self.hashes.extend(new);
        self.n += 1;
    }

    fn of<T: AsRef<[u8]>>(leaves: &[T]) -> MemTree {
        let mut t = MemTree::default();
        for l in leaves {
            t.push(l.as_ref());
        }
        t
    }

    fn root(&self, n: u64) -> Hash {
        tree_hash(n, self).expect("tree_hash")
    }
}

fn flip(hash: &Hash, byte: usize) -> Hash {
    let mut out = *hash;
    out.0[byte] ^= 0x01;
    out
}

/// Shuts the log down and drops this handle (and with it the sled database), so the directory
/// can be opened again in this process.
async fn close(log: Log) {
    log.shutdown().await.expect("shutdown");
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn open(dir: &Path) -> Log {
    Log::open(dir, Options::default(), Arc::new(NoApply)).expect("open log")
}

/// Appends `bodies` concurrently (so the writer forms groups) and returns receipts in input
/// order.
async fn append_all(log: &Log, bodies: Vec<Vec<u8>>) -> Vec<Receipt> {
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let log = log.clone();
            tokio::spawn(async move { log.append("tester", b).await.expect("append") })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

fn stored_entries(log: &Log, n: u64) -> Vec<Vec<u8>> {
    let entries: Vec<Vec<u8>> = log
        .entries(0, n)
        .map(|kv| {
            let (_, v) = kv.expect("read entry");
            v.to_vec()
        })
        .collect();
    assert_eq!(entries.len() as u64, n);
    entries
}

fn audit(log: &Log) -> claimledger::log::VerifyReport {
    log.verify(&mut |_| {}).expect("verify runs")
}

// ---------------------------------------------------------------------------------------------
// Known-answer vectors
//
// From github.com/transparency-dev/merkle: testonly/constants.go (LeafInputs, NodeHashes,
// RootHashes; commit 582a6ad190b6848f1d26f8bf08ddef29955d9db1) and proof/verify_test.go
// (inclusionProofs, consistencyProofs; commit 02194e9afb6c1d95b5381350007963aa70fff472). They
// are the RFC 6962 vectors of Certificate Transparency's merkle_tree_test.cc. In verify_test.go
// the inclusion vectors' `leaf` is 1-based; below the indexes are 0-based.
// ---------------------------------------------------------------------------------------------

fn leaf_inputs() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| unhex(s))
    .collect()
}

/// RootHashes()[1..=8]: the roots of the trees of the first 1..=8 leaf inputs.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// NodeHashes()[0]: the leaf hashes of the eight leaf inputs.
const LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// (0-based leaf index, tree size, proof).
fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (0, 1, vec![]),
        (
            0,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            5,
            8,
            vec![
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            3,
            vec![h(
                "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            )],
        ),
        (
            1,
            5,
            vec![
                h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
    ]
}

/// (old size, new size, proof).
fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
    vec![
        (1, 1, vec![]),
        (
            1,
            8,
            vec![
                h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
            ],
        ),
        (
            6,
            8,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
        (
            2,
            5,
            vec![
                h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            ],
        ),
        (
            6,
            7,
            vec![
                h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
            ],
        ),
    ]
}

#[test]
fn rfc6962_leaf_hashes_and_roots_of_sizes_1_to_8() {
    let leaves = leaf_inputs();
    for (i, l) in leaves.iter().enumerate() {
        assert_eq!(record_hash(l), h(LEAF_HASHES[i]), "leaf hash {i}");
        assert_eq!(leaf_hash(l), h(LEAF_HASHES[i]), "our leaf_hash {i}");
    }
    let tree = MemTree::of(&leaves);
    assert_eq!(tree.root(0), EMPTY_HASH);
    assert_eq!(
        EMPTY_HASH,
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    for n in 1..=8u64 {
        assert_eq!(tree.root(n), h(ROOTS[n as usize - 1]), "root of size {n}");
    }
}

#[test]
fn rfc6962_inclusion_proof_vectors() {
    let leaves = leaf_inputs();
    let tree = MemTree::of(&leaves);
    for (index, size, want) in inclusion_vectors() {
        let got = prove_record(size, index, &tree).expect("prove_record");
        assert_eq!(got, want, "inclusion proof of {index} in {size}");
        let root = h(ROOTS[size as usize - 1]);
        let leaf = h(LEAF_HASHES[index as usize]);
        check_record(&want, size, root, index, leaf).expect("vector verifies");
        // A wrong index, leaf or root must not verify.
        if size > 1 {
            let other = (index + 1) % size;
            assert!(check_record(&want, size, root, other, leaf).is_err());
        }
        assert!(check_record(&want, size, root, index, flip(&leaf, 0)).is_err());
        assert!(check_record(&want, size, flip(&root, 31), index, leaf).is_err());
    }
}

#[test]
fn rfc6962_consistency_proof_vectors() {
    let leaves = leaf_inputs();
    let tree = MemTree::of(&leaves);
    for (old, new, want) in consistency_vectors() {
        let got = prove_tree(new, old, &tree).expect("prove_tree");
        assert_eq!(got, want, "consistency proof {old} -> {new}");
        let old_root = h(ROOTS[old as usize - 1]);
        let new_root = h(ROOTS[new as usize - 1]);
        check_tree(&want, new, new_root, old, old_root).expect("vector verifies");
        if old != new {
            assert!(check_tree(&want, new, old_root, old, new_root).is_err());
            assert!(check_tree(&want, new, new_root, old, flip(&old_root, 7)).is_err());
        }
    }
}

/// The log end to end against the independent in-memory tree: the standard leaf inputs (and
/// more) are appended as bodies, and for every size the log's root (and the root rebuilt by
/// its own offline audit, a separate compact-tree implementation) must equal the root that
/// `tlog_tiles` computes over the stored entry bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_roots_agree_with_an_independent_tree_at_every_size() {
    let dir = temp();
    let log = open(dir.path());
    let mut bodies = leaf_inputs();
    for i in 0..40u32 {
        bodies.push(format!("body {i}").repeat(i as usize % 5 + 1).into_bytes());
    }
    assert_eq!(log.root_at(0).unwrap(), EMPTY_HASH);

    let mut tree = MemTree::default();
    for (i, body) in bodies.iter().enumerate() {
        let n = i as u64 + 1;
        let r = log.append("tester", body.clone()).await.expect("append");
        assert_eq!(r.index, i as u64);
        let bytes = log.entry(r.index).unwrap().expect("stored entry");
        let env = Envelope::decode(&bytes[..]).expect("decodes");
        assert_eq!(&env.body, body, "the body is stored as given");
        assert_eq!(record_hash(&bytes), r.leaf_hash);
        tree.push(&bytes);

        let want = tree.root(n);
        assert_eq!(log.root_at(n).unwrap(), want, "root_at({n})");
        assert_eq!(r.checkpoint.size, n);
        assert_eq!(r.checkpoint.root, want, "receipt checkpoint root at {n}");
        let report = audit(&log);
        assert!(report.ok(), "audit at {n}: {report:?}");
        assert_eq!(report.root, Some(want), "audit's compact tree root at {n}");
    }
    // Earlier sizes stay answerable after later appends.
    let n = bodies.len() as u64;
    for m in 0..=n {
        assert_eq!(
            log.root_at(m).unwrap(),
            tree.root(m),
            "root_at({m}) at the end"
        );
    }
    close(log).await;
}

// ---------------------------------------------------------------------------------------------
// Proofs: property test over the tree math, and a real log
// ---------------------------------------------------------------------------------------------

fn leaf_data(seed: u64, i: u64) -> Vec<u8> {
    format!("leaf {seed} #{i}").into_bytes()
}

/// Every inclusion proof verifies, and flipping any byte of any proof hash or of the leaf
/// data makes it fail.
fn check_inclusion_exhaustively(tree: &MemTree, seed: u64, t: u64, i: u64) {
    let root = tree.root(t);
    let data = leaf_data(seed, i);
    let leaf = record_hash(&data);
    let proof = prove_record(t, i, tree).expect("prove_record");
    check_record(&proof, t, root, i, leaf).expect("inclusion proof verifies");
    for k in 0..proof.len() {
        for b in 0..32 {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], b);
            assert!(
                check_record(&bad, t, root, i, leaf).is_err(),
                "flipped byte {b} of proof hash {k} (t={t}, i={i}) still verifies"
            );
        }
    }
    for b in 0..data.len() {
        let mut bad = data.clone();
        bad[b] ^= 0x80;
        assert!(
            check_record(&proof, t, root, i, record_hash(&bad)).is_err(),
            "flipped byte {b} of leaf {i} (t={t}) still verifies"
        );
    }
}

/// Every consistency proof verifies, and flipping any byte of any proof hash or of the old
/// root makes it fail.
fn check_consistency_exhaustively(tree: &MemTree, t: u64, n: u64) {
    let new_root = tree.root(t);
    let old_root = tree.root(n);
    let proof = prove_tree(t, n, tree).expect("prove_tree");
    check_tree(&proof, t, new_root, n, old_root).expect("consistency proof verifies");
    for k in 0..proof.len() {
        for b in 0..32 {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k], b);
            assert!(
                check_tree(&bad, t, new_root, n, old_root).is_err(),
                "flipped byte {b} of proof hash {k} ({n} -> {t}) still verifies"
            );
        }
    }
    for b in 0..32 {
        assert!(
            check_tree(&proof, t, new_root, n, flip(&old_root, b)).is_err(),
            "flipped byte {b} of the old root ({n} -> {t}) still verifies"
        );
        assert!(
            check_tree(&proof, t, flip(&new_root, b), n, old_root).is_err(),
            "flipped byte {b} of the new root ({n} -> {t}) still verifies"
        );
    }
}

fn tree_case() -> impl Strategy<Value = (u64, u64, u64, u64)> {
    (1u64..=300, any::<u64>()).prop_flat_map(|(t, seed)| (Just(t), 0..t, 1..=t, Just(seed)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn proofs_verify_and_any_flipped_byte_fails((t, i, n, seed) in tree_case()) {
        let leaves: Vec<Vec<u8>> = (0..t).map(|k| leaf_data(seed, k)).collect();
        let tree = MemTree::of(&leaves);
        check_inclusion_exhaustively(&tree, seed, t, i);
        check_consistency_exhaustively(&tree, t, n);
        // The same index in a smaller tree that still contains it.
        let t2 = (i + 1).max(n);
        check_inclusion_exhaustively(&tree, seed, t2, i);
    }
}

/// The same properties against a real log of 200 entries: proofs from the log, roots from
/// its signed checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_log_proofs_verify_and_flipped_bytes_fail() {
    const N: u64 = 200;
    let dir = temp();
    let log = open(dir.path());
    let bodies: Vec<Vec<u8>> = (0..N).map(|i| format!("entry {i}").into_bytes()).collect();
    append_all(&log, bodies).await;
    assert_eq!(log.size(), N);

    let entries = stored_entries(&log, N);
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let vk = log.checkpointer().verifier_key().to_string();
    let mut roots: HashMap<u64, Hash> = HashMap::new();
    for t in 1..=N {
        let cp = log.checkpoint_at(t).expect("checkpoint_at");
        let checked = verify_checkpoint(cp.note.as_bytes(), &vk, DEFAULT_ORIGIN)
            .expect("checkpoint signature");
        assert_eq!((checked.size, checked.root), (t, cp.root));
        assert_eq!(cp.root, log.root_at(t).unwrap());
        roots.insert(t, cp.root);
    }
    let latest = log.latest_checkpoint().unwrap();
    assert_eq!(latest.size, N);
    assert_eq!(latest.root, roots[&N]);

    for i in 0..N {
        for t in [i + 1, (i + 1).max(N / 2 + 7), N] {
            let proof = log.inclusion_proof(i, t).expect("inclusion_proof");
            check_record(&proof, t, roots[&t], i, leaves[i as usize])
                .unwrap_or_else(|e| panic!("inclusion {i} in {t}: {e}"));
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], (i as usize + k) % 32);
                assert!(check_record(&bad, t, roots[&t], i, leaves[i as usize]).is_err());
            }
            let mut bad_entry = entries[i as usize].clone();
            let at = (i as usize * 7) % bad_entry.len();
            bad_entry[at] ^= 0x01;
            assert!(check_record(&proof, t, roots[&t], i, leaf_hash(&bad_entry)).is_err());
        }
    }
    for old in 1..=N {
        for new in [old, (old + 13).min(N), N] {
            let proof = log.consistency_proof(old, new).expect("consistency_proof");
            check_tree(&proof, new, roots[&new], old, roots[&old])
                .unwrap_or_else(|e| panic!("consistency {old} -> {new}: {e}"));
            for k in 0..proof.len() {
                let mut bad = proof.clone();
                bad[k] = flip(&bad[k], (old as usize + k) % 32);
                assert!(check_tree(&bad, new, roots[&new], old, roots[&old]).is_err());
            }
            if old != new && old > 1 {
                assert!(check_tree(&proof, new, roots[&new], old, roots[&(old - 1)]).is_err());
            }
        }
    }
    // From the empty tree the proof is empty (RFC 9162 §2.1.4).
    assert!(log.consistency_proof(0, N).unwrap().is_empty());
    close(log).await;
}

// ---------------------------------------------------------------------------------------------
// Receipts and checkpoint signatures
// ---------------------------------------------------------------------------------------------

fn verify_note_with(note: &str, verifier_key: &str) -> Result<Vec<u8>, String> {
    let verifier = StandardVerifier::new(verifier_key).map_err(|e| e.to_string())?;
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|e| e.to_string())?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| e.to_string())?;
    Ok(parsed.text().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_offline_and_checkpoints_from_another_key_are_rejected() {
    let dir_a = temp();
    let dir_b = temp();
    let a = open(dir_a.path());
    let b = open(dir_b.path());
    let vk_a = a.checkpointer().verifier_key().to_string();
    let vk_b = b.checkpointer().verifier_key().to_string();
    assert_ne!(vk_a, vk_b, "each data directory has its own key");
    assert!(vk_a.starts_with(&format!("{DEFAULT_ORIGIN}+")));

    let bodies: Vec<Vec<u8>> = (0..60).map(|i| format!("claim {i}").into_bytes()).collect();
    let receipts = append_all(&a, bodies.clone()).await;
    let receipts_b = append_all(&b, bodies[..5].to_vec()).await;

    for r in &receipts {
        // The proof, the root and the checkpoint come from one tree size.
        assert!(r.index < r.checkpoint.size);
        check_record(
            &r.inclusion_proof,
            r.checkpoint.size,
            r.checkpoint.root,
            r.index,
            r.leaf_hash,
        )
        .unwrap_or_else(|e| panic!("receipt {}: {e}", r.index));
        let stored = a.entry(r.index).unwrap().expect("entry stored");
        assert_eq!(leaf_hash(&stored), r.leaf_hash);
        assert_eq!(a.leaf_hash_at(r.index).unwrap(), r.leaf_hash);

        // The note verifies with the signed_note crate's own verifier, and its text is the
        // checkpoint the receipt describes.
        let text = verify_note_with(&r.checkpoint.note, &vk_a).expect("note verifies");
        let cp = tlog_tiles::Checkpoint::from_bytes(&text).expect("checkpoint text");
        assert_eq!(cp.origin(), DEFAULT_ORIGIN);
        assert_eq!(cp.size(), r.checkpoint.size);
        assert_eq!(*cp.hash(), r.checkpoint.root);
        assert_eq!(cp.hash(), &a.root_at(r.checkpoint.size).unwrap());

        // Another key does not vouch for it.
        assert!(verify_note_with(&r.checkpoint.note, &vk_b).is_err());
        assert!(verify_checkpoint(r.checkpoint.note.as_bytes(), &vk_b, DEFAULT_ORIGIN).is_err());
    }
    // B's checkpoints (same origin, other key) are rejected by A's verifier and by A's log.
    for r in &receipts_b {
        verify_note_with(&r.checkpoint.note, &vk_b).expect("B verifies its own");
        assert!(verify_note_with(&r.checkpoint.note, &vk_a).is_err());
        assert!(a
            .checkpointer()
            .verify(r.checkpoint.note.as_bytes())
            .is_err());
    }
    // A's note with its text altered (a different size) no longer verifies. Receipts of
    // concurrent appends come back in any order, so take the one with the largest checkpoint.
    let newest = receipts
        .iter()
        .max_by_key(|r| r.checkpoint.size)
        .expect("receipts");
    let note = &newest.checkpoint.note;
    let size_line = format!("\n{}\n", newest.checkpoint.size);
    assert!(note.contains(&size_line));
    let forged = note.replacen(
        &size_line,
        &format!("\n{}\n", newest.checkpoint.size + 1),
        1,
    );
    assert!(verify_note_with(&forged, &vk_a).is_err());
    assert!(verify_checkpoint(forged.as_bytes(), &vk_a, DEFAULT_ORIGIN).is_err());
    // A wrong origin is rejected even with the right key.
    assert!(verify_checkpoint(note.as_bytes(), &vk_a, "other.example/log").is_err());

    close(a).await;
    close(b).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp();
    let log = open(dir.path());
    let vk = log.checkpointer().verifier_key().to_string();
    close(log).await;
    let path = dir.path().join(claimledger::log::checkpoint::KEY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // The key is reused on the next open.
    let log = open(dir.path());
    assert_eq!(log.checkpointer().verifier_key(), vk);
    close(log).await;
}

// ---------------------------------------------------------------------------------------------
// Out of range
// ---------------------------------------------------------------------------------------------

fn out_of_range<T: std::fmt::Debug>(r: Result<T, LogError>) {
    match r {
        Err(LogError::OutOfRange { .. }) => {}
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_tree_are_typed_errors() {
    let dir = temp();
    let log = open(dir.path());

    // The empty log.
    assert_eq!(log.root_at(0).unwrap(), EMPTY_HASH);
    out_of_range(log.root_at(1));
    out_of_range(log.inclusion_proof(0, 0));
    out_of_range(log.inclusion_proof(0, 1));
    out_of_range(log.consistency_proof(0, 1));
    out_of_range(log.checkpoint_at(1));

    append_all(&log, (0..5u8).map(|i| vec![i; 10]).collect()).await;
    assert_eq!(log.size(), 5);
    out_of_range(log.root_at(6));
    out_of_range(log.root_at(u64::MAX));
    out_of_range(log.inclusion_proof(5, 5));
    out_of_range(log.inclusion_proof(4, 6));
    out_of_range(log.inclusion_proof(3, 3));
    out_of_range(log.inclusion_proof(u64::MAX, 5));
    out_of_range(log.inclusion_proof(0, u64::MAX));
    out_of_range(log.consistency_proof(1, 6));
    out_of_range(log.consistency_proof(6, 7));
    out_of_range(log.consistency_proof(1, u64::MAX));
    out_of_range(log.checkpoint_at(6));
    out_of_range(log.checkpoint_at(u64::MAX));
    // An old size above the new one is not a range problem but an invalid request.
    assert!(matches!(
        log.consistency_proof(4, 3),
        Err(LogError::InvalidArgument(_))
    ));
    // Everything up to the size still answers.
    for t in 1..=5 {
        log.root_at(t).unwrap();
        log.checkpoint_at(t).unwrap();
        for i in 0..t {
            log.inclusion_proof(i, t).unwrap();
        }
        log.consistency_proof(t, 5).unwrap();
    }
    close(log).await;
}

// ---------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------

/// Where the packed value of entry `index` (stored hashes ‖ entry bytes) lies in the data
/// directory's `entries/data`, read from `entries/ends` (one be64 end offset per entry).
fn entry_span(dir: &Path, index: u64) -> (u64, u64) {
    let ends = std::fs::read(dir.join("entries").join("ends")).unwrap();
    let end = |i: u64| {
        let at = usize::try_from(i).unwrap() * 8;
        u64::from_be_bytes(ends[at..at + 8].try_into().unwrap())
    };
    (if index == 0 { 0 } else { end(index - 1) }, end(index))
}

/// The packed value of entry `index`, read straight from the entry files.
fn packed_entry(dir: &Path, index: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let (start, end) = entry_span(dir, index);
    let mut v = vec![0u8; usize::try_from(end - start).unwrap()];
    std::fs::File::open(dir.join("entries").join("data"))
        .unwrap()
        .read_exact_at(&mut v, start)
        .unwrap();
    v
}

/// Replaces the packed value of entry `index` with `f(value)` (of the same length) directly in
/// the entry files.
fn rewrite_packed(dir: &Path, index: u64, f: impl FnOnce(&mut Vec<u8>)) {
    use std::os::unix::fs::FileExt;
    let (start, _) = entry_span(dir, index);
    let mut v = packed_entry(dir, index);
    let len = v.len();
    f(&mut v);
    assert_eq!(v.len(), len, "an entry rewritten in place keeps its length");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("entries").join("data"))
        .unwrap();
    file.write_all_at(&v, start).unwrap();
    file.sync_all().unwrap();
}

/// Retries `open` while sled reports its directory locked: sled releases its file lock from a
/// background thread after the last handle drops, so a reopen right after a refused
/// `Log::open` may briefly find the directory still locked.
fn while_locked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    for _ in 0..100 {
        match open() {
            Ok(v) => return v,
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    panic!("the directory stayed locked for 2 s")
}

fn rewrite_entry(dir: &Path, index: u64, f: impl FnOnce(&mut Vec<u8>)) {
    rewrite_packed(dir, index, f)
}

fn offline_verify(dir: &Path) -> claimledger::log::VerifyReport {
    let offline = while_locked(|| Offline::open(dir));
    offline.verify(&mut |_| {}).expect("verify runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_stored_entry_is_named_by_verify_and_refused_on_open() {
    const N: u64 = 100;
    const BAD: u64 = 37;
    let dir = temp();
    let log = open(dir.path());
    append_all(
        &log,
        (0..N)
            .map(|i| format!("entry number {i}").into_bytes())
            .collect(),
    )
    .await;
    close(log).await;

    let original = packed_entry(dir.path(), BAD);
    assert!(offline_verify(dir.path()).ok());

    // Flip bytes in different places: the stored value is the hash count, the hashes the
    // append stored (leaf hash first), then the entry bytes (index tag, prev hash, …, body).
    let header = 1 + 32 * usize::from(original[0]);
    let positions = [
        0,
        5,
        header - 1,
        header,
        header + 5,
        (header + original.len()) / 2,
        original.len() - 1,
    ];
    for &at in &positions {
        rewrite_entry(dir.path(), BAD, |b| b[at] ^= 0x01);

        let report = offline_verify(dir.path());
        assert_eq!(
            report.first_bad_index,
            Some(BAD),
            "byte {at}: verify must name index {BAD}: {report:?}"
        );
        assert!(!report.ok());

        match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
            Err(LogError::Tampered { index, reason }) => {
                assert_eq!(index, BAD, "byte {at}: open names the index ({reason})")
            }
            Err(e) => panic!("byte {at}: expected Tampered, got {e}"),
            Ok(_) => panic!("byte {at}: a tampered log opened"),
        }

        // Opened without the re-hash, the log never serves the changed entry: reading it
        // fails, naming it, or gives the original bytes (when only a hash above the leaf's
        // changed, which the audit names and proofs would show).
        let quick = Options {
            rehash_on_open: false,
            ..Options::default()
        };
        if let Ok(log) = Log::open(dir.path(), quick, Arc::new(NoApply)) {
            match log.entry(BAD) {
                Err(LogError::Tampered { index, .. }) => assert_eq!(index, BAD, "byte {at}"),
                Ok(Some(bytes)) => assert_eq!(&bytes[..], &original[header..], "byte {at}"),
                other => panic!("byte {at}: {other:?}"),
            }
            close(log).await;
        }

        // Put it back: the log verifies and opens again.
        let orig = original.clone();
        rewrite_entry(dir.path(), BAD, move |b| *b = orig);
        assert!(offline_verify(dir.path()).ok());
    }

    // An end offset moved by one byte, still in order: entries BAD and BAD + 1 change shape.
    // Both are refused when read (without the re-hash on open), and the audit names BAD.
    let ends_path = dir.path().join("entries").join("ends");
    let ends = std::fs::read(&ends_path).unwrap();
    let mut moved = ends.clone();
    let at = BAD as usize * 8;
    let end = u64::from_be_bytes(moved[at..at + 8].try_into().unwrap());
    moved[at..at + 8].copy_from_slice(&(end - 1).to_be_bytes());
    std::fs::write(&ends_path, &moved).unwrap();
    assert_eq!(offline_verify(dir.path()).first_bad_index, Some(BAD));
    let quick = Options {
        rehash_on_open: false,
        ..Options::default()
    };
    let log = Log::open(dir.path(), quick, Arc::new(NoApply)).unwrap();
    for i in [BAD, BAD + 1] {
        match log.entry(i) {
            Err(LogError::Tampered { index, .. }) => assert_eq!(index, i),
            other => panic!("entry {i} after its end moved: {other:?}"),
        }
    }
    assert!(log.entry(BAD - 1).unwrap().is_some());
    close(log).await;
    std::fs::write(&ends_path, &ends).unwrap();
    assert!(offline_verify(dir.path()).ok());

    // A flipped stored hash (not an entry). Offline verify compares every stored hash with the
    // one rebuilt from the entries, and names the entry whose append wrote it.
    let leaf_at = tlog_tiles::stored_hash_index(0, BAD);
    let original_hash = rewrite_stored_hash(dir.path(), leaf_at, |v| v[3] ^= 0x40);
    assert_eq!(offline_verify(dir.path()).first_bad_index, Some(BAD));
    rewrite_stored_hash(dir.path(), leaf_at, |v| *v = original_hash);
    assert!(offline_verify(dir.path()).ok());

    // The start-up check reads the stored roots of the complete subtrees covering the tree
    // (for 100 entries: [0,64), [64,96), [96,100)); a flip there is refused on open even
    // without re-hashing, naming the entry that completed that subtree (99).
    let top = tlog_tiles::stored_hash_index(2, 96 / 4);
    rewrite_stored_hash(dir.path(), top, |v| v[0] ^= 0x01);
    assert_eq!(offline_verify(dir.path()).first_bad_index, Some(N - 1));
    for rehash_on_open in [false, true] {
        let opts = Options {
            rehash_on_open,
            ..Options::default()
        };
        match Log::open(dir.path(), opts, Arc::new(NoApply)) {
            Err(LogError::Tampered { index, .. }) => assert_eq!(index, N - 1),
            Err(e) => panic!("expected Tampered, got {e}"),
            Ok(_) => panic!("a log with a bad stored subtree root opened"),
        }
    }
}

/// Replaces stored hash `index` with `f(hash)` directly in the entry files; returns the
/// original.
fn rewrite_stored_hash(dir: &Path, index: u64, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    // Stored hash (level, k) lives in the value of the entry that completed that subtree,
    // (k + 1)·2^level − 1, as hash number `level` after the count byte.
    let (level, k) = tlog_tiles::split_stored_hash_index(index);
    let owner = ((k + 1) << level) - 1;
    let at = 1 + 32 * usize::from(level);
    let mut original = Vec::new();
    rewrite_packed(dir, owner, |value| {
        original = value[at..at + 32].to_vec();
        let mut h = original.clone();
        f(&mut h);
        value[at..at + 32].copy_from_slice(&h);
    });
    original
}

// ---------------------------------------------------------------------------------------------
// Reopening
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_everything_and_appends_continue_the_chain() {
    let dir = temp();
    let log = open(dir.path());
    append_all(
        &log,
        (0..30).map(|i| format!("a{i}").into_bytes()).collect(),
    )
    .await;
    let size = log.size();
    let root = log.root_at(size).unwrap();
    let latest = log.latest_checkpoint().unwrap();
    let entries = stored_entries(&log, size);
    let vk = log.checkpointer().verifier_key().to_string();
    close(log).await;

    let log = open(dir.path());
    assert_eq!(log.size(), size);
    assert_eq!(log.root_at(size).unwrap(), root);
    assert_eq!(log.latest_checkpoint().unwrap(), latest);
    assert_eq!(stored_entries(&log, size), entries);
    assert_eq!(log.checkpointer().verifier_key(), vk);

    // Appends continue where the log stopped, one at a time and then concurrently.
    let r = log
        .append("tester", b"after reopen".to_vec())
        .await
        .unwrap();
    assert_eq!(r.index, size);
    append_all(
        &log,
        (0..19).map(|i| format!("b{i}").into_bytes()).collect(),
    )
    .await;
    let total = log.size();
    assert_eq!(total, size + 20);
    // The old tree is a prefix of the new one.
    let proof = log.consistency_proof(size, total).unwrap();
    check_tree(&proof, total, log.root_at(total).unwrap(), size, root).unwrap();
    close(log).await;

    // Reopen once more and check every link of the chain.
    let log = open(dir.path());
    assert_eq!(log.size(), total);
    let all = stored_entries(&log, total);
    assert_eq!(&all[..size as usize], &entries[..]);
    let mut prev = [0u8; 32];
    for (i, bytes) in all.iter().enumerate() {
        let env = Envelope::decode(&bytes[..]).expect("entry decodes");
        assert_eq!(env.index, i as u64);
        assert_eq!(env.prev_hash, prev.to_vec(), "prev_hash link of {i}");
        assert_eq!(env.actor, "tester");
        assert!(env.recorded_at.is_some());
        prev = leaf_hash(bytes).0;
    }
    assert!(audit(&log).ok());
    close(log).await;
}

/// A data directory written before the entry files kept its entries in sled, under `e` ‖
/// be64(index). Opening it moves them into the entry files (and out of sled) once; the log then
/// reads, verifies and appends as any other. A move cut short by a crash is done again: before
/// its marker key, from the start (whatever the files already held); after it, by removing
/// what sled still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_with_its_entries_in_sled_has_them_moved_on_open() {
    let dir = temp();
    let log = open(dir.path());
    append_all(
        &log,
        (0..300).map(|i| format!("old {i}").into_bytes()).collect(),
    )
    .await;
    let size = log.size();
    let root = log.root_at(size).unwrap();
    let entries = stored_entries(&log, size);
    close(log).await;

    // Rewrite it in the old layout: every packed value under its `e` key, no marker; the
    // entry files as a move cut short left them, with the first 100 entries and then garbage.
    let packed: Vec<Vec<u8>> = (0..size).map(|i| packed_entry(dir.path(), i)).collect();
    let put_in_sled = |keep_marker: bool, which: std::ops::Range<u64>| {
        let db = while_locked(|| sled::open(dir.path().join("sled")));
        for i in which {
            let mut k = vec![b'e'];
            k.extend_from_slice(&i.to_be_bytes());
            db.insert(k, packed[i as usize].clone()).unwrap();
        }
        if !keep_marker {
            db.remove(b"mentry-files").unwrap();
        }
        db.flush().unwrap();
    };
    put_in_sled(false, 0..size);
    let ends_path = dir.path().join("entries").join("ends");
    let mut ends = std::fs::read(&ends_path).unwrap();
    for b in &mut ends[100 * 8..size as usize * 8] {
        *b = 0x5a;
    }
    std::fs::write(&ends_path, &ends).unwrap();

    let log = open(dir.path());
    assert_eq!(log.size(), size);
    assert_eq!(log.root_at(size).unwrap(), root);
    assert_eq!(stored_entries(&log, size), entries);
    assert!(audit(&log).ok());
    let r = log
        .append("tester", b"after the move".to_vec())
        .await
        .unwrap();
    assert_eq!(r.index, size);
    close(log).await;

    for i in 0..size {
        assert_eq!(
            packed_entry(dir.path(), i),
            packed[i as usize],
            "entry {i} moved"
        );
    }
    {
        let db = while_locked(|| sled::open(dir.path().join("sled")));
        assert_eq!(
            db.scan_prefix(b"e").count(),
            0,
            "sled no longer holds the entries"
        );
    }
    let report = offline_verify(dir.path());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.size, size + 1);

    // Cut short after the marker: some entries still in sled are removed on the next open.
    put_in_sled(true, 10..20);
    let report = offline_verify(dir.path());
    assert!(report.ok(), "{report:?}");
    {
        let db = while_locked(|| sled::open(dir.path().join("sled")));
        assert_eq!(db.scan_prefix(b"e").count(), 0, "the leftovers are removed");
    }

    // An empty value under an old `e` key (a packed entry never is) is not moved: opening is
    // refused naming it, sled keeps every entry and no marker is written.
    let all: Vec<Vec<u8>> = (0..=size).map(|i| packed_entry(dir.path(), i)).collect();
    {
        let db = while_locked(|| sled::open(dir.path().join("sled")));
        for (i, v) in all.iter().enumerate() {
            let mut k = vec![b'e'];
            k.extend_from_slice(&(i as u64).to_be_bytes());
            db.insert(k, if i == 150 { Vec::new() } else { v.clone() })
                .unwrap();
        }
        db.remove(b"mentry-files").unwrap();
        db.flush().unwrap();
    }
    match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
        Err(LogError::Tampered { index, .. }) => assert_eq!(index, 150),
        Err(e) => panic!("expected entry 150 refused, got {e}"),
        Ok(_) => panic!("an empty entry was moved"),
    }
    let db = while_locked(|| sled::open(dir.path().join("sled")));
    assert_eq!(
        db.scan_prefix(b"e").count() as u64,
        size + 1,
        "sled keeps them"
    );
    assert!(db.get(b"mentry-files").unwrap().is_none(), "no marker");
}

/// Writes what a group of entries of `sizes` bytes, appended after entry `first - 1` and never
/// committed, leaves in the entry files: garbage data and their end offsets.
fn uncommitted_tail(dir: &Path, first: u64, sizes: &[u64]) {
    use std::os::unix::fs::FileExt;
    let (_, mut end) = entry_span(dir, first - 1);
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("entries").join("data"))
        .unwrap();
    let ends = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("entries").join("ends"))
        .unwrap();
    for (k, &size) in sizes.iter().enumerate() {
        data.write_all_at(&vec![0xa5; size as usize], end).unwrap();
        end += size;
        ends.write_all_at(&end.to_be_bytes(), (first + k as u64) * 8)
            .unwrap();
    }
}

/// The entry files must hold every entry sled counts: shortened, or removed, the log is refused
/// with the entries that are missing. What they hold beyond sled's size (a group written before a
/// crash and never committed) is not part of the log, and the next append takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_files_missing_entries_are_refused_and_an_uncommitted_tail_is_overwritten() {
    let dir = temp();
    let log = open(dir.path());
    append_all(
        &log,
        (0..50).map(|i| format!("entry {i}").into_bytes()).collect(),
    )
    .await;
    close(log).await;
    let ends_path = dir.path().join("entries").join("ends");

    // An uncommitted tail: one more entry, as a crash between the entry files and sled's
    // commit leaves it.
    uncommitted_tail(dir.path(), 50, &[40]);
    let log = open(dir.path());
    assert_eq!(stored_entries(&log, 50).len(), 50);
    let r = log.append("tester", b"fifty".to_vec()).await.unwrap();
    assert_eq!(r.index, 50);
    close(log).await;
    let report = offline_verify(dir.path());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.size, 51);

    // A longer uncommitted tail of large entries, then a shorter committed group: the stale
    // ends after it still increase within the data, and stay hidden.
    uncommitted_tail(dir.path(), 51, &[100_000; 6]);
    let log = open(dir.path());
    let r = log.append("tester", b"fifty-one".to_vec()).await.unwrap();
    assert_eq!(r.index, 51);
    close(log).await;
    let log = open(dir.path());
    assert_eq!(log.size(), 52);
    assert_eq!(stored_entries(&log, 52)[51], {
        let mut v = packed_entry(dir.path(), 51);
        let (_, at) = claimledger::log::entry::unpack(&v).unwrap();
        v.drain(..at);
        v
    });
    close(log).await;
    let report = offline_verify(dir.path());
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.size, 52);

    // Shortened: the last eleven entries' ends are gone.
    let ends = std::fs::read(&ends_path).unwrap();
    std::fs::write(&ends_path, &ends[..41 * 8]).unwrap();
    match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
        Err(e) => assert!(
            e.to_string().contains("entries 41 to 51 are missing"),
            "{e}"
        ),
        Ok(_) => panic!("a log missing entries opened"),
    }
    // The offline audit runs, and fails at the first entry missing.
    let report = offline_verify(dir.path());
    assert!(!report.ok(), "{report:?}");
    assert_eq!(report.first_bad_index, Some(41), "{report:?}");
    assert_eq!(report.size, 52);
    // Reindexing would rebuild from part of the log: refused.
    let offline = while_locked(|| Offline::open(dir.path()));
    match offline.reindex(&NoApply, &mut |_, _| {}) {
        Err(e) => assert!(
            e.to_string().contains("entries 41 to 51 are missing"),
            "{e}"
        ),
        Ok(n) => panic!("reindex ran over a log missing entries ({n})"),
    }
    drop(offline);
    // Removed altogether.
    std::fs::remove_dir_all(dir.path().join("entries")).unwrap();
    match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
        Err(e) => assert!(e.to_string().contains("entries 0 to 51 are missing"), "{e}"),
        Ok(_) => panic!("a log without its entries opened"),
    }
}

// ---------------------------------------------------------------------------------------------
// Many concurrent appenders
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_appends_get_contiguous_indexes_and_valid_receipts() {
    const TASKS: usize = 50;
    const EACH: usize = 40;
    let dir = temp();
    // A small queue so appenders really wait for room.
    let opts = Options {
        queue_capacity: 8,
        max_group: 64,
        ..Options::default()
    };
    let log = Log::open(dir.path(), opts, Arc::new(NoApply)).unwrap();
    let vk = log.checkpointer().verifier_key().to_string();

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(EACH);
                for k in 0..EACH {
                    let body = format!("task {t} append {k}").into_bytes();
                    out.push((body.clone(), log.append("tester", body).await.unwrap()));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = (TASKS * EACH) as u64;
    assert_eq!(all.len() as u64, total);
    assert_eq!(log.size(), total);

    let indexes: BTreeSet<u64> = all.iter().map(|(_, r)| r.index).collect();
    assert_eq!(indexes.len() as u64, total, "indexes are distinct");
    assert_eq!(
        indexes.iter().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );

    let mut checked_notes = HashMap::new();
    for (body, r) in &all {
        check_record(
            &r.inclusion_proof,
            r.checkpoint.size,
            r.checkpoint.root,
            r.index,
            r.leaf_hash,
        )
        .unwrap();
        let ok = *checked_notes.entry(r.checkpoint.size).or_insert_with(|| {
            verify_checkpoint(r.checkpoint.note.as_bytes(), &vk, DEFAULT_ORIGIN).is_ok()
        });
        assert!(ok, "checkpoint {} verifies", r.checkpoint.size);
        let stored = log.entry(r.index).unwrap().unwrap();
        assert_eq!(leaf_hash(&stored), r.leaf_hash);
        assert_eq!(&Envelope::decode(&stored[..]).unwrap().body, body);
    }
    let report = audit(&log);
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checked, total);
    close(log).await;
}

// ---------------------------------------------------------------------------------------------
// Large entries
// ---------------------------------------------------------------------------------------------

/// Entries near the largest allowed (65,535 bytes, what a tlog-tiles entry bundle holds) go
/// into the entry files, survive a reopen with their hashes, and verify; a larger one is
/// refused and writes nothing. State that large goes through sled's blobs: sled writes messages
/// over ~128 KiB (a node holding several large values) to files under `sled/blobs/`, outside
/// the data file the log fdatasyncs, and `Store::sync` fsyncs them too; this keeps that path
/// exercised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_and_state_survive_reopen_through_sled_blobs() {
    let dir = temp();
    let log = Log::open(dir.path(), Options::default(), Arc::new(KeepBodies)).unwrap();
    let too_big = log.append("test", vec![7u8; 70 * 1024]).await;
    assert!(
        matches!(
            too_big,
            Err(claimledger::log::AppendError::Log(LogError::TooLarge(_)))
        ),
        "an entry over 65,535 bytes is refused"
    );
    assert_eq!(log.size(), 0);
    let bodies: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 64 * 1000]).collect();
    let receipts = append_all(&log, bodies).await;
    close(log).await;
    let blobs = std::fs::read_dir(dir.path().join("sled").join("blobs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        blobs > 0,
        "expected sled to use blob files for nodes of 64 kB values"
    );

    let log = Log::open(dir.path(), Options::default(), Arc::new(KeepBodies)).unwrap();
    for (i, r) in receipts.iter().enumerate() {
        let stored = log.entry(r.index).unwrap().expect("entry stored");
        assert_eq!(leaf_hash(&stored), r.leaf_hash);
        let state = log
            .indexes()
            .get(&r.index.to_be_bytes())
            .unwrap()
            .expect("state kept");
        assert_eq!(&state[..], &vec![i as u8; 64 * 1000][..]);
    }
    close(log).await;
    assert!(offline_verify(dir.path()).ok());
}

/// A log's signing key is never silently replaced: without it, an existing log refuses to open
/// (a new key would sign checkpoints nobody can link to the old ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_on_an_existing_log_is_refused() {
    let dir = temp();
    let log = open(dir.path());
    append_all(&log, vec![b"one".to_vec(), b"two".to_vec()]).await;
    close(log).await;
    std::fs::remove_file(dir.path().join("log.key")).unwrap();
    match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
        Err(e) => assert!(e.to_string().contains("signing key"), "{e}"),
        Ok(_) => panic!("a log without its key opened"),
    }
    assert!(
        !dir.path().join("log.key").exists(),
        "no new key was written"
    );
}

/// If the writer dies (here: the domain hook panics), appends fail instead of hanging, and
/// `writer_health` closes, which is what turns the server's health to NOT_SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writer_fails_appends_and_is_reported() {
    struct Boom;
    impl claimledger::log::Apply for Boom {
        fn apply(
            &self,
            _: &mut claimledger::log::Ctx<'_>,
            _: &claimledger::log::EntryMeta,
            body: &[u8],
        ) -> Result<(), claimledger::log::Rejection> {
            assert!(body != b"boom", "the hook panics on purpose");
            Ok(())
        }
    }
    let dir = temp();
    let log = Log::open(dir.path(), Options::default(), Arc::new(Boom)).unwrap();
    log.append("t", b"fine".to_vec()).await.unwrap();
    assert!(log.append("t", b"boom".to_vec()).await.is_err());
    let mut health = log.writer_health();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while health.changed().await.is_ok() {}
    })
    .await
    .expect("the writer's end is reported");
    assert!(log.append("t", b"after".to_vec()).await.is_err());
    // What was acknowledged before is intact.
    assert_eq!(log.size(), 1);
}

/// A closed log of `n` entries "entry number i".
async fn numbered_log(n: u64) -> tempfile::TempDir {
    let dir = temp();
    let log = open(dir.path());
    append_all(
        &log,
        (0..n)
            .map(|i| format!("entry number {i}").into_bytes())
            .collect(),
    )
    .await;
    close(log).await;
    dir
}

/// An audit of a log of 4,096 entries or more reads it in two halves at once, `[0, m)` and
/// `[m, size)` with `m` the largest power of two below the size, and joins the two trees. A
/// flipped byte in either half, in the entry where the halves meet, and in the stored hash
/// that joins them (when the size is twice `m`) is named as in a single scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_in_two_halves_names_what_a_single_scan_names() {
    for n in [6_000u64, 8_192] {
        let dir = numbered_log(n).await;
        let report = offline_verify(dir.path());
        assert!(report.ok(), "{n}: {report:?}");
        assert_eq!((report.size, report.checked), (n, n));

        let flip = |at: u64| {
            rewrite_entry(dir.path(), at, |b| {
                let last = b.len() - 1;
                b[last] ^= 0x01
            })
        };
        // One flip in each half, at the seam, and one in each half at once (the first named).
        for bad in [
            [100, 100],
            [5_000, 5_000],
            [4_096, 4_096],
            [4_095, 4_095],
            [100, 5_000],
        ] {
            let originals: Vec<(u64, Vec<u8>)> = bad
                .iter()
                .map(|&i| (i, packed_entry(dir.path(), i)))
                .collect();
            flip(bad[0]);
            if bad[1] != bad[0] {
                flip(bad[1]);
            }
            let report = offline_verify(dir.path());
            assert_eq!(
                report.first_bad_index,
                Some(bad[0]),
                "{n} {bad:?}: {report:?}"
            );
            assert_eq!(report.checked, bad[0], "{n} {bad:?}");
            match Log::open(dir.path(), Options::default(), Arc::new(NoApply)) {
                Err(LogError::Tampered { index, .. }) => assert_eq!(index, bad[0]),
                Err(e) => panic!("{n} {bad:?}: expected Tampered, got {e}"),
                Ok(_) => panic!("{n} {bad:?}: a tampered log opened"),
            }
            for (i, orig) in originals {
                rewrite_entry(dir.path(), i, move |b| *b = orig);
            }
            assert!(offline_verify(dir.path()).ok(), "{n} {bad:?} restored");
        }
    }

    // A `prev_hash` of entry 4,096 pointing elsewhere: the link between the halves, checked
    // once both are done, is named as a single scan names it. The envelope starts after the
    // count and the stored hashes; its index (two varint bytes) and then its `prev_hash`.
    let dir = numbered_log(6_000).await;
    rewrite_entry(dir.path(), 4_096, |b| {
        let header = 1 + 32 * usize::from(b[0]);
        assert_eq!(&b[header..header + 5], &[0x08, 0x80, 0x20, 0x12, 0x20]);
        b[header + 9] ^= 0x01;
    });
    let report = offline_verify(dir.path());
    assert_eq!(report.first_bad_index, Some(4_096), "{report:?}");
    assert!(report.error.contains("prev_hash"), "{}", report.error);

    // 8,192 entries: the last entry's append stored the root of the whole tree, which joins
    // the two halves' subtrees; the audit checks it once both are rebuilt.
    let dir = numbered_log(8_192).await;
    let join = tlog_tiles::stored_hash_index(13, 0);
    let original = rewrite_stored_hash(dir.path(), join, |v| v[7] ^= 0x10);
    let report = offline_verify(dir.path());
    assert_eq!(report.first_bad_index, Some(8_191), "{report:?}");
    assert!(
        report.error.contains("does not match the entries"),
        "{}",
        report.error
    );
    rewrite_stored_hash(dir.path(), join, |v| *v = original);
    assert!(offline_verify(dir.path()).ok());
}
