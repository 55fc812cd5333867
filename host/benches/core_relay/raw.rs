//! The raw wasmtime relay: async-nats and the `plugins/relay` component called
//! straight through wasmtime, no weir code — what the sandbox alone costs.
//!
//! Its own `bindgen!` of the repository's `wit/` world and a minimal host for
//! the guest's imports: WASI p2 (wasmtime-wasi, nothing granted), `config`
//! answering `None`, `log` dropping the line, `publish` keeping the message.
//! The engine is weir's (`Runtime::new`: component model, epoch interruption,
//! the same pool sizes, copy-on-write memory init, stacks) plus the fastest
//! pool reset measured on this machine (/work/shared/NATS.md, "wasmtime 48
//! facts"): memories and tables kept resident and PAGEMAP_SCAN on.
//!
//! Shared by `core_relay` (the relay over NATS) and `dispatch` (one event
//! in-process, [`Raw::handle`]).

// Each benchmark uses some of this.
#![allow(dead_code)]

use async_nats::Client;
use futures::StreamExt as _;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    exports: { default: async },
});

pub use weir::plugin::types::{Event as WitEvent, Message as WitMessage};

/// A store's data: WASI and what the guest gave `host.publish`.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    published: Vec<WitMessage>,
}

impl State {
    fn new() -> Self {
        Self {
            wasi: WasiCtx::builder().allow_ip_name_lookup(false).build(),
            table: ResourceTable::new(),
            published: Vec::new(),
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

impl weir::plugin::types::Host for State {}

impl weir::plugin::host::Host for State {
    fn log(&mut self, _level: weir::plugin::host::Level, _text: String) {}

    fn publish(&mut self, msg: WitMessage) -> Result<(), String> {
        self.published.push(msg);
        Ok(())
    }

    fn config(&mut self, _key: String) -> Option<String> {
        None
    }
}

/// The relay component, compiled once, linked and ready to instantiate.
#[derive(Clone)]
pub struct Raw {
    engine: Engine,
    pre: HandlerPre<State>,
}

/// Mirrors `Runtime::new` with weir's defaults (1000 instances, 512 MiB).
fn engine() -> Engine {
    let instances = 1000;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_tables_per_module(8)
        .max_memories_per_module(2)
        .table_elements(50_000)
        .max_memory_size(512 * 1024 * 1024)
        .max_unused_warm_slots(100)
        .decommit_batch_size(64)
        // The best reset measured here (NATS.md): 49–77k fresh relays/s
        // against 19–21k with the defaults.
        .linear_memory_keep_resident(1024 * 1024)
        .table_keep_resident(1024 * 1024)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_init_cow(true)
        .max_wasm_stack(512 * 1024)
        .async_stack_size(2 * 1024 * 1024);
    Engine::new(&config).expect("engine")
}

impl Raw {
    pub fn load(wasm: &std::path::Path) -> Self {
        let engine = engine();
        let component = Component::from_file(&engine, wasm).expect("compile the relay component");
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link WASI");
        Handler::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
            .expect("link the host interface");
        let pre = HandlerPre::new(linker.instantiate_pre(&component).expect("instantiate_pre"))
            .expect("the handler world");
        Self { engine, pre }
    }

    fn store(&self) -> Store<State> {
        let mut store = Store::new(&self.engine, State::new());
        // No ticker runs: the deadline is never reached, but the guest's
        // code pays for the epoch checks as weir's does.
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    /// One event: through a fresh instance made and dropped, or through
    /// the warm one kept in `warm`. Returns its outputs (published, then
    /// returned).
    pub async fn handle(
        &self,
        warm: &mut Option<(Store<State>, Handler)>,
        fresh: bool,
        event: &WitEvent,
    ) -> Vec<WitMessage> {
        let (mut store, handler) = match warm.take() {
            Some(pair) => pair,
            None => {
                let mut store = self.store();
                let handler = self
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .expect("instantiate");
                (store, handler)
            }
        };
        let returned = handler
            .call_handle(&mut store, event)
            .await
            .expect("call handle");
        let mut outputs = std::mem::take(&mut store.data_mut().published);
        if let Ok(messages) = returned {
            outputs.extend(messages);
        }
        if !fresh {
            *warm = Some((store, handler));
        }
        outputs
    }

    /// Relay every message of `sub` until it ends: a fresh instance per
    /// event (`fresh`), or one instance for all of them.
    pub async fn relay(self, client: Client, mut sub: async_nats::Subscriber, fresh: bool) {
        let mut warm = None;
        let mut id = 0u64;
        while let Some(msg) = sub.next().await {
            id += 1;
            let event = WitEvent {
                id: id.to_string(),
                subject: msg.subject.to_string(),
                payload: msg.payload.to_vec(),
                headers: Vec::new(),
                reply_to: None,
                attempt: 1,
                principal: None,
            };
            let outputs = self.handle(&mut warm, fresh, &event).await;
            for out in outputs {
                let _ = client.publish(out.subject, out.payload.into()).await;
            }
        }
    }
}
