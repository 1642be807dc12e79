//! `dagml serve MODEL_FILE... --listen ADDR`, and
//! `dagml serve PIPELINE [--scheduler ADDR] [--min-shards N] --listen ADDR`:
//! train the pipeline on a cluster (the embedded one without `--scheduler`),
//! keep its shard models resident on their workers, and serve the combined
//! model by broadcasting each request to them.

use dagml::cluster::{self, auth};
use dagml::serve::cluster::{ClusterModels, Shared};
use dagml::serve::{Backend, LocalModels, http};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// Model files, each served under its model's name (or NAME=PATH); or one
    /// pipeline file (.toml, .dagml) whose per-shard models are trained and
    /// served from the workers that trained them.
    #[arg(required = true)]
    models: Vec<String>,
    /// With a pipeline: the cluster to train and serve on (default: an
    /// embedded cluster of the file's `[cluster] workers`).
    #[arg(long, value_name = "ADDR")]
    scheduler: Option<String>,
    /// With a pipeline: answer only when at least N shard models do (fewer:
    /// 503 with the reason); below all of them the answer is marked degraded.
    #[arg(long, value_name = "N", default_value_t = 1)]
    min_shards: usize,
    /// host:port to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: String,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_body: usize,
    /// Requests in flight at once; more wait their turn.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Requests to one model that wait while it is busy are predicted
    /// together, up to this many rows in one call (1: each alone).
    #[arg(long, value_name = "ROWS", default_value_t = 4096)]
    max_batch: usize,
}

fn is_pipeline(p: &str) -> bool {
    Path::new(p)
        .extension()
        .is_some_and(|e| e == "toml" || e == "dagml")
}

/// The HTTPS certificate and key, when both are set.
fn https() -> Result<Option<(PathBuf, PathBuf)>, ExitCode> {
    let tls = auth::Tls::from_env();
    match (tls.cert, tls.key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => {
            eprintln!(
                "error: TLS needs both {} and {}",
                auth::TLS_CERT_ENV,
                auth::TLS_KEY_ENV
            );
            Err(ExitCode::from(2))
        }
    }
}

pub fn run(a: Args) -> ExitCode {
    if a.models.len() == 1 && is_pipeline(&a.models[0]) {
        return serve_pipeline(a);
    }
    if a.scheduler.is_some() {
        eprintln!("error: --scheduler goes with a pipeline file, not model files");
        return ExitCode::from(2);
    }
    let backend = match LocalModels::load(&a.models) {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let tls = match https() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Ok(rt) = super::cluster::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    rt.block_on(serve_until_signal(&a, tls, backend))
}

/// Serve `backend` over HTTP(S) as `a` says until Ctrl-C or SIGTERM, then
/// finish the requests in flight.
async fn serve_until_signal<B: Backend>(
    a: &Args,
    tls: Option<(PathBuf, PathBuf)>,
    backend: Arc<B>,
) -> ExitCode {
    let names: Vec<String> = backend
        .models()
        .iter()
        .map(|m| format!("{} ({})", m.name, m.versions.last().map_or("", |v| v)))
        .collect();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cfg = http::ServerConfig {
        listen: a.listen.clone(),
        token: auth::token_from_env(),
        max_body: a.max_body,
        max_concurrency: a.max_concurrency,
        tls,
        batch: http::BatchConfig {
            max_rows: a.max_batch,
            ..Default::default()
        },
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
}

/// Train a pipeline on a cluster with its shard models kept resident, then
/// serve them until Ctrl-C or SIGTERM.
fn serve_pipeline(a: Args) -> ExitCode {
    use dagml::cluster::{Placement, PlacementFlags, embedded};
    use dagml::runtime::progress::Progress;
    let path = PathBuf::from(&a.models[0]);
    let tls = match https() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let plan = match dagml::workspace::plan_file(&path, &Default::default()) {
        Ok((_, p)) => p.physical,
        Err(report) => {
            for d in &report.parsed.diagnostics {
                eprintln!("{}", d.render(&report.parsed.file));
            }
            eprintln!(
                "error: `{}` is not a valid pipeline; nothing was run",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let per_shard = plan
        .tasks
        .iter()
        .any(|t| matches!(t.kind, dagml::plan::TaskKind::FitShard { .. }));
    if !per_shard {
        eprintln!(
            "error: `{}` has no per-shard model (`per_shard = true`) to serve from its workers; \
             serve its model file instead: dagml serve MODEL_FILE",
            path.display()
        );
        return ExitCode::from(2);
    }
    let flags = PlacementFlags {
        scheduler: a.scheduler.clone(),
        ..Default::default()
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = cluster::placement(plan.logical.cluster.as_ref(), &flags, cores);
    let progress = Progress::new(&plan, false);
    let Ok(rt) = super::cluster::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    rt.block_on(async move {
        let (held, scheduler, token) = match placement {
            Placement::Remote {
                scheduler,
                token_env,
            } => {
                let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
                (None, scheduler, token)
            }
            Placement::Embedded {
                workers,
                threads,
                memory_limit,
            } => {
                match embedded::Embedded::start(embedded::Options {
                    workers,
                    threads,
                    memory_limit,
                    tls: auth::Tls::from_env(),
                    ..Default::default()
                })
                .await
                {
                    Ok(e) => {
                        let (addr, token) = (e.scheduler.address.clone(), Some(e.token.clone()));
                        (Some(e), addr, token)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            Placement::InProcess { .. } => {
                eprintln!("error: serving shard models needs a cluster (not --in-process)");
                return ExitCode::from(2);
            }
        };
        let code = train_then_serve(&a, &path, &scheduler, token, tls, &progress).await;
        if let Some(e) = held {
            e.stop().await;
        }
        code
    })
}

async fn train_then_serve(
    a: &Args,
    path: &Path,
    scheduler: &str,
    token: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    progress: &dagml::runtime::progress::Progress,
) -> ExitCode {
    use dagml::cluster::client;
    let attach = match auth::Attach::new(token.as_deref(), &auth::Tls::from_env()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let serve_version = dagml::serve::cluster::next_version_on(scheduler, attach.clone()).await;
    let opts = client::ClientOptions {
        scheduler: scheduler.to_string(),
        token: token.clone(),
        tls: auth::Tls::from_env(),
        base: PathBuf::from("."),
        max_attempts: 0,
        log_events: false,
        same_machine: false,
        serve: true,
        only: Vec::new(),
        serve_version,
    };
    let report = client::run_file(path, &opts, progress).await;
    progress.finish();
    match report {
        Ok(r) => eprint!("{}", dagml::run::render_results(&r)),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    let models = ClusterModels::new(scheduler, attach, a.min_shards);
    if let Err(e) = models.start_refreshing().await {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    serve_until_signal(a, tls, Arc::new(Shared(models))).await
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
