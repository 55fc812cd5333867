//! `GET /v1/events/{id}[?wait=10s]`: the event's status document, with
//! `Retry-After` while it is not final; `wait` long-polls until the document
//! status changes or the wait ends (at most [`MAX_WAIT`]; at most
//! [`super::MAX_WAITS`] polls wait at once, the others answer at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Gateway, Refusal};
use crate::tracking;
use crate::transport::Change;

/// The longest `?wait=` honoured; a longer one is cut to it.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn status(
    State(gateway): State<Arc<Gateway>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "no such event (or its status expired)",
        )
        .into_response()
    };
    let Ok(Path(id)) = id else {
        return not_found();
    };
    let Ok(Query(query)) = query else {
        return Refusal::new(StatusCode::BAD_REQUEST, "the query string cannot be read")
            .into_response();
    };
    if !tracking::is_status_id(&id) {
        return not_found();
    }
    let wait = match query.get("wait").map(|w| parse_wait(w)) {
        None => None,
        Some(Ok(wait)) => Some(wait.min(MAX_WAIT)),
        Some(Err(message)) => {
            return Refusal::bad(message, "parameter", "wait").into_response();
        }
    };
    let unavailable = |e: anyhow::Error| {
        tracing::warn!(status_id = %id, error = %format!("{e:#}"), "HTTP gateway: cannot read a status");
        Refusal::unavailable("cannot read the status: JetStream is not available; try again")
            .into_response()
    };
    let (mut doc, revision) = match gateway.bucket.read(&id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => return unavailable(e),
    };
    // A full house of waiting polls answers at once with what there is.
    let slot = gateway.waits.try_acquire();
    if let (Some(wait), Ok(_slot)) = (wait, slot)
        && !doc.status.is_final()
    {
        match gateway
            .bucket
            .next_change(&id, revision, doc.status, wait)
            .await
        {
            Ok(Change::To(changed)) => doc = *changed,
            Ok(Change::Gone) => return not_found(),
            Ok(Change::None) => {}
            Err(e) => return unavailable(e),
        }
    }
    let done = doc.status.is_final();
    let mut response = (StatusCode::OK, axum::Json(doc.public())).into_response();
    if !done {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `10s`, `500ms`, `1m` (humantime), or a number of seconds.
fn parse_wait(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("wait={text:?} is not a duration (10s, 500ms, 1m): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_durations() {
        assert_eq!(parse_wait("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_wait("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_wait("soon").is_err());
    }
}
