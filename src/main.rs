//! The `dagml` binary: everything is in the library's `cli` module.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
