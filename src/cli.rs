//! Command-line arguments: a handful of flags, parsed by hand.
//!
//! Only the shape of the command line lives here; what the flags do is `lib.rs`'s business
//! and every setting of the proxy itself comes from the environment (`config.rs`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::VARIABLES;
use crate::error::Error;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `--env-file PATH`: load this file instead of `./.env` (it must exist).
    pub env_file: Option<PathBuf>,
    /// `--check`: print the effective configuration and exit.
    pub check: bool,
    /// `--healthcheck URL`: GET the URL, exit 0 on a 200 (for images without a shell or curl).
    pub healthcheck: Option<String>,
    /// `--sleep SECONDS`: sleep and exit 0 (a Kubernetes preStop pause without a shell).
    pub sleep: Option<Duration>,
    pub help: bool,
    pub version: bool,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args, Error> {
        let mut out = Args::default();
        let mut args = args.into_iter().skip(1);
        while let Some(arg) = args.next() {
            let arg = arg.to_string_lossy().into_owned();
            match arg.as_str() {
                "--check" => out.check = true,
                "-h" | "--help" => out.help = true,
                "-V" | "--version" => out.version = true,
                "--env-file" => {
                    let path = args
                        .next()
                        .ok_or_else(|| Error::Usage("--env-file needs a path (try --help)".into()))?;
                    out.env_file = Some(PathBuf::from(path));
                }
                "--healthcheck" => out.healthcheck = Some(value(args.next(), "--healthcheck needs a URL")?),
                "--sleep" => {
                    out.sleep = Some(seconds(&value(args.next(), "--sleep needs a number of seconds")?)?)
                }
                _ => match arg.strip_prefix("--env-file=") {
                    Some(path) => out.env_file = Some(PathBuf::from(path)),
                    None => return Err(Error::Usage(format!("unknown argument {arg:?} (try --help)"))),
                },
            }
        }
        Ok(out)
    }
}

fn value(arg: Option<OsString>, missing: &str) -> Result<String, Error> {
    let arg = arg.ok_or_else(|| Error::Usage(format!("{missing} (try --help)")))?;
    Ok(arg.to_string_lossy().into_owned())
}

fn seconds(text: &str) -> Result<Duration, Error> {
    let secs: f64 = text.parse().map_err(|_| Error::Usage(format!("--sleep: {text:?} is not a number")))?;
    Duration::try_from_secs_f64(secs).map_err(|_| Error::Usage(format!("--sleep: {text:?} is out of range")))
}

/// The `--help` text, with every variable and its default.
pub fn help() -> String {
    let mut text = format!(
        "codex-shield {}\n\
         A proxy that buffers, checks and retries OpenAI-compatible streams, so the client\n\
         (Codex CLI, the openai SDK) only ever sees complete answers.\n\n\
         USAGE: codex-shield [--env-file PATH] [--check]\n       \
                codex-shield --healthcheck URL | --sleep SECONDS\n\n\
         OPTIONS:\n  \
           --env-file PATH  read settings from PATH instead of ./.env (environment wins)\n  \
           --check          print the effective configuration (keys hidden) and exit\n  \
           --healthcheck URL  GET URL (http://host:port/path): exit 0 on 200, 1 otherwise\n  \
           --sleep SECONDS  sleep, then exit 0 (a preStop pause in an image without a shell)\n  \
           -h, --help       print this help\n  \
           -V, --version    print the version\n\n\
         ENVIRONMENT (default in brackets):\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, default, meaning) in VARIABLES {
        text.push_str(&format!("  {name:<30} {meaning} [{default}]\n"));
    }
    text.push_str(
        "\nSEVERAL UPSTREAMS: AZURE_ENDPOINT_2, AZURE_API_KEY_2, UPSTREAM_AUTH_2, FORCED_MODEL_2,\n\
         UPSTREAM_API_2, then _3 ... (up to 16, no gaps) name more upstreams; an unset one takes\n\
         upstream 1's value, the key only for the same host (AZURE_API_KEY_N=none: no key).\n\
         A 429, 5xx or refused connection rests that upstream and the next attempt goes to\n\
         another at once (ROUTING). SHUTDOWN_GRACE_SECONDS covers RETRY_DEADLINE_SECONDS; a\n\
         second signal ends the wait, and open requests then get a 503.\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        let argv = std::iter::once("codex-shield").chain(args.iter().copied()).map(OsString::from);
        Args::parse(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]).unwrap(), Args::default());
        assert!(parse(&["--check"]).unwrap().check);
        assert!(parse(&["-h"]).unwrap().help);
        assert!(parse(&["--version"]).unwrap().version);
        let with_file = parse(&["--env-file", "/x/.env"]).unwrap();
        assert_eq!(with_file.env_file, Some(PathBuf::from("/x/.env")));
        assert_eq!(parse(&["--env-file=/y"]).unwrap().env_file, Some(PathBuf::from("/y")));
        assert!(parse(&["--env-file"]).unwrap_err().contains("needs a path"));
        assert!(parse(&["--port", "9"]).unwrap_err().contains("unknown argument"));
        let probe = parse(&["--healthcheck", "http://127.0.0.1:8888/healthz"]).unwrap();
        assert_eq!(probe.healthcheck.as_deref(), Some("http://127.0.0.1:8888/healthz"));
        assert!(parse(&["--healthcheck"]).unwrap_err().contains("needs a URL"));
        assert_eq!(parse(&["--sleep", "2.5"]).unwrap().sleep, Some(Duration::from_millis(2500)));
        assert!(parse(&["--sleep"]).unwrap_err().contains("needs a number"));
        assert!(parse(&["--sleep", "soon"]).unwrap_err().contains("not a number"));
        assert!(parse(&["--sleep", "-1"]).unwrap_err().contains("out of range"));
    }

    #[test]
    fn help_lists_every_variable() {
        let text = help();
        assert!(text.contains("AZURE_ENDPOINT_2"), "several upstreams are explained");
        for (name, ..) in VARIABLES {
            assert!(text.contains(name), "{name} missing from --help");
        }
    }
}
