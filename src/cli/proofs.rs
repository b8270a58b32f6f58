//! Client-side checks: the CLI does not take the server's word for a checkpoint or a proof. It
//! verifies checkpoint signatures (with `--verifier-key`, or else the key the server reports)
//! and checks inclusion and consistency proofs against a root the log signed.

use anyhow::{anyhow, bail};
use tlog_tiles::Hash;

use super::connect::{ClientOpts, Clients};
use crate::pb;

/// A hash the server sent, which must be 32 bytes.
pub fn hash32(b: &[u8]) -> anyhow::Result<Hash> {
    Ok(Hash(b.try_into().map_err(|_| {
        anyhow!("server sent a hash that is not 32 bytes")
    })?))
}

fn hashes(hs: &[Vec<u8>]) -> anyhow::Result<Vec<Hash>> {
    hs.iter().map(|h| hash32(h)).collect()
}

/// Verifies a checkpoint note with `--verifier-key`, or else the key the server reports, and
/// returns (size, root).
pub async fn checked_checkpoint(
    c: &mut Clients,
    o: &ClientOpts,
    note: &str,
) -> anyhow::Result<(u64, Hash)> {
    let info = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner();
    let key = o.verifier_key.as_deref().unwrap_or(&info.verifier_key);
    let origin = key.split('+').next().unwrap_or_default();
    let cp = crate::log::checkpoint::verify_checkpoint(note.as_bytes(), key, origin)?;
    Ok((cp.size, cp.root))
}

/// The latest checkpoint, signature checked: (size, root).
pub async fn signed_head(c: &mut Clients, o: &ClientOpts) -> anyhow::Result<(u64, Hash)> {
    let note = c
        .log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await?
        .into_inner()
        .note;
    checked_checkpoint(c, o, &note).await
}

/// Checks the checkpoint of a `claim status --proof` answer and every entry's inclusion proof
/// against it; returns the checkpoint's (size, root).
pub async fn verify_status_proofs(
    c: &mut Clients,
    o: &ClientOpts,
    r: &pb::GetClaimStatusResponse,
) -> anyhow::Result<(u64, Hash)> {
    let (size, root) = checked_checkpoint(c, o, &r.checkpoint).await?;
    for p in &r.proofs {
        tlog_tiles::check_record(
            &hashes(&p.hashes)?,
            size,
            root,
            p.index,
            hash32(&p.leaf_hash)?,
        )
        .map_err(|e| anyhow!("proof for entry {} does not verify: {e}", p.index))?;
    }
    Ok((size, root))
}

/// Checks an inclusion proof against `root`.
pub fn check_inclusion(r: &pb::GetInclusionProofResponse, root: Hash) -> anyhow::Result<()> {
    tlog_tiles::check_record(
        &hashes(&r.hashes)?,
        r.tree_size,
        root,
        r.index,
        hash32(&r.leaf_hash)?,
    )
    .map_err(|e| anyhow!("the proof does not verify: {e}"))
}

/// Checks a consistency proof; with `signed_root`, also that its new root is that one.
pub fn check_consistency(
    r: &pb::GetConsistencyProofResponse,
    signed_root: Option<Hash>,
) -> anyhow::Result<()> {
    if let Some(root) = signed_root {
        if hash32(&r.new_root)? != root {
            bail!("the server's new root differs from its signed checkpoint");
        }
    }
    if r.old_size > 0 && r.old_size < r.new_size {
        tlog_tiles::check_tree(
            &hashes(&r.hashes)?,
            r.new_size,
            hash32(&r.new_root)?,
            r.old_size,
            hash32(&r.old_root)?,
        )
        .map_err(|e| anyhow!("the proof does not verify: {e}"))?;
    }
    Ok(())
}
