//! `hostile-output`: returns one 4 MiB message. The host's output size cap must refuse it.

const SIZE: usize = 4 << 20;

fn flood(_event: weir_sdk::Event) -> weir_sdk::Result {
    Ok(vec![weir_sdk::Message::new(
        "hostile.output.out",
        vec![b'x'; SIZE],
    )])
}

weir_sdk::handler!(flood);
