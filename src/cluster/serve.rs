//! What the scheduler and the workers share as servers: binding the listener,
//! the address to advertise, TLS on the builder, and a handle that stops the
//! server and its background loop (heartbeats or the watchdog).
//!
//! In: a `host:port` to listen on, TLS files. Out: a listener and its
//! advertised address; a server builder with HTTP/2 keepalive; a `Served` handle. Must not: know the services served.

use super::ClusterError;
use super::auth::Tls;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Server;

/// Bind `listen`; the address to advertise is the bound one, with 127.0.0.1 for
/// an unspecified host (`0.0.0.0`).
pub async fn bind(listen: &str) -> Result<(TcpListener, String), ClusterError> {
    let listen = super::addr::host_port(listen)?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| ClusterError::Listen(listen.clone(), e))?;
    let local = listener.local_addr()?;
    let advertised = if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    Ok((listener, advertised))
}

/// An accepted connection that sends small messages at once: without
/// `TCP_NODELAY` every small reply (a task's answer, a partial sum, a receipt)
/// waits for the peer's delayed ACK, ~40 ms on Linux. Tonic sets it only on
/// listeners it binds itself; ours are bound here, so it is set here.
pub fn no_delay(
    conn: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    conn.and_then(|tcp| {
        tcp.set_nodelay(true)?;
        Ok(tcp)
    })
}

/// A server builder, with TLS when the files say so, that pings every
/// connection after [`KEEPALIVE_INTERVAL`](super::KEEPALIVE_INTERVAL) without
/// news and closes one whose peer leaves a ping unanswered for
/// [`KEEPALIVE_TIMEOUT`](super::KEEPALIVE_TIMEOUT) (its streams end, so a
/// run whose client went silent is cancelled).
pub fn builder(tls: &Tls) -> Result<Server, ClusterError> {
    let mut b = Server::builder()
        .http2_keepalive_interval(Some(super::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(super::KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(super::STREAM_WINDOW)
        .initial_connection_window_size(super::CONNECTION_WINDOW);
    if let Some(cfg) = tls.server()? {
        b = b.tls_config(cfg)?;
    }
    Ok(b)
}

/// A server running in the background, with its companion loop.
pub struct Served {
    pub shutdown: Option<oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    pub companion: tokio::task::JoinHandle<()>,
    /// The plain health-only server (`--health-listen`), if any.
    pub health: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    /// Stop the loop and the server, and wait for the server to end: at most
    /// [`RPC_TIMEOUT`](super::RPC_TIMEOUT) for its connections to close (a
    /// silent client holds one open forever), then it is aborted.
    pub async fn stop(mut self) {
        self.companion.abort();
        if let Some(h) = self.health.take() {
            h.abort();
        }
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(super::RPC_TIMEOUT, &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
        }
    }

    /// Serve until the server stops.
    pub async fn wait(mut self) -> Result<(), ClusterError> {
        self.finished().await
    }

    /// Wait until the server stops by itself (an error), keeping the handle
    /// (to stop it otherwise meanwhile, select on this and something else).
    pub async fn finished(&mut self) -> Result<(), ClusterError> {
        let r = match (&mut self.server).await {
            Ok(r) => r.map_err(ClusterError::from),
            Err(e) => Err(ClusterError::Other(e.to_string())),
        };
        if let Some(h) = self.health.take() {
            h.abort();
        }
        r
    }
}
