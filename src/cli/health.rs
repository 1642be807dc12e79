//! `dagml health [ADDR]`: ask a scheduler or worker's gRPC health service
//! whether it is serving; exit 0 if it is, 1 if not or no answer. For
//! container health checks (exec form: no shell needed) and scripts.
//!
//! In: an address (default `DAGML_HEALTH_ADDR`, else 127.0.0.1:7070), a
//! service name, the token and TLS CA from the environment (`--plain`: none,
//! for a `--health-listen` port). Out: one line on stdout (`ADDR SERVICE:
//! SERVING`) or the reason on stderr, and the exit status. Must not: wait
//! longer than the cluster's RPC deadline.

use dagml::cluster::{auth, health};
use std::process::ExitCode;

/// Where `dagml health` asks when no address is given.
const ADDR_ENV: &str = "DAGML_HEALTH_ADDR";
const DEFAULT_ADDR: &str = "127.0.0.1:7070";

#[derive(clap::Args)]
pub struct Args {
    /// host:port of a scheduler, a worker, or a --health-listen port
    /// (default: $DAGML_HEALTH_ADDR, else 127.0.0.1:7070).
    addr: Option<String>,
    /// The service to ask about: "" (the process), dagml.v1.Scheduler or
    /// dagml.v1.Worker (NOT_SERVING while the worker drains).
    #[arg(long, default_value = health::WHOLE_PROCESS)]
    service: String,
    /// Plain TCP without a token (a --health-listen port), whatever
    /// DAGML_TOKEN and DAGML_TLS_CA say.
    #[arg(long)]
    plain: bool,
}

pub fn run(a: Args) -> ExitCode {
    let addr = a
        .addr
        .or_else(|| std::env::var(ADDR_ENV).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_ADDR.to_string());
    let attach = if a.plain {
        auth::Attach::new(None, &auth::Tls::default())
    } else {
        auth::Attach::new(auth::token_from_env().as_deref(), &auth::Tls::from_env())
    };
    let attach = match attach {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(rt) = super::cluster::runtime() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    let shown = if a.service.is_empty() {
        "(process)"
    } else {
        a.service.as_str()
    };
    match rt.block_on(health::check(&addr, &a.service, attach)) {
        Ok(status) if status == "SERVING" => {
            println!("{addr} {shown}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            println!("{addr} {shown}: {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: health check of {addr} failed: {e}");
            ExitCode::from(1)
        }
    }
}
