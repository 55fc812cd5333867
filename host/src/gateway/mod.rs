//! The HTTP gateway (`[http]` in weir.toml): `POST /v1/events/{subject}`
//! turns a request into a JetStream event and answers `202 Accepted` with a
//! status URL once the stream has it ([`accept`]); `GET /v1/events/{id}`
//! answers with the event's status document, long-polling with `?wait=`
//! ([`poll`]). The status lives in the `weir_status` bucket, written by
//! whichever host handles the event, so any gateway answers for any event.
//! Webhooks of final statuses go through `WEIR_WEBHOOKS` ([`crate::webhook`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream as js;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;
use crate::transport::{NatsSink, StatusBucket};

mod accept;
mod poll;

/// What every request needs.
pub struct Gateway {
    js: js::Context,
    /// For the stream index (which subjects a stream captures) and the
    /// server's `max_payload`.
    sink: Arc<NatsSink>,
    bucket: StatusBucket,
    config: HttpConfig,
    /// Subject prefixes never published to: the server's APIs, inboxes and
    /// weir's own subjects.
    reserved: Vec<String>,
    /// Requests being accepted at once (each holds its body in memory): past
    /// it, 503.
    posts: tokio::sync::Semaphore,
    /// Long polls waiting at once (each holds a watch on the bucket): past
    /// it, a poll answers at once with what is there.
    waits: tokio::sync::Semaphore,
}

/// Requests accepted at once, per host.
pub const MAX_POSTS: usize = 512;
/// Long polls waiting at once, per host.
pub const MAX_WAITS: usize = 1024;

/// Make sure of the status bucket and the webhooks stream, bind
/// `[http] listen` (a failure names it) and serve until `stop`.
pub async fn start(
    config: &HttpConfig,
    dead_letter_prefix: &str,
    sink: Arc<NatsSink>,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let js = sink
        .jetstream()
        .context("[http]: the gateway needs JetStream, and the NATS server has none")?
        .clone();
    let bucket = StatusBucket::ensure(
        &js,
        Duration::from_millis(config.status_ttl_ms),
        config.replicas,
    )
    .await?;
    crate::webhook::ensure_stream(&js, config.replicas).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let gateway = Arc::new(Gateway {
        js,
        sink,
        bucket,
        config: config.clone(),
        reserved: reserved_prefixes(dead_letter_prefix),
        posts: tokio::sync::Semaphore::new(MAX_POSTS),
        waits: tokio::sync::Semaphore::new(MAX_WAITS),
    });
    let app = Router::new()
        .route(
            "/v1/events/{*rest}",
            get(poll::status).post(accept::accept).fallback(|| async {
                Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use POST to send an event, GET to read its status",
                )
            }),
        )
        .fallback(|| async {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "no such endpoint: POST /v1/events/{subject}, GET /v1/events/{id}",
            )
        })
        .with_state(gateway);
    tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP gateway stopped");
        }
    });
    tracing::info!(listen = %bound, "HTTP gateway: POST /v1/events/{{subject}}, GET /v1/events/{{id}}");
    Ok(bound)
}

/// How this host delivers webhooks, when `[http]` names a signing secret
/// (errors name the field and never quote the secret).
pub fn webhook_settings(
    config: &HttpConfig,
    dead_letter_prefix: &str,
) -> anyhow::Result<Option<crate::webhook::Settings>> {
    let secret = crate::auth::secret::read_secret(
        "http.webhook_secret_file",
        config.webhook_secret_file.as_deref(),
        "http.webhook_secret_env",
        config.webhook_secret_env.as_deref(),
    )?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    let secret = crate::webhook::Secret::parse(secret.expose()).context(
        "http.webhook_secret_file / webhook_secret_env: not a webhook secret (whsec_<base64>)",
    )?;
    let mut settings = crate::webhook::Settings::new(secret);
    settings.max_attempts = config.webhook_max_attempts;
    settings.backoff = config
        .webhook_backoff_ms
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    settings.timeout = Duration::from_millis(config.webhook_timeout_ms);
    settings.dead_letter_subject = format!("{dead_letter_prefix}.webhooks");
    Ok(Some(settings))
}

/// The prefixes the gateway refuses: `$` (every server API: `$SYS`, `$JS`,
/// `$KV`, `$O`, `$SRV`), inboxes, weir's status requests, and the dead
/// letters and webhook jobs (`<dead_letter.subject_prefix>.`,
/// `weir.webhooks.`).
fn reserved_prefixes(dead_letter_prefix: &str) -> Vec<String> {
    vec![
        "$".into(),
        "_INBOX.".into(),
        crate::status::SUBJECT.into(),
        format!("{dead_letter_prefix}."),
        format!("{}.", crate::webhook::SUBJECT_PREFIX),
    ]
}

/// A request refused: answered with its status and a JSON body
/// `{"error": "...", <field>: <value>}` naming what is wrong.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    /// What the error is about: `("subject", ...)`, `("header", ...)`.
    field: Option<(&'static str, String)>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 naming `field`.
    pub(crate) fn bad(message: impl Into<String>, field: &'static str, value: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message).naming(field, value)
    }

    pub(crate) fn naming(mut self, field: &'static str, value: &str) -> Self {
        self.field = Some((field, value.to_owned()));
        self
    }

    /// 503 with `Retry-After`: JetStream cannot take the request now.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message.into());
        if let Some((k, v)) = self.field {
            body.insert(k.into(), v.into());
        }
        let mut response =
            (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
