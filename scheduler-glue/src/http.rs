//! The routes of the read-only node-score HTTP endpoint (`GET /v1/node`,
//! `GET /v1/accelerations`, `POST /v1/score`, `POST /v1/score:batch`,
//! `GET /metrics`, `GET /healthz`, `GET /readyz`, and the scheduler
//! extender verbs `POST /filter`, `POST /prioritize` of
//! [`crate::extender`]). [`crate::serve`] runs them.
//!
//! Client mistakes are answered `400` (malformed JSON, wrong types, unknown
//! fields, absurd numbers: [`crate::request`]) or `413` (body over the
//! configured limit) with `{"error": "..."}` naming the field; never a panic
//! or a `500`. What the routes serve from is [`Node`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::extender;
use crate::node::{Node, Unavailable};
use crate::request::{parse_batch, parse_shape};
use crate::score;

/// An HTTP error: status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A response with this router's error body, `{"error": message}` (for
/// [`crate::serve::guard`]).
pub fn error_body(status: StatusCode, message: String) -> Response {
    ApiError { status, message }.into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: e.0,
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        Self {
            status,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".into()
            } else {
                r.body_text()
            },
        }
    }
}

/// The router, with the request body limit.
pub fn router(node: Arc<Node>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/node", get(node_summary))
        .route("/v1/accelerations", get(accelerations))
        .route("/v1/score", post(score_one))
        .route("/v1/score:batch", post(score_batch))
        .route("/metrics", get(metrics))
        .route("/filter", post(extender_filter))
        .route("/prioritize", post(extender_prioritize))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
            }
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(node)
}

async fn metrics(AxState(node): AxState<Arc<Node>>) -> Response {
    if let Ok(state) = node.state().await {
        node.metrics.observe(&node.summary(&state));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.encode(),
    )
        .into_response()
}

async fn readyz(AxState(node): AxState<Arc<Node>>) -> Response {
    if node.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn score_one(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let shape = parse_shape(&body?).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc();
    let cur = node.current();
    let out = Json(score(&cur.alloc, &cur.topo, &state, &shape)).into_response();
    node.metrics
        .score_seconds
        .observe(t.elapsed().as_secs_f64());
    Ok(out)
}

async fn score_batch(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let shapes = parse_batch(&body?).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc_by(shapes.len() as u64);
    let cur = node.current();
    let scores: Vec<_> = shapes
        .iter()
        .map(|s| score(&cur.alloc, &cur.topo, &state, s))
        .collect();
    #[derive(Serialize)]
    struct Out<T> {
        scores: Vec<T>,
    }
    let out = Json(Out { scores }).into_response();
    node.metrics
        .score_seconds
        .observe(t.elapsed().as_secs_f64());
    Ok(out)
}

/// Parses `ExtenderArgs` and scores the pod's shape on this node.
async fn extender_score(
    node: &Node,
    body: &[u8],
) -> Result<(extender::ExtenderArgs, crate::Score), ApiError> {
    let args = extender::parse_args(body).map_err(ApiError::bad)?;
    let shape = extender::pod_shape(&args.pod).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc();
    let cur = node.current();
    let s = score(&cur.alloc, &cur.topo, &state, &shape);
    Ok((args, s))
}

async fn extender_filter(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (args, s) = extender_score(&node, &body?).await?;
    let fits = if s.feasible {
        Ok(())
    } else {
        Err(format!("griffin: {}", s.reasons.join("; ")))
    };
    Ok(Json(extender::filter(args, &node.node_name, fits)).into_response())
}

async fn extender_prioritize(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (args, s) = extender_score(&node, &body?).await?;
    let list: Vec<extender::HostPriority> = extender::candidates(&args)
        .into_iter()
        .filter(|n| *n == node.node_name)
        .map(|n| extender::HostPriority {
            host: n.to_owned(),
            score: (i64::from(s.score) + 5) / 10,
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn node_summary(AxState(node): AxState<Arc<Node>>) -> Result<Response, ApiError> {
    let state = node.state().await?;
    Ok(Json(node.summary(&state)).into_response())
}

/// The node's pods' acceleration records, sorted by namespace, name and
/// uid: `[]` on a node without a cluster.
async fn accelerations(AxState(node): AxState<Arc<Node>>) -> Response {
    Json(node.accelerations.snapshot()).into_response()
}
