//! `GET /v1/events/{id}[?wait=10s]`: the event's status document, with
//! `Retry-After` while it is not final; `wait` long-polls until the document
//! changes or the wait ends (at most [`MAX_WAIT`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Gateway, Refusal};
use crate::tracking;

/// The longest `?wait=` honoured; a longer one is cut to it.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) async fn status(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let not_found = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "no such event (or its status expired)",
        )
        .into_response()
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
    let (mut doc, revision) = match gateway.bucket.read(&id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => return Refusal::unavailable(format!("{e:#}")).into_response(),
    };
    if let Some(wait) = wait
        && !doc.status.is_final()
    {
        match gateway.bucket.next_change(&id, revision, wait).await {
            Ok(Some((changed, _))) => doc = changed,
            Ok(None) => {}
            Err(e) => return Refusal::unavailable(format!("{e:#}")).into_response(),
        }
    }
    let done = doc.status.is_final();
    let mut response = (StatusCode::OK, axum::Json(doc)).into_response();
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
