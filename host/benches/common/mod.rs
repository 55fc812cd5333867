//! What the in-process benchmarks share: the repository root, the event they
//! send, and the work they time.

use std::path::PathBuf;

use weir_host::event::Event;
use weir_host::pipeline::{self, Outcome};
use weir_host::plugin::Plugin;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A small JSON event with one header.
pub fn event(subject: &str) -> Event {
    Event {
        id: "bench-1".into(),
        subject: subject.into(),
        payload: bytes::Bytes::from_static(
            b"{\"n\":1,\"payload\":\"0123456789abcdef0123456789abcdef\"}",
        ),
        headers: vec![("trace-id".into(), "abc".into())],
        reply_to: None,
        attempt: 1,
        principal: None,
    }
}

/// The work measured: one attempt, the decision, the output ids.
pub async fn dispatch(plugin: &Plugin, event: &Event) -> usize {
    match pipeline::attempt(plugin, event).await.outcome {
        Outcome::Done(mut outputs) => {
            pipeline::stamp_outputs(event, &mut outputs);
            outputs.len()
        }
        other => panic!("benchmark handler failed: {other:?}"),
    }
}
