//! The `dffmpeg` command: parse the command line, run the subcommand, exit with its status.

use std::process::ExitCode;

use clap::Parser;

use dffmpeg::cli::{Cli, Command};

fn main() -> ExitCode {
    // Started by ssh as its askpass program during `setup --ask-pass`.
    if std::env::var_os(dffmpeg::setup::password::ASKPASS_ENV).is_some() {
        return dffmpeg::setup::password::askpass_main();
    }
    let cli = Cli::parse();
    // Generated from the CLI definition: no runtime needed.
    let generated = match &cli.command {
        Command::Completions(args) => Some(dffmpeg::cli::completions(args)),
        Command::Manpages(args) => Some(dffmpeg::cli::manpages(args)),
        _ => None,
    };
    if let Some(result) = generated {
        return exit(result);
    }
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
            Command::Facts(args) => dffmpeg::facts::run(args.into()).await,
            Command::Status(args) => dffmpeg::status::run(args),
            Command::Completions(_) | Command::Manpages(_) => Ok(()),
        }
    });
    // A blocking read still waiting (a password prompt when a signal came)
    // must not keep dffmpeg from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    exit(result)
}

fn exit(result: dffmpeg::exit::Outcome) -> ExitCode {
    let code = match result {
        Ok(()) => 0,
        Err(failure) => {
            failure.print();
            failure.code()
        }
    };
    dffmpeg::log::line(&format!("exit status {code}"));
    ExitCode::from(code)
}
