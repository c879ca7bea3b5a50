//! Generates the gRPC echo service (server and client) from loadgen's `proto/echo.proto`, the file
//! loadgen's gRPC client is built from (it lives in loadgen so that crate packages on its own).
//!
//! protoc comes from `protoc-bin-vendored`, so no system protoc is needed.

use std::io;

fn main() -> io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `bytes` fields as `Bytes`: the payload is sliced out of the receive buffer instead of
    // copied into a `Vec`, so the gRPC peer is not handicapped by an avoidable copy.
    config.bytes(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(
            config,
            &["../loadgen/proto/echo.proto"],
            &["../loadgen/proto"],
        )
}
