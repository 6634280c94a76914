//! The `twinflow` command. All logic lives in the library; see `cli.rs`.

fn main() -> std::process::ExitCode {
    twinflow_server::cli::main()
}
