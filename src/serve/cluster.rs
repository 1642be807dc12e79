//! Serving the shard models resident on a cluster's workers: a request is
//! broadcast to the worker holding each shard model, every one predicts
//! there, and the answers are combined by the model's `combine` rule, as the
//! ensemble's model file would combine them.
//!
//! In: the scheduler's address (which workers are alive), each worker's
//! resident models (`ServingModels`), a batch conformed to the model's
//! inputs. Out: the combined prediction, with the shard versions that
//! answered in the response's parameters; a degraded answer (marked so) when
//! a shard's worker does not answer, or 503 when fewer than `min_shards` do.
//! Must not: combine two versions of one shard, or wait without a deadline
//! on a worker.

use super::ServeError;
use super::models::{Answer, Backend, ModelInfo};
use crate::cluster::auth::Attach;
use crate::cluster::proto::worker_client::WorkerClient;
use crate::cluster::proto::{
    ClusterStatusRequest, CombineRule, ServeInferRequest, ServingModelsRequest,
};
use crate::frontend::pipeline::{Combine, Problem};
use crate::ml::model::{self, Prediction};
use crate::ml::model_file::ModelHeader;
use crate::runtime::kernels::prediction_columns;
use arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = WorkerClient<InterceptedService<Channel, Attach>>;

/// How long a worker has to answer its part of a request.
const SHARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a call listing a worker's models may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the view of the cluster is refreshed.
pub const REFRESH: Duration = Duration::from_millis(500);

/// One shard's model on one worker.
#[derive(Clone, Debug)]
struct Holder {
    worker: String,
    address: String,
    version: u64,
}

#[derive(Clone, Debug)]
struct Shard {
    name: String,
    index: u32,
    header: ModelHeader,
    combine: Combine,
    /// Best first: the newest version, then by worker name.
    holders: Vec<Holder>,
    /// `(version, run, fitted at)` of the best holder's history.
    history: Vec<Value>,
}

#[derive(Clone, Debug)]
struct Served {
    info: ModelInfo,
    task: Problem,
    combine: Combine,
    classes: Vec<String>,
    /// By (index, name): the order members combine in.
    shards: Vec<Shard>,
}

/// The shard models a cluster serves, refreshed from its workers.
pub struct ClusterModels {
    scheduler: String,
    attach: Attach,
    min_shards: usize,
    view: RwLock<BTreeMap<String, Arc<Served>>>,
    clients: Mutex<HashMap<String, Client>>,
}

impl ClusterModels {
    /// Serve what the workers behind `scheduler` hold; a request fails (503)
    /// when fewer than `min_shards` shard models answer it.
    pub fn new(scheduler: &str, attach: Attach, min_shards: usize) -> Arc<ClusterModels> {
        Arc::new(ClusterModels {
            scheduler: scheduler.to_string(),
            attach,
            min_shards: min_shards.max(1),
            view: RwLock::default(),
            clients: Mutex::default(),
        })
    }

    /// Refresh the view every [`REFRESH`] until the last handle to `self` is
    /// dropped; the first refresh's result is returned (a failed one is
    /// tried again at the next).
    pub async fn start_refreshing(self: &Arc<Self>) -> Result<(), ServeError> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(me) = weak.upgrade() else { break };
                let _ = me.refresh().await;
            }
        });
        self.refresh().await
    }

    fn client(&self, address: &str) -> Result<Client, ServeError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let c = crate::cluster::worker::worker_client(address, self.attach.clone())
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        clients.insert(address.to_string(), c.clone());
        Ok(c)
    }

    fn forget(&self, address: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(address);
    }

    /// Ask the scheduler who is alive and each of them what it serves.
    pub async fn refresh(&self) -> Result<(), ServeError> {
        let mut sched =
            crate::cluster::worker::scheduler_client(&self.scheduler, self.attach.clone())
                .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        let status =
            tokio::time::timeout(LIST_TIMEOUT, sched.cluster_status(ClusterStatusRequest {}))
                .await
                .map_err(|_| {
                    ServeError::Unavailable(format!(
                        "the scheduler at {} does not answer",
                        self.scheduler
                    ))
                })?
                .map_err(|s| {
                    ServeError::Unavailable(format!(
                        "the scheduler at {}: {}",
                        self.scheduler,
                        crate::cluster::status_cause(&s)
                    ))
                })?
                .into_inner();
        let calls = status.workers.iter().map(|w| {
            let address = w.address.clone();
            let client = self.client(&address);
            async move {
                let mut c = client.ok()?;
                let r =
                    tokio::time::timeout(LIST_TIMEOUT, c.serving_models(ServingModelsRequest {}))
                        .await
                        .ok()?
                        .ok()?
                        .into_inner();
                Some((address, r))
            }
        });
        let listed = futures::future::join_all(calls).await;
        // model -> shard -> (index, holders, header, combine, history)
        let mut models: BTreeMap<String, BTreeMap<String, ShardAcc>> = BTreeMap::new();
        for (address, reply) in listed.into_iter().flatten() {
            for m in reply.models {
                let Ok(header) = serde_json::from_str::<ModelHeader>(&m.header_json) else {
                    continue;
                };
                let acc = models
                    .entry(m.model.clone())
                    .or_default()
                    .entry(m.shard.clone())
                    .or_insert_with(|| ShardAcc {
                        index: m.shard_index,
                        header: header.clone(),
                        combine: combine_of(m.combine()),
                        holders: Vec::new(),
                        history: Vec::new(),
                    });
                let best = acc.holders.iter().map(|h| h.version).max().unwrap_or(0);
                if m.version > best {
                    acc.header = header;
                    acc.index = m.shard_index;
                    acc.combine = combine_of(m.combine());
                    acc.history = m
                        .history
                        .iter()
                        .map(|v| {
                            serde_json::json!({
                                "version": v.version,
                                "run": v.run_id,
                                "fitted_at": v.fitted_at,
                                "sha": v.sha,
                                "worker": reply.worker,
                            })
                        })
                        .collect();
                }
                acc.holders.push(Holder {
                    worker: reply.worker.clone(),
                    address: address.clone(),
                    version: m.version,
                });
            }
        }
        // A shard no worker lists any more is still the model's: it is
        // missing (its worker lost), not gone; answers say so.
        for (name, old) in self.view.read().unwrap_or_else(|p| p.into_inner()).iter() {
            let shards = models.entry(name.clone()).or_default();
            for sh in &old.shards {
                shards.entry(sh.name.clone()).or_insert_with(|| ShardAcc {
                    index: sh.index,
                    header: sh.header.clone(),
                    combine: sh.combine,
                    holders: Vec::new(),
                    history: sh.history.clone(),
                });
            }
        }
        let view: BTreeMap<String, Arc<Served>> = models
            .into_iter()
            .filter_map(|(name, shards)| served(&name, shards).map(|s| (name, Arc::new(s))))
            .collect();
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        Ok(())
    }

    /// One past the newest version of any shard model the view holds: what
    /// the next serving run's shard models are numbered.
    pub fn next_version(&self) -> u64 {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flat_map(|s| {
                s.shards
                    .iter()
                    .flat_map(|sh| sh.holders.iter().map(|h| h.version))
            })
            .max()
            .unwrap_or(0)
            + 1
    }

    fn served(&self, name: &str) -> Option<Arc<Served>> {
        self.view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

struct ShardAcc {
    index: u32,
    header: ModelHeader,
    combine: Combine,
    holders: Vec<Holder>,
    history: Vec<Value>,
}

/// The ensemble's rule from the wire (an unset rule is the default, average).
fn combine_of(r: CombineRule) -> Combine {
    match r {
        CombineRule::Vote => Combine::Vote,
        CombineRule::Average | CombineRule::Unspecified => Combine::Average,
    }
}

/// The model the shards of `name` make together, as clients see it.
fn served(name: &str, shards: BTreeMap<String, ShardAcc>) -> Option<Served> {
    let first = shards.values().next()?;
    let task = match first.header.task.as_str() {
        "classification" => Problem::Classification,
        _ => Problem::Regression,
    };
    let combine = first.combine;
    let classes = model::ensemble_classes(shards.values().map(|s| s.header.classes.as_slice()));
    let mut header = first.header.clone();
    header.model = name.to_string();
    header.estimator = format!("per_shard {}", header.estimator);
    header.classes = classes.clone();
    let mut list: Vec<Shard> = shards
        .into_iter()
        .map(|(shard, mut acc)| {
            acc.holders.sort_by(|a, b| {
                b.version
                    .cmp(&a.version)
                    .then_with(|| a.worker.cmp(&b.worker))
            });
            Shard {
                name: shard,
                index: acc.index,
                header: acc.header,
                combine: acc.combine,
                holders: acc.holders,
                history: acc.history,
            }
        })
        .collect();
    list.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.name.cmp(&b.name)));
    let version = versions_label(
        list.iter()
            .map(|s| (s.name.as_str(), s.holders.first().map_or(0, |h| h.version))),
    );
    let mut info = ModelInfo::of_header(&header, version);
    let mut per_shard = Map::new();
    for s in &list {
        per_shard.insert(
            s.name.clone(),
            serde_json::json!({
                "version": s.holders.first().map(|h| h.version),
                "workers": s.holders.iter().map(|h| h.worker.clone()).collect::<Vec<_>>(),
                "history": s.history,
            }),
        );
    }
    info.parameters
        .insert("shards".into(), Value::Object(per_shard));
    Some(Served {
        info,
        task,
        combine,
        classes,
        shards: list,
    })
}

/// `A:3,B:1`: the versions of the shards, as one version string.
fn versions_label<'a>(shards: impl Iterator<Item = (&'a str, u64)>) -> String {
    shards
        .map(|(s, v)| format!("{s}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>, ServeError> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    w.write(batch)
        .and_then(|_| w.finish())
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    drop(w);
    Ok(out)
}

/// One shard's answer, checked against the batch.
struct Got {
    shard: String,
    index: u32,
    version: u64,
    worker: String,
    prediction: Prediction,
}

impl ClusterModels {
    /// Ask `holder` for the shards `shards` of `model`; each answer checked.
    async fn ask(
        &self,
        holder: &Holder,
        model: &str,
        shards: Vec<String>,
        ipc: Arc<Vec<u8>>,
        rows: usize,
    ) -> Result<Vec<Got>, String> {
        let mut c = self.client(&holder.address).map_err(|e| e.to_string())?;
        let req = ServeInferRequest {
            model: model.to_string(),
            batch_ipc: ipc.as_ref().clone(),
            shards,
        };
        let reply = match tokio::time::timeout(SHARD_TIMEOUT, c.serve_infer(req)).await {
            Err(_) => {
                self.forget(&holder.address);
                return Err(format!(
                    "worker `{}` did not answer in {} s",
                    holder.worker,
                    SHARD_TIMEOUT.as_secs()
                ));
            }
            Ok(Err(s)) => {
                if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
                    self.forget(&holder.address);
                }
                return Err(format!(
                    "worker `{}`: {}",
                    holder.worker,
                    crate::cluster::status_cause(&s)
                ));
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        reply
            .answers
            .into_iter()
            .map(|a| {
                let prediction = if a.classes.is_empty() {
                    if a.values.len() != rows {
                        return Err(format!("worker `{}` answered a wrong shape", holder.worker));
                    }
                    Prediction::Values(a.values)
                } else {
                    if a.proba.len() != rows * a.classes.len() {
                        return Err(format!("worker `{}` answered a wrong shape", holder.worker));
                    }
                    Prediction::Classes {
                        proba: a.proba,
                        classes: a.classes,
                    }
                };
                Ok(Got {
                    shard: a.shard,
                    index: a.shard_index,
                    version: a.version,
                    worker: holder.worker.clone(),
                    prediction,
                })
            })
            .collect()
    }

    async fn broadcast(
        self: Arc<Self>,
        name: String,
        batch: RecordBatch,
    ) -> Result<Answer, ServeError> {
        let Some(served) = self.served(&name) else {
            return Err(ServeError::NotFound(format!("no model `{name}` is served")));
        };
        let rows = batch.num_rows();
        let ipc = Arc::new(ipc_bytes(&batch)?);
        let mut got: BTreeMap<String, Got> = BTreeMap::new();
        let mut why: BTreeMap<String, String> = BTreeMap::new();
        // Round r asks each shard's r-th holder, for the shards still
        // unanswered: one call per worker for all the shards it is asked.
        for s in served.shards.iter().filter(|s| s.holders.is_empty()) {
            why.insert(
                s.name.clone(),
                "no worker serving it answers (lost, or leaving)".into(),
            );
        }
        let rounds = served
            .shards
            .iter()
            .map(|s| s.holders.len())
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            let mut by_worker: BTreeMap<String, (Holder, Vec<String>)> = BTreeMap::new();
            for s in &served.shards {
                if got.contains_key(&s.name) {
                    continue;
                }
                if let Some(h) = s.holders.get(round) {
                    by_worker
                        .entry(h.address.clone())
                        .or_insert_with(|| (h.clone(), Vec::new()))
                        .1
                        .push(s.name.clone());
                }
            }
            if by_worker.is_empty() {
                break;
            }
            let calls = by_worker.into_values().map(|(h, shards)| {
                let me = self.clone();
                let ipc = ipc.clone();
                let name = name.clone();
                async move {
                    let r = me.ask(&h, &name, shards.clone(), ipc, rows).await;
                    (shards, r)
                }
            });
            for (shards, r) in futures::future::join_all(calls).await {
                match r {
                    Ok(answers) => {
                        for a in answers {
                            if shards.contains(&a.shard) {
                                why.remove(&a.shard);
                                got.insert(a.shard.clone(), a);
                            }
                        }
                        for s in shards {
                            if !got.contains_key(&s) {
                                why.entry(s).or_insert_with(|| "no answer".into());
                            }
                        }
                    }
                    Err(e) => {
                        for s in shards {
                            why.insert(s, e.clone());
                        }
                    }
                }
            }
        }
        let total = served.shards.len();
        if got.len() < self.min_shards.min(total).max(1) {
            let missing: Vec<String> = why.iter().map(|(s, e)| format!("{s}: {e}")).collect();
            return Err(ServeError::Unavailable(format!(
                "model `{name}`: {} of {total} shard models answered, fewer than the {} required (--min-shards): {}",
                got.len(),
                self.min_shards.min(total).max(1),
                missing.join("; ")
            )));
        }
        let mut answered: Vec<Got> = got.into_values().collect();
        answered.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.shard.cmp(&b.shard)));
        let preds: Vec<Prediction> = answered.iter().map(|g| g.prediction.clone()).collect();
        let combined =
            model::combine_predictions(served.task, &served.classes, served.combine, &preds, rows);
        let mut parameters = Map::new();
        let mut shards = Map::new();
        for g in &answered {
            shards.insert(
                g.shard.clone(),
                serde_json::json!({"version": g.version, "worker": g.worker}),
            );
        }
        parameters.insert("shards".into(), Value::Object(shards));
        let degraded = answered.len() < total;
        parameters.insert("degraded".into(), Value::from(degraded));
        if degraded {
            parameters.insert(
                "missing_shards".into(),
                Value::Object(why.into_iter().map(|(s, e)| (s, Value::from(e))).collect()),
            );
        }
        Ok(Answer {
            columns: prediction_columns(&combined),
            version: versions_label(answered.iter().map(|g| (g.shard.as_str(), g.version))),
            parameters,
        })
    }
}

/// The version the next serving run on the cluster behind `scheduler` gives
/// its shard models: one past the newest any worker serves (1 when none does,
/// or the workers cannot be asked).
pub async fn next_version_on(scheduler: &str, attach: Attach) -> u64 {
    let m = ClusterModels::new(scheduler, attach, 1);
    let _ = m.refresh().await;
    m.next_version()
}

/// The served view behind a shared handle: the HTTP server owns one of these.
pub struct Shared(pub Arc<ClusterModels>);

impl Backend for Shared {
    fn models(&self) -> Vec<ModelInfo> {
        self.0
            .view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.info.clone())
            .collect()
    }

    fn model(&self, name: &str) -> Option<ModelInfo> {
        self.0.served(name).map(|s| s.info.clone())
    }

    fn ready(&self, name: &str) -> bool {
        self.0.served(name).is_some_and(|s| {
            let held = s.shards.iter().filter(|sh| !sh.holders.is_empty()).count();
            held > 0 && held >= self.0.min_shards.min(s.shards.len())
        })
    }

    fn infer(
        &self,
        name: &str,
        batch: RecordBatch,
    ) -> BoxFuture<'static, Result<Answer, ServeError>> {
        Box::pin(self.0.clone().broadcast(name.to_string(), batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_string_names_every_shard() {
        assert_eq!(versions_label([("A", 3), ("B", 1)].into_iter()), "A:3,B:1");
    }
}
