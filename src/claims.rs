//! The claims domain: what a claim, its evidence, verdicts and retractions mean, and how the
//! confirmation status is derived from them (SPEC §2).
//!
//! Everything under this module is pure: it takes protobuf values that the caller has already read
//! from the log (filtered to the log size being asked about) and returns values. It never touches
//! sled, the network or the clock, which is what lets anyone recompute a status from the public log
//! and get the same answer.
//!
//! - [`policy`] is the confirmation policy `v1` (SPEC §2.4): origins, groups, independence,
//!   qualification, the quantity check, status, precedence and the per-evidence trace.
//! - [`validate`] checks what clients send (formats, required fields, ranges) before anything
//!   reaches the log, and splits text into the words the indexes use.

pub mod policy;
pub mod validate;
