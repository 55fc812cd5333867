//! `trivial`: the benchmark handler. `bench.trivial` → `bench.out`, same payload.

fn forward(event: weir_sdk::Event) -> weir_sdk::Result {
    Ok(vec![weir_sdk::Message::new(
        "bench.out",
        event.into_payload(),
    )])
}

weir_sdk::handler!(forward);
