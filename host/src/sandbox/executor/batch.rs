//! One call for a batch of events: `handle-batch` in one instance, or, for a
//! component that exports only `handle`, `handle` once per event in that one
//! instance. Each event's messages are checked as if it had come alone; a
//! failure of the call as a whole is returned as such, for the pipeline to
//! split the batch.

use super::{
    Event, Executor, Failure, Inner, LogLine, Message, RunOutput, Warm, WasmExecutor,
    collect_outputs, release_turn, to_wit,
};
use crate::event::FailureKind;
use crate::sandbox::state::CallState;

/// What one call for a batch produced.
#[derive(Debug)]
pub struct BatchRun {
    pub result: BatchResult,
    /// The call's log lines (all events'), when the executor captures them.
    pub logs: Vec<LogLine>,
    /// No free instance slot in the pool.
    pub no_slot: bool,
    /// The instance's largest linear memory so far, in bytes.
    pub memory_peak: usize,
}

/// How a call for a batch ended.
#[derive(Debug)]
pub enum BatchResult {
    /// One result per event, in the events' order.
    Each(Vec<Result<Vec<Message>, Failure>>),
    /// The call failed as a whole (trap, timeout, memory limit, a result list
    /// of the wrong length): no event's result is known.
    Call(Failure),
    /// No instance to call (none free, or it failed to start): every event
    /// fails alike, and running fewer at once changes nothing.
    NotRun(Failure),
}

impl BatchRun {
    /// A call that found no instance to run in.
    fn not_run(failure: Failure, no_slot: bool) -> Self {
        Self {
            result: BatchResult::NotRun(failure),
            logs: Vec::new(),
            no_slot,
            memory_peak: 0,
        }
    }

    /// A call that ran, with what the instance left.
    fn ran(result: BatchResult, logs: Vec<LogLine>, memory_peak: usize) -> Self {
        Self {
            result,
            logs,
            no_slot: false,
            memory_peak,
        }
    }
}

impl Executor {
    /// Run `events` in one call (one instance).
    pub async fn run_batch(&self, events: &[Event]) -> BatchRun {
        match &self.inner {
            Inner::Wasm(w) => w.run_batch(events).await,
            Inner::Native { shared, handler } => {
                let mut call = CallState::default();
                let each = events
                    .iter()
                    .map(|event| {
                        call.begin(&event.id, event.reply_to.as_deref());
                        handler(event).and_then(|messages| {
                            collect_outputs(&mut call, &shared.policy, messages.into_iter())
                        })
                    })
                    .collect();
                BatchRun::ran(BatchResult::Each(each), Vec::new(), 0)
            }
        }
    }

    /// Whether the plugin exports `handle-batch`.
    pub fn exports_batch(&self) -> bool {
        match &self.inner {
            Inner::Wasm(w) => w.batch.is_some(),
            Inner::Native { .. } => false,
        }
    }
}

impl WasmExecutor {
    async fn run_batch(&self, events: &[Event]) -> BatchRun {
        let warm = match self.take_warm() {
            Some(warm) => Ok(warm),
            None => self.instantiate().await,
        };
        match warm {
            Ok(warm) if warm.batch.is_some() => self.call_batch(warm, events).await,
            Ok(warm) => self.call_each(warm, events).await,
            Err((failure, no_slot)) => BatchRun::not_run(failure, no_slot),
        }
    }

    /// One event through `handle-batch` (a component without `handle`).
    pub(super) async fn run_alone_in_batch(&self, warm: Warm, event: &Event) -> RunOutput {
        let run = self.call_batch(warm, std::slice::from_ref(event)).await;
        let result = match run.result {
            BatchResult::Each(mut each) => each.pop().unwrap_or_else(|| Err(no_result(0, 1))),
            BatchResult::Call(failure) | BatchResult::NotRun(failure) => Err(failure),
        };
        RunOutput {
            result,
            logs: run.logs,
            no_slot: run.no_slot,
            memory_peak: run.memory_peak,
        }
    }

    async fn call_batch(&self, mut warm: Warm, events: &[Event]) -> BatchRun {
        let Some(exported) = &warm.batch else {
            return self.call_each(warm, events).await;
        };
        let first = events.first().map_or("", |e| e.id.as_str());
        warm.store.data_mut().call.begin_batch(first, events.len());
        self.arm_deadline(&mut warm.store);
        let inputs: Vec<_> = events.iter().map(to_wit).collect();
        let called = tokio::time::timeout(
            self.hard_timeout,
            exported.call_handle_batch(&mut warm.store, &inputs),
        )
        .await;
        drop(inputs);

        let state = warm.store.data_mut();
        release_turn(state);
        let (result, healthy) = match called {
            Err(_elapsed) => (BatchResult::Call(self.timed_out()), false),
            Ok(Err(error)) => (BatchResult::Call(self.classify(error, state)), false),
            // The guest returned normally: its instance may serve again.
            Ok(Ok(results)) if results.len() != events.len() => (
                BatchResult::Call(no_result(results.len(), events.len())),
                true,
            ),
            Ok(Ok(results)) => {
                let each = events
                    .iter()
                    .zip(results)
                    .map(|(event, returned)| {
                        state.call.next_in_batch(event.reply_to.as_deref());
                        self.finish(state, returned)
                    })
                    .collect();
                (BatchResult::Each(each), true)
            }
        };
        let logs = std::mem::take(&mut state.call.logs);
        let memory_peak = self.done_with(warm, healthy, events.len() as u32);
        BatchRun::ran(result, logs, memory_peak)
    }

    /// A batch for a component that exports only `handle`: one call per
    /// event, in one instance, under one deadline for them all. There
    /// `host.publish` works: the event it belongs to is the one running.
    async fn call_each(&self, mut warm: Warm, events: &[Event]) -> BatchRun {
        let Some(handle) = &warm.handle else {
            let none = Failure::new(FailureKind::Trap, "the component exports no handler");
            return BatchRun::not_run(none, false);
        };
        self.arm_deadline(&mut warm.store);
        let mut logs = Vec::new();
        let mut each = Vec::with_capacity(events.len());
        let store = &mut warm.store;
        let work = async {
            for event in events {
                store
                    .data_mut()
                    .call
                    .begin(&event.id, event.reply_to.as_deref());
                let returned = handle.call_handle(&mut *store, &to_wit(event)).await?;
                let state = store.data_mut();
                logs.append(&mut state.call.logs);
                each.push(self.finish(state, returned));
            }
            Ok::<_, wasmtime::Error>(())
        };
        let called = tokio::time::timeout(self.hard_timeout, work).await;

        let state = warm.store.data_mut();
        release_turn(state);
        logs.append(&mut state.call.logs);
        let (result, healthy) = match called {
            Err(_elapsed) => (BatchResult::Call(self.timed_out()), false),
            Ok(Err(error)) => (BatchResult::Call(self.classify(error, state)), false),
            Ok(Ok(())) => (BatchResult::Each(each), true),
        };
        let memory_peak = self.done_with(warm, healthy, events.len() as u32);
        BatchRun::ran(result, logs, memory_peak)
    }
}

fn no_result(results: usize, events: usize) -> Failure {
    Failure::new(
        FailureKind::BadOutput,
        format!("handle-batch returned {results} results for {events} events"),
    )
}
