//! Witnesses (SPEC §3, C2SP `tlog-witness` and `tlog-cosignature`).
//!
//! - [`cosignature`]: the Ed25519 `cosignature/v1` format, signer and verifier.
//! - [`submit`]: the log's side: submitting checkpoints to witnesses, keeping the cosigned
//!   checkpoint, halting the log on a witness's proof of a fork or a rollback.

pub mod cosignature;
pub mod submit;
