//! Compiles the gRPC contract in `proto/` with `protox` (pure Rust, so no system `protoc` is
//! needed), generates prost/tonic code, proto3-JSON serde impls (pbjson) and the descriptor set
//! that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/claimledger/v1/model.proto",
        "proto/claimledger/v1/log.proto",
        "proto/claimledger/v1/service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out.join("claimledger_descriptor.bin");
    fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .extern_path(".google.protobuf.Timestamp", "::pbjson_types::Timestamp")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(fds.clone())?;

    pbjson_build::Builder::new()
        .register_descriptors(&fs::read(&descriptor_path)?)?
        .preserve_proto_field_names()
        .build(&[".claimledger"])?;
    Ok(())
}
