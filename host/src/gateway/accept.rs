//! `POST /v1/events/{subject}`: check the subject, the headers, the body,
//! the callback and the idempotency key; write the `accepted` status; publish
//! through JetStream and answer 202 only once the stream has stored the event.

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::context::PublishErrorKind;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::{Gateway, Refusal};
use crate::event::{is_publish_subject, subject_matches};
use crate::pipeline::rfc3339;
use crate::tracking::{self, StatusDoc};

/// Request headers handed on to the event as they are.
const PASSED: [&str; 4] = ["content-type", "traceparent", "tracestate", "authorization"];
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest `Idempotency-Key` taken.
const MAX_KEY: usize = 256;
/// Longest value of any header handed on (431 past it).
const MAX_HEADER: usize = 8 * 1024;
/// Room for the NATS header block's framing and the headers weir adds.
const HEADER_FRAMING: usize = 512;

pub(super) async fn accept(
    State(gateway): State<Arc<Gateway>>,
    subject: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Path(subject)) = subject else {
        return Refusal::bad("the subject in the path is not valid UTF-8", "subject", "")
            .into_response();
    };
    let Ok(_slot) = gateway.posts.try_acquire() else {
        return Refusal::unavailable("too many requests at once").into_response();
    };
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
        // What the event's headers and subject take of the server's
        // max_payload is not left for the body.
        let headers_size: usize = passed
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + key.as_ref().map_or(0, |k| k.len() + 16)
            + callback.as_ref().map_or(0, |c| c.len() + 20)
            + subject.len()
            + HEADER_FRAMING;
        let limit = self
            .config
            .max_body_bytes
            .min((self.sink.client().server_info().max_payload).saturating_sub(headers_size));
        let payload = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {limit} bytes"),
                )
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, "the body could not be read")
            }
        })?;
        match self.sink.captures(&subject).await {
            Ok(true) => {}
            Ok(false) => return Err(no_stream(&subject)),
            Err(e) => return Err(self.unavailable("cannot list the streams", &e)),
        }

        let fresh = tracking::new_status_id();
        let id = match &key {
            Some(key) => {
                let id = self.first_with_key(key, &fresh, &subject, &payload).await?;
                if id != fresh
                    && let Some(response) = self.already_accepted(&id).await?
                {
                    return Ok(response);
                }
                id
            }
            None => fresh.clone(),
        };
        let now = rfc3339(SystemTime::now());
        let mut doc = StatusDoc::accepted(&id, &subject, &now);
        doc.callback = callback.clone();
        (self.bucket.accept(&doc).await)
            .map_err(|e| self.unavailable("cannot store the status", &e))?;

        let mut nats = async_nats::HeaderMap::new();
        for (name, value) in &passed {
            nats.insert(*name, value.as_str());
        }
        nats.insert("Nats-Msg-Id", key.as_deref().unwrap_or(&id));
        nats.insert(tracking::STATUS_ID, id.as_str());
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
                let kind = e.kind();
                // Nothing was accepted under a fresh id: its status goes. (After
                // a timeout the event may be stored after all: keep it.)
                if id == fresh && kind != PublishErrorKind::TimedOut {
                    self.bucket.forget(&id).await;
                }
                return Err(match kind {
                    PublishErrorKind::StreamNotFound => no_stream(&subject),
                    PublishErrorKind::MaxPayloadExceeded => Refusal::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the event is larger than the NATS server takes",
                    ),
                    _ => self.unavailable("JetStream did not store the event", &e),
                });
            }
        };
        if ack.duplicate && id == fresh {
            // The stream holds another message under this Nats-Msg-Id, not
            // sent through this key's first request.
            self.bucket.forget(&id).await;
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "the stream already holds a message with this Idempotency-Key as its Nats-Msg-Id",
            )
            .naming("header", "Idempotency-Key"));
        }
        // Only a retry with the same key asks whether the first was published.
        if key.is_some()
            && let Err(e) = self.bucket.mark_published(&id).await
        {
            tracing::warn!(status_id = %id, error = %format!("{e:#}"), "cannot note the event as published");
        }
        tracing::info!(
            status_id = %id, subject = %subject, stream = %ack.stream, sequence = ack.sequence,
            duplicate = ack.duplicate, callback = callback.is_some(), "accepted over HTTP"
        );
        Ok(self.accepted(&id))
    }

    /// The 202 answer for event `id`.
    fn accepted(&self, id: &str) -> Response {
        let location = format!("/v1/events/{id}");
        let status_url = match &self.config.public_url {
            Some(base) => format!("{}{location}", base.trim_end_matches('/')),
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
        response
    }

    /// The id of the first request with `Idempotency-Key: key` (`fresh` when
    /// this is it); 409 when that request had another subject or body.
    async fn first_with_key(
        &self,
        key: &str,
        fresh: &str,
        subject: &str,
        payload: &[u8],
    ) -> Result<String, Refusal> {
        let mut print = Sha256::new();
        print.update(subject.as_bytes());
        print.update([0]);
        print.update(payload);
        let print = hex::encode(&print.finalize()[..16]);
        match self.bucket.idempotent(key, fresh, &print).await {
            Ok(id) => Ok(id),
            Err(Some(e)) => Err(self.unavailable("cannot check the Idempotency-Key", &e)),
            Err(None) => Err(Refusal::new(
                StatusCode::CONFLICT,
                "this Idempotency-Key was used for another request (another subject or body)",
            )
            .naming("header", "Idempotency-Key")),
        }
    }

    /// A retried request whose first was published (or already handled):
    /// its 202 again, without publishing a second time, even past the
    /// stream's duplicate window.
    async fn already_accepted(&self, id: &str) -> Result<Option<Response>, Refusal> {
        match self.bucket.read(id).await {
            Ok(Some((doc, _))) if doc.published || !doc.handlers.is_empty() => {
                Ok(Some(self.accepted(id)))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(self.unavailable("cannot read the status", &e)),
        }
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

    /// 503: logged in full here, told in short to the caller.
    fn unavailable(&self, what: &str, e: &dyn std::fmt::Display) -> Refusal {
        tracing::warn!(error = %e, "HTTP gateway: {what}");
        Refusal::unavailable(format!("{what}: JetStream is not available; try again"))
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

/// A header's value as text; 400 naming the header when it is not, 431 when
/// it is too long.
fn text_header(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, Refusal> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) if value.len() > MAX_HEADER => Err(Refusal::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("header {name} is longer than {MAX_HEADER} bytes"),
        )
        .naming("header", name)),
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
