//! The sandbox: one wasmtime engine for all plugins (component model, async,
//! pooling allocator, epoch interruption), a deny-by-default WASI, and an
//! [`Executor`] per plugin that runs one event in a fresh or a warm instance.
//!
//! The sandbox knows nothing of NATS or retries: it turns an [`Event`] into a
//! [`RunOutput`], the outputs or the failure of one attempt.

mod bindings;
pub mod cache;
mod executor;
mod state;

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use executor::{BatchResult, BatchRun, Executor, NativeHandler, RunOutput};
pub use state::{PluginShared, State};

use crate::config::SandboxConfig;

/// Things a plugin can fail to load with, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot compile the component: {0:#}")]
    Compile(anyhow::Error),
    #[error(
        "the component does not fit the weir:plugin/handler or batch-handler world (wit/ in the weir repository): {0:#}"
    )]
    World(anyhow::Error),
    /// Refused before compiling: a missing or bad grant, an unknown issuer, ...
    #[error("{0}")]
    Refused(String),
}

/// The engine and linker every plugin shares.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    /// Where compiled components are kept, keyed by wasm hash and engine,
    /// and the cap on their size; `None`: compile every time.
    cache: Option<cache::Settings>,
    epoch_tick: Duration,
    /// The epoch ticker thread runs while this or any executor's clone of it
    /// is alive: guests are interrupted as long as one can run.
    ticker: TickerUser,
    /// Turns for long-running calls: a call that has run for more than
    /// [`LONG_AFTER_TICKS`] runs each further tick only while it holds one,
    /// so guests that spin (or just compute for long) share half the worker
    /// threads among themselves and short events keep the rest.
    long_runners: Arc<tokio::sync::Semaphore>,
}

/// Ticks after which a call counts as long-running.
pub(crate) const LONG_AFTER_TICKS: u64 = 2;

/// A share in the epoch ticker's life: the ticker thread stops once the last
/// one is dropped.
#[derive(Clone)]
pub struct TickerUser(#[allow(dead_code)] Arc<()>);

impl Runtime {
    pub fn new(config: &SandboxConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let instances = config.max_instances;
        // Guests like componentize-py's hold a dozen core instances and
        // thousands of table entries: size for them, not for the defaults.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_tables_per_module(8)
            .max_memories_per_module(2)
            .table_elements(50_000)
            .max_memory_size(config.max_memory_mb as usize * 1024 * 1024)
            .max_unused_warm_slots(instances.min(100))
            // A fresh instance per event makes teardown the hot path: most of
            // its cost was one madvise (and TLB shootdown) per slot. Batching
            // them measured ~31 -> ~25 µs per event for a small Rust guest.
            .decommit_batch_size(64);
        // Not set, on purpose: `linear_memory_keep_resident` /
        // `table_keep_resident` with `pagemap_scan` reset a slot in place and
        // measured ~2x faster fresh instances here, but wasmtime 48's scan
        // treats a written page that was swapped out as clean, so the next
        // instance in the slot (any plugin's) could read it. Isolation first.

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .max_wasm_stack(512 * 1024)
            .async_stack_size(2 * 1024 * 1024);
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("cannot configure the wasmtime engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI into the sandbox")?;
        bindings::Handler::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
            &mut linker,
            |state| state,
        )
        .map_err(anyhow::Error::from)
        .context("cannot link the weir host interface")?;

        let epoch_tick = Duration::from_millis(config.epoch_tick_ms);
        let ticker = TickerUser(Arc::new(()));
        spawn_ticker(engine.clone(), epoch_tick, Arc::downgrade(&ticker.0))?;

        Ok(Self {
            engine,
            linker,
            cache: config.resolved_cache_dir().map(|dir| cache::Settings {
                dir,
                max_bytes: config.cache_max_bytes(),
                since: std::time::SystemTime::now(),
            }),
            epoch_tick,
            ticker,
            long_runners: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get() / 2)
                    .max(1),
            )),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile (or fetch from the cache) a component and check that it is a
    /// handler, ready to be instantiated for events.
    pub fn prepare(&self, wasm: &[u8], sha256: &[u8; 32]) -> Result<Prepared, LoadError> {
        let component = cache::load_or_compile(&self.engine, self.cache.as_ref(), wasm, sha256)
            .map_err(LoadError::Compile)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::World(e.into()))?;
        let exports = |name: &str| component.get_export_index(None, name).is_some();
        // An export that is there must have the world's type; one of the two
        // must be there.
        let handle = exports("handle")
            .then(|| bindings::HandlerIndices::new(&pre))
            .transpose()
            .map_err(|e| LoadError::World(e.into()))?;
        let batch = exports("handle-batch")
            .then(|| bindings::batch::BatchHandlerIndices::new(&pre))
            .transpose()
            .map_err(|e| LoadError::World(e.into()))?;
        if handle.is_none() && batch.is_none() {
            return Err(LoadError::World(anyhow::anyhow!(
                "it exports neither `handle` nor `handle-batch`"
            )));
        }
        Ok(Prepared { pre, handle, batch })
    }

    pub fn epoch_tick(&self) -> Duration {
        self.epoch_tick
    }

    pub(crate) fn ticker_user(&self) -> TickerUser {
        self.ticker.clone()
    }

    pub(crate) fn long_runners(&self) -> Arc<tokio::sync::Semaphore> {
        self.long_runners.clone()
    }
}

/// A component checked against the world, ready for an [`Executor`]; a
/// clone shares the compiled code.
#[derive(Clone)]
pub struct Prepared {
    pre: wasmtime::component::InstancePre<State>,
    /// Where `handle` is, when the component exports it.
    handle: Option<bindings::HandlerIndices>,
    /// Where `handle-batch` is, when the component exports it.
    batch: Option<bindings::batch::BatchHandlerIndices>,
}

impl Prepared {
    /// Whether the component exports `handle-batch` (else the host calls
    /// `handle` once per event of a batch).
    pub fn exports_batch(&self) -> bool {
        self.batch.is_some()
    }
}

/// Epoch interruption needs a clock: one thread bumps the engine's epoch every
/// tick; a store's deadline is a number of ticks. It stops when no
/// [`TickerUser`] is left.
fn spawn_ticker(engine: Engine, tick: Duration, users: Weak<()>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while users.strong_count() > 0 {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}
