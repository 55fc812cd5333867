//! The telemetry HTTP endpoint (`[telemetry] listen`, `weir up --metrics`):
//! `GET /metrics` (Prometheus text, or OpenMetrics when the scraper asks for
//! it), `GET /healthz` (200 while the process serves) and `GET /readyz` (200
//! only once start-up finished, NATS is connected and every plugin's
//! JetStream consumer exists; else 503 with a JSON body naming what is not
//! ready).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::lag::LagBoard;
use super::metrics::Connection;

/// What the endpoint serves; the host sets each part once as it starts.
#[derive(Debug, Default)]
pub struct Served {
    /// Set once start-up finished (every plugin subscribed).
    pub started: AtomicBool,
    pub registry: OnceLock<Registry>,
    pub connection: OnceLock<Arc<dyn Connection>>,
    /// The JetStream consumers' state, when the host polls it.
    pub lag: OnceLock<Arc<LagBoard>>,
}

/// Bind `addr` (a failure names `telemetry.listen`) and serve until `stop`.
pub async fn start(
    addr: SocketAddr,
    served: Arc<Served>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("telemetry.listen: cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(served);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "telemetry endpoint stopped");
        }
    });
    tracing::info!(listen = %bound, "telemetry: /metrics, /healthz, /readyz");
    Ok(bound)
}

async fn metrics(State(served): State<Arc<Served>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let Some(registry) = served.registry.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "start-up not finished\n").into_response();
    };
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (
            text::encode(&mut body, registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_text::encode(&mut body, registry),
            prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn readyz(State(served): State<Arc<Served>>) -> Response {
    let mut not_ready = Vec::new();
    if !served.started.load(Ordering::Acquire) {
        not_ready.push("start-up not finished".to_owned());
    }
    match served.connection.get().map(|c| c.connected()) {
        Some(true) => {}
        Some(false) => not_ready.push("NATS disconnected (reconnecting)".to_owned()),
        None => not_ready.push("NATS not connected yet".to_owned()),
    }
    if let Some(lag) = served.lag.get() {
        not_ready.extend(lag.missing());
    }
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": not_ready.is_empty(), "not_ready": not_ready });
    (status, axum::Json(body)).into_response()
}
