//! `hostile-recursion`: recurses without bound, and not in tail position, until
//! the wasm call stack is exhausted and the instance traps.
//!
//! The frames keep their state in wasm locals (nothing address-taken), so they
//! grow the engine's native wasm stack, not the guest's in-memory shadow stack:
//! what stops it is the host's `max_wasm_stack` guard ("call stack exhausted").

use core::hint::black_box;

#[inline(never)]
fn dive(depth: u64, limit: u64, a: u64, b: u64, c: u64) -> u64 {
    // `limit` is opaque (black_box in the caller) and never reached: the
    // recursion is conditional, so neither rustc nor LLVM can drop it.
    if depth == limit {
        return a ^ b ^ c;
    }
    let below = dive(
        depth + 1,
        limit,
        a.wrapping_mul(3),
        b.rotate_left(7),
        c ^ depth,
    );
    // Work after the call, with the arguments live across it: not a tail call.
    below.wrapping_add(a).wrapping_mul(b | 1) ^ c
}

fn recurse(_event: weir_sdk::Event) -> weir_sdk::Result {
    let reached = black_box(dive(0, black_box(u64::MAX), 1, 2, 3));
    Err(weir_sdk::Failure::reject(format!(
        "hostile-recursion: came back with {reached}"
    )))
}

weir_sdk::handler!(recurse);
