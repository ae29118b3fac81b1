//! The `apex-harness` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = apex_harness::cli::Cli::parse();
    ExitCode::from(apex_harness::cli::execute(
        cli,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    ))
}
