use std::process::ExitCode;

use clap::Parser;

use dffmpeg::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dffmpeg: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Transcode(args) => dffmpeg::transcode::run(args).await,
            Command::Setup(args) => dffmpeg::setup::run(args).await,
            Command::Facts(args) => dffmpeg::facts::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print();
            ExitCode::from(failure.code())
        }
    }
}
