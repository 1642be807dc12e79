//! The gRPC health service (`grpc.health.v1.Health`) from outside and on a
//! port of its own: `dagml health ADDR` asks a scheduler or worker whether it
//! is serving (a container's health check, a script), and `--health-listen`
//! serves the same statuses on a second, plain port for probes that can send
//! neither a token nor TLS (Kubernetes' native `grpc:` probe).
//!
//! In: an address, a service name ("" = the process, `dagml.v1.Worker`,
//! `dagml.v1.Scheduler`), the token and TLS CA (for the main port). Out: the
//! serving status, or why it could not be had within
//! [`RPC_TIMEOUT`](super::RPC_TIMEOUT); a running health-only server. Must
//! not: serve anything but the health service on the plain port (it carries
//! no token), or wait without a deadline.

use super::ClusterError;
use super::auth::Attach;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::{HealthReporter, HealthService};

/// The name of the whole process in the health service.
pub const WHOLE_PROCESS: &str = "";

/// Ask `addr` for the status of `service`, with the token and TLS of
/// `attach`, within [`RPC_TIMEOUT`](super::RPC_TIMEOUT).
pub async fn check(addr: &str, service: &str, attach: Attach) -> Result<String, ClusterError> {
    let channel = attach.channel(addr)?;
    let mut client = HealthClient::with_interceptor(channel, attach);
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    let reply = tokio::time::timeout(super::RPC_TIMEOUT, client.check(req))
        .await
        .map_err(|_| {
            ClusterError::Other(format!(
                "no answer within {} s",
                super::RPC_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|s| ClusterError::Other(s.message().to_string()))?;
    let status = reply.into_inner().status;
    Ok(
        match tonic_health::pb::health_check_response::ServingStatus::try_from(status) {
            Ok(s) => s.as_str_name().to_string(),
            Err(_) => format!("UNKNOWN_STATUS_{status}"),
        },
    )
}

/// Serve only the health service of `reporter` on `listen`, plain TCP and no
/// token. Returns the bound address and the server's task (abort it to stop).
pub async fn serve_plain(
    listen: &str,
    reporter: HealthReporter,
) -> Result<(String, tokio::task::JoinHandle<()>), ClusterError> {
    let (listener, address) = super::serve::bind(listen).await?;
    let svc = tonic_health::pb::health_server::HealthServer::new(
        HealthService::from_health_reporter(reporter),
    );
    let incoming = futures::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        super::serve::no_delay,
    );
    let server = super::serve::builder(&super::auth::Tls::default())?
        .add_service(svc)
        .serve_with_incoming(incoming);
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    Ok((address, task))
}

/// Mark `service` as not serving (a draining worker: a readiness probe on it
/// fails while the process, service "", stays serving).
pub async fn not_serving(reporter: &HealthReporter, service: &str) {
    reporter
        .set_service_status(service, ServingStatus::NotServing)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::auth::Tls;

    #[tokio::test]
    async fn the_plain_port_answers_without_a_token_and_follows_the_reporter() {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("dagml.v1.Worker", ServingStatus::Serving)
            .await;
        let (addr, task) = serve_plain("127.0.0.1:0", reporter.clone()).await.unwrap();
        let plain = || Attach::new(None, &Tls::default()).unwrap();
        assert_eq!(
            check(&addr, WHOLE_PROCESS, plain()).await.unwrap(),
            "SERVING"
        );
        assert_eq!(
            check(&addr, "dagml.v1.Worker", plain()).await.unwrap(),
            "SERVING"
        );
        not_serving(&reporter, "dagml.v1.Worker").await;
        assert_eq!(
            check(&addr, "dagml.v1.Worker", plain()).await.unwrap(),
            "NOT_SERVING"
        );
        // The process stays serving while the worker drains.
        assert_eq!(
            check(&addr, WHOLE_PROCESS, plain()).await.unwrap(),
            "SERVING"
        );
        let unknown = check(&addr, "no.such.Service", plain()).await;
        assert!(unknown.is_err(), "{unknown:?}");
        task.abort();
    }
}
