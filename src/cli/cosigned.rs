//! Client-side checks of the cosigned checkpoint (SPEC §3 "Witnesses"): the CLI verifies the
//! log's signature and each `--witness-key`'s cosignature itself, and proves entries against
//! the cosigned checkpoint when it covers them, so a user who trusts the witnesses' keys does
//! not have to trust the server's word that they cosigned.

use anyhow::{anyhow, bail, Context};
use tlog_tiles::Hash;

use super::connect::{ClientOpts, Clients};
use super::proofs::hash32;
use crate::pb;
use crate::witness::cosignature::CosignatureVerifier;
use crate::witness::submit::cosigned;

/// What the CLI found out about the log's cosigned checkpoint.
pub struct Witnessed {
    /// How many witnesses the log requires; 0 when it has none.
    pub quorum: u32,
    /// The cosigned checkpoint (size, root), when there is one.
    pub cosigned: Option<(u64, Hash)>,
    /// Each `--witness-key`: its name and the time of its valid cosignature, if any.
    pub checked: Vec<(String, Option<u64>)>,
    /// Cosignature lines on the note that were not checked (no `--witness-key` was given).
    pub unchecked: usize,
}

impl Witnessed {
    /// Whether the cosigned checkpoint is the one of `size` entries with `root`.
    pub fn covers_exactly(&self, size: u64, root: Hash) -> bool {
        self.cosigned == Some((size, root))
    }

    /// Errs unless every `--witness-key` cosigned: a key the user asked for is a requirement.
    pub fn require_every_key(&self) -> anyhow::Result<()> {
        let Some((size, _)) = self.cosigned else {
            if self.checked.is_empty() {
                return Ok(());
            }
            bail!(
                "the log serves no cosigned checkpoint ({}), so no --witness-key can be checked",
                if self.quorum == 0 {
                    "it has no witnesses"
                } else {
                    "its witnesses have not cosigned one yet"
                }
            );
        };
        let missing: Vec<&str> = self
            .checked
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            let have: Vec<&str> = self
                .checked
                .iter()
                .filter(|(_, t)| t.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            bail!(
                "the cosigned checkpoint of size {size} has no valid cosignature by {} \
                 (valid: {})",
                missing.join(", "),
                if have.is_empty() {
                    "none of the given keys".to_string()
                } else {
                    have.join(", ")
                }
            );
        }
        Ok(())
    }
}

/// The `--witness-key` verifiers.
fn witness_keys(o: &ClientOpts) -> anyhow::Result<Vec<CosignatureVerifier>> {
    o.witness_keys
        .iter()
        .map(|k| CosignatureVerifier::new(k).with_context(|| format!("--witness-key {k:?}")))
        .collect()
}

/// Checks the cosigned note of a GetCheckpoint answer with the log's key (`--verifier-key`,
/// or else the one the server reports) and every `--witness-key`.
pub fn check(r: &pb::GetCheckpointResponse, o: &ClientOpts) -> anyhow::Result<Witnessed> {
    let keys = witness_keys(o)?;
    let mut w = Witnessed {
        quorum: r.witness_quorum,
        cosigned: None,
        checked: keys.iter().map(|k| (k.name().to_string(), None)).collect(),
        unchecked: 0,
    };
    if r.cosigned_note.is_empty() {
        return Ok(w);
    }
    let log_key = o.verifier_key.as_deref().unwrap_or(&r.verifier_key);
    let checked = cosigned::check(r.cosigned_note.as_bytes(), log_key, &keys)
        .map_err(|e| anyhow!("the cosigned checkpoint does not verify: {e}"))?;
    if checked.size != r.cosigned_size {
        bail!(
            "the server says the cosigned checkpoint has size {}, but its note has size {}",
            r.cosigned_size,
            checked.size
        );
    }
    if checked.size > r.size {
        bail!(
            "the cosigned checkpoint (size {}) is larger than the log's latest (size {})",
            checked.size,
            r.size
        );
    }
    w.cosigned = Some((checked.size, checked.root));
    for (slot, t) in w.checked.iter_mut().zip(checked.cosigned_at) {
        slot.1 = t;
    }
    if keys.is_empty() {
        // Every signature line but the log's own.
        w.unchecked = r
            .cosigned_note
            .lines()
            .filter(|l| l.starts_with("— "))
            .count()
            .saturating_sub(1);
    }
    Ok(w)
}

/// Fetches the latest checkpoint and checks its cosigned note ([`check`]).
pub async fn fetch(c: &mut Clients, o: &ClientOpts) -> anyhow::Result<Witnessed> {
    let r = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner();
    check(&r, o)
}

/// Checks that the tree of `new` entries with `new_root` extends the one of `old` entries with
/// `old_root`, with a consistency proof from the server.
pub async fn check_extends(
    c: &mut Clients,
    (old, old_root): (u64, Hash),
    (new, new_root): (u64, Hash),
) -> anyhow::Result<()> {
    if old == new {
        if old_root != new_root {
            bail!("two signed checkpoints of size {old} have different roots: the log forked");
        }
        return Ok(());
    }
    let r = c
        .log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: old,
            new_size: new,
        })
        .await?
        .into_inner();
    let hashes = r
        .hashes
        .iter()
        .map(|h| hash32(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tlog_tiles::check_tree(&hashes, new, new_root, old, old_root).map_err(|e| {
        anyhow!("the checkpoint of size {new} does not extend the one of size {old}: {e}")
    })
}

/// How a `claim status --proof` answer relates to the cosigned checkpoint.
pub enum StatusWitnessing {
    /// The log has no witnesses.
    None,
    /// The answer's own checkpoint is the cosigned one.
    Cosigned { size: u64 },
    /// The entries were proven against the cosigned checkpoint of `size`, and the answer's
    /// checkpoint of `answer_size` is consistent with it.
    ProvenAgainst { size: u64, answer_size: u64 },
    /// The cosigned checkpoint (if any) does not cover every entry of the claim yet.
    NotYet {
        answer_size: u64,
        cosigned: Option<u64>,
    },
}

/// Proves a `claim status --proof` answer's entries against the cosigned checkpoint when it
/// covers them all (checking that the answer's checkpoint and the cosigned one are one
/// history), which is stronger than the answer's own checkpoint alone: witnesses vouch that
/// everyone is shown that tree.
pub async fn prove_status(
    c: &mut Clients,
    w: &Witnessed,
    r: &pb::GetClaimStatusResponse,
    answer: (u64, Hash),
) -> anyhow::Result<StatusWitnessing> {
    if w.quorum == 0 {
        return Ok(StatusWitnessing::None);
    }
    let Some((size, root)) = w.cosigned else {
        return Ok(StatusWitnessing::NotYet {
            answer_size: answer.0,
            cosigned: None,
        });
    };
    if w.covers_exactly(answer.0, answer.1) {
        return Ok(StatusWitnessing::Cosigned { size });
    }
    let needed = r.proofs.iter().map(|p| p.index + 1).max().unwrap_or(0);
    if size < needed {
        return Ok(StatusWitnessing::NotYet {
            answer_size: answer.0,
            cosigned: Some(size),
        });
    }
    for p in &r.proofs {
        let proof = c
            .log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::Index(p.index)),
                tree_size: size,
            })
            .await?
            .into_inner();
        // The proof must be the one asked for: of this entry, in the cosigned tree.
        if proof.index != p.index || proof.tree_size != size {
            bail!(
                "the server answered with a proof of entry {} in a tree of {} entries; entry {} in \
                 the cosigned tree of {size} was asked for",
                proof.index,
                proof.tree_size,
                p.index
            );
        }
        if proof.leaf_hash != p.leaf_hash {
            bail!(
                "entry {} has another leaf hash in the cosigned tree",
                p.index
            );
        }
        super::proofs::check_inclusion(&proof, root).map_err(|e| {
            anyhow!(
                "entry {}: not in the cosigned checkpoint of size {size}: {e}",
                p.index
            )
        })?;
    }
    let (old, new) = if size < answer.0 {
        ((size, root), answer)
    } else {
        (answer, (size, root))
    };
    check_extends(c, old, new).await?;
    Ok(StatusWitnessing::ProvenAgainst {
        size,
        answer_size: answer.0,
    })
}

/// After a write: says whether the receipt's checkpoint is cosigned (text output only; the
/// write has succeeded whatever this finds, so a failed check is reported, not returned).
pub async fn after_write(c: &mut Clients, o: &ClientOpts, receipt: &Option<pb::Receipt>) {
    if o.json {
        return;
    }
    match fetch(c, o).await {
        Ok(w) => super::output::receipt_witnessing(receipt, &w),
        Err(e) => super::output::witnessing_unchecked(&e),
    }
}
