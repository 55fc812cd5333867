//! Running one event (or one batch: [`batch`]) in a plugin: a fresh instance
//! per call, or a warm one taken from the plugin's pool (`isolation =
//! "reuse"`), under a deadline (epoch interruption plus a tokio timeout) and a
//! memory limit.

mod batch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::batch::{BatchHandler, BatchHandlerIndices};
use super::bindings::{Handler, HandlerIndices, WitEvent, WitFailure, WitPrincipal};
use super::state::{CallState, PluginShared, State};
use super::{LONG_AFTER_TICKS, Prepared, Runtime, TickerUser};
use crate::config::{Isolation, Limits};
use crate::event::{Event, Failure, FailureKind, LogLine, Message};
use crate::policy::OutputPolicy;

pub use batch::{BatchResult, BatchRun};

/// What one attempt produced.
#[derive(Debug)]
pub struct RunOutput {
    /// Every message to publish (those given to `host.publish`, then the
    /// returned ones), or why the attempt failed.
    pub result: Result<Vec<Message>, Failure>,
    /// Log lines, when the executor was built to capture them.
    pub logs: Vec<LogLine>,
    /// The attempt found no free instance slot in the pool
    /// (`sandbox.max_instances` instances alive already).
    pub no_slot: bool,
    /// The instance's largest linear memory so far, in bytes (a warm
    /// instance's since it was made); 0 for a native handler.
    pub memory_peak: usize,
}

/// A handler compiled into the host, run through the same output checks as a
/// plugin: the native baseline of the benchmarks.
pub type NativeHandler = Arc<dyn Fn(&Event) -> Result<Vec<Message>, Failure> + Send + Sync>;

/// One plugin's way of running events.
pub struct Executor {
    inner: Inner,
}

enum Inner {
    Wasm(Box<WasmExecutor>),
    Native {
        shared: Arc<PluginShared>,
        handler: NativeHandler,
    },
}

struct WasmExecutor {
    engine: Engine,
    /// Keeps the epoch ticker running while this plugin may run guests, even
    /// after the host that loaded it has gone (event tasks can outlive it).
    _ticker: TickerUser,
    /// See `Runtime::long_runners`.
    long_runners: Arc<tokio::sync::Semaphore>,
    pre: wasmtime::component::InstancePre<State>,
    handle: Option<HandlerIndices>,
    batch: Option<BatchHandlerIndices>,
    shared: Arc<PluginShared>,
    isolation: Isolation,
    max_events_per_instance: u32,
    timeout: Duration,
    /// The deadline in epoch ticks: the timeout, rounded up, plus one tick.
    deadline_ticks: u64,
    /// The tokio timeout: a backstop for the rare host call epochs cannot
    /// interrupt, a little later than the epoch deadline.
    hard_timeout: Duration,
    /// Warm instances (reuse isolation only), at most `max_in_flight` of them.
    warm: Mutex<Vec<Warm>>,
}

struct Warm {
    store: Store<State>,
    /// The component's `handle`, when it exports one.
    handle: Option<Handler>,
    /// The component's `handle-batch`, when it exports one.
    batch: Option<BatchHandler>,
    served: u32,
}

impl Executor {
    pub fn new(
        runtime: &Runtime,
        prepared: Prepared,
        shared: PluginShared,
        limits: &Limits,
    ) -> Self {
        Self {
            inner: Inner::Wasm(Box::new(WasmExecutor::new(
                runtime, prepared, shared, limits,
            ))),
        }
    }

    /// An executor for a handler compiled into the host (benchmarks' baseline).
    pub fn native(shared: PluginShared, handler: NativeHandler) -> Self {
        Self {
            inner: Inner::Native {
                shared: Arc::new(shared),
                handler,
            },
        }
    }

    pub fn plugin(&self) -> &str {
        match &self.inner {
            Inner::Wasm(w) => &w.shared.name,
            Inner::Native { shared, .. } => &shared.name,
        }
    }

    /// Run one attempt of `event`.
    /// Idle instances kept for the next events (`isolation = "reuse"`).
    pub fn warm_instances(&self) -> usize {
        match &self.inner {
            Inner::Wasm(w) => w.warm.lock().map_or(0, |pool| pool.len()),
            Inner::Native { .. } => 0,
        }
    }

    pub async fn run(&self, event: &Event) -> RunOutput {
        match &self.inner {
            Inner::Wasm(w) => w.run(event).await,
            Inner::Native { shared, handler } => {
                let mut call = CallState::default();
                call.begin(&event.id, event.reply_to.as_deref());
                let result = handler(event).and_then(|messages| {
                    collect_outputs(&mut call, &shared.policy, messages.into_iter())
                });
                RunOutput {
                    result,
                    logs: Vec::new(),
                    no_slot: false,
                    memory_peak: 0,
                }
            }
        }
    }
}

/// Check the returned messages after those already published, and hand out
/// all of them, or the first refusal.
fn collect_outputs(
    call: &mut CallState,
    policy: &OutputPolicy,
    returned: impl Iterator<Item = Message>,
) -> Result<Vec<Message>, Failure> {
    for msg in returned {
        // The first refusal is kept in `refused`; stop at it.
        if call.push_output(policy, msg).is_err() {
            break;
        }
    }
    if let Some(refused) = call.refused.take() {
        return Err(refused);
    }
    call.output_bytes = 0;
    Ok(std::mem::take(&mut call.outputs))
}

impl WasmExecutor {
    fn new(runtime: &Runtime, prepared: Prepared, shared: PluginShared, limits: &Limits) -> Self {
        let tick = runtime.epoch_tick().as_millis().max(1) as u64;
        let timeout = Duration::from_millis(limits.timeout_ms);
        Self {
            engine: runtime.engine().clone(),
            _ticker: runtime.ticker_user(),
            long_runners: runtime.long_runners(),
            pre: prepared.pre,
            handle: prepared.handle,
            batch: prepared.batch,
            shared: Arc::new(shared),
            isolation: limits.isolation,
            max_events_per_instance: limits.max_events_per_instance,
            timeout,
            deadline_ticks: limits.timeout_ms.div_ceil(tick) + 1,
            hard_timeout: timeout + Duration::from_millis(3 * tick + 50),
            warm: Mutex::new(Vec::new()),
        }
    }

    async fn run(&self, event: &Event) -> RunOutput {
        let warm = match self.take_warm() {
            Some(warm) => Ok(warm),
            None => self.instantiate().await,
        };
        let mut warm = match warm {
            Ok(warm) => warm,
            Err((failure, no_slot)) => {
                return RunOutput {
                    result: Err(failure),
                    logs: Vec::new(),
                    no_slot,
                    memory_peak: 0,
                };
            }
        };

        let Some(handle) = &warm.handle else {
            // A component that exports only `handle-batch`: a batch of one.
            return self.run_alone_in_batch(warm, event).await;
        };
        warm.store
            .data_mut()
            .call
            .begin(&event.id, event.reply_to.as_deref());
        self.arm_deadline(&mut warm.store);
        let input = to_wit(event);
        let called = tokio::time::timeout(
            self.hard_timeout,
            handle.call_handle(&mut warm.store, &input),
        )
        .await;

        let state = warm.store.data_mut();
        release_turn(state);
        // Whether the instance may serve another event: only if the guest
        // returned normally (its state is whatever it left, by its own choice).
        let (result, healthy) = match called {
            Err(_elapsed) => (Err(self.timed_out()), false),
            Ok(Err(error)) => (Err(self.classify(error, state)), false),
            Ok(Ok(returned)) => (self.finish(state, returned), true),
        };
        let logs = std::mem::take(&mut state.call.logs);
        let memory_peak = self.done_with(warm, healthy, 1);
        RunOutput {
            result,
            logs,
            no_slot: false,
            memory_peak,
        }
    }

    /// After a call of `events` events: keep the instance warm if it may
    /// serve more; its memory peak.
    fn done_with(&self, mut warm: Warm, healthy: bool, events: u32) -> usize {
        let state = warm.store.data_mut();
        let memory_peak = state.limiter.peak;
        state.limiter.hit = false;
        warm.served = warm.served.saturating_add(events);
        if healthy
            && self.isolation == Isolation::Reuse
            && warm.served < self.max_events_per_instance
        {
            self.put_warm(warm);
        }
        memory_peak
    }

    fn finish(
        &self,
        state: &mut State,
        returned: Result<Vec<super::bindings::WitMessage>, WitFailure>,
    ) -> Result<Vec<Message>, Failure> {
        let returned = match returned {
            Ok(messages) => messages,
            Err(failure) => {
                // A refused publish outranks what the handler said after it.
                if let Some(refused) = state.call.refused.take() {
                    return Err(refused);
                }
                return Err(match failure {
                    WitFailure::Retry(m) => Failure::new(FailureKind::Retry, m),
                    WitFailure::Reject(m) => Failure::new(FailureKind::Reject, m),
                });
            }
        };
        let returned = returned.into_iter().map(|msg| Message {
            subject: msg.subject,
            payload: msg.payload.into(),
            headers: msg.headers,
        });
        collect_outputs(&mut state.call, &state.shared.policy, returned)
    }

    fn timed_out(&self) -> Failure {
        Failure::new(
            FailureKind::Timeout,
            format!("timed out after {} ms", self.timeout.as_millis()),
        )
    }

    fn classify(&self, error: wasmtime::Error, state: &State) -> Failure {
        let trap = error.downcast_ref::<Trap>().copied();
        if trap == Some(Trap::Interrupt) {
            return self.timed_out();
        }
        if state.limiter.hit {
            return Failure::new(
                FailureKind::Memory,
                format!(
                    "exceeded its memory limit of {} MiB",
                    self.shared.memory_bytes / (1024 * 1024)
                ),
            );
        }
        let mut message = match trap {
            Some(Trap::StackOverflow) => "wasm trap: call stack exhausted".to_owned(),
            Some(trap) => trap.to_string(),
            None => format!("{error:#}"),
        };
        if let Some(last) = &state.call.last_error {
            message.push_str(" (last error log: ");
            message.push_str(last);
            message.push(')');
        }
        Failure::new(FailureKind::Trap, message)
    }

    /// A new instance, or why not and whether it was for want of a pool slot.
    async fn instantiate(&self) -> Result<Warm, (Failure, bool)> {
        let mut store = Store::new(&self.engine, State::new(self.shared.clone()));
        store.limiter(|state| &mut state.limiter);
        // Every epoch tick the guest yields to the tokio scheduler, so a guest
        // that spins cannot hold a worker thread (and with it NATS I/O, progress
        // acks and the other plugins) for its whole timeout; once its ticks are
        // used up it is interrupted. Past its first ticks a call waits for a
        // turn among the host's long-running calls before each further tick.
        let long_runners = self.long_runners.clone();
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            if state.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            state.ticks_left -= 1;
            state.ticks_run += 1;
            if state.ticks_run < LONG_AFTER_TICKS {
                return Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ));
            }
            let turn = state.turn.clone();
            if let Ok(mut held) = turn.lock() {
                held.take();
            }
            let long_runners = long_runners.clone();
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    if let Ok(permit) = long_runners.acquire_owned().await
                        && let Ok(mut held) = turn.lock()
                    {
                        *held = Some(permit);
                    }
                }),
            ))
        });
        // Start functions run at instantiation: they get a deadline too.
        self.arm_deadline(&mut store);
        let instantiated =
            tokio::time::timeout(self.hard_timeout, self.pre.instantiate_async(&mut store)).await;
        let loaded = instantiated.map(|made| {
            made.and_then(|instance| {
                let handle = (self.handle.as_ref())
                    .map(|at| at.load(&mut store, &instance))
                    .transpose()?;
                let batch = (self.batch.as_ref())
                    .map(|at| at.load(&mut store, &instance))
                    .transpose()?;
                Ok((handle, batch))
            })
        });
        match loaded {
            Ok(Ok((handle, batch))) => Ok(Warm {
                store,
                handle,
                batch,
                served: 0,
            }),
            Ok(Err(error)) => {
                let no_slot = error
                    .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some();
                let failure = self.classify(error, store.data());
                Err((
                    Failure::new(
                        failure.kind,
                        format!("cannot instantiate: {}", failure.message),
                    ),
                    no_slot,
                ))
            }
            Err(_elapsed) => Err((self.timed_out(), false)),
        }
    }

    /// Give the next call `timeout` worth of ticks, checked at every tick.
    fn arm_deadline(&self, store: &mut Store<State>) {
        let state = store.data_mut();
        state.ticks_left = self.deadline_ticks;
        state.ticks_run = 0;
        store.set_epoch_deadline(1);
    }

    fn take_warm(&self) -> Option<Warm> {
        if self.isolation != Isolation::Reuse {
            return None;
        }
        self.warm.lock().ok()?.pop()
    }

    fn put_warm(&self, warm: Warm) {
        if let Ok(mut pool) = self.warm.lock() {
            pool.push(warm);
        }
    }
}

/// A long-running call gives back its turn once it returns.
fn release_turn(state: &mut State) {
    if let Ok(mut held) = state.turn.lock() {
        held.take();
    }
}

fn to_wit(event: &Event) -> WitEvent {
    WitEvent {
        id: event.id.clone(),
        subject: event.subject.clone(),
        payload: event.payload.to_vec(),
        headers: event.headers.clone(),
        reply_to: event.reply_to.clone(),
        attempt: event.attempt,
        principal: event.principal.as_ref().map(|p| WitPrincipal {
            subject: p.subject.clone(),
            issuer: p.issuer.clone(),
            claims: p.claims.clone(),
        }),
    }
}
