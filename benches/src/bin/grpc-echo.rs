//! grpc-echo: a tonic unary echo server, the gRPC point of comparison for ringrpc.
//!
//! Serves `ringrpc.echo.Echo/Echo` from `loadgen/proto/echo.proto`, replying with the request's
//! payload, on a tokio runtime with `--threads` workers.

use std::net::SocketAddr;

use clap::Parser;
use ringrpc_benches::grpc::echo_server::{Echo, EchoServer};
use ringrpc_benches::grpc::{EchoReply, EchoRequest};
use ringrpc_benches::peer_cli::{PeerArgs, announce, tokio_runtime};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gRPC (tonic) unary echo server.
#[derive(Debug, Parser)]
#[command(name = "grpc-echo")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

/// The echo service: the reply carries the request's payload unchanged.
#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let payload = request.into_inner().payload;
        Ok(Response::new(EchoReply { payload }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    tokio_runtime(cli.peer.threads)?.block_on(serve(cli.peer.listen))
}

async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(addr).await?;
    announce("grpc-echo", listener.local_addr()?)?;
    // `Server::tcp_nodelay` is ignored for a caller-supplied listener; set it here instead.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
