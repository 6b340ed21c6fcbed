//! Logging set-up: text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber, logging `info` and up unless `RUST_LOG` says otherwise.
/// Calling it twice keeps the first one (tests may call it often).
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like [`init`], with another default filter (a command-line tool logs only warnings).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
