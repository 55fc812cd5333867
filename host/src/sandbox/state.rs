//! What a store holds: a deny-by-default WASI context, the memory limiter, and
//! the effects of the event being handled (buffered outputs, logs).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::event::{Failure, LogLevel, LogLine, Message};
use crate::policy::OutputPolicy;

/// A log line longer than this is cut.
const MAX_LOG_LINE: usize = 8 * 1024;
/// Log lines one event may write; the rest are counted, not kept.
const MAX_LOG_LINES: u32 = 1_000;

/// What every store of one plugin shares.
pub struct PluginShared {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub policy: OutputPolicy,
    pub memory_bytes: usize,
    /// Keep log lines for the caller (`weir test`) besides tracing them.
    pub capture_logs: bool,
}

/// The data of one store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) shared: Arc<PluginShared>,
    pub(super) call: CallState,
    /// Epoch ticks the running call may still use before it is interrupted:
    /// the guest yields to the scheduler at every tick (see the executor).
    pub(super) ticks_left: u64,
    /// Epoch ticks the running call has used so far.
    pub(super) ticks_run: u64,
    /// A long-running call's turn to run (see `Runtime::long_runners`).
    pub(super) turn: Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
}

impl State {
    pub(super) fn new(shared: Arc<PluginShared>) -> Self {
        // No preopened folders, no environment, no arguments, stdio closed or
        // discarded, every socket address denied: clocks and random only.
        let wasi = WasiCtx::builder().allow_ip_name_lookup(false).build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: shared.memory_bytes,
                hit: false,
                peak: 0,
            },
            shared,
            call: CallState::default(),
            ticks_left: 0,
            ticks_run: 0,
            turn: Arc::default(),
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces `memory_mb` and remembers that it did, so a trap that follows a
/// refused `memory.grow` is reported as `memory`, not as a plain trap.
pub(super) struct MemoryLimiter {
    max_bytes: usize,
    pub(super) hit: bool,
    /// The largest linear memory granted so far (initial sizes included).
    pub(super) peak: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The effects of the event in progress.
#[derive(Default)]
pub(super) struct CallState {
    pub(super) event_id: String,
    pub(super) reply_to: Option<String>,
    pub(super) outputs: Vec<Message>,
    pub(super) output_bytes: u64,
    /// The first output the policy refused: it fails the event whatever the
    /// handler returns, so a plugin cannot ignore a refusal and succeed.
    pub(super) refused: Option<Failure>,
    pub(super) logs: Vec<LogLine>,
    pub(super) logged: u32,
    /// The newest `error` line: a trap message is more useful with it (the
    /// SDK logs a panic's message at error level before the guest aborts).
    pub(super) last_error: Option<String>,
    /// In a `handle-batch` call: `host.publish` is refused.
    pub(super) in_batch: bool,
}

impl CallState {
    pub(super) fn begin(&mut self, event_id: &str, reply_to: Option<&str>) {
        self.event_id.clear();
        self.event_id.push_str(event_id);
        self.reply_to = reply_to.map(str::to_owned);
        self.outputs.clear();
        self.output_bytes = 0;
        self.refused = None;
        self.logs.clear();
        self.logged = 0;
        self.last_error = None;
        self.in_batch = false;
    }

    /// Start a `handle-batch` call of `events`: logs name the first event
    /// and the batch's size.
    pub(super) fn begin_batch(&mut self, first: &str, events: usize) {
        self.begin(first, None);
        if events > 1 {
            use std::fmt::Write as _;
            let _ = write!(self.event_id, " (+{} in batch)", events - 1);
        }
        self.in_batch = true;
    }

    /// Between the results of a batch: check the next event's messages as
    /// if it had come alone, keeping the call's logs.
    pub(super) fn next_in_batch(&mut self, reply_to: Option<&str>) {
        self.reply_to = reply_to.map(str::to_owned);
        self.outputs.clear();
        self.output_bytes = 0;
        self.refused = None;
    }

    pub(super) fn push_output(
        &mut self,
        policy: &OutputPolicy,
        msg: Message,
    ) -> Result<(), Failure> {
        if let Some(refused) = &self.refused {
            return Err(refused.clone());
        }
        match policy.check(
            &msg,
            self.reply_to.as_deref(),
            self.outputs.len(),
            self.output_bytes,
        ) {
            Ok(()) => {
                self.output_bytes += msg.size() as u64;
                self.outputs.push(msg);
                Ok(())
            }
            Err(failure) => {
                self.refused = Some(failure.clone());
                Err(failure)
            }
        }
    }

    pub(super) fn log(&mut self, shared: &PluginShared, level: LogLevel, mut text: String) {
        let plugin = shared.name.as_str();
        self.logged += 1;
        if self.logged > MAX_LOG_LINES {
            if self.logged == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin, event = %self.event_id, "plugin log limit reached: further lines of this event are dropped");
            }
            return;
        }
        if text.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(" [cut]");
        }
        let event = self.event_id.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(target: "weir::plugin", plugin, event, "{text}"),
            LogLevel::Debug => tracing::debug!(target: "weir::plugin", plugin, event, "{text}"),
            LogLevel::Info => tracing::info!(target: "weir::plugin", plugin, event, "{text}"),
            LogLevel::Warn => tracing::warn!(target: "weir::plugin", plugin, event, "{text}"),
            LogLevel::Error => tracing::error!(target: "weir::plugin", plugin, event, "{text}"),
        }
        if level == LogLevel::Error {
            self.last_error = Some(text.clone());
        }
        if shared.capture_logs {
            self.logs.push(LogLine { level, text });
        }
    }
}
