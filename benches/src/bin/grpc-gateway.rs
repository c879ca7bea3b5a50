//! grpc-gateway: the tonic counterpart of `async-gateway`, for side-by-side runs: two tonic
//! echo backends and a gateway in this process, whose `Echo` calls both backends at once
//! (one HTTP/2 channel each, shared by every call), awaits both under a timeout, checks
//! they agree and replies with the payload. All on one tokio runtime of `--threads`
//! workers. Driven by `loadgen --proto grpc`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ringrpc_benches::grpc::echo_client::EchoClient;
use ringrpc_benches::grpc::echo_server::{Echo, EchoServer};
use ringrpc_benches::grpc::{EchoReply, EchoRequest};
use ringrpc_benches::peer_cli::{PeerArgs, announce, tokio_runtime};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// gRPC (tonic) fan-out gateway over two in-process echo backends.
#[derive(Debug, Parser)]
#[command(name = "grpc-gateway")]
struct Cli {
    #[command(flatten)]
    peer: PeerArgs,
}

/// A backend: the reply carries the request's payload.
#[derive(Debug, Default)]
struct Backend;

#[tonic::async_trait]
impl Echo for Backend {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let payload = request.into_inner().payload;
        Ok(Response::new(EchoReply { payload }))
    }
}

/// The gateway: both backends, joined.
#[derive(Debug)]
struct Gateway {
    a: EchoClient<Channel>,
    b: EchoClient<Channel>,
}

#[tonic::async_trait]
impl Echo for Gateway {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let payload = request.into_inner().payload;
        let (mut a, mut b) = (self.a.clone(), self.b.clone());
        let both = async {
            tokio::try_join!(
                a.echo(EchoRequest {
                    payload: payload.clone()
                }),
                b.echo(EchoRequest {
                    payload: payload.clone()
                })
            )
        };
        let (x, y) = tokio::time::timeout(Duration::from_secs(5), both)
            .await
            .map_err(|_| Status::deadline_exceeded("the backends did not answer in time"))??;
        let (x, y) = (x.into_inner().payload, y.into_inner().payload);
        if x != y {
            return Err(Status::internal("the backends disagree"));
        }
        Ok(Response::new(EchoReply { payload: x }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    tokio_runtime(cli.peer.threads)?.block_on(serve(cli.peer.listen))
}

/// Serves `service` on `listener` in the background.
fn spawn_server<S>(listener: TcpListener, service: S)
where
    S: Echo,
{
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(service))
            .serve_with_incoming(incoming),
    );
}

async fn backend() -> Result<EchoClient<Channel>, Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    spawn_server(listener, Backend);
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(EchoClient::new(channel))
}

async fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = (backend().await?, backend().await?);
    let listener = TcpListener::bind(addr).await?;
    announce("grpc-gateway", listener.local_addr()?)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .add_service(EchoServer::new(Gateway { a, b }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
