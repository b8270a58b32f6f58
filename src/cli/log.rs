//! `claimledger log …`: the signed checkpoint, entries, inclusion and consistency proofs
//! (checked here, see [`super::proofs`]), a live tail and the server-side audit.

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use super::connect::{connect, ClientOpts};
use super::{cosigned, output, parse, proofs};
use crate::pb::{self, get_inclusion_proof_request::Leaf};

#[derive(Subcommand)]
pub enum LogCmd {
    /// The latest signed checkpoint and the verifier key, and the latest checkpoint the log's
    /// witnesses cosigned: with `--witness-key` (repeatable), fails unless each of those
    /// witnesses has a valid cosignature on it.
    Checkpoint,
    /// Entries [start, end) as JSON lines (decoded) or index/leaf lines.
    Entries {
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Exclusive; 0 means the current size.
        #[arg(long, default_value_t = 0)]
        end: u64,
    },
    /// Inclusion proof of an entry (by index or leaf hash in hex), verified here.
    Proof {
        #[arg(
            long,
            conflicts_with = "leaf_hash",
            required_unless_present = "leaf_hash"
        )]
        index: Option<u64>,
        #[arg(long)]
        leaf_hash: Option<String>,
        /// Tree size; 0 means the current size.
        #[arg(long, default_value_t = 0)]
        size: u64,
    },
    /// Consistency proof between two sizes, verified here.
    Consistency {
        old_size: u64,
        /// 0 means the current size.
        #[arg(default_value_t = 0)]
        new_size: u64,
    },
    /// Follow the log live from an index.
    Watch {
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Ask the server to audit the whole log.
    Verify,
}

pub async fn run(cmd: LogCmd, o: &ClientOpts) -> anyhow::Result<ExitCode> {
    let mut c = connect(o).await?;
    match cmd {
        LogCmd::Checkpoint => {
            let r = c
                .log
                .get_checkpoint(pb::GetCheckpointRequest {})
                .await?
                .into_inner();
            let (size, root) = proofs::checked_checkpoint(&mut c, o, &r.note).await?;
            let w = cosigned::check(&r, o)?;
            w.require_every_key()?;
            if let Some(old) = w.cosigned {
                cosigned::check_extends(&mut c, old, (size, root)).await?;
            }
            output::print(o.json, &r, |r| output::checkpoint(r, &w))?;
        }
        LogCmd::Entries { start, end } => {
            let mut s = c
                .log
                .get_entries(pb::GetEntriesRequest { start, end })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                output::entry(&e, o.json)?;
            }
        }
        LogCmd::Proof {
            index,
            leaf_hash,
            size,
        } => {
            let leaf = match (index, leaf_hash) {
                (Some(i), _) => Leaf::Index(i),
                (None, Some(h)) => Leaf::LeafHash(parse::hex(&h, "--leaf-hash")?),
                (None, None) => bail!("give --index or --leaf-hash"),
            };
            // Without --size, prove against the latest signed checkpoint, so the root the proof
            // is checked against is one the log signed.
            let signed = if size == 0 {
                Some(proofs::signed_head(&mut c, o).await?)
            } else {
                None
            };
            let r = c
                .log
                .get_inclusion_proof(pb::GetInclusionProofRequest {
                    leaf: Some(leaf),
                    tree_size: signed.map_or(size, |(s, _)| s),
                })
                .await?
                .into_inner();
            let root = match signed {
                Some((_, root)) => root,
                None => proofs::hash32(&r.root_hash)?,
            };
            proofs::check_inclusion(&r, root)?;
            output::print(o.json, &r, |r| output::inclusion_proof(r, signed.is_some()))?;
        }
        LogCmd::Consistency { old_size, new_size } => {
            // Without a new size, the new root is the latest signed checkpoint's.
            let signed = if new_size == 0 {
                Some(proofs::signed_head(&mut c, o).await?)
            } else {
                None
            };
            let r = c
                .log
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    old_size,
                    new_size: signed.map_or(new_size, |(s, _)| s),
                })
                .await?
                .into_inner();
            proofs::check_consistency(&r, signed.map(|(_, root)| root))?;
            output::print(o.json, &r, |r| {
                output::consistency_proof(r, signed.is_some())
            })?;
        }
        LogCmd::Watch { from } => {
            let mut s = c
                .log
                .watch_entries(pb::WatchEntriesRequest { from_index: from })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                output::entry(&e, o.json)?;
            }
        }
        LogCmd::Verify => {
            let mut s = c
                .log
                .verify_log(pb::VerifyLogRequest {})
                .await?
                .into_inner();
            while let Some(p) = s.message().await? {
                output::audit(&p, o.json)?;
                if p.done {
                    return Ok(if p.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    });
                }
            }
            bail!("the server ended the audit without a result");
        }
    }
    Ok(ExitCode::SUCCESS)
}
