//! The dashboard's HTTP side (axum): the page and its files, the JSON API, the
//! server-sent events, `/metrics`, the token, graceful shutdown.
//!
//! In: an [`Observer`](super::Observer) and a [`DashboardConfig`]. Out: a
//! running server. Must not: answer `/api/` or `/metrics` without the token
//! when one is set (the page and its static files carry no data and are
//! always served), or hold a lock across an await.

use super::{DashboardConfig, DashboardError, Obs, TOKEN_COOKIE};
use crate::cluster::observe::{Event as ObsEvent, Snapshot};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

/// How long a stopping server waits for its connections (an open event
/// stream never ends by itself).
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

struct App {
    obs: Obs,
    token: Option<String>,
    /// Plan pictures, rendered once per run.
    svgs: Mutex<HashMap<String, Arc<String>>>,
}

/// A dashboard serving in the background.
pub struct Running {
    pub address: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stop; open event streams are cut after [`STOP_LIMIT`].
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
}

/// Bind and serve the dashboard of `obs`.
pub async fn start(cfg: DashboardConfig, obs: Obs) -> Result<Running, DashboardError> {
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| DashboardError::Listen(cfg.listen.clone(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| DashboardError::Listen(cfg.listen.clone(), e))?;
    let address = if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    let app = Arc::new(App {
        obs,
        token: cfg.token.filter(|t| !t.is_empty()),
        svgs: Mutex::default(),
    });
    let router = router(app);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(Running {
        address,
        shutdown: Some(tx),
        task,
    })
}

fn router(app: Arc<App>) -> Router {
    let guarded = Router::new()
        .route("/api/state", get(state))
        .route("/api/workers", get(workers))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/plan.svg", get(plan_svg))
        .route("/api/counters", get(counters))
        .route("/api/serving", get(serving))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/icon.svg", get(|| async { page(ICON, "image/svg+xml") }))
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(app)
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// `%xx` escapes of a cookie value (the page writes it with
/// `encodeURIComponent`).
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether the request carries `token`: `Authorization: Bearer TOKEN` or the
/// page's cookie.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    use crate::cluster::auth::{bearer_is, same_token};
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_is(authorization, token) {
        return true;
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == TOKEN_COOKIE)
        .any(|(_, v)| same_token(&percent_decode(v), token.as_bytes()))
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match &app.token {
        Some(t) if !carries(req.headers(), t) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token (DAGML_TOKEN): open /?token=TOKEN once, or send Authorization: Bearer TOKEN",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        _ => next.run(req).await,
    }
}

fn snapshot(app: &App) -> Snapshot {
    app.obs.snapshot()
}

async fn state(State(app): State<Arc<App>>) -> Response {
    Json(snapshot(&app)).into_response()
}

async fn workers(State(app): State<Arc<App>>) -> Response {
    Json(snapshot(&app).workers).into_response()
}

async fn runs(State(app): State<Arc<App>>) -> Response {
    Json(snapshot(&app).runs).into_response()
}

async fn run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match snapshot(&app).runs.into_iter().find(|r| r.id == id) {
        Some(r) => Json(r).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no run `{id}` (see /api/runs)"),
        ),
    }
}

async fn counters(State(app): State<Arc<App>>) -> Response {
    Json(snapshot(&app).counters).into_response()
}

/// The served models, from the workers' heartbeats.
async fn serving(State(app): State<Arc<App>>) -> Response {
    Json(serde_json::json!({ "models": snapshot(&app).serving })).into_response()
}

async fn plan_svg(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let cached = app
        .svgs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    let svg = match cached {
        Some(s) => s,
        None => {
            let Some(dot) = app.obs.plan_dot(&id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no run `{id}` (see /api/runs)"),
                );
            };
            let drawn = tokio::task::spawn_blocking(move || super::plan_svg::draw(&dot)).await;
            let svg = match drawn {
                Ok(Ok(s)) => Arc::new(s),
                Ok(Err(e)) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("cannot draw the plan of `{id}`: {e}"),
                    );
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            let mut g = app.svgs.lock().unwrap_or_else(|p| p.into_inner());
            // Plans of runs long gone are not kept.
            if g.len() > crate::cluster::observe::KEPT_RUNS * 2 {
                g.clear();
            }
            g.insert(id, svg.clone());
            svg
        }
    };
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg.to_string()).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::metrics::render(&snapshot(&app)),
    )
        .into_response()
}

/// Every observation event as one SSE message (`data:` its JSON; a watcher
/// that fell behind gets `{"type":"lagged"}` and reads the snapshot again),
/// after a first `{"type":"connected"}`.
async fn events(State(app): State<Arc<App>>) -> Response {
    let rx = app.obs.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let data = match rx.recv().await {
            Ok(e) => serde_json::to_string::<ObsEvent>(&e).unwrap_or_default(),
            Err(broadcast::error::RecvError::Lagged(_)) => r#"{"type":"lagged"}"#.to_string(),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().data(data)),
            rx,
        ))
    });
    // A first message at once: a browser's EventSource is open (and the page
    // says `live`) only once bytes arrive, and a quiet cluster sends none.
    let hello = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>(Event::default().data(r#"{"type":"connected"}"#))
    });
    Sse::new(futures::StreamExt::chain(hello, stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert!(!carries(&h, "s3 cr&t"));
        h.insert(header::AUTHORIZATION, "Bearer s3 cr&t".parse().unwrap());
        assert!(carries(&h, "s3 cr&t"));
        assert!(!carries(&h, "s3 cr&"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; dagml_token=s3%20cr%26t; c=d".parse().unwrap(),
        );
        assert!(carries(&h, "s3 cr&t"));
        assert!(!carries(&h, "other"));
    }
}
