//! codex-shield: a synchronous proxy that buffers, checks and retries OpenAI-compatible streams.
//!
//! `run` is the whole program behind `main`: arguments, `.env`, configuration, then the server.
//! See ARCHITECTURE.md for the map of modules and the rules they keep.

#![forbid(unsafe_code)]

pub mod assemble;
pub mod body;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod log;
pub mod reply;
pub mod retry;
pub mod server;
pub mod shield;
pub mod sse;
pub mod target;
pub mod upstream;

use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use cli::Args;
use config::Config;
use error::Error;

/// Run the program for these arguments; an `Err` ends it with one line on stderr.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> Result<(), Error> {
    let args = Args::parse(argv)?;
    if args.help {
        print!("{}", cli::help());
        return Ok(());
    }
    if args.version {
        println!("codex-shield {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if let Some(url) = &args.healthcheck {
        return healthcheck::check(url).map_err(|e| Error::Setup(format!("health check failed: {e}")));
    }
    if let Some(pause) = args.sleep {
        std::thread::sleep(pause);
        return Ok(());
    }
    load_env_file(&args)?;
    let config = Config::from_env()?;
    if args.check {
        print!("{}", config.describe());
        return Ok(());
    }
    log::set_level(config.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| Error::Setup(format!("signal handler: {e}")))?;
    }
    server::serve(Arc::new(config), stop)
}

/// Load `--env-file PATH` (which must exist) or `./.env` (if present). Variables already in
/// the environment win.
fn load_env_file(args: &Args) -> Result<(), Error> {
    let result = match &args.env_file {
        Some(path) => dotenvy::from_path(path).map_err(|e| (path.display().to_string(), e)),
        None => match dotenvy::dotenv() {
            Err(e) if e.not_found() => Ok(std::path::PathBuf::new()),
            other => other.map_err(|e| (".env".to_string(), e)),
        }
        .map(|_| ()),
    };
    result.map_err(|(file, e)| Error::Usage(format!("cannot read {file}: {e}")))
}
