//! A worker: one port serving the control service (`Worker` in proto/), the
//! Arrow Flight data plane and the gRPC health service; registers with the
//! scheduler and heartbeats.
//!
//! In: `StartRun` (the pipeline's text and base folder, once per run), `RunTask`
//! (a task as JSON plus where each input partition is held). Out: the task's
//! outputs, kept in the store under `<run>/<partition>` for peers and the
//! scheduler to fetch by Flight. A worker the scheduler declared lost (it was
//! silent) forgets its runs and registers again when it hears so. Drained
//! (SIGTERM, `WorkerHandle::drain`): it says so in its heartbeats, lets its
//! tasks finish within a timeout, then leaves (`LeaveCluster`). A run with a
//! task whose estimated partition fits neither in this machine's available
//! memory nor on the disk under its data root is refused at `StartRun`. The
//! output files its sinks stage are handed to the client when the run ends
//! or is forgotten here (the client removes those its run does not use).
//! Must not: run
//! code it was sent (it plans the pipeline text itself), take more tasks than
//! its threads, write outside its data root (spills go to `<data root>/spill`),
//! or wait on the scheduler or a peer without a deadline.

use super::auth::{Attach, Check};
use super::flight::{FlightStore, Peers};
use super::proto::scheduler_client::SchedulerClient;
use super::proto::worker_server::{Worker, WorkerServer};
use super::proto::*;
use super::resident::Resident;
use super::serving_stats::ServingStats;
use super::store::Store;
use super::{ClusterError, HEARTBEAT, MAX_MESSAGE_BYTES, RPC_TIMEOUT};
use crate::ml::model::Prediction;
use crate::plan::Task;
use crate::runtime::executor::Kernels;
use crate::runtime::failure::FailureKind;
use crate::runtime::kernels::PipelineKernels;
use arrow_flight::flight_service_server::FlightServiceServer;
use futures::TryStreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Semaphore, oneshot};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Metadata key on a failed `RunTask`: the peer an input could not be fetched from.
pub const LOST_PEER: &str = "dagml-lost-peer";
/// Metadata key on a failed call: the [`FailureKind`]'s wire name, which
/// decides whether the scheduler retries.
pub const FAILURE_KIND: &str = "dagml-failure-kind";

/// A failed call that says what kind of failure it is.
fn failure(code: tonic::Code, kind: FailureKind, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = kind.as_str().parse() {
        s.metadata_mut().insert(FAILURE_KIND, v);
    }
    s
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The scheduler's address.
    pub scheduler: String,
    /// Where to listen (default 127.0.0.1 on a free port).
    pub listen: String,
    /// The host:port to register with the scheduler, for peers and the
    /// scheduler to dial (default: the bound address; 127.0.0.1 for
    /// 0.0.0.0). A name here, such as a StatefulSet pod's stable DNS name,
    /// is what a TLS certificate can name.
    pub advertise: Option<String>,
    pub name: Option<String>,
    pub threads: usize,
    /// Bytes; 0: no limit.
    pub memory_limit: u64,
    /// Spill files go under it; when given explicitly, a run's base folder must
    /// be inside it too.
    pub data_root: Option<PathBuf>,
    pub token: Option<String>,
    pub tls: super::auth::Tls,
    /// Run tasks on this pool instead of one of `threads` threads of its own
    /// (the embedded cluster's workers share one pool; see embedded.rs).
    pub pool: Option<Arc<rayon::ThreadPool>>,
    /// The embedded cluster's testing hook: when it fires, this worker stops
    /// as a killed process would (see [`super::fault::Fault`]).
    pub fault: Option<WorkerFault>,
    /// Print each spill, and re-registering after being declared lost, on
    /// stderr.
    pub log_spills: bool,
    /// Also serve the health service alone here, plain and without a token
    /// (for probes that can send neither, e.g. Kubernetes' `grpc:` probe).
    pub health_listen: Option<String>,
    /// Refit a served shard model here when its rows under the data root
    /// change (`cluster::watch`); needs `data_root`.
    pub watch: bool,
}

/// A fault that may fire on this worker, and the worker's index in its cluster.
#[derive(Clone, Debug)]
pub struct WorkerFault {
    pub index: usize,
    pub fault: Arc<super::fault::Fault>,
}

/// Stopping a worker as if its process were killed: its server and heartbeats
/// are aborted, every connection it accepted is shut (aborting the server task
/// alone leaves them open), and calls still arriving are refused.
///
/// Or silencing it as a network partition would: its heartbeats stop and every
/// connection it accepted (and accepts) stays open with nothing read or
/// written, until it heals (if ever).
#[derive(Default)]
struct Kill {
    dead: AtomicBool,
    tasks: std::sync::OnceLock<Vec<tokio::task::AbortHandle>>,
    /// Duplicates of the accepted sockets, to shut them (kept only when a
    /// fault may fire here).
    conns: Mutex<Vec<std::net::TcpStream>>,
    silent: AtomicBool,
    /// Connections waiting for the silence to end.
    wakers: Mutex<Vec<std::task::Waker>>,
    /// Sockets the server let go of while silent: kept open (a partitioned
    /// host closes nothing) until the silence ends.
    held: Mutex<Vec<tokio::net::TcpStream>>,
}

impl Kill {
    fn dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn silent(&self) -> bool {
        self.silent.load(Ordering::SeqCst)
    }

    /// Go silent; heal after `heal_after` when given.
    fn silence(self: &Arc<Self>, heal_after: Option<std::time::Duration>) {
        self.silent.store(true, Ordering::SeqCst);
        if let Some(d) = heal_after {
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                me.heal();
            });
        }
    }

    fn heal(&self) {
        self.silent.store(false, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in wakers {
            w.wake();
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Pending while silent (woken when it heals).
    fn poll_silence(&self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.silent() {
            return false;
        }
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(cx.waker().clone());
        // It may have healed between the check and the push.
        self.silent()
    }

    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for t in self.tasks.get().into_iter().flatten() {
            t.abort();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for c in conns {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Keep a duplicate of an accepted connection's socket.
    fn track(&self, tcp: tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
        let std_tcp = tcp.into_std()?;
        let dup = std_tcp.try_clone()?;
        if self.dead() {
            let _ = dup.shutdown(std::net::Shutdown::Both);
        } else {
            self.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(dup);
        }
        tokio::net::TcpStream::from_std(std_tcp)
    }
}

/// An accepted connection that reads and writes nothing while its worker is
/// silent (the embedded partition fault); a plain socket otherwise.
struct Conn {
    tcp: Option<tokio::net::TcpStream>,
    kill: Option<Arc<Kill>>,
}

impl Conn {
    fn poll_io<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        io: impl FnOnce(
            std::pin::Pin<&mut tokio::net::TcpStream>,
            &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        if self.kill.as_ref().is_some_and(|k| k.poll_silence(cx)) {
            return std::task::Poll::Pending;
        }
        match self.tcp.as_mut() {
            Some(t) => io(std::pin::Pin::new(t), cx),
            None => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let (Some(k), Some(t)) = (&self.kill, self.tcp.take())
            && k.silent()
        {
            k.held.lock().unwrap_or_else(|p| p.into_inner()).push(t);
        }
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().poll_io(cx, |t, cx| t.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().poll_io(cx, |t, cx| t.poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().poll_io(cx, |t, cx| t.poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().poll_io(cx, |t, cx| t.poll_shutdown(cx))
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Option<tonic::transport::server::TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.as_ref().map(|t| t.connect_info())
    }
}

/// The token check, behind a stopped worker's refusal.
#[derive(Clone)]
struct Gate {
    check: Check,
    kill: Arc<Kill>,
}

impl Interceptor for Gate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.kill.dead() {
            return Err(stopped());
        }
        self.check.call(req)
    }
}

fn stopped() -> Status {
    Status::unavailable(format!(
        "this worker was stopped ({})",
        super::fault::FAULT_ENV
    ))
}

struct RunState {
    kernels: Arc<PipelineKernels>,
    cancelled: Arc<AtomicBool>,
    /// A serving run: the shard models fitted here stay resident.
    serve: bool,
    /// The version they get (0: one past this worker's own).
    serve_version: u64,
    /// The pipeline, for refitting a watched shard model later.
    origin: super::watch::Origin,
    /// Output files its sinks staged here: the client's to put in place (or
    /// remove, if its run does not use them) once the run has ended or been
    /// forgotten here.
    staged: Mutex<Vec<PathBuf>>,
}

impl RunState {
    fn staged(&self) -> Vec<PathBuf> {
        std::mem::take(&mut *self.staged.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct State {
    name: String,
    store: Arc<Store>,
    runs: Mutex<HashMap<String, Arc<RunState>>>,
    peers: Peers,
    slots: Arc<Semaphore>,
    pool: Arc<rayon::ThreadPool>,
    running: AtomicU32,
    confine: Option<PathBuf>,
    /// Where spills go (`<data root>/spill`): its free disk, with the
    /// machine's available memory, is what a task here can hold.
    data_root: PathBuf,
    fault: Option<WorkerFault>,
    /// Tasks handed to this worker so far.
    handed: AtomicU32,
    kill: Arc<Kill>,
    /// `RunTask` calls being served (fetching inputs, waiting for a thread or
    /// computing): a draining worker leaves when none is left.
    inflight: AtomicU32,
    /// Set by SIGTERM (`WorkerHandle::drain`): heartbeats say so, and the
    /// worker does not register again.
    draining: AtomicBool,
    /// The scheduler has answered a heartbeat that said draining: it places
    /// nothing new here from now on.
    drain_heard: AtomicBool,
    /// Wakes the heartbeat loop at once (the drain is news to send now).
    beat: tokio::sync::Notify,
    /// The id the scheduler knows this worker by, while registered.
    worker_id: Mutex<Option<u64>>,
    /// Shard models kept for serving (not a run's: no run's end drops them).
    resident: Arc<Resident>,
    /// With `--watch`: the shard models of this worker's own rows, refitted
    /// when those change.
    watch: Option<Arc<super::watch::Watch>>,
    /// What `ServeInfer` did, per model and shard (sent in heartbeats).
    serving: ServingStats,
}

/// Counts a `RunTask` call as in flight while alive (dropped calls too).
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicU32) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl State {
    /// Cancel every run here and drop its partitions (this worker was declared
    /// lost: the scheduler no longer counts on any of it).
    fn forget_all_runs(&self) {
        let runs = std::mem::take(&mut *self.runs.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, run) in runs {
            run.cancelled.store(true, Ordering::SeqCst);
            self.store.remove_prefix(&format!("{id}/"));
            // The scheduler writes those outputs again elsewhere, and the
            // client removes the files its run does not use (removing them
            // here could race with a client putting a result in place).
            crate::data::write::hand_over(&run.staged());
        }
    }

    fn run(&self, id: &str) -> Result<Arc<RunState>, Status> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Status::failed_precondition(format!("run `{id}` was not started here")))
    }
}

#[derive(Clone)]
struct Service(Arc<State>);

impl Service {
    /// Keep the shard models a serving run's task fitted here.
    fn install(
        &self,
        run: &RunState,
        task: &Task,
        v: &crate::runtime::value::Value,
        run_id: &str,
    ) -> Result<(), Status> {
        let models = crate::runtime::kernels::shard_models(&run.kernels.cx, task, v)
            .map_err(|e| failure(tonic::Code::Internal, FailureKind::Internal, e))?;
        let own_rows = match (&self.0.watch, &self.0.confine) {
            (Some(_), Some(root)) => super::watch::files_of(&run.kernels.cx, &self.0.name, root),
            _ => Vec::new(),
        };
        for m in models {
            let (model, shard) = (m.model.clone(), m.shard.clone());
            if let Some(w) = &self.0.watch
                && shard == self.0.name
            {
                w.add(&model, &shard, run.origin.clone(), own_rows.clone());
            }
            let version = self
                .0
                .resident
                .install(m, run_id, run.serve_version)
                .map_err(|e| failure(tonic::Code::Internal, FailureKind::Io, e.to_string()))?;
            eprintln!(
                "dagml worker {}: serving {model}[{shard}] version {version}",
                self.0.name
            );
        }
        Ok(())
    }

    /// Predict the batch with `held` (one version of each shard).
    async fn answer(
        &self,
        batch_ipc: &[u8],
        held: Vec<Arc<super::resident::Held>>,
    ) -> Result<ServeInferReply, Status> {
        let batch = read_ipc_batch(batch_ipc)
            .map_err(|e| Status::invalid_argument(format!("the batch does not read: {e}")))?;
        let pool = self.0.pool.clone();
        let answered =
            tokio::task::spawn_blocking(move || pool.install(|| Resident::predict(&held, &batch)))
                .await
                .map_err(|e| Status::internal(format!("the prediction stopped: {e}")))?
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.0.kill.dead() {
            return Err(stopped());
        }
        let answers = answered
            .into_iter()
            .map(|(h, p)| {
                let mut a = ShardAnswer {
                    shard: h.shard.clone(),
                    shard_index: h.index,
                    version: h.version(),
                    ..Default::default()
                };
                match p {
                    Prediction::Classes { proba, classes } => {
                        a.proba = proba;
                        a.classes = classes;
                    }
                    Prediction::Values(v) => a.values = v,
                }
                a
            })
            .collect();
        Ok(ServeInferReply { answers })
    }
}

/// The resident shard models with their versions and serving figures, for
/// the heartbeat.
fn serving_stats(state: &State) -> Vec<ServingStat> {
    state
        .resident
        .list()
        .iter()
        .map(|h| {
            let c = state.serving.get(&h.model, &h.shard);
            ServingStat {
                model: h.model.clone(),
                shard: h.shard.clone(),
                version: h.version(),
                versions: h.history.len().try_into().unwrap_or(u32::MAX),
                requests: c.requests,
                errors: c.errors,
                latency_sum_us: c.sum_us,
                p50_us: c.recent_quantile(0.5),
                p99_us: c.recent_quantile(0.99),
                latency_buckets: c.buckets,
            }
        })
        .collect()
}

fn combine_rule(c: crate::frontend::pipeline::Combine) -> super::proto::CombineRule {
    use super::proto::CombineRule;
    match c {
        crate::frontend::pipeline::Combine::Average => CombineRule::Average,
        crate::frontend::pipeline::Combine::Vote => CombineRule::Vote,
    }
}

/// The one batch of an Arrow IPC stream (several are concatenated).
pub fn read_ipc_batch(bytes: &[u8]) -> Result<arrow::record_batch::RecordBatch, String> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| e.to_string())?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())
}

#[tonic::async_trait]
impl Worker for Service {
    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunReply>, Status> {
        let mut r = request.into_inner();
        if self.0.run(&r.run_id).is_ok() {
            return Ok(Response::new(StartRunReply {}));
        }
        let mut base = PathBuf::from(&r.base_dir);
        if let Some(root) = &self.0.confine {
            if let Ok(b) = base.canonicalize() {
                base = b;
            }
            if !base.starts_with(root) {
                return Err(Status::permission_denied(format!(
                    "the run's folder `{}` is outside this worker's data root `{}`",
                    base.display(),
                    root.display()
                )));
            }
        }
        let (file_name, text, base_dir) = (
            r.file_name.clone(),
            std::mem::take(&mut r.pipeline_text),
            r.base_dir.clone(),
        );
        let (origin_text, origin_base) = (text.clone(), base.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            crate::workspace::prepare_bytes(&file_name, text.as_bytes(), base)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::invalid_argument(format!("the pipeline does not plan here: {e}")))?;
        let mut prepared = prepared;
        if !r.only.is_empty() {
            prepared.plan = super::only_plan(&prepared.plan, &r.only)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let here = super::plan_hash(&prepared.plan);
        if !r.plan_hash.is_empty() && r.plan_hash != here {
            return Err(failure(
                tonic::Code::FailedPrecondition,
                FailureKind::PlanMismatch,
                format!(
                    "this worker plans `{}` differently from the scheduler (plan {} here, {} there): \
                     another dagml version, or other files under `{}`",
                    r.file_name,
                    &here[..12],
                    r.plan_hash.get(..12).unwrap_or(&r.plan_hash),
                    base_dir
                ),
            ));
        }
        // With a data root, every file the pipeline reads or writes must be
        // under it (after `..` is taken out; absolute paths included).
        if let Some(root) = &self.0.confine
            && let Some(f) = prepared
                .files
                .iter()
                .find(|f| !crate::workspace::normalize(f).starts_with(root))
        {
            return Err(Status::permission_denied(format!(
                "the pipeline uses `{}`, outside this worker's data root `{}`",
                f.display(),
                root.display()
            )));
        }
        // A task whose estimated output fits neither in this machine's
        // memory nor on the disk it spills to would be killed after whatever
        // ran before it: refused now, naming both. (`--memory-limit` is the
        // spill threshold, not a cap: it is not what refuses.)
        if let Some(mem) = crate::workspace::available_memory_bytes() {
            let disk = crate::data::write::free_disk(&self.0.data_root).map_or(0, |(_, f)| f);
            use crate::plan::dot::human_bytes;
            let whose = format!(
                "worker `{}` can hold ({} of memory available + {} free under its data root `{}`)",
                self.0.name,
                human_bytes(mem),
                human_bytes(disk),
                self.0.data_root.display()
            );
            crate::workspace::refuse_what_cannot_fit(
                &prepared.plan,
                mem.saturating_add(disk),
                &whose,
            )
            .map_err(|e| failure(tonic::Code::FailedPrecondition, FailureKind::Io, e))?;
        }
        let mut cx = prepared.cx;
        cx.data_root = self.0.confine.clone();
        let state = RunState {
            kernels: Arc::new(PipelineKernels { cx: Arc::new(cx) }),
            cancelled: Arc::default(),
            serve: r.serve,
            serve_version: r.serve_version,
            origin: super::watch::Origin {
                file_name: r.file_name.clone(),
                text: origin_text,
                base: origin_base,
            },
            staged: Mutex::default(),
        };
        self.0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(r.run_id)
            .or_insert_with(|| Arc::new(state));
        Ok(Response::new(StartRunReply {}))
    }

    async fn run_task(
        &self,
        request: Request<RunTaskRequest>,
    ) -> Result<Response<RunTaskReply>, Status> {
        let _inflight = InFlight::new(&self.0.inflight);
        let r = request.into_inner();
        let run = self.0.run(&r.run_id)?;
        let task: Task = serde_json::from_str(&r.task_json)
            .map_err(|e| Status::invalid_argument(format!("bad task: {e}")))?;
        if let Some(f) = &self.0.fault {
            let handed = self.0.handed.fetch_add(1, Ordering::SeqCst) + 1;
            if f.fault.fires(f.index, handed, &task.id.to_string()) {
                match f.fault.action() {
                    super::fault::Action::Kill => {
                        self.0.kill.kill();
                        return Err(stopped());
                    }
                    // The task goes on; its answer waits in a silent
                    // connection, as behind a cut link.
                    super::fault::Action::Partition { heal_after } => {
                        self.0.kill.silence(heal_after)
                    }
                }
            }
        }
        // Where each input is held, by partition name.
        let places: Arc<HashMap<String, String>> = Arc::new(
            r.inputs
                .iter()
                .map(|l| (l.partition.clone(), l.address.clone()))
                .collect(),
        );
        // Inputs held here are taken from the store; the others are fetched
        // from their holders, several at a time (each fetch of a small value
        // is a round trip), in input order.
        let fetches: Vec<_> = task
            .inputs
            .iter()
            .cloned()
            .map(|id| {
                let key = format!("{}/{id}", r.run_id);
                let places = places.clone();
                let state = self.0.clone();
                async move {
                    let local = state.store.get(&key).map_err(|e| {
                        failure(
                            tonic::Code::Internal,
                            FailureKind::CorruptPartition,
                            format!("input `{id}` could not be read back here: {e}"),
                        )
                    })?;
                    if let Some(v) = local {
                        return Ok(v);
                    }
                    let Some(addr) = places.get(id.to_string().as_str()) else {
                        return Err(Status::invalid_argument(format!(
                            "no location for input `{id}`"
                        )));
                    };
                    match state.peers.fetch_shared(addr, &key).await {
                        Ok(v) => Ok(v),
                        Err(e) => {
                            state.peers.forget(addr);
                            let mut s = Status::aborted(format!(
                                "input `{id}` could not be fetched from {addr}: {e}"
                            ));
                            if let Ok(v) = addr.parse() {
                                s.metadata_mut().insert(LOST_PEER, v);
                            }
                            Err(s)
                        }
                    }
                }
            })
            .collect();
        let inputs: Vec<Arc<crate::runtime::value::Value>> =
            futures::StreamExt::buffered(futures::stream::iter(fetches), super::PARALLEL_FETCHES)
                .try_collect()
                .await?;
        let _permit = self
            .0
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("worker shutting down"))?;
        if run.cancelled.load(Ordering::SeqCst) {
            return Err(Status::cancelled("the run was cancelled"));
        }
        self.0.running.fetch_add(1, Ordering::SeqCst);
        let t0 = Instant::now();
        let kernels = run.kernels.clone();
        let pool = self.0.pool.clone();
        let outputs = task.outputs.clone();
        let serving = run.serve.then(|| task.clone());
        let writes = task.kind == crate::plan::TaskKind::Write;
        let result =
            tokio::task::spawn_blocking(move || pool.install(|| kernels.run(&task, inputs))).await;
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        let values = result
            .map_err(|e| {
                failure(
                    tonic::Code::Internal,
                    FailureKind::Internal,
                    format!("the task panicked: {e}"),
                )
            })?
            .map_err(|e| failure(tonic::Code::Internal, e.kind, e.message))?;
        if values.len() != outputs.len() {
            return Err(failure(
                tonic::Code::Internal,
                FailureKind::Internal,
                format!(
                    "the task returned {} outputs but declares {}",
                    values.len(),
                    outputs.len()
                ),
            ));
        }
        if writes {
            let mut staged = run.staged.lock().unwrap_or_else(|p| p.into_inner());
            for v in &values {
                if let crate::runtime::value::Value::Bytes(b) = v
                    && let Ok(r) = serde_json::from_slice::<crate::runtime::kernels::Receipt>(b)
                {
                    staged.extend(r.staged.into_iter().map(PathBuf::from));
                }
            }
        }
        if run.cancelled.load(Ordering::SeqCst) {
            return Err(failure(
                tonic::Code::Aborted,
                FailureKind::Cancelled,
                "the run was cancelled",
            ));
        }
        if self.0.kill.dead() {
            return Err(stopped());
        }
        if let Some(task) = serving {
            for v in &values {
                self.install(&run, &task, v, &r.run_id)?;
            }
        }
        let mut infos = Vec::new();
        for (id, v) in outputs.into_iter().zip(values) {
            infos.push(PartitionInfo {
                partition: id.to_string(),
                bytes: v.size_bytes() as u64,
                rows: v.rows() as u64,
            });
            self.0
                .store
                .put(format!("{}/{id}", r.run_id), v)
                .map_err(Status::internal)?;
        }
        Ok(Response::new(RunTaskReply {
            outputs: infos,
            elapsed_us: t0.elapsed().as_micros() as u64,
        }))
    }

    async fn serving_models(
        &self,
        _request: Request<ServingModelsRequest>,
    ) -> Result<Response<ServingModelsReply>, Status> {
        let models = self
            .0
            .resident
            .list()
            .iter()
            .map(|h| ResidentModel {
                model: h.model.clone(),
                shard: h.shard.clone(),
                shard_index: h.index,
                version: h.version(),
                combine: combine_rule(h.combine).into(),
                header_json: serde_json::to_string(&h.header).unwrap_or_default(),
                history: h
                    .history
                    .iter()
                    .map(|v| ResidentVersion {
                        version: v.version,
                        run_id: v.run_id.clone(),
                        fitted_at: v.fitted_at,
                        sha: v.sha.clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ServingModelsReply {
            worker: self.0.name.clone(),
            models,
        }))
    }

    async fn serve_infer(
        &self,
        request: Request<ServeInferRequest>,
    ) -> Result<Response<ServeInferReply>, Status> {
        let t0 = Instant::now();
        let r = request.into_inner();
        let held = self.0.resident.snapshot(&r.model, &r.shards);
        if held.is_empty() {
            return Err(Status::not_found(format!(
                "no shard model of `{}` is served on worker `{}`",
                r.model, self.0.name
            )));
        }
        let shards: Vec<String> = held.iter().map(|h| h.shard.clone()).collect();
        let answered = self.answer(&r.batch_ipc, held).await;
        // A call cut by a kill is not counted: its answer never left.
        if !self.0.kill.dead() {
            self.0
                .serving
                .record(&r.model, &shards, t0.elapsed(), answered.is_ok());
        }
        answered.map(Response::new)
    }

    async fn drop_partitions(
        &self,
        request: Request<DropPartitionsRequest>,
    ) -> Result<Response<DropPartitionsReply>, Status> {
        let r = request.into_inner();
        for p in &r.partitions {
            self.0.store.remove(&format!("{}/{p}", r.run_id));
        }
        Ok(Response::new(DropPartitionsReply {}))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<CancelRunReply>, Status> {
        let id = request.into_inner().run_id;
        let run = self
            .0
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(run) = run {
            run.cancelled.store(true, Ordering::SeqCst);
            // The run has ended here: its staged outputs are the client's to
            // put in place (or remove), not this process's to remove on exit.
            crate::data::write::hand_over(&run.staged());
        }
        self.0.store.remove_prefix(&format!("{id}/"));
        Ok(Response::new(CancelRunReply {}))
    }
}

/// A running worker.
pub struct WorkerHandle {
    /// host:port it serves on.
    pub address: String,
    pub name: String,
    /// Where the plain health service listens (`health_listen`).
    pub health_address: Option<String>,
    served: super::serve::Served,
    kill: Arc<Kill>,
    /// The data root this worker made for itself (no `--data-root`), removed
    /// when it is stopped.
    scratch: Option<PathBuf>,
    state: Arc<State>,
    health: tonic_health::server::HealthReporter,
    scheduler: String,
    attach: Attach,
    /// Why the registration loop gave up (a refused token), if it did.
    fatal: Arc<Mutex<Option<ClusterError>>>,
}

/// How a drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drained {
    /// Tasks still running when the drain timed out (handed back to the
    /// scheduler, which runs them again elsewhere); 0 for a clean drain.
    pub handed_back: u32,
    /// Whether the scheduler heard that this worker left.
    pub left: bool,
    pub took: std::time::Duration,
}

impl WorkerHandle {
    /// Stop serving and heartbeating; remove the spill folder it made. A
    /// silenced worker speaks again first, so that its connections can close.
    /// The store of this worker's partitions (for the embedded cluster's
    /// in-process shortcut, `flight::share_in_process`).
    pub(crate) fn store(&self) -> Arc<Store> {
        self.state.store.clone()
    }

    pub async fn stop(self) {
        self.kill.heal();
        self.served.stop().await;
        if let Some(d) = self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    /// Serve until the server stops by itself, or until the scheduler
    /// refuses this worker for good (a wrong token: then stop serving and
    /// return why).
    pub async fn wait(mut self) -> Result<(), ClusterError> {
        self.finished().await
    }

    /// [`WorkerHandle::wait`], keeping the handle (for `dagml worker`, to
    /// drain it when SIGTERM comes first).
    pub async fn finished(&mut self) -> Result<(), ClusterError> {
        let served = &mut self.served;
        tokio::select! {
            r = &mut served.server => {
                if let Some(h) = served.health.take() {
                    h.abort();
                }
                match r {
                    Ok(r) => r.map_err(ClusterError::from),
                    Err(e) => Err(ClusterError::Other(e.to_string())),
                }
            }
            _ = &mut served.companion => {
                // The registration loop gave up: nothing will ever be sent here.
                if let Some(s) = served.shutdown.take() {
                    let _ = s.send(());
                }
                let _ = tokio::time::timeout(super::RPC_TIMEOUT, &mut served.server).await;
                if let Some(h) = served.health.take() {
                    h.abort();
                }
                let cause = self.fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
                Err(cause.unwrap_or_else(|| {
                    ClusterError::Other("the worker stopped registering with the scheduler".into())
                }))
            }
        }
    }

    /// Drain and stop (SIGTERM): tell the scheduler this worker is draining
    /// (it places nothing new here; the health service `dagml.v1.Worker`
    /// turns NOT_SERVING, the process itself stays SERVING), let the tasks it
    /// has finish, at most `timeout`, then leave the cluster (`LeaveCluster`:
    /// the scheduler runs what is still running here again elsewhere and
    /// recomputes the partitions held here that a run still needs) and stop
    /// serving (calls in progress, such as a peer's fetch, may finish).
    pub async fn drain(self, timeout: std::time::Duration) -> Drained {
        let t0 = Instant::now();
        let st = self.state.clone();
        st.draining.store(true, Ordering::SeqCst);
        super::health::not_serving(&self.health, "dagml.v1.Worker").await;
        st.beat.notify_one();
        eprintln!(
            "worker {}: draining: no new tasks; {} in flight; leaving within {} s",
            st.name,
            st.inflight.load(Ordering::SeqCst),
            timeout.as_secs()
        );
        // Done when the scheduler has heard (so no new task is on its way)
        // and nothing is in flight; or never registered at all.
        // A task the scheduler sent just before it heard travels on another
        // connection than the heartbeat's answer: idle must hold for two
        // looks in a row before the worker leaves.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut idle_looks = 0;
        loop {
            let registered = st
                .worker_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            let idle = st.inflight.load(Ordering::SeqCst) == 0;
            if idle && (st.drain_heard.load(Ordering::SeqCst) || !registered) {
                idle_looks += 1;
                if idle_looks >= 2 {
                    break;
                }
            } else {
                idle_looks = 0;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let handed_back = st.inflight.load(Ordering::SeqCst);
        let id = *st.worker_id.lock().unwrap_or_else(|p| p.into_inner());
        let mut left = false;
        if let Some(wid) = id {
            let reason = if handed_back == 0 {
                "its tasks finished".to_string()
            } else {
                format!(
                    "its drain timed out after {} s with {handed_back} tasks running",
                    timeout.as_secs()
                )
            };
            if let Ok(mut c) = scheduler_client(&self.scheduler, self.attach.clone()) {
                let req = LeaveClusterRequest {
                    worker_id: wid,
                    reason,
                };
                left = matches!(
                    tokio::time::timeout(RPC_TIMEOUT, c.leave_cluster(req)).await,
                    Ok(Ok(_))
                );
            }
        }
        let took = t0.elapsed();
        if handed_back == 0 {
            eprintln!(
                "worker {}: drained in {:.1} s; {}",
                st.name,
                took.as_secs_f64(),
                if left {
                    "left the cluster"
                } else {
                    "the scheduler did not answer"
                }
            );
        } else {
            eprintln!(
                "worker {}: drain timed out after {} s; {handed_back} tasks handed back to the scheduler",
                st.name,
                timeout.as_secs()
            );
        }
        self.stop().await;
        Drained {
            handed_back,
            left,
            took,
        }
    }
}

/// Bind, serve, and register with the scheduler (retrying until it answers).
pub async fn start(cfg: WorkerConfig) -> Result<WorkerHandle, ClusterError> {
    let (listener, bound) = super::serve::bind(&cfg.listen).await?;
    let advertised = match &cfg.advertise {
        Some(a) => super::addr::host_port(a)?,
        None => bound,
    };
    let name = cfg
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", advertised.rsplit(':').next().unwrap_or("0")));
    let threads = cfg.threads.max(1);
    let (data_root, confine) = match &cfg.data_root {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            let c = d.canonicalize()?;
            (c.clone(), Some(c))
        }
        None => (
            std::env::temp_dir().join(format!("dagml-{name}-{}", std::process::id())),
            None,
        ),
    };
    let scratch = confine.is_none().then(|| data_root.clone());
    let resident = Arc::new(match &confine {
        Some(root) => Resident::open(root, &name),
        None => Resident::in_memory(),
    });
    let pool = match &cfg.pool {
        Some(p) => p.clone(),
        None => Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|e| ClusterError::Other(e.to_string()))?,
        ),
    };
    let attach = Attach::new(cfg.token.as_deref(), &cfg.tls)?;
    let mut store = Store::new(data_root.clone(), cfg.memory_limit);
    if cfg.log_spills {
        store = store.logging_spills(&name);
    }
    let store = Arc::new(store);
    let kill = Arc::new(Kill::default());
    let state = Arc::new(State {
        name: name.clone(),
        store: store.clone(),
        runs: Mutex::default(),
        peers: Peers::new(attach.clone()),
        slots: Arc::new(Semaphore::new(threads)),
        pool,
        running: AtomicU32::new(0),
        confine: confine.clone(),
        data_root: data_root.clone(),
        fault: cfg.fault.clone(),
        handed: AtomicU32::new(0),
        kill: kill.clone(),
        inflight: AtomicU32::new(0),
        draining: AtomicBool::new(false),
        drain_heard: AtomicBool::new(false),
        beat: tokio::sync::Notify::new(),
        worker_id: Mutex::new(None),
        resident: resident.clone(),
        watch: (cfg.watch && confine.is_some()).then(Arc::default),
        serving: ServingStats::default(),
    });
    let check = Gate {
        check: Check::new(cfg.token.as_deref()),
        kill: kill.clone(),
    };
    let control = WorkerServer::new(Service(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let flight = FlightServiceServer::new(FlightStore { store })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<WorkerServer<Service>>().await;
    let (health_address, health_plain) = match &cfg.health_listen {
        Some(l) => {
            let (a, t) = super::health::serve_plain(l, health_reporter.clone()).await?;
            (Some(a), Some(t))
        }
        None => (None, None),
    };
    let (tx, rx) = oneshot::channel::<()>();
    // With a fault that may fire here, keep a handle on every connection to
    // shut it when the worker is stopped.
    let track = cfg.fault.is_some().then(|| kill.clone());
    let incoming = futures::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |conn| match &track {
            Some(k) => super::serve::no_delay(conn)
                .and_then(|tcp| k.track(tcp))
                .map(|tcp| Conn {
                    tcp: Some(tcp),
                    kill: Some(k.clone()),
                }),
            None => super::serve::no_delay(conn).map(|tcp| Conn {
                tcp: Some(tcp),
                kill: None,
            }),
        },
    );
    let server = tokio::spawn(
        super::serve::builder(&cfg.tls)?
            .add_service(InterceptedService::new(control, check.clone()))
            .add_service(InterceptedService::new(flight, check.clone()))
            .add_service(InterceptedService::new(health, check))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            }),
    );
    let fatal = Arc::new(Mutex::new(None));
    let heartbeat = tokio::spawn(heartbeat_loop(
        cfg.clone(),
        state.clone(),
        kill.clone(),
        advertised.clone(),
        threads as u32,
        attach.clone(),
        fatal.clone(),
    ));
    let mut tasks = vec![server.abort_handle(), heartbeat.abort_handle()];
    if cfg.watch && confine.is_none() {
        eprintln!(
            "dagml worker {name}: --watch needs --data-root (the rows it watches are under it); not watching"
        );
    }
    if let (Some(w), Some(root)) = (&state.watch, &confine) {
        let t = tokio::spawn(super::watch::run(
            w.clone(),
            resident,
            name.clone(),
            root.clone(),
        ));
        tasks.push(t.abort_handle());
    }
    let _ = kill.tasks.set(tasks);
    Ok(WorkerHandle {
        address: advertised,
        name,
        health_address,
        served: super::serve::Served {
            shutdown: Some(tx),
            server,
            companion: heartbeat,
            health: health_plain,
        },
        kill,
        scratch,
        state,
        health: health_reporter,
        scheduler: cfg.scheduler.clone(),
        attach,
        fatal,
    })
}

/// A client of a worker's control service (serving asks it for predictions).
pub(crate) fn worker_client(
    addr: &str,
    attach: Attach,
) -> Result<
    super::proto::worker_client::WorkerClient<InterceptedService<Channel, Attach>>,
    ClusterError,
> {
    let channel = attach.channel(addr)?;
    Ok(
        super::proto::worker_client::WorkerClient::with_interceptor(channel, attach)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

pub(crate) fn scheduler_client(
    addr: &str,
    attach: Attach,
) -> Result<SchedulerClient<InterceptedService<Channel, Attach>>, ClusterError> {
    let channel = attach.channel(addr)?;
    Ok(SchedulerClient::with_interceptor(channel, attach)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Register, then heartbeat every [`HEARTBEAT`], each call with a deadline of
/// [`RPC_TIMEOUT`] (a call that fails or times out is tried again at the next
/// beat: a scheduler that is not up yet is waited for, and the worker says so
/// once). A registration refused for its token (unauthenticated, permission
/// denied) cannot succeed by trying again: the loop records why in `fatal`
/// and ends, and the worker stops ([`WorkerHandle::wait`]). When the scheduler no longer knows this worker (it was declared lost
/// while silent), every run it held is forgotten (the scheduler has given its
/// tasks and partitions to others) and it registers again, under a new id.
async fn heartbeat_loop(
    cfg: WorkerConfig,
    state: Arc<State>,
    kill: Arc<Kill>,
    address: String,
    threads: u32,
    attach: Attach,
    fatal: Arc<Mutex<Option<ClusterError>>>,
) {
    let give_up = |e: ClusterError| {
        *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    };
    let mut client = match scheduler_client(&cfg.scheduler, attach) {
        Ok(c) => c,
        Err(e) => {
            give_up(ClusterError::Address(cfg.scheduler.clone(), e.to_string()));
            return;
        }
    };
    let log = cfg.log_spills;
    let mut id: Option<u64> = None;
    let mut warned = false;
    loop {
        if kill.silent() {
            tokio::time::sleep(HEARTBEAT).await;
            continue;
        }
        *state.worker_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
        let draining = state.draining.load(Ordering::SeqCst);
        match id {
            // A draining worker does not join again.
            None if draining => {}
            None => {
                let req = RegisterWorkerRequest {
                    name: state.name.clone(),
                    address: address.clone(),
                    threads,
                    memory_limit: cfg.memory_limit,
                };
                let r = tokio::time::timeout(RPC_TIMEOUT, client.register_worker(req)).await;
                match r {
                    Ok(Ok(r)) => {
                        id = Some(r.into_inner().worker_id);
                        *state.worker_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
                        warned = false;
                    }
                    Ok(Err(e))
                        if matches!(
                            e.code(),
                            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                        ) =>
                    {
                        give_up(ClusterError::Refused {
                            scheduler: cfg.scheduler.clone(),
                            cause: format!(
                                "{}; set DAGML_TOKEN to the scheduler's token",
                                e.message()
                            ),
                        });
                        return;
                    }
                    Ok(Err(e)) if !warned => {
                        eprintln!(
                            "worker {}: cannot register with {}: {}; retrying every {:.1}s until it answers",
                            state.name,
                            cfg.scheduler,
                            e.message(),
                            HEARTBEAT.as_secs_f64()
                        );
                        warned = true;
                    }
                    Err(_) if !warned => {
                        eprintln!(
                            "worker {}: cannot register with {}: no answer in {}s; retrying every {:.1}s until it answers",
                            state.name,
                            cfg.scheduler,
                            RPC_TIMEOUT.as_secs(),
                            HEARTBEAT.as_secs_f64()
                        );
                        warned = true;
                    }
                    _ => {}
                }
            }
            Some(wid) => {
                let running = state.running.load(Ordering::SeqCst);
                let limit = cfg.memory_limit as f64;
                let req = HeartbeatRequest {
                    worker_id: wid,
                    running,
                    memory_used: state.store.memory_used(),
                    paused: state.store.paused(),
                    draining,
                    memory_limit: cfg.memory_limit,
                    spill_threshold: (limit * super::SPILL_FRACTION) as u64,
                    pause_threshold: (limit * super::PAUSE_FRACTION) as u64,
                    spilled_bytes: state.store.spilled_bytes(),
                    partitions: state.store.partitions().try_into().unwrap_or(u32::MAX),
                    busy_threads: running.min(threads),
                    threads,
                    serving: serving_stats(&state),
                };
                match tokio::time::timeout(RPC_TIMEOUT, client.heartbeat(req)).await {
                    Ok(Ok(r)) if !r.get_ref().known => {
                        if log {
                            eprintln!(
                                "worker {}: the scheduler declared this worker lost; forgetting its runs and registering again",
                                state.name
                            );
                        }
                        state.forget_all_runs();
                        id = None;
                        continue;
                    }
                    Ok(Ok(_)) if draining => state.drain_heard.store(true, Ordering::SeqCst),
                    // Answered; or not (a timeout or a transport error): the
                    // next beat tries again.
                    _ => {}
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = state.beat.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Conn, Kill};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_silent_connection_reads_nothing_and_closes_nothing_until_healed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let kill = Arc::new(Kill::default());
        let mut conn = Conn {
            tcp: Some(server),
            kill: Some(kill.clone()),
        };
        let mut buf = [0u8; 8];
        kill.silence(None);
        client.write_all(b"x").await.unwrap();
        let short = Duration::from_millis(300);
        assert!(
            tokio::time::timeout(short, conn.read(&mut buf))
                .await
                .is_err()
        );
        kill.heal();
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"x");
        // Let go of while silent: the peer sees neither data nor a close
        // until the silence ends.
        kill.silence(None);
        drop(conn);
        assert!(
            tokio::time::timeout(short, client.read(&mut buf))
                .await
                .is_err()
        );
        kill.heal();
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "closed once healed");
    }
}
