//! The OpenAI-compatible API and the chat page.
//!
//! ```text
//! GET  /                      the chat page (static; it calls the API below)
//! GET  /health                {"status": "ok"} (503 "draining" during shutdown); no key needed
//! GET  /metrics               Prometheus text
//! GET  /v1/models             the one model served
//! POST /v1/chat/completions   chat replies, whole or streamed (server-sent events)
//! POST /v1/completions        plain continuations of a prompt, whole or streamed
//! ```
//! Everything but `/`, `/health` needs `Authorization: Bearer KEY` unless the server was started
//! without keys on purpose. Keys are kept as SHA-256 digests and every one is compared in full,
//! so the time a check takes says nothing about how much of a key was right. Cross-origin
//! requests are refused (no CORS headers) unless one origin is allowed by name.

use crate::generate;
use crate::openai::{ApiError, ApiResult};
pub use crate::state::{unix_now, App, Auth, RequestLimits, PAGE};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// The router over an app.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint (the API is under /v1: models, chat/completions, completions)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "this endpoint does not take that method",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), count))
        .layer(middleware::from_fn_with_state(app.clone(), cors))
        .with_state(app)
}

/// Counts every response by endpoint and status.
async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other".to_string(), |p| p.as_str().to_string());
    let r = next.run(req).await;
    app.metrics.response(&path, r.status().as_u16());
    r
}

/// CORS for the one allowed origin, if any; other origins get no CORS headers, so browsers
/// keep their pages from reading the API.
async fn cors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let allowed = match (&app.allow_origin, req.headers().get(header::ORIGIN)) {
        (Some(a), Some(o)) if a == o => Some(a.clone()),
        _ => None,
    };
    let Some(origin) = allowed else {
        return next.run(req).await;
    };
    let mut r = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    r
}

async fn page(State(app): State<Arc<App>>) -> Response {
    let mut r = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&app.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let unavailable = |status: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status})),
        )
            .into_response()
    };
    if app.scheduler.draining() {
        unavailable("draining")
    } else if !app.scheduler.engine_alive() {
        unavailable("engine stopped")
    } else {
        Json(json!({"status": "ok", "model": app.model_name})).into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Response> {
    app.authorize(&headers)?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response())
}

fn model_json(app: &App) -> Value {
    json!({
        "id": app.model_name,
        "object": "model",
        "created": app.created,
        "owned_by": "frugal",
        "context_length": app.context_len,
    })
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    app.authorize(&headers)?;
    Ok(Json(json!({"object": "list", "data": [model_json(&app)]})))
}

async fn model(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    app.authorize(&headers)?;
    app.check_model(&id)?;
    Ok(Json(model_json(&app)))
}

impl App {
    /// 404 unless `name` is the model served.
    pub fn check_model(&self, name: &str) -> ApiResult<()> {
        if name == self.model_name {
            return Ok(());
        }
        Err(ApiError {
            param: Some("model".into()),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!(
                    "the model {name:?} does not exist here; this server has {:?}",
                    self.model_name
                ),
            )
            .code("model_not_found")
        })
    }

    /// The request body, bounded in size (and, by the listener, in the time it may take to
    /// arrive).
    pub async fn read_body(&self, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
        self.check_json(headers)?;
        crate::body::read_body(headers, body, self.limits.max_body)
            .await
            .map_err(|e| ApiError::new(e.status, "invalid_request_error", e.message))
    }
}

async fn chat_completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    generate::chat(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    generate::completion(app, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_accepted_exactly() {
        let auth = Auth::keys(&["first-key-0123456789", "second-key-0123456789"]);
        assert!(auth.accepts("first-key-0123456789"));
        assert!(auth.accepts("second-key-0123456789"));
        for wrong in ["", "first-key-012345678", "first-key-01234567890", "x"] {
            assert!(!auth.accepts(wrong), "{wrong:?}");
        }
        assert!(Auth::Open.accepts(""));
    }

    #[test]
    fn health_reports_an_engine_thread_that_ended() {
        let tok = Arc::new(bpe::Tokenizer::bytes_only(bpe::DEFAULT_SPECIALS).unwrap());
        let chat = data::chat::ChatStyle::frugal(&tok).unwrap();
        let app = App::new(
            crate::scheduler::Scheduler::with_ended_engine(),
            tok,
            chat,
            "m".into(),
            64,
            Auth::Open,
            None,
            Default::default(),
            Arc::new(crate::metrics::Metrics::default()),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(health(State(Arc::new(app))));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 10))
            .unwrap();
        assert_eq!(&body[..], br#"{"status":"engine stopped"}"#);
    }
}
