//! `dagml serve MODEL_FILE... --listen ADDR`

use dagml::cluster::auth;
use dagml::serve::{LocalModels, http};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Model files, each served under its model's name (or NAME=PATH).
    #[arg(required = true)]
    models: Vec<String>,
    /// host:port to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_body: usize,
    /// Requests predicted at once; more wait their turn.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
}

pub fn run(a: Args) -> ExitCode {
    let backend = match LocalModels::load(&a.models) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let tls = auth::Tls::from_env();
    let tls = match (tls.cert, tls.key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            eprintln!(
                "error: TLS needs both {} and {}",
                auth::TLS_CERT_ENV,
                auth::TLS_KEY_ENV
            );
            return ExitCode::from(2);
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cfg = http::ServerConfig {
        listen: a.listen,
        token: auth::token_from_env(),
        max_body: a.max_body,
        max_concurrency: a.max_concurrency,
        tls,
    };
    let Ok(rt) = super::cluster::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    rt.block_on(async move {
        let names: Vec<String> = {
            use dagml::serve::Backend;
            backend
                .models()
                .iter()
                .map(|m| format!("{} ({})", m.name, m.versions.last().map_or("", |v| v)))
                .collect()
        };
        let server = match http::start(cfg, backend).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        println!("dagml serve listening on {}", server.address);
        eprintln!("serving {} over {scheme}", names.join(", "));
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        eprintln!("stopping: finishing the requests in flight");
        server.stop().await;
        ExitCode::SUCCESS
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
