//! Codec benchmarks and the peer servers ringrpc is compared with: the pieces they share.
//!
//! Every peer serves the same arpc service ([`echo_service`]), takes the same command line
//! ([`peer_cli`]) and announces its address the same way, so a comparison differs only in the
//! runtime underneath.

pub mod arpc_codec;
pub mod compare;
pub mod echo_service;
pub mod peer_cli;
pub mod soak;

/// The gRPC echo service generated from `loadgen/proto/echo.proto` (server and client).
pub mod grpc {
    tonic::include_proto!("ringrpc.echo");
}
