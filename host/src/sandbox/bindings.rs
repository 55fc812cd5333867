//! The one `bindgen!` of the host, and the `host` interface it imports,
//! implemented over the per-store [`State`](super::State).

use super::State;
use crate::event::{self, LogLevel};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    exports: { default: async },
});

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
