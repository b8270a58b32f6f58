//! Witnesses (SPEC §3, C2SP `tlog-witness` and `tlog-cosignature`).
//!
//! - [`cosignature`]: the Ed25519 `cosignature/v1` format, signer and verifier.

pub mod cosignature;
