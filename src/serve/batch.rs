//! Concurrent requests to one model predicted together: requests that arrive
//! while the model's executors are busy wait in its queue, and the next free
//! executor takes all of them at once (up to `max_rows` rows), predicts the
//! rows as one batch and hands each request its own rows of the answer.
//! Nothing waits for a batch to fill: an idle model predicts a request at
//! once, so batching only happens under load, where it saves one call per
//! request (for a cluster backend, one broadcast to every shard's worker).
//! Also counts, per model, what the Open Inference Protocol's statistics
//! extension reports (`GET /v2/models/NAME/stats`).
//!
//! In: batches already conformed to a model's inputs (so every batch of one
//! model has the same columns and types). Out: each request's answer, the
//! same as if it had been predicted alone (a row's prediction does not depend
//! on the other rows of its batch). Must not: let one bad request fail the
//! others (a batch that fails is predicted again request by request); hold a
//! lock while predicting; leave a request waiting when an executor is free.

use super::ServeError;
use super::models::{Answer, Backend};
use arrow::array::ArrayRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// How requests to one model are merged.
#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    /// The most rows predicted in one call; a request larger than this is
    /// predicted alone. 1 turns batching off.
    pub max_rows: usize,
    /// Predictions of one model running at once.
    pub executors: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 4096,
            executors: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        }
    }
}

type Reply = oneshot::Sender<Result<Answer, ServeError>>;

struct Pending {
    batch: RecordBatch,
    reply: Reply,
    queued: Instant,
}

/// A count and the time it took, as the statistics extension reports them.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Duration {
    pub count: u64,
    pub ns: u64,
}

impl Duration {
    fn add(&mut self, count: u64, d: std::time::Duration) {
        self.count += count;
        self.ns += u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    }
}

/// One model's figures since the server started (Triton's statistics
/// extension's `model_stats` entry).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ModelStats {
    pub name: String,
    pub version: String,
    /// Milliseconds since the Unix epoch of the last request answered.
    pub last_inference: u64,
    /// Requests answered (their rows are in `rows`).
    pub inference_count: u64,
    /// Calls to the model: fewer than requests when requests were batched.
    pub execution_count: u64,
    pub rows: u64,
    pub inference_stats: InferenceStats,
    /// Executions by how many requests they predicted together.
    pub batch_stats: Vec<BatchStats>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct InferenceStats {
    pub success: Duration,
    pub fail: Duration,
    /// Time requests waited for an executor.
    pub queue: Duration,
    /// Time in the model's predict.
    pub compute_infer: Duration,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BatchStats {
    /// Requests predicted in one execution.
    pub batch_size: u64,
    pub compute_infer: Duration,
}

struct Lane {
    queue: Mutex<VecDeque<Pending>>,
    executors: Arc<Semaphore>,
    stats: Mutex<ModelStats>,
}

/// The queues of every model of a backend.
pub struct Batcher<B> {
    backend: Arc<B>,
    config: BatchConfig,
    lanes: Mutex<BTreeMap<String, Arc<Lane>>>,
}

impl<B: Backend> Batcher<B> {
    pub fn new(backend: Arc<B>, config: BatchConfig) -> Arc<Batcher<B>> {
        Arc::new(Batcher {
            backend,
            config: BatchConfig {
                max_rows: config.max_rows.max(1),
                executors: config.executors.max(1),
            },
            lanes: Mutex::new(BTreeMap::new()),
        })
    }

    fn lane(&self, name: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Lane {
                    queue: Mutex::new(VecDeque::new()),
                    executors: Arc::new(Semaphore::new(self.config.executors)),
                    stats: Mutex::new(ModelStats {
                        name: name.to_string(),
                        ..Default::default()
                    }),
                })
            })
            .clone()
    }

    /// Predict `batch` with model `name`, together with whatever other
    /// requests to it are waiting when an executor takes it.
    pub async fn infer(
        self: &Arc<Self>,
        name: &str,
        batch: RecordBatch,
    ) -> Result<Answer, ServeError> {
        let lane = self.lane(name);
        let (tx, rx) = oneshot::channel();
        lane.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Pending {
                batch,
                reply: tx,
                queued: Instant::now(),
            });
        self.wake(name, &lane);
        rx.await
            .map_err(|_| ServeError::Internal("the prediction stopped".into()))?
    }

    /// Start an executor when one is free and the queue is not empty. An
    /// executor re-checks the queue after giving its slot back, so a request
    /// queued while every slot was taken is never left behind.
    fn wake(self: &Arc<Self>, name: &str, lane: &Arc<Lane>) {
        let Ok(permit) = lane.executors.clone().try_acquire_owned() else {
            return;
        };
        let me = self.clone();
        let (name, lane) = (name.to_string(), lane.clone());
        tokio::spawn(async move { me.execute(name, lane, permit).await });
    }

    async fn execute(self: Arc<Self>, name: String, lane: Arc<Lane>, permit: OwnedSemaphorePermit) {
        loop {
            let taken = self.take(&lane);
            if taken.is_empty() {
                break;
            }
            self.predict(&name, &lane, taken).await;
        }
        drop(permit);
        let waiting = !lane
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if waiting {
            self.wake(&name, &lane);
        }
    }

    /// The queue's head, and the requests after it while their rows fit.
    fn take(&self, lane: &Lane) -> Vec<Pending> {
        let mut queue = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::new();
        let mut rows = 0;
        while let Some(next) = queue.front() {
            let n = next.batch.num_rows();
            if !taken.is_empty() && rows + n > self.config.max_rows {
                break;
            }
            rows += n;
            taken.extend(queue.pop_front());
            if rows >= self.config.max_rows {
                break;
            }
        }
        taken
    }

    async fn predict(&self, name: &str, lane: &Lane, taken: Vec<Pending>) {
        let started = Instant::now();
        {
            let mut s = lane.stats.lock().unwrap_or_else(|e| e.into_inner());
            for p in &taken {
                s.inference_stats
                    .queue
                    .add(1, started.saturating_duration_since(p.queued));
            }
        }
        if taken.len() == 1 {
            let p = taken.into_iter().next().map(|p| (p.batch, p.reply));
            if let Some((batch, reply)) = p {
                let rows = batch.num_rows();
                let r = self.backend.infer(name, batch).await;
                self.count(lane, &[rows], r.as_ref().ok(), started);
                let _ = reply.send(r);
            }
            return;
        }
        let rows: Vec<usize> = taken.iter().map(|p| p.batch.num_rows()).collect();
        let merged = concat(taken.iter().map(|p| &p.batch));
        let answer = match merged {
            Ok(b) => self.backend.infer(name, b).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(a) => {
                self.count(lane, &rows, Some(&a), started);
                let mut offset = 0;
                for (p, n) in taken.into_iter().zip(&rows) {
                    let _ = p.reply.send(Ok(slice(&a, offset, *n)));
                    offset += n;
                }
            }
            // A refusal for the whole batch (no shard models, stopping):
            // every request gets it.
            Err(e) if !matches!(e, ServeError::BadRequest(_)) => {
                self.count(lane, &rows, None, started);
                for p in taken {
                    let _ = p.reply.send(Err(e.same()));
                }
            }
            // One request's rows may be what failed: predict each alone, so
            // only that one gets the error.
            Err(_) => {
                for p in taken {
                    let started = Instant::now();
                    let n = p.batch.num_rows();
                    let r = self.backend.infer(name, p.batch).await;
                    self.count(lane, &[n], r.as_ref().ok(), started);
                    let _ = p.reply.send(r);
                }
            }
        }
    }

    fn count(&self, lane: &Lane, rows: &[usize], answer: Option<&Answer>, started: Instant) {
        let took = started.elapsed();
        let mut s = lane.stats.lock().unwrap_or_else(|e| e.into_inner());
        let requests = rows.len() as u64;
        s.execution_count += 1;
        match answer {
            Some(a) => {
                s.inference_count += requests;
                s.rows += rows.iter().sum::<usize>() as u64;
                s.version = a.version.clone();
                s.inference_stats.success.add(requests, took);
                s.inference_stats.compute_infer.add(requests, took);
                s.last_inference = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                match s.batch_stats.iter_mut().find(|b| b.batch_size == requests) {
                    Some(b) => b.compute_infer.add(1, took),
                    None => {
                        let mut b = BatchStats {
                            batch_size: requests,
                            ..Default::default()
                        };
                        b.compute_infer.add(1, took);
                        s.batch_stats.push(b);
                        s.batch_stats.sort_by_key(|b| b.batch_size);
                    }
                }
            }
            None => s.inference_stats.fail.add(requests, took),
        }
    }

    /// The figures of `name` (every model when `None`) that has been called.
    pub fn stats(&self, name: Option<&str>) -> Vec<ModelStats> {
        let lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
            .map(|(_, l)| l.stats.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// The rows of several conformed batches of one model, as one batch.
fn concat<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> Result<RecordBatch, ServeError> {
    let batches: Vec<&RecordBatch> = batches.collect();
    let Some(first) = batches.first() else {
        return Err(ServeError::Internal("no requests to predict".into()));
    };
    let schema = first.schema();
    let bad = |e: arrow::error::ArrowError| {
        ServeError::Internal(format!("cannot put the requests in one batch: {e}"))
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for i in 0..schema.fields().len() {
        let parts: Vec<&dyn arrow::array::Array> = batches
            .iter()
            .map(|b| b.columns().get(i).map(|c| c.as_ref()))
            .collect::<Option<_>>()
            .ok_or_else(|| ServeError::Internal("requests with different inputs".into()))?;
        columns.push(arrow::compute::concat(&parts).map_err(bad)?);
    }
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    RecordBatch::try_new_with_options(
        schema,
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(bad)
}

/// Rows `offset..offset + len` of an answer.
fn slice(a: &Answer, offset: usize, len: usize) -> Answer {
    Answer {
        columns: a
            .columns
            .iter()
            .map(|(f, c)| (f.clone(), c.slice(offset, len)))
            .collect(),
        version: a.version.clone(),
        parameters: a.parameters.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::models::ModelInfo;
    use arrow::array::{Array, Float64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles `x`; fails a batch holding a negative value; counts its calls
    /// and holds each call until `gate` opens, so requests pile up.
    struct Gauge {
        calls: AtomicUsize,
        gate: tokio::sync::Semaphore,
    }

    struct Doubler(Arc<Gauge>);

    impl Backend for Doubler {
        fn models(&self) -> Vec<ModelInfo> {
            Vec::new()
        }
        fn model(&self, _: &str) -> Option<ModelInfo> {
            None
        }
        fn ready(&self, _: &str) -> bool {
            true
        }
        fn infer(
            &self,
            _: &str,
            batch: RecordBatch,
        ) -> BoxFuture<'static, Result<Answer, ServeError>> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            let gauge = self.0.clone();
            Box::pin(async move {
                let _p = gauge.gate.acquire().await;
                let x = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .ok_or_else(|| ServeError::BadRequest("not f64".into()))?
                    .clone();
                if x.iter().flatten().any(|v| v < 0.0) {
                    return Err(ServeError::BadRequest("negative".into()));
                }
                let y: Float64Array = x.iter().map(|v| v.map(|v| v * 2.0)).collect();
                Ok(Answer {
                    columns: vec![(
                        Field::new("prediction", DataType::Float64, true),
                        Arc::new(y),
                    )],
                    version: "1".into(),
                    parameters: Default::default(),
                })
            })
        }
    }

    fn rows(v: &[f64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(v.to_vec()))]).unwrap()
    }

    fn values(a: &Answer) -> Vec<f64> {
        let c = a.columns[0]
            .1
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        c.values().to_vec()
    }

    /// A batcher with one executor over a [`Doubler`] whose gate is shut.
    fn gated(max_rows: usize) -> (Arc<Gauge>, Arc<Batcher<Doubler>>) {
        let gauge = Arc::new(Gauge {
            calls: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        });
        let b = Batcher::new(
            Arc::new(Doubler(gauge.clone())),
            BatchConfig {
                max_rows,
                executors: 1,
            },
        );
        (gauge, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_requests_are_predicted_together_and_each_gets_its_own_rows() {
        let (gauge, b) = gated(100);
        // The first request takes the one executor and blocks at the gate;
        // the next nine queue behind it.
        let mut calls = Vec::new();
        for i in 0..10 {
            let b = b.clone();
            calls.push(tokio::spawn(async move {
                b.infer("m", rows(&[i as f64, i as f64 + 0.5])).await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        gauge.gate.add_permits(100);
        for (i, c) in calls.into_iter().enumerate() {
            let a = c.await.unwrap().unwrap();
            assert_eq!(values(&a), vec![2.0 * i as f64, 2.0 * i as f64 + 1.0]);
        }
        // One call for the first, one for the nine that waited.
        assert_eq!(gauge.calls.load(Ordering::SeqCst), 2);
        let s = &b.stats(Some("m"))[0];
        assert_eq!((s.inference_count, s.execution_count, s.rows), (10, 2, 20));
        let sizes: Vec<u64> = s.batch_stats.iter().map(|b| b.batch_size).collect();
        assert_eq!(sizes, vec![1, 9]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_request_fails_alone_and_max_rows_bounds_a_batch() {
        let (gauge, b) = gated(4);
        let inputs: Vec<Vec<f64>> = vec![
            vec![1.0],
            vec![2.0, 3.0],
            vec![-1.0],
            vec![4.0],
            vec![5.0, 6.0, 7.0, 8.0, 9.0],
        ];
        let mut calls = Vec::new();
        for v in inputs.clone() {
            let b = b.clone();
            calls.push(tokio::spawn(async move { b.infer("m", rows(&v)).await }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        gauge.gate.add_permits(100);
        for (v, c) in inputs.iter().zip(calls) {
            let r = c.await.unwrap();
            if v[0] < 0.0 {
                assert!(r.is_err());
            } else {
                let a = r.unwrap();
                assert_eq!(values(&a), v.iter().map(|x| x * 2.0).collect::<Vec<_>>());
            }
        }
        let s = &b.stats(Some("m"))[0];
        assert_eq!(s.inference_count, 4);
        assert_eq!(s.inference_stats.fail.count, 1);
        // [1.0] alone; then [2,3],[-1],[4] (4 rows) fail together and go one
        // by one; then the 5-row request alone, over the limit.
        assert_eq!(gauge.calls.load(Ordering::SeqCst), 1 + 1 + 3 + 1);
    }

    #[test]
    fn an_answer_is_sliced_by_rows() {
        let a = Answer {
            columns: vec![(
                Field::new("p", DataType::Float64, true),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
            )],
            version: "v".into(),
            parameters: Default::default(),
        };
        let s = slice(&a, 1, 2);
        assert_eq!(s.columns[0].1.len(), 2);
        assert_eq!(values(&s), vec![2.0, 3.0]);
    }
}
