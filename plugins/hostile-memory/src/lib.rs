//! `hostile-memory`: allocates 1 MiB chunks forever and keeps them. The host's
//! memory limit must end it (a failed allocation aborts, which traps).

use core::hint::black_box;

const CHUNK: usize = 1 << 20;

fn hoard(_event: weir_sdk::Event) -> weir_sdk::Result {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch the chunk (non-zero fill) and keep it, opaque to the optimizer.
        let chunk = black_box(vec![0xA5_u8; CHUNK]);
        kept.push(chunk);
        black_box(&mut kept);
    }
}

weir_sdk::handler!(hoard);
