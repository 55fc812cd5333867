//! The `weir` binary: parse, run, map errors to exit codes.

fn main() -> std::process::ExitCode {
    weir_host::cli::main()
}
