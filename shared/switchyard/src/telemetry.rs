//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;

/// Installs the global subscriber, logging `info` and up unless `RUST_LOG` says otherwise.
/// Calling it twice keeps the first one (tests may call it often).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with another default filter (a command-line tool logs only warnings).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only for a person at a terminal: a log file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The end of a binary's `main`: `Ok` exits 0; an error is printed on stderr as one line,
/// `error: <what failed>: <cause>: <cause>...`, and exits 1. No backtrace, even with
/// `RUST_BACKTRACE` set: a returned error is a user's or an environment's problem, and
/// backtraces are for bugs (panics still print theirs).
pub fn exit_code<E>(result: Result<(), E>) -> ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, separated by `: `.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A new W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// A `traceparent` in the same trace as `parent` with a new span id; a new trace when `parent` is
/// absent or malformed.
pub fn child_traceparent(parent: Option<&str>) -> String {
    match parent.map(|p| p.split('-').collect::<Vec<_>>()) {
        Some(parts) if parts.len() == 4 && parts[1].len() == 32 => {
            let span = &Uuid::new_v4().simple().to_string()[..16];
            format!("00-{}-{span}-01", parts[1])
        }
        _ => new_traceparent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to start")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_chain_is_one_line() {
        let err = Outer(std::io::Error::other("port taken"));
        assert_eq!(error_chain(&err), "failed to start: port taken");
    }
}
