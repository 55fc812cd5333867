//! `hostile-loop`: never returns. The host's timeout (epoch interruption) must end it.

use core::hint::black_box;

fn spin(_event: weir_sdk::Event) -> weir_sdk::Result {
    let mut n: u64 = 0;
    loop {
        // black_box: the optimizer can neither see through nor remove the loop.
        n = black_box(n.wrapping_add(1));
    }
}

weir_sdk::handler!(spin);
