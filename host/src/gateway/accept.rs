//! `POST /v1/events/{subject}`: check the subject, the body, the callback
//! and the idempotency key; write the `accepted` status; publish through
//! JetStream and answer 202 only once the stream has stored the event.

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::context::PublishErrorKind;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Gateway, Refusal};
use crate::event::{is_publish_subject, subject_matches};
use crate::pipeline::rfc3339;
use crate::tracking::{self, StatusDoc};

/// Request headers handed on to the event as they are.
const PASSED: [&str; 4] = ["content-type", "traceparent", "tracestate", "authorization"];
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest `Idempotency-Key` taken.
const MAX_KEY: usize = 256;
/// Room left in the server's `max_payload` for the headers weir adds.
const HEADER_ROOM: usize = 8 * 1024;

pub(super) async fn accept(
    State(gateway): State<Arc<Gateway>>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match gateway.accept(subject, headers, body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

impl Gateway {
    async fn accept(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, Refusal> {
        self.check_subject(&subject)?;
        let callback = self.check_callback(&headers)?;
        let mut passed = Vec::new();
        for name in PASSED {
            if let Some(value) = text_header(&headers, name)? {
                passed.push((name, value));
            }
        }
        let key = text_header(&headers, IDEMPOTENCY_KEY)?;
        if let Some(key) = &key
            && (key.is_empty() || key.len() > MAX_KEY)
        {
            return Err(Refusal::bad(
                format!("Idempotency-Key must be 1 to {MAX_KEY} characters"),
                "header",
                "Idempotency-Key",
            ));
        }
        let limit = self.config.max_body_bytes.min(
            self.sink
                .client()
                .server_info()
                .max_payload
                .saturating_sub(HEADER_ROOM),
        );
        let payload = axum::body::to_bytes(body, limit).await.map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {limit} bytes"),
            )
        })?;
        match self.sink.captures(&subject).await {
            Ok(true) => {}
            Ok(false) => return Err(no_stream(&subject)),
            Err(e) => {
                return Err(Refusal::unavailable(format!(
                    "cannot list the streams: {e:#}"
                )));
            }
        }

        let fresh = tracking::new_status_id();
        let id = match &key {
            Some(key) => self.first_with_key(key, &fresh, &subject).await?,
            None => fresh.clone(),
        };
        let now = rfc3339(SystemTime::now());
        self.bucket
            .accept(&StatusDoc::accepted(&id, &subject, &now))
            .await
            .map_err(|e| Refusal::unavailable(format!("{e:#}")))?;

        let mut nats = async_nats::HeaderMap::new();
        for (name, value) in &passed {
            nats.insert(*name, value.as_str());
        }
        nats.insert("Nats-Msg-Id", key.as_deref().unwrap_or(&id));
        nats.insert(tracking::STATUS_ID, id.as_str());
        if let Some(url) = &callback {
            nats.insert(tracking::CALLBACK, url.as_str());
        }
        let published = match self
            .js
            .publish_with_headers(subject.clone(), nats, payload)
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        let ack = match published {
            Ok(ack) => ack,
            Err(e) => {
                // Nothing was accepted under a fresh id: its status goes.
                if id == fresh {
                    self.bucket.forget(&id).await;
                }
                return Err(if e.kind() == PublishErrorKind::StreamNotFound {
                    no_stream(&subject)
                } else {
                    Refusal::unavailable(format!("JetStream did not store the event: {e}"))
                });
            }
        };
        tracing::info!(
            status_id = %id, subject = %subject, stream = %ack.stream, sequence = ack.sequence,
            duplicate = ack.duplicate, callback = callback.is_some(), "accepted over HTTP"
        );
        let location = format!("/v1/events/{id}");
        let status_url = match text_header(&headers, "host").ok().flatten() {
            Some(host) => format!("http://{host}{location}"),
            None => location.clone(),
        };
        let mut response = (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "id": id, "status_url": status_url })),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Ok(response)
    }

    /// The id of the first request with `Idempotency-Key: key` (`fresh` when
    /// this is it); 409 when that request was for another subject.
    async fn first_with_key(
        &self,
        key: &str,
        fresh: &str,
        subject: &str,
    ) -> Result<String, Refusal> {
        let id = (self.bucket.idempotent(key, fresh).await)
            .map_err(|e| Refusal::unavailable(format!("{e:#}")))?;
        if id != fresh
            && let Ok(Some((doc, _))) = self.bucket.read(&id).await
            && doc.subject != subject
        {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "this Idempotency-Key was used for an event on {:?}",
                    doc.subject
                ),
            )
            .naming("header", "Idempotency-Key"));
        }
        Ok(id)
    }

    /// A subject the gateway may publish to: valid, not reserved, allowed.
    fn check_subject(&self, subject: &str) -> Result<(), Refusal> {
        let bad = |message: String| Err(Refusal::bad(message, "subject", subject));
        if !is_publish_subject(subject) {
            return bad(format!(
                "{subject:?} is not a subject to publish to (dot-separated tokens, no wildcards or spaces)"
            ));
        }
        if let Some(prefix) = self
            .reserved
            .iter()
            .find(|p| subject.starts_with(p.as_str()))
        {
            return bad(format!("{subject:?} is reserved ({prefix}...)"));
        }
        if let Some(allowed) = &self.config.subjects
            && !allowed.iter().any(|p| subject_matches(p, subject))
        {
            return bad(format!("{subject:?} is not among [http] subjects"));
        }
        Ok(())
    }

    /// The `Weir-Callback` URL, when the request names one in `callback_allow`.
    fn check_callback(&self, headers: &HeaderMap) -> Result<Option<String>, Refusal> {
        let Some(url) = text_header(headers, tracking::CALLBACK)? else {
            return Ok(None);
        };
        if !self.config.callback_allowed(&url) {
            return Err(Refusal::bad(
                "the callback URL is not allowed ([http] callback_allow)",
                "header",
                tracking::CALLBACK,
            ));
        }
        Ok(Some(url))
    }
}

/// 404: no stream captures the subject.
fn no_stream(subject: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("no JetStream stream captures {subject:?}"),
    )
    .naming("subject", subject)
}

/// A header's value as text; 400 naming the header when it is not.
fn text_header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, Refusal> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(text) => Ok(Some(text.to_owned())),
            Err(_) => Err(Refusal::bad(
                format!("header {name} is not visible ASCII"),
                "header",
                name,
            )),
        },
    }
}
