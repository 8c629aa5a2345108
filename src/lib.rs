//! codex-shield: a synchronous proxy that buffers, checks and retries OpenAI-compatible streams.
//!
//! `run` is the whole program behind `main`: arguments, `.env`, configuration, then the server.
//! See ARCHITECTURE.md for the map of modules and the rules they keep.

#![forbid(unsafe_code)]

pub mod accept;
pub mod api;
pub mod assemble;
pub mod body;
pub mod brake;
pub mod check;
pub mod chunk;
pub mod cli;
pub mod client;
pub mod codex;
pub mod config;
pub mod date;
pub mod descriptors;
pub mod error;
pub mod failure;
pub mod fold;
pub mod hash;
pub mod healthcheck;
pub mod inbound;
pub mod keys;
pub mod local;
pub mod log;
pub mod memory;
pub mod metrics;
pub mod object;
pub mod pool;
pub mod reasoning;
pub mod reply;
pub mod retry;
pub mod route;
pub mod scrub;
pub mod server;
pub mod session;
pub mod shield;
pub mod sse;
pub mod sync;
pub mod traceparent;
pub mod translate;
pub mod upstream;
pub mod usage;
pub mod usage_chunk;

use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cli::Args;
use config::Config;
use error::Error;

/// Run the program for these arguments; an `Err` ends it with one line on stderr.
pub fn run(argv: impl IntoIterator<Item = OsString>) -> Result<(), Error> {
    let args = Args::parse(argv)?;
    if args.help {
        log::stdout(&cli::help());
        return Ok(());
    }
    if args.version {
        log::stdout(&format!("codex-shield {}\n", env!("CARGO_PKG_VERSION")));
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
    let mut config = Config::from_env()?;
    config.fit(descriptors::raise());
    let keys = keys::Store::open(config.keys_file.as_deref())?;
    if args.check {
        log::stdout(&config.describe());
        return Ok(());
    }
    log::set_level(config.log_level);
    log::set_format(config.log_format);
    log::set_scrubber(scrub::Scrubber::new(config.keys()));
    memory::start(config.limits.memory_budget);
    server::serve(Arc::new(config), Arc::new(keys), count_signals()?)
}

/// Count SIGINT, SIGTERM and SIGHUP: the first starts the graceful shutdown, the second ends
/// its wait.
fn count_signals() -> Result<Arc<AtomicUsize>, Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let count = Arc::new(AtomicUsize::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::Setup(format!("signal handler: {e}")))?;
    let counted = Arc::clone(&count);
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let name = match signal {
                SIGHUP => "SIGHUP",
                SIGINT => "SIGINT",
                _ => "SIGTERM",
            };
            crate::info!(
                "{name} received ({n}): {}",
                if n == 1 { "shutting down" } else { "ending the wait" }
            );
        }
    });
    Ok(count)
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
