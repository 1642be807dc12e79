//! The model server's HTTP side (axum): the Open Inference Protocol's routes
//! (with the statistics extension), the bearer token, body and concurrency
//! limits, requests batched through [`super::batch`], graceful shutdown.
//!
//! In: a [`Backend`] and a [`ServerConfig`]. Out: a running server and its
//! address; every answer is the protocol's JSON (or JSON + binary tensors, or
//! an Arrow IPC stream when the request was one); every error a 4xx/5xx with
//! `{"error": "..."}`.
//! Must not: answer anything but health without the token when one is set;
//! drop a request in flight on shutdown.

pub use super::batch::BatchConfig;
use super::batch::{Batcher, ModelStats};
use super::protocol::{self, HEADER_LENGTH, InferResponse, ServerMetadata};
use super::{Answer, Backend, ServeError, StartError};
use arrow::array::ArrayRef;
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::{Semaphore, oneshot};

/// How long a stopping server waits for the requests in flight.
pub const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The media type of a body that is an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `host:port`; port 0 picks a free one.
    pub listen: String,
    /// When set, every call but health needs `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// Requests predicted at once; more wait their turn.
    pub max_concurrency: usize,
    /// PEM certificate and key: serve HTTPS instead of HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// How concurrent requests to one model are predicted together.
    pub batch: BatchConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8000".into(),
            token: None,
            max_body: 64 << 20,
            max_concurrency: 64,
            tls: None,
            batch: BatchConfig::default(),
        }
    }
}

struct App<B> {
    backend: Arc<B>,
    batcher: Arc<Batcher<B>>,
    token: Option<String>,
    max_body: usize,
    slots: Semaphore,
}

/// A server running in the background.
pub struct Running {
    pub address: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stop taking connections, finish the requests in flight, then return:
    /// at most [`STOP_LIMIT`] later (a client that never finishes its
    /// request would hold the server forever), when the rest are dropped.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if tokio::time::timeout(STOP_LIMIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }

    /// Serve until the server stops by itself (it does not, but for an I/O error).
    pub async fn wait(self) -> Result<(), StartError> {
        match self.task.await {
            Ok(r) => r.map_err(|e| StartError::Other(format!("the server stopped: {e}"))),
            Err(e) => Err(StartError::Other(e.to_string())),
        }
    }
}

/// Bind and serve `backend`.
pub async fn start<B: Backend>(cfg: ServerConfig, backend: Arc<B>) -> Result<Running, StartError> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
    let address = if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    let acceptor = match &cfg.tls {
        Some((cert, key)) => Some(super::tls::acceptor(cert, key)?),
        None => None,
    };
    let app = router(cfg, backend);
    let (tx, rx) = oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    let task = match acceptor {
        Some(acceptor) => {
            let listener = super::tls::TlsListener::new(listener, acceptor)
                .map_err(|e| StartError::Other(format!("TLS: {e}")))?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            })
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                // Small answers go out at once, not after the peer's delayed ACK.
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await
            })
        }
    };
    Ok(Running {
        address,
        shutdown: Some(tx),
        task,
    })
}

/// The routes, for a server or a test.
pub fn router<B: Backend>(cfg: ServerConfig, backend: Arc<B>) -> Router {
    let app = Arc::new(App {
        batcher: Batcher::new(backend.clone(), cfg.batch),
        backend,
        token: cfg.token.filter(|t| !t.is_empty()),
        max_body: cfg.max_body,
        slots: Semaphore::new(cfg.max_concurrency.max(1)),
    });
    Router::new()
        .route("/v2/health/live", get(async || StatusCode::OK))
        .route("/v2/health/ready", get(server_ready::<B>))
        .route("/v2", get(server_metadata))
        .route("/v2/repository/index", post(index::<B>))
        .route("/v2/models/{name}", get(model_metadata::<B>))
        .route("/v2/models/{name}/ready", get(model_ready::<B>))
        .route("/v2/models/{name}/infer", post(infer::<B>))
        .route("/v2/models/stats", get(all_stats::<B>))
        .route("/v2/models/{name}/stats", get(model_stats::<B>))
        .route(
            "/v2/models/{name}/versions/{version}/stats",
            get(model_stats_v::<B>),
        )
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_v::<B>),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_v::<B>),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_v::<B>),
        )
        .fallback(async |req: Request| {
            error(ServeError::NotFound(format!(
                "no such endpoint: {} {}; the Open Inference Protocol's are under /v2",
                req.method(),
                req.uri().path()
            )))
        })
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .layer(middleware::from_fn_with_state(app.clone(), authorize::<B>))
        .with_state(app)
}

fn error(e: ServeError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

async fn authorize<B: Backend>(
    State(app): State<Arc<App<B>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.token
        && !req.uri().path().starts_with("/v2/health/")
    {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !crate::cluster::auth::bearer_is(authorization, token) {
            return error(ServeError::Unauthorized(
                "this server needs `Authorization: Bearer TOKEN` (the cluster's DAGML_TOKEN)"
                    .into(),
            ));
        }
    }
    next.run(req).await
}

async fn server_ready<B: Backend>(State(app): State<Arc<App<B>>>) -> StatusCode {
    let models = app.backend.models();
    if !models.is_empty() && models.iter().all(|m| app.backend.ready(&m.name)) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "dagml".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec![
            "binary_tensor_data".into(),
            "model_repository".into(),
            "statistics".into(),
        ],
    })
}

async fn index<B: Backend>(State(app): State<Arc<App<B>>>) -> Json<Value> {
    let list: Vec<Value> = app
        .backend
        .models()
        .into_iter()
        .map(|m| {
            let state = if app.backend.ready(&m.name) {
                "READY"
            } else {
                "UNAVAILABLE"
            };
            serde_json::json!({
                "name": m.name,
                "version": m.versions.last(),
                "state": state,
            })
        })
        .collect();
    Json(Value::Array(list))
}

fn find<B: Backend>(
    app: &App<B>,
    name: &str,
    version: Option<&str>,
) -> Result<super::ModelInfo, ServeError> {
    let Some(info) = app.backend.model(name) else {
        let names: Vec<String> = app.backend.models().into_iter().map(|m| m.name).collect();
        let hint = crate::frontend::diag::did_you_mean(name, names.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(ServeError::NotFound(format!(
            "no model `{name}`; {hint}this server has {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if let Some(v) = version
        && !info.versions.iter().any(|x| x == v)
    {
        return Err(ServeError::NotFound(format!(
            "model `{name}` has no version `{v}`; it has {}",
            info.versions.join(", ")
        )));
    }
    Ok(info)
}

async fn model_metadata<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path(name): Path<String>,
) -> Response {
    match find(&app, &name, None) {
        Ok(i) => Json(i.metadata()).into_response(),
        Err(e) => error(e),
    }
}

async fn model_metadata_v<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match find(&app, &name, Some(&version)) {
        Ok(i) => Json(i.metadata()).into_response(),
        Err(e) => error(e),
    }
}

fn ready_of<B: Backend>(app: &App<B>, name: &str, version: Option<&str>) -> Response {
    match find(app, name, version) {
        Ok(_) if app.backend.ready(name) => StatusCode::OK.into_response(),
        Ok(_) => error(ServeError::Unavailable(format!(
            "model `{name}` is not ready"
        ))),
        Err(e) => error(e),
    }
}

async fn model_ready<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path(name): Path<String>,
) -> Response {
    ready_of(&app, &name, None)
}

async fn model_ready_v<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    ready_of(&app, &name, Some(&version))
}

async fn infer<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&app, &name, None, &headers, body)
        .await
        .unwrap_or_else(error)
}

async fn infer_v<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&app, &name, Some(&version), &headers, body)
        .await
        .unwrap_or_else(error)
}

async fn answer<B: Backend>(
    app: &App<B>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ServeError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServeError::TooLarge(format!(
                "the request body is larger than this server's limit of {} bytes (--max-body); send fewer rows per request",
                app.max_body
            ))
        } else {
            ServeError::BadRequest(format!("cannot read the request body: {e}"))
        }
    })?;
    let info = find(app, name, version)?;
    let arrow = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ARROW_STREAM));
    if arrow {
        let columns = read_arrow(&body)?;
        let batch = info.conform(columns)?;
        let answer = run(app, name, batch).await?;
        return arrow_response(&answer);
    }
    let header_length = headers
        .get(HEADER_LENGTH)
        .map(|v| v.to_str().unwrap_or("not text"));
    let parsed = protocol::parse(&body, header_length)?;
    let batch = info.conform(parsed.columns()?)?;
    let answer = run(app, name, batch).await?;
    let wanted: Vec<String> = match &parsed.request.outputs {
        Some(o) => o.iter().map(|o| o.name.clone()).collect(),
        None => answer
            .columns
            .iter()
            .map(|(f, _)| f.name().clone())
            .collect(),
    };
    let mut outputs = Vec::with_capacity(wanted.len());
    let mut tail: Vec<u8> = Vec::new();
    for w in &wanted {
        let Some((_, col)) = answer.columns.iter().find(|(f, _)| f.name() == w) else {
            return Err(ServeError::BadRequest(format!(
                "model `{name}` has no output `{w}`; its outputs are {}",
                answer
                    .columns
                    .iter()
                    .map(|(f, _)| format!("`{}`", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let (meta, bytes) = protocol::output(w, col.as_ref(), parsed.binary_output(w))?;
        if let Some(b) = bytes {
            tail.extend_from_slice(&b);
        }
        outputs.push(meta);
    }
    let mut parameters = answer.parameters;
    parameters
        .entry("rows")
        .or_insert_with(|| Value::from(outputs.first().map_or(0, |o| o.shape[0])));
    let response = InferResponse {
        model_name: name.to_string(),
        model_version: answer.version,
        id: parsed.request.id.clone(),
        parameters,
        outputs,
    };
    let json = serde_json::to_vec(&response)
        .map_err(|e| ServeError::Internal(format!("cannot write the answer: {e}")))?;
    if tail.is_empty() {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response());
    }
    let length = json.len().to_string();
    let mut body = json;
    body.extend_from_slice(&tail);
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&length) {
        h.insert(HEADER_LENGTH, v);
    }
    Ok(r)
}

/// Predict, waiting for a slot when `max_concurrency` requests already are.
async fn run<B: Backend>(
    app: &App<B>,
    name: &str,
    batch: RecordBatch,
) -> Result<super::Answer, ServeError> {
    let _slot = app
        .slots
        .acquire()
        .await
        .map_err(|_| ServeError::Unavailable("the server is stopping".into()))?;
    app.batcher.infer(name, batch).await
}

/// The statistics extension's figures of the models named (all when
/// `None`): a model not called yet has zeros.
fn stats_of<B: Backend>(app: &App<B>, models: Vec<super::ModelInfo>) -> Json<Value> {
    let counted = app.batcher.stats(None);
    let list: Vec<ModelStats> = models
        .into_iter()
        .map(|m| {
            counted
                .iter()
                .find(|s| s.name == m.name)
                .cloned()
                .unwrap_or_else(|| ModelStats {
                    name: m.name.clone(),
                    version: m.versions.last().cloned().unwrap_or_default(),
                    ..Default::default()
                })
        })
        .collect();
    Json(serde_json::json!({ "model_stats": list }))
}

async fn all_stats<B: Backend>(State(app): State<Arc<App<B>>>) -> Json<Value> {
    stats_of(&app, app.backend.models())
}

async fn model_stats<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path(name): Path<String>,
) -> Response {
    match find(&app, &name, None) {
        Ok(i) => stats_of(&app, vec![i]).into_response(),
        Err(e) => error(e),
    }
}

async fn model_stats_v<B: Backend>(
    State(app): State<Arc<App<B>>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match find(&app, &name, Some(&version)) {
        Ok(i) => stats_of(&app, vec![i]).into_response(),
        Err(e) => error(e),
    }
}

fn read_arrow(body: &[u8]) -> Result<Vec<(String, ArrayRef)>, ServeError> {
    let bad =
        |e: String| ServeError::BadRequest(format!("the body is not an Arrow IPC stream: {e}"));
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .map_err(|e| bad(e.to_string()))?;
    let schema = reader.schema();
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b.map_err(|e| bad(e.to_string()))?);
    }
    let all = arrow::compute::concat_batches(&schema, &batches).map_err(|e| bad(e.to_string()))?;
    Ok(schema
        .fields()
        .iter()
        .zip(all.columns())
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect())
}

/// The answer as an Arrow IPC stream; the response's parameters (with the
/// version that answered) travel as the schema's `parameters` metadata, JSON.
fn arrow_response(answer: &Answer) -> Result<Response, ServeError> {
    let columns = &answer.columns;
    let mut parameters = answer.parameters.clone();
    parameters.insert("model_version".into(), Value::from(answer.version.clone()));
    let schema = Arc::new(
        Schema::new(columns.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>()).with_metadata(
            std::collections::HashMap::from([(
                "parameters".to_string(),
                Value::Object(parameters).to_string(),
            )]),
        ),
    );
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.iter().map(|(_, c)| c.clone()).collect(),
    )
    .map_err(|e| ServeError::Internal(e.to_string()))?;
    let mut out = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        w.write(&batch)
            .and_then(|()| w.finish())
            .map_err(|e| ServeError::Internal(e.to_string()))?;
    }
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
        out,
    )
        .into_response())
}

/// Parameters for a response, built by a backend.
pub type Parameters = Map<String, Value>;
