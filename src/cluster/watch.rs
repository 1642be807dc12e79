//! A worker's `--watch`: a shard model fitted here on this worker's own rows
//! (a split by worker, read from its data root) is fitted again here, by the
//! worker itself, when those rows change, and the new version replaces the
//! old one in the resident registry in one swap; the old one answers until
//! then.
//!
//! In: the shard models a serving run installed here, with that run's
//! pipeline; the files of their shards under the data root. Out: new
//! versions in [`Resident`]. Must not: refit on a changed modification time
//! alone (the content decides); refit a shard whose rows are not this
//! worker's; hold the registry while fitting.

use super::resident::Resident;
use crate::compile::logical::LOp;
use crate::runtime::executor;
use crate::runtime::kernels::{PipelineKernels, RunContext, shard_models};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often the watched files are looked at.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The serving run a watched shard model came from.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file_name: String,
    pub text: String,
    pub base: PathBuf,
}

struct Watched {
    origin: Origin,
    files: Vec<PathBuf>,
    /// Size and modification time of each file when last hashed.
    stamps: Vec<Option<(u64, SystemTime)>>,
    digest: Option<[u8; 32]>,
}

/// The shard models this worker watches, by (model, shard).
#[derive(Default)]
pub struct Watch {
    watched: Mutex<BTreeMap<(String, String), Watched>>,
}

/// The files under `root` that hold this worker's rows of the shards split
/// the fit `node` reads: partition `i` of a source sharded by worker, where
/// this worker is the `i`-th.
pub fn files_of(cx: &RunContext, worker: &str, root: &Path) -> Vec<PathBuf> {
    cx.ops
        .values()
        .filter_map(|o| match o {
            LOp::Source {
                files: Some(f),
                on_workers: Some(w),
                ..
            } => w
                .iter()
                .position(|n| n == worker)
                .and_then(|i| f.get(i))
                .map(|f| root.join(f)),
            _ => None,
        })
        .collect()
}

fn stamp(p: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn digest(files: &[PathBuf]) -> Option<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update(std::fs::read(f).ok()?);
        h.update([0u8]);
    }
    Some(h.finalize().into())
}

impl Watch {
    /// Watch `model[shard]`, fitted from `files` by the run `origin`. The
    /// files' content now is the one it was fitted on.
    pub fn add(&self, model: &str, shard: &str, origin: Origin, files: Vec<PathBuf>) {
        if files.is_empty() {
            return;
        }
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let digest = digest(&files);
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (model.to_string(), shard.to_string()),
                Watched {
                    origin,
                    files,
                    stamps,
                    digest,
                },
            );
    }

    /// The watched shard models whose files changed in content since they
    /// were last looked at (a changed size or time alone is noted, not
    /// acted on).
    fn changed(&self) -> Vec<(String, String, Origin)> {
        let mut out = Vec::new();
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for ((model, shard), w) in watched.iter_mut() {
            let stamps: Vec<_> = w.files.iter().map(|f| stamp(f)).collect();
            if stamps == w.stamps {
                continue;
            }
            w.stamps = stamps;
            let now = digest(&w.files);
            if now.is_some() && now != w.digest {
                w.digest = now;
                out.push((model.clone(), shard.clone(), w.origin.clone()));
            }
        }
        out
    }
}

/// Fit `model[shard]` again here from `origin` (only the tasks that fit
/// needs), and install what it gives.
fn refit(
    resident: &Resident,
    worker: &str,
    root: &Path,
    model: &str,
    shard: &str,
    origin: &Origin,
) -> Result<u64, String> {
    let prepared = crate::workspace::prepare_bytes(
        &origin.file_name,
        origin.text.as_bytes(),
        origin.base.clone(),
    )
    .map_err(|e| e.to_string())?;
    let only = [format!("{model}.{shard}")];
    let plan = super::only_plan(&prepared.plan, &only).map_err(|e| e.to_string())?;
    if plan.pins().values().any(|w| w != worker) {
        return Err(format!("`{model}.{shard}` reads rows of another worker"));
    }
    let mut cx = prepared.cx;
    cx.data_root = Some(root.to_path_buf());
    let kernels = PipelineKernels { cx: Arc::new(cx) };
    let outcome = executor::run(
        &plan,
        &kernels,
        &executor::Quiet,
        &executor::Options::default(),
    )
    .map_err(|e| e.to_string())?;
    let fit = plan
        .tasks
        .iter()
        .find(|t| matches!(&t.kind, crate::plan::TaskKind::FitShard { shard: s } if s == shard))
        .ok_or("the plan has no fit of that shard")?;
    let value = fit
        .outputs
        .first()
        .and_then(|o| outcome.values.get(&o.to_string()))
        .ok_or("the fit gave no model")?;
    let mut version = 0;
    for m in shard_models(&kernels.cx, fit, value)? {
        version = resident.install(m, "watch", 0).map_err(|e| e.to_string())?;
    }
    Ok(version)
}

/// Look at the watched files every [`INTERVAL`] and refit what changed,
/// one at a time, off the async threads, until the task is aborted.
pub async fn run(watch: Arc<Watch>, resident: Arc<Resident>, worker: String, root: PathBuf) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        for (model, shard, origin) in watch.changed() {
            let (resident, worker, root) = (resident.clone(), worker.clone(), root.clone());
            let (m, s) = (model.clone(), shard.clone());
            let done = tokio::task::spawn_blocking(move || {
                refit(&resident, &worker, &root, &m, &s, &origin)
            })
            .await;
            match done {
                Ok(Ok(v)) => eprintln!(
                    "dagml worker: the rows of {model}[{shard}] changed: refitted, serving version {v}"
                ),
                Ok(Err(e)) => eprintln!(
                    "dagml worker: the rows of {model}[{shard}] changed, but refitting failed (the old version keeps answering): {e}"
                ),
                Err(e) => eprintln!("dagml worker: refitting {model}[{shard}] stopped: {e}"),
            }
        }
    }
}
