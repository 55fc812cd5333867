//! The `weir` binary: set up the process, parse, run, map errors to exit codes.

fn main() -> std::process::ExitCode {
    fixed_mmap_threshold();
    weir_host::cli::main()
}

/// Allocations of 4 MiB and more get their own mapping, given back to the
/// kernel when freed. glibc's default threshold starts at 128 KiB and rises
/// to the size of each large block freed (up to 32 MiB), and the heap's trim
/// threshold with it: after start-up has read and hashed plugin components
/// (a Python one is ~19 MB) the next ones were allocated from an arena and,
/// freed, stayed resident — 35 MB of an idle host's 67 MB with 10 plugins
/// (footprint bench, 2026-12-02). Nothing on the event path allocates this
/// much. Fixing one threshold stops glibc adjusting either, so the trim
/// threshold is fixed too, at 8 MiB: an arena keeps up to that much free at
/// its top rather than giving pages back and faulting them in again.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 4 * 1024 * 1024;
        const TRIM_THRESHOLD: libc::c_int = 8 * 1024 * 1024;
        // SAFETY: mallopt only changes allocator parameters; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
