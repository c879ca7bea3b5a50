//! The gRPC service `--proto grpc` calls: the client `build.rs` generates from
//! `proto/echo.proto` (the file the benches' `grpc-echo` server is built from too), its method's
//! name, and the largest payload a call may carry.

/// The client generated from `proto/echo.proto` by `build.rs`.
pub(crate) mod echo {
    tonic::include_proto!("ringrpc.echo");
}

/// The gRPC method every call invokes.
pub(crate) const GRPC_ECHO_METHOD: &str = "/ringrpc.echo.Echo/Echo";
/// Largest payload whose message (1 tag byte, 4 length bytes, the payload) fits tonic's
/// default 4 MiB limit on decoded messages, which the server applies to requests.
pub(crate) const GRPC_MAX_PAYLOAD: usize = 4 * 1024 * 1024 - 5;
