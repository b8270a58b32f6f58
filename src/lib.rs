//! claimledger: a tamper-evident, verifiable record of claims made about a war.
//!
//! The crate is layered (see ARCHITECTURE.md): [`log`] is the verifiable append-only log on sled
//! with no gRPC in it; [`claims`] is the domain model and the pure confirmation policy;
//! [`ledger`] is the domain's state on the log; [`index`] the derived query index that follows
//! it; [`api`] puts them behind tonic services and [`http`] beside them on the same port;
//! [`cli`] is the command line.
#![forbid(unsafe_code)]

pub mod api;
pub mod claims;
pub mod cli;
pub mod files;
pub mod http;
pub mod index;
pub mod ledger;
pub mod log;
pub mod witness;

/// Generated protobuf and gRPC code for `claimledger.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("claimledger.v1");
    include!(concat!(env!("OUT_DIR"), "/claimledger.v1.serde.rs"));

    /// The encoded `FileDescriptorSet` of the contract, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/claimledger_descriptor.bin"));
}
