//! The `claimledger` binary: see `claimledger --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    claimledger::cli::main()
}
