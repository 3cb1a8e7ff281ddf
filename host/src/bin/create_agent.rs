//! `create-agent`: create or update an agent and wire it to chats; `--list`, `--remove`.
//! A thin CLI over [`host::cli::provision::run`], kept beside `clawbox create-agent` (the same
//! flags, one `Args`) for clawside users; exit status 2 for usage errors, 1 for the rest.

use std::process::ExitCode;

use clap::Parser;
use host::cli::provision::{self, Args};
use host::config::Config;

fn main() -> ExitCode {
    // clap exits with status 2 on a malformed flag, naming it.
    let args = Args::parse();
    // The config home and its `.env`, as for `clawbox` (`clawbox create-agent` is the same).
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("create-agent: {e}");
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
