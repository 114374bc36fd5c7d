//! Running a router on a TCP listener, for both of the daemon's listeners,
//! with the bounds a node agent facing the network needs: a connection
//! whose request head (or, between requests, any first byte) does not come
//! within [`Limits::header_timeout`] is closed; a request whose handling,
//! body included, takes longer than [`Limits::request_timeout`] is answered
//! 408; about [`Limits::max_connections`] connections are served at once,
//! the oldest closed to make room (see [`serve`]), so the daemon never runs
//! out of file descriptors; a request target longer than [`MAX_URI`] is
//! answered 414;
//! a known route asked with another method 405. These answers carry the
//! router's own JSON error body ([`guard`]). On shutdown the listener
//! closes, requests in flight finish and idle connections are closed.
//!
//! A request line longer than hyper's own limit (64 KiB) or headers over
//! its buffer are refused by hyper before any route sees them (414 or 431
//! without a body).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;

/// Longest request target (path and query) a route is asked with.
pub const MAX_URI: usize = 8 << 10;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a request's head to arrive, and for an idle connection to
    /// start its next request.
    pub header_timeout: Duration,
    /// Time to read a request's body and answer it.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// 10 s for a head or an idle gap, 10 s per request, and a connection
    /// cap from the open-file limit: `files` descriptors are shared by
    /// `listeners` listeners, 128 kept for everything else (and the
    /// [`DRAIN_MARGIN`] of each listener).
    pub fn for_files(files: u64, listeners: usize) -> Self {
        let usable = files.saturating_sub(128) / listeners.max(1) as u64;
        let usable = usable.saturating_sub(DRAIN_MARGIN as u64);
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: usize::try_from(usable.clamp(16, 16_384)).unwrap_or(16_384),
        }
    }
}

/// What a guarded router answers with its own error shape: status and
/// message.
pub type ErrorBody = fn(StatusCode, String) -> Response;

/// Adds the 405, 414 and 408 answers of the module doc to `router`, in the
/// error shape `error` makes.
pub fn guard(router: Router, limits: Limits, error: ErrorBody) -> Router {
    router
        .method_not_allowed_fallback(move || async move {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())
        })
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| bounded(req, next, limits.request_timeout, error),
        ))
}

async fn bounded(req: Request, next: Next, timeout: Duration, error: ErrorBody) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI {
        return error(
            StatusCode::URI_TOO_LONG,
            format!("request target of {uri} bytes, at most {MAX_URI}"),
        );
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("request not completed within {} s", timeout.as_secs()),
        ),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// the requests in flight.
///
/// At [`Limits::max_connections`], each new connection asks the oldest one
/// to close (at once if it is idle, after its answer if a request is in
/// flight), as nginx drains its keep-alive connections: a new client is
/// served at once however many idle connections others hold. Past the cap
/// by [`DRAIN_MARGIN`] (oldest connections all busy), new connections wait
/// in the listen backlog until one ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let service = TowerToHyperService::new(router);
    let mut running = tokio::task::JoinSet::new();
    // Each connection's close request, oldest first.
    let mut oldest: VecDeque<Arc<Notify>> = VecDeque::new();
    let hard_cap = limits.max_connections + DRAIN_MARGIN;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = running.join_next(), if !running.is_empty() => continue,
            accepted = listener.accept(), if running.len() < hard_cap => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        oldest.retain(|n| Arc::strong_count(n) > 1);
        if running.len() >= limits.max_connections {
            if let Some(n) = oldest.pop_front() {
                tracing::debug!(
                    max = limits.max_connections,
                    "at the connection cap: closing the oldest connection"
                );
                n.notify_one();
            }
        }
        let close = Arc::new(Notify::new());
        oldest.push_back(close.clone());
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        running.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                () = close.notified() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection");
            }
        });
    }
    drop(listener);
    for n in oldest {
        n.notify_one();
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Connections past [`Limits::max_connections`] accepted while the oldest
/// ones finish their requests.
pub const DRAIN_MARGIN: usize = 32;
