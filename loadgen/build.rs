//! Generates the gRPC echo client (`--proto grpc`) from `proto/echo.proto`, the
//! same file the benches' `grpc-echo` server is built from, so client and server cannot drift apart.
//!
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed. Only the client is
//! generated: loadgen never serves gRPC.

use std::io;
use std::path::PathBuf;

fn main() -> io::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
        io::Error::other("CARGO_MANIFEST_DIR is unset: run this build script through cargo")
    })?);
    let proto_dir = manifest_dir.join("proto");
    let proto = proto_dir.join("echo.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields as `Bytes`, as the server has them: payloads are not copied into a `Vec`.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &[proto], &[proto_dir])
}
