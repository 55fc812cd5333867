//! The `weir` binary: set up the process, parse, run, map errors to exit codes.

/// jemalloc, not glibc's malloc. On the event path (many small blocks
/// allocated on one tokio worker and freed on another) glibc's free and its
/// arena locks were 12% of weir's CPU; with jemalloc, weir's CPU per
/// JetStream event (reuse) went 30.4 -> 23.4 µs and core NATS reuse 0.22x
/// -> 0.31x a native relay (README, "Benchmarks"). It also gives freed large
/// blocks back: glibc kept 35 MB of the plugins' freed wasm buffers resident
/// after start-up (its mmap threshold grows to the size of each block
/// freed), an idle host with 10 plugins 67 MB against ~30 MB now (footprint
/// bench). The benches that run weir in-process (jetstream, core_relay) use
/// it too.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    weir_host::cli::main()
}
