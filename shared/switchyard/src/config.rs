//! The flags every Switchyard binary shares, as clap structs to `#[command(flatten)]`.
//!
//! The same flag means the same thing in every binary, and every flag has an environment fallback,
//! so a service is configured the same way from a shell, a compose file or a test.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// Flags shared by every service: NATS connection, database, data dir and logging.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS connection flags.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Database URL: `sqlite://path/file.db` or `postgres://user@host/db`; default a SQLite file
    /// named after the service under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for the service's local files (SQLite database, files it writes).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Log format: human-readable `text` or one JSON object per line (`json`). Filter with RUST_LOG.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name of this instance, part of the NATS client name; default a random id.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Stream flags.
    #[command(flatten)]
    pub streams: StreamArgs,

    /// Where to serve Prometheus `GET /metrics` (e.g. 127.0.0.1:9101); off when unset.
    /// A service with an HTTP API serves /metrics on its HTTP port as well.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// OTLP/HTTP endpoint to export traces to (e.g. http://127.0.0.1:4318; `/v1/traces` is
    /// appended); off when unset (no spans are recorded and no trace context is propagated).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The shape of the JetStream streams: what `switchyard provision` declares and a service
/// expects.
#[derive(Debug, Clone, Args)]
pub struct StreamShapeArgs {
    /// Replicas of every stream (events, DLQ, REPLAY): 1 on one machine, 3 on a cluster.
    #[arg(long, env = "STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// Window in which an event stream drops a repeated event id; covers the outbox relay's retries.
    #[arg(long, env = "DUPLICATE_WINDOW", value_parser = parse_duration, default_value = "15m")]
    pub duplicate_window: Duration,
}

/// How a service finds its JetStream streams at start-up.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// How the streams are shaped.
    #[command(flatten)]
    pub shape: StreamShapeArgs,

    /// Create (or update) the streams at start-up, where this NATS user may (development, a
    /// server without authorization). By default a service only verifies them: streams are an
    /// operator's to provision (`switchyard provision`; `switchyard up` runs it).
    #[arg(long, env = "DECLARE_STREAMS")]
    pub declare_streams: bool,

    /// How long a service keeps looking for its streams at start-up (provisioning not done yet,
    /// a fresh cluster still electing), retrying with backoff, before it gives up; 0 tries once.
    #[arg(long, env = "STARTUP_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub startup_timeout: Duration,
}

impl CommonArgs {
    /// The database URL to use: the flag, or `sqlite://<data-dir>/<service>.db`.
    pub fn database_url_for(&self, service: &str) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => {
                let path = self.data_dir.join(format!("{service}.db"));
                format!("sqlite://{}?mode=rwc", path.display())
            }
        }
    }

    /// The instance id: the flag, or 8 random hex digits.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
    }

    /// Installs logs and traces for `service` as these flags say ([`crate::telemetry::install`]).
    pub fn install_telemetry(
        &mut self,
        service: &str,
        version: &str,
    ) -> Result<crate::telemetry::Telemetry, crate::telemetry::TelemetryError> {
        let mut config = crate::telemetry::TelemetryConfig::new(self.log_format, service, version);
        config.otlp_endpoint = self.otlp_endpoint.clone().filter(|endpoint| !endpoint.trim().is_empty());
        // Chosen once here, so the spans and the NATS client name tell the same instance.
        let instance = self.instance_id();
        self.instance_id = Some(instance.clone());
        config.instance = Some(instance);
        crate::telemetry::install(&config)
    }
}

/// How to reach NATS.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// NATS user name (with --nats-password).
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,

    /// NATS password (with --nats-user).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, requires = "nats_user")]
    pub nats_password: Option<String>,

    /// NATS credentials file (JWT and nkey seed), instead of user and password.
    #[arg(long, env = "NATS_CREDS", conflicts_with = "nats_user")]
    pub nats_creds: Option<PathBuf>,

    /// Prefix of this connection's reply subjects (request replies, JetStream API answers, pulled
    /// messages); default `_INBOX_<user>` with --nats-user (nats.conf lets each user subscribe to
    /// its own prefix only, so no one reads another's replies), else `_INBOX`.
    #[arg(long, env = "NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// Connection flags for a server at `url` with no credentials (tests, tools).
    pub fn plain(url: impl Into<String>) -> Self {
        NatsArgs {
            nats_url: url.into(),
            nats_user: None,
            nats_password: None,
            nats_creds: None,
            nats_inbox_prefix: None,
        }
    }

    /// The reply-subject prefix to use: the flag, else `_INBOX_<user>` for a named user, else
    /// none (the client's default `_INBOX`).
    pub fn inbox_prefix(&self) -> Option<String> {
        self.nats_inbox_prefix.clone().or_else(|| self.nats_user.as_ref().map(|user| inbox_prefix_for(user)))
    }
}

/// `_INBOX_<user>`: the reply-subject prefix of `user`, the only one nats.conf lets it subscribe to.
pub fn inbox_prefix_for(user: &str) -> String {
    format!("_INBOX_{user}")
}

/// Knobs of a service's durable consumer.
#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Events this instance handles at once (each key's events stay in sequence).
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub consumer_concurrency: u16,

    /// Events one lane applies in one database transaction (group commit; 1 = one each).
    /// Default: the service's own (64 where the handler only writes; 1 where its transactions
    /// share the write path with synchronous requests).
    #[arg(long, env = "CONSUMER_MAX_BATCH", value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub consumer_max_batch: Option<u16>,

    /// Deliveries of a failing event before it is dead-lettered.
    #[arg(long, env = "MAX_DELIVER", default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=100))]
    pub max_deliver: i64,

    /// Time the server waits for an ack before redelivering an event.
    #[arg(long, env = "ACK_WAIT", value_parser = parse_duration, default_value = "30s")]
    pub ack_wait: Duration,

    /// Delays before retrying an event whose handler failed, comma-separated; the last repeats.
    #[arg(long, env = "RETRY_BACKOFF", value_delimiter = ',', value_parser = parse_duration, default_value = "500ms,2s,10s,30s")]
    pub retry_backoff: Vec<Duration>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Circuit breaker knobs, named after opossum's options.
#[derive(Debug, Clone, Args)]
pub struct BreakerArgs {
    /// Time a call may take before it counts as a timeout (opossum `timeout`).
    #[arg(long, env = "BREAKER_TIMEOUT", value_parser = parse_duration, default_value = "3s")]
    pub breaker_timeout: Duration,

    /// Error percentage in the rolling window that opens the breaker (opossum `errorThresholdPercentage`).
    #[arg(long, env = "BREAKER_ERROR_THRESHOLD", default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub breaker_error_threshold: u8,

    /// Calls needed in the rolling window before the breaker may open (opossum `volumeThreshold`).
    #[arg(long, env = "BREAKER_VOLUME_THRESHOLD", default_value_t = 5)]
    pub breaker_volume_threshold: u32,

    /// Time the breaker stays open before it lets one trial call through (opossum `resetTimeout`).
    #[arg(long, env = "BREAKER_RESET_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub breaker_reset_timeout: Duration,

    /// Length of the rolling statistics window (opossum `rollingCountTimeout`).
    #[arg(long, env = "BREAKER_ROLLING_WINDOW", value_parser = parse_duration, default_value = "10s")]
    pub breaker_rolling_window: Duration,

    /// Buckets the rolling window is split into (opossum `rollingCountBuckets`).
    #[arg(long, env = "BREAKER_ROLLING_BUCKETS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub breaker_rolling_buckets: u32,

    /// Share the breaker's state with the service's other instances through the NATS KV bucket
    /// BREAKERS: one that opens opens them all, and only one instance probes when it half-opens.
    #[arg(long, env = "BREAKER_SHARED")]
    pub breaker_shared: bool,
}

/// Retries of idempotent requests (see [`crate::retry`]); the breaker's timeout bounds all
/// attempts of a call together.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Attempts of a request to an idempotent endpoint, the first included, after no responders,
    /// a timed-out attempt or a 502/503 reply (never after a 4xx); 1 turns retries off.
    #[arg(long, env = "REQUEST_RETRY_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub request_retry_attempts: u32,

    /// Time one attempt may take before it is abandoned and retried.
    #[arg(long, env = "REQUEST_RETRY_TIMEOUT", value_parser = parse_duration, default_value = "1s")]
    pub request_retry_timeout: Duration,

    /// Upper bound of the first wait between attempts; it doubles each retry up to
    /// --request-retry-backoff-max, and each wait is drawn at random below it (full jitter).
    #[arg(long, env = "REQUEST_RETRY_BACKOFF", value_parser = parse_duration, default_value = "25ms")]
    pub request_retry_backoff: Duration,

    /// Largest upper bound of a wait between attempts.
    #[arg(long, env = "REQUEST_RETRY_BACKOFF_MAX", value_parser = parse_duration, default_value = "500ms")]
    pub request_retry_backoff_max: Duration,

    /// Retries allowed, as a percentage of calls (a token bucket: each call adds a share, each
    /// retry takes one), so a failing service never gets a retry storm.
    #[arg(long, env = "REQUEST_RETRY_BUDGET", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub request_retry_budget: u8,

    /// Retries allowed per second whatever the traffic (so a quiet caller can still retry).
    #[arg(long, env = "REQUEST_RETRY_BUDGET_MIN", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub request_retry_budget_min: u32,
}

/// Parses a duration such as `250ms`, `3s`, `15m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 3s or 15m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?}: use ms, s, m or h")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_named_after_the_service() {
        let args = CommonArgs {
            nats: NatsArgs::plain("nats://127.0.0.1:4222"),
            database_url: None,
            data_dir: PathBuf::from("/tmp/sy"),
            log_format: LogFormat::Text,
            instance_id: None,
            streams: StreamArgs {
                shape: StreamShapeArgs { stream_replicas: 1, duplicate_window: Duration::from_secs(60) },
                declare_streams: false,
                startup_timeout: Duration::ZERO,
            },
            metrics_addr: None,
            otlp_endpoint: None,
        };
        assert_eq!(args.database_url_for("billing"), "sqlite:///tmp/sy/billing.db?mode=rwc");
    }
}
