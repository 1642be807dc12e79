//! Submitting a run: `dagml run FILE --scheduler ADDR` (and the embedded cluster).
//!
//! In: a pipeline file and the scheduler's address. Out: the same [`RunReport`]
//! an in-process run gives, built from the scheduler's events and final values.
//! Must not: run tasks (the workers do), or wait on a silent scheduler (the
//! channel's keepalive ends the stream in bounded time, with a message naming
//! it); on Ctrl-C it drops the stream, and the scheduler cancels the run's
//! tasks on every worker. The output folders are checked here before the run;
//! the workers stage the output files and this process puts them in place
//! when the run succeeds, or removes them when it fails (`runtime::outputs`).

use super::auth::Attach;
use super::proto::run_event::Event;
use super::proto::*;
use super::worker::scheduler_client;
use crate::runtime::executor::{Observer, TaskRecord};
use crate::runtime::outputs;
use crate::runtime::report::{RunReport, results_of};
use crate::runtime::value::Value;
use crate::workspace::RunFailure;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub scheduler: String,
    pub token: Option<String>,
    pub tls: super::auth::Tls,
    /// Folder relative paths are resolved against (sent as an absolute path).
    pub base: PathBuf,
    /// 0: the scheduler's default (3).
    pub max_attempts: u32,
    /// Print one line per task event on stderr.
    pub log_events: bool,
    /// The workers share this machine's memory (an embedded cluster): a run
    /// with a task that cannot fit in what it has available is refused here.
    pub same_machine: bool,
    /// A serving run: the shard models stay resident on their workers.
    pub serve: bool,
    /// Retrain only these shard models (`MODEL.SHARD`); empty: the whole run.
    pub only: Vec<String>,
    /// The version a serving run's shard models get (0: each worker counts).
    pub serve_version: u64,
}

/// Run one pipeline file on the cluster behind `opts.scheduler`.
pub async fn run_file(
    path: &Path,
    opts: &ClientOptions,
    observer: &dyn Observer,
) -> Result<RunReport, RunFailure> {
    let other = |e: &dyn std::fmt::Display| RunFailure::Other(e.to_string());
    let check = crate::workspace::CheckOptions {
        base: opts.base.clone(),
        ..Default::default()
    };
    let (report, planned) =
        crate::workspace::plan_file(path, &check).map_err(|r| RunFailure::Invalid(Box::new(r)))?;
    let plan = if opts.only.is_empty() {
        planned.physical
    } else {
        super::only_plan(&planned.physical, &opts.only).map_err(|e| other(&e))?
    };
    let pipeline = report
        .checked
        .as_ref()
        .map(|c| c.pipeline.name.value.clone())
        .unwrap_or_default();
    let base = opts.base.canonicalize().map_err(|e| other(&e))?;
    // Workers write under the absolute folder sent; this process checks the
    // same folders before the run and puts the staged files in place after it
    // (a remote cluster shares the run's folder with its client).
    if opts.same_machine
        && let Some(avail) = crate::workspace::available_memory_bytes()
    {
        crate::workspace::refuse_what_cannot_fit(&plan, avail, "this machine has")
            .map_err(RunFailure::Other)?;
    }
    let outs = outputs::planned(&plan, &base);
    outputs::prepare(&outs).map_err(|e| other(&e))?;
    let failed = |f: RunFailure| f.with_unchanged(outputs::discard(&outs));
    let file_name = path.to_string_lossy().into_owned();
    let text = report.parsed.file.text.clone();
    let attach = Attach::new(opts.token.as_deref(), &opts.tls).map_err(|e| other(&e))?;
    let mut client = scheduler_client(&opts.scheduler, attach).map_err(|e| other(&e))?;
    let mut stream = client
        .submit_run(SubmitRunRequest {
            file_name,
            pipeline_text: text,
            base_dir: base.to_string_lossy().into_owned(),
            max_attempts: opts.max_attempts,
            plan_hash: super::plan_hash(&plan),
            serve: opts.serve,
            only: opts.only.clone(),
            serve_version: opts.serve_version,
        })
        .await
        .map_err(|s| failed(RunFailure::Other(lost_scheduler(&opts.scheduler, &s))))?
        .into_inner();
    let by_id: HashMap<String, &crate::plan::Task> =
        plan.tasks.iter().map(|t| (t.id.to_string(), t)).collect();
    let mut records = Vec::new();
    let t0 = std::time::Instant::now();
    // One listener for the whole run: a new `ctrl_c()` per message would
    // miss a Ctrl-C that lands while a message is being handled.
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let result = loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = &mut interrupt => {
                return Err(failed(RunFailure::Other(
                    "interrupted: the run's tasks were cancelled".into(),
                )));
            }
        };
        let ev = match msg {
            Ok(Some(RunEvent { event: Some(ev) })) => ev,
            Ok(Some(RunEvent { event: None })) => continue,
            Ok(None) => {
                return Err(failed(RunFailure::Other(
                    "the scheduler ended the run without a result".into(),
                )));
            }
            Err(s) => {
                return Err(failed(RunFailure::Other(lost_scheduler(
                    &opts.scheduler,
                    &s,
                ))));
            }
        };
        match ev {
            Event::Started(s) => {
                if opts.log_events {
                    if s.fetched_bytes > 0 {
                        eprintln!(
                            "started {} on {} (attempt {}, fetching {} input bytes from other workers)",
                            s.task, s.worker, s.attempt, s.fetched_bytes
                        );
                    } else {
                        eprintln!("started {} on {} (attempt {})", s.task, s.worker, s.attempt);
                    }
                }
                if let Some(t) = by_id.get(s.task.as_str()) {
                    observer.started(t);
                }
            }
            Event::Finished(f) => {
                if opts.log_events {
                    eprintln!("finished {} on {}", f.task, f.worker);
                }
                let elapsed = Duration::from_micros(f.elapsed_us);
                if let Some(t) = by_id.get(f.task.as_str()) {
                    observer.finished(t, elapsed);
                    // Started when it finished less how long the worker ran it
                    // (the event's travel time is the error).
                    records.push(TaskRecord {
                        id: t.id.to_string(),
                        node: t.node.clone(),
                        start: t0.elapsed().saturating_sub(elapsed),
                        elapsed,
                    });
                }
            }
            Event::Retried(r) => eprintln!(
                "retrying {} (attempt {} failed on {}: {})",
                r.task, r.attempt, r.worker, r.cause
            ),
            Event::WorkerLost(w) => eprintln!("worker {} lost: {}", w.worker, w.cause),
            Event::Failed(f) => {
                // Workers name files under the absolute folder sent; show them
                // as an in-process run does, under the folder given.
                let mut e = super::driver::from_wire(f);
                let (abs, given) = (base.join(""), opts.base.join(""));
                e.cause = e
                    .cause
                    .replace(&*abs.to_string_lossy(), &given.to_string_lossy());
                return Err(failed(RunFailure::Run(e)));
            }
            Event::Result(r) => break r,
        }
    };
    let values: BTreeMap<String, Value> = result
        .values
        .into_iter()
        .map(|v| (v.partition, Value::Bytes(v.data)))
        .collect();
    let (evaluations, mut receipts) = results_of(&plan, |id| values.get(id));
    outputs::commit(&outs, &receipts).map_err(|e| other(&e))?;
    // Workers resolve paths against the absolute folder sent; show them as an
    // in-process run does, against the folder given.
    for r in &mut receipts {
        for p in &mut r.paths {
            if let Ok(rest) = Path::new(p.as_str()).strip_prefix(&base) {
                *p = opts.base.join(rest).to_string_lossy().into_owned();
            }
        }
    }
    Ok(RunReport {
        pipeline,
        evaluations,
        receipts,
        records,
        wall: Duration::from_micros(result.wall_us),
        threads: result.threads as usize,
        tasks: plan.tasks.len(),
    })
}

/// Why the stream from the scheduler at `addr` ended with `s`: for a
/// transport failure (the channel's keepalive found it silent, or the
/// connection was closed), that it stopped answering.
fn lost_scheduler(addr: &str, s: &tonic::Status) -> String {
    use tonic::Code;
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => format!(
            "the scheduler at {addr} stopped answering (no keepalive reply within {}s, or the connection was closed): {}",
            super::SILENT_PEER_BOUND.as_secs(),
            super::status_cause(s)
        ),
        _ => format!("the scheduler at {addr}: {}", s.message()),
    }
}

/// Ask the scheduler which workers it has.
pub async fn status(
    scheduler: &str,
    token: Option<&str>,
    tls: &super::auth::Tls,
) -> Result<ClusterStatusReply, super::ClusterError> {
    let mut c = scheduler_client(scheduler, Attach::new(token, tls)?)?;
    let r = tokio::time::timeout(
        super::RPC_TIMEOUT,
        c.cluster_status(ClusterStatusRequest {}),
    )
    .await
    .map_err(|_| {
        super::ClusterError::Connect(
            scheduler.into(),
            format!("no answer in {}s", super::RPC_TIMEOUT.as_secs()),
        )
    })??;
    Ok(r.into_inner())
}
