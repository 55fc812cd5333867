//! Events whose fate was decided but whose dead letter could not be stored:
//! when the transport delivers one again, its letter is tried again with the
//! same failure instead of running the handler.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::event::Failure;

/// Final failures whose dead letter could not be stored, by event id. When
/// the transport delivers such an event again, its dead letter is tried
/// again with the same failure and the handler is not run: its fate was
/// decided, only the storing failed. Without this, an event delivered again
/// past `max_attempts` would be dead-lettered as `retry-exhausted`
/// ("delivered N times without a result"), its real failure (a `reject`,
/// say) lost. Per host: another host that gets the event runs it again.
#[derive(Default)]
pub(super) struct Unstored(Mutex<HashMap<String, Failure>>);

/// Bound on [`Unstored`]: when full, one entry makes room (that event falls
/// back to being run again, or to `retry-exhausted`).
const MAX_UNSTORED: usize = 10_000;

impl Unstored {
    pub(super) fn take(&self, id: &str) -> Option<Failure> {
        self.0.lock().ok()?.remove(id)
    }

    pub(super) fn keep(&self, id: &str, failure: Failure) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= MAX_UNSTORED
            && let Some(any) = map.keys().next().cloned()
        {
            map.remove(&any);
        }
        map.insert(id.to_owned(), failure);
    }
}
