//! The `twinflow` command. All logic lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    // Before anything else: may re-execute with better OpenBLAS kernels for this CPU.
    twinflow_models::blas::select_kernels();
    twinflow_server::cli::main()
}
