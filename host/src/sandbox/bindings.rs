//! The host's `bindgen!`s (the `handler` world, and the `batch-handler`
//! world's export over the same types), and the `host` interface plugins
//! import, implemented over the per-store [`State`](super::State).

use super::State;
use crate::event::{self, LogLevel};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    exports: { default: async },
});

/// The `handle-batch` export, over the types of the `handler` bindings.
pub mod batch {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "batch-handler",
        exports: { default: async },
        with: {
            "weir:plugin/types": super::weir::plugin::types,
            "weir:plugin/host": super::weir::plugin::host,
        },
    });
}

/// What `host.publish` answers inside `handle-batch`.
pub const PUBLISH_IN_BATCH: &str = "host.publish is not available inside handle-batch: \
     return each event's messages in its result, so they leave with that event's ok";

pub use weir::plugin::types::{
    Event as WitEvent, Failure as WitFailure, Message as WitMessage, Principal as WitPrincipal,
};

impl weir::plugin::types::Host for State {}

impl weir::plugin::host::Host for State {
    fn log(&mut self, level: weir::plugin::host::Level, text: String) {
        use weir::plugin::host::Level;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.call.log(&self.shared, level, text);
    }

    fn publish(&mut self, msg: WitMessage) -> Result<(), String> {
        if self.call.in_batch {
            return Err(PUBLISH_IN_BATCH.to_owned());
        }
        let msg = event::Message {
            subject: msg.subject,
            payload: msg.payload.into(),
            headers: msg.headers,
        };
        self.call
            .push_output(&self.shared.policy, msg)
            .map_err(|failure| failure.message)
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.shared.config.get(&key).cloned()
    }
}
