//! `hostile-panic`: panics on every event. On wasm a panic aborts: the instance traps.

fn boom(event: weir_sdk::Event) -> weir_sdk::Result {
    let subject = event.subject();
    panic!("hostile-panic: boom on {subject}");
}

weir_sdk::handler!(boom);
