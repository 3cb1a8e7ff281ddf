//! `create-agent`: create or update an agent and wire it to chats; `--list`, `--remove`.
//! A thin CLI over [`host::cli::provision::run`]; exit status 2 for usage errors, 1 for the rest.

use std::process::ExitCode;

use clap::Parser;
use host::cli::provision::{self, Args};
use host::config::Config;

fn main() -> ExitCode {
    // clap exits with status 2 on a malformed flag, naming it.
    let args = Args::parse();
    // `.env` fills in what the environment does not set, as for `clawbox`.
    if let Err(e) = dotenvy::dotenv()
        && !e.not_found()
    {
        eprintln!("create-agent: cannot read .env: {e}");
        return ExitCode::from(2);
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("create-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("create-agent: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(provision::run(&config, args)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("create-agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
