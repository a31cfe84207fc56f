//! `session-broker bench-echo-server`: the baseline. A tonic service that does no work and
//! answers with a reply of the requested size, so the same client against it measures the
//! ceiling of the gRPC stack on this machine.

use std::net::SocketAddr;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::bench_proto::{
    echo_service_server::{EchoService, EchoServiceServer},
    EchoRequest, EchoResponse,
};

/// Largest reply the echo server builds.
const MAX_REPLY: u32 = 1 << 20;

/// Flags of `bench-echo-server`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Address to serve the echo service on.
    #[arg(
        long,
        env = "SESSION_BROKER_ECHO_LISTEN",
        default_value = "127.0.0.1:50061"
    )]
    pub listen: SocketAddr,
}

struct Echo;

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let size = request.get_ref().response_size;
        if size > MAX_REPLY {
            return Err(Status::invalid_argument(format!(
                "response_size: at most {MAX_REPLY}"
            )));
        }
        Ok(Response::new(EchoResponse {
            payload: vec![b'x'; size as usize],
        }))
    }
}

/// Serves the echo service on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(EchoServiceServer::new(Echo))
        .serve_with_incoming_shutdown(
            // The same transport settings as the daemon's listener.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

/// `bench-echo-server`: serves until SIGTERM/SIGINT.
pub async fn main(args: EchoArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    #[cfg(unix)]
    {
        let stop = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            term.recv().await;
            stop.cancel();
        });
    }
    eprintln!("echo service on {}", listener.local_addr()?);
    serve(listener, shutdown).await
}
