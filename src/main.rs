use std::process::ExitCode;

use clap::Parser;
use praisma_worker::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(cli::run(cli)),
        Err(error) => {
            eprintln!("praisma-worker: the async runtime could not start: {error}");
            ExitCode::FAILURE
        }
    }
}
