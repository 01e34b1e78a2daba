//! The annotation server: one static page and a small JSON API over the store.
//!
//! ```text
//! GET  /                 the page (no user data in it; everything else comes as JSON)
//! GET  /api/me           {name, progress}
//! GET  /api/next         {item: {id, prompt: [{role, content}], responses: [text]} | null, progress}
//! POST /api/vote         {item, choice: index | "tie" | "both_harmful"} -> {status, progress}
//! GET  /api/stats        progress and inter-annotator agreement (store::Stats)
//! ```
//! Every /api call needs `Authorization: Bearer TOKEN` (401 otherwise); the voter is the
//! token's annotator, never a field of the request. Errors are `{"error": "..."}` with 400 (a
//! malformed request or a choice the item does not have), 404 (no such item) or 409 (a
//! different vote for an item already judged: votes are final). A vote is answered only after
//! its transaction committed (WAL, synchronous=FULL).
//!
//! SQLite is synchronous: handlers run store calls on tokio's blocking pool, one at a time
//! behind a mutex (SQLite takes one writer at a time anyway; a vote costs one fsync).
//! The page sends a Content-Security-Policy that admits only its own inline script and style
//! (by hash), so even a slip from `textContent` to `innerHTML` could not run injected script.

use crate::http::ConnLimits;
use crate::{Error, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use store::{Choice, Item, Progress, Store, VoteError, VoteOutcome};

/// The annotation page: HTML, CSS and vanilla JS in one file, no outside resources.
pub const PAGE: &str = include_str!("page.html");

struct App {
    store: Mutex<Store>,
    csp: String,
}

/// An API failure, answered as `{"error": msg}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    msg: String,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<VoteError> for ApiError {
    fn from(e: VoteError) -> Self {
        let status = match &e {
            VoteError::UnknownItem(_) => StatusCode::NOT_FOUND,
            VoteError::NotServed(_) => StatusCode::FORBIDDEN,
            VoteError::BadChoice { .. } => StatusCode::BAD_REQUEST,
            VoteError::Conflict { .. } => StatusCode::CONFLICT,
            VoteError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(json!({"error": self.msg}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult = std::result::Result<Json<Value>, ApiError>;

/// The router over a store.
pub fn router(store: Store) -> Router {
    let app = Arc::new(App {
        store: Mutex::new(store),
        csp: crate::page::content_security_policy(PAGE),
    });
    Router::new()
        .route("/", get(page))
        .route("/api/me", get(me))
        .route("/api/next", get(next))
        .route("/api/vote", post(vote))
        .route("/api/stats", get(stats))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
        .with_state(app)
}

async fn page(State(app): State<Arc<App>>) -> Response {
    let h = |v: &str| HeaderValue::from_str(v).expect("a valid header value");
    (
        [
            (header::CONTENT_TYPE, h("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, h(&app.csp)),
            (header::X_CONTENT_TYPE_OPTIONS, h("nosniff")),
            (header::X_FRAME_OPTIONS, h("DENY")),
            // The token may sit in the address bar until the page has stored it.
            (header::REFERRER_POLICY, h("no-referrer")),
            (header::CACHE_CONTROL, h("no-store")),
        ],
        PAGE,
    )
        .into_response()
}

/// The bearer token of a request.
fn token(headers: &HeaderMap) -> std::result::Result<String, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let v = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("no token: send Authorization: Bearer <token>"))?;
    let v = v
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    v.strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
        .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))
}

/// Runs `f` on the blocking pool with the store and the token's annotator.
async fn as_annotator<T: Send + 'static>(
    app: Arc<App>,
    headers: &HeaderMap,
    f: impl FnOnce(&mut Store, store::Annotator) -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let token = token(headers)?;
    tokio::task::spawn_blocking(move || {
        // A panic elsewhere cannot leave a half-done write: SQLite rolled it back.
        let mut store = app.store.lock().unwrap_or_else(|p| p.into_inner());
        let who = store.authenticate(&token)?.ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown token: ask the operator for a link (`frugal prefs annotator add NAME`)",
            )
        })?;
        f(&mut store, who)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn item_json(item: &Item) -> Value {
    let prompt: Vec<Value> = item
        .prompt
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.display()}))
        .collect();
    json!({"id": item.id, "prompt": prompt, "responses": item.responses})
}

fn progress_json(p: Progress) -> Value {
    serde_json::to_value(p).expect("progress serialises")
}

async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    as_annotator(app, &headers, |s, who| {
        Ok(Json(
            json!({"name": who.name, "progress": progress_json(s.progress(who.id)?)}),
        ))
    })
    .await
}

async fn next(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    as_annotator(app, &headers, |s, who| {
        let item = s.next_item(who.id)?;
        Ok(Json(json!({
            "item": item.as_ref().map(item_json),
            "progress": progress_json(s.progress(who.id)?),
        })))
    })
    .await
}

/// `{item, choice}` from a request body; Err is the 400 message.
fn parse_vote(body: &[u8]) -> std::result::Result<(i64, Choice), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let item = v
        .get("item")
        .ok_or("no \"item\" field")?
        .as_i64()
        .ok_or("\"item\" must be an integer id")?;
    let choice = Choice::from_json(v.get("choice").ok_or("no \"choice\" field")?)?;
    Ok((item, choice))
}

/// A vote is an item id and a choice: a few dozen bytes.
const MAX_VOTE_BODY: usize = 16 << 10;

async fn vote(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> ApiResult {
    let body = crate::body::read_body(&headers, body, MAX_VOTE_BODY)
        .await
        .map_err(|e| ApiError::new(e.status, e.message))?;
    // Authenticate first: a stranger learns nothing, not even whether the body was well formed.
    let parsed = parse_vote(&body);
    as_annotator(app, &headers, move |s, who| {
        let (item, choice) = parsed.map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
        let status = match s.vote(who.id, item, choice)? {
            VoteOutcome::Recorded => "recorded",
            VoteOutcome::Unchanged => "unchanged",
        };
        Ok(Json(
            json!({"status": status, "progress": progress_json(s.progress(who.id)?)}),
        ))
    })
    .await
}

async fn stats(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult {
    as_annotator(app, &headers, |s, _| {
        Ok(Json(
            serde_json::to_value(s.stats()?).expect("stats serialise"),
        ))
    })
    .await
}

/// A server on its own runtime, under the same connection limits as the API's
/// (`http::accept`); dropping it stops the server.
pub struct Server {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` ("127.0.0.1:0" picks a free port) and starts serving `store` under the
    /// default connection limits.
    pub fn start(store: Store, addr: &str) -> Result<Server> {
        Self::start_with(store, addr, ConnLimits::default())
    }

    /// `start` under `limits`.
    pub fn start_with(store: Store, addr: &str, limits: ConnLimits) -> Result<Server> {
        let io = |source| Error::from(base::Error::io(addr, source));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io)?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let app = router(store);
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = rt.spawn(async move {
            let open = crate::http::accept(listener, app, limits, &mut stop_rx).await;
            let wait = std::time::Duration::from_secs(5);
            let _ = tokio::time::timeout(wait, open.shutdown()).await;
        });
        Ok(Server {
            addr,
            rt: Some(rt),
            stop,
            task: Some(task),
        })
    }

    /// The page's address for an annotator's token.
    pub fn url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("http://{}/?token={t}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// Serves until the process is stopped.
    pub fn wait(mut self) -> Result<()> {
        let (rt, task) = (self.rt.take(), self.task.take());
        if let (Some(rt), Some(task)) = (rt, task) {
            let _ = rt.block_on(task);
            rt.shutdown_background();
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_safe() {
        crate::page::assert_safe(PAGE);
    }

    #[test]
    fn vote_bodies_are_parsed_strictly() {
        assert_eq!(
            parse_vote(br#"{"item": 3, "choice": 1}"#),
            Ok((3, Choice::Response(1)))
        );
        assert_eq!(
            parse_vote(br#"{"item": 3, "choice": "tie"}"#),
            Ok((3, Choice::Tie))
        );
        for bad in [
            &b"{"[..],
            br#"{"choice": 1}"#,
            br#"{"item": "3", "choice": 1}"#,
            br#"{"item": 3}"#,
            br#"{"item": 3, "choice": "best"}"#,
            b"[]",
        ] {
            assert!(parse_vote(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
