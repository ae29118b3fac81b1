//! The `apex-backend` binary: parse the config, serve, map the outcome to an exit code.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = apex_backend::Config::parse();
    apex_backend::init_tracing(config.log_format);
    let _ = std::io::stdout().flush();
    match apex_backend::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apex-backend: {e}");
            ExitCode::FAILURE
        }
    }
}
