//! Prometheus metrics: one recorder per process behind the `metrics` facade, gauges gathered at
//! scrape time, and the `GET /metrics` route (served on `--metrics-addr`, or mounted by a
//! service on its own HTTP port).
//!
//! The platform records what every service has in common; the names follow Prometheus
//! conventions (base units, `_seconds`, `_total`) and are listed in [`METRICS`] (and in the
//! README). Gauges that cost a request to read (consumer info, outbox backlog, DLQ depth) are
//! read when `/metrics` is scraped, not on a timer: nobody scraping costs nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::shutdown::Shutdown;

/// Bounds of the latency histograms, in seconds: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bounds of the batch-size histogram.
pub const BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// A metric the platform records: name, type and help line.
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    /// The exposed name (histograms add `_bucket`, `_sum`, `_count`).
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Labels besides the scrape target's.
    pub labels: &'static str,
    /// What it measures.
    pub help: &'static str,
}

/// HTTP request latency (a service's HTTP API).
pub const HTTP_DURATION: &str = "switchyard_http_request_duration_seconds";
/// Micro endpoint handling time.
pub const MICRO_DURATION: &str = "switchyard_micro_request_duration_seconds";
/// Outgoing request latency.
pub const CLIENT_DURATION: &str = "switchyard_client_request_duration_seconds";
/// Micro requests dropped because the caller's deadline passed.
pub const MICRO_DEADLINE_DROPPED: &str = "switchyard_micro_deadline_dropped_total";
/// Retries of outgoing requests, and retries refused.
pub const CLIENT_RETRIES: &str = "switchyard_client_retries_total";
/// Retries a client's budget holds now.
pub const CLIENT_RETRY_BUDGET: &str = "switchyard_client_retry_budget_tokens";
/// HTTP requests refused by a rate limit.
pub const HTTP_RATE_LIMITED: &str = "switchyard_http_rate_limited_total";
/// Transitions of other instances applied to a shared breaker.
pub const BREAKER_PEER_UPDATES: &str = "switchyard_breaker_peer_updates_total";
/// Breaker state gauge.
pub const BREAKER_STATE: &str = "switchyard_breaker_state";
/// Breaker calls by outcome.
pub const BREAKER_CALLS: &str = "switchyard_breaker_calls_total";
/// Messages a consumer received.
pub const CONSUMER_DELIVERIES: &str = "switchyard_consumer_deliveries_total";
/// Redeliveries among them.
pub const CONSUMER_REDELIVERIES: &str = "switchyard_consumer_redeliveries_total";
/// Messages acked.
pub const CONSUMER_ACKS: &str = "switchyard_consumer_acks_total";
/// Messages naked for a retry.
pub const CONSUMER_NAKS: &str = "switchyard_consumer_naks_total";
/// Messages dead-lettered.
pub const CONSUMER_DEAD_LETTERS: &str = "switchyard_consumer_dead_letters_total";
/// Handling time of a batch.
pub const CONSUMER_HANDLE: &str = "switchyard_consumer_handle_duration_seconds";
/// Deliveries per batch.
pub const CONSUMER_BATCH: &str = "switchyard_consumer_batch_size";
/// Writes per group commit of synchronous writes.
pub const GROUP_COMMIT_BATCH: &str = "switchyard_group_commit_batch_size";
/// Pending messages of a durable.
pub const CONSUMER_PENDING: &str = "switchyard_consumer_pending_messages";
/// Delivered but unacknowledged messages of a durable.
pub const CONSUMER_ACK_PENDING: &str = "switchyard_consumer_ack_pending_messages";
/// Events the outbox relay published.
pub const OUTBOX_PUBLISHED: &str = "switchyard_outbox_published_total";
/// Unpublished outbox rows.
pub const OUTBOX_BACKLOG: &str = "switchyard_outbox_backlog_rows";
/// Age of the oldest unpublished row.
pub const OUTBOX_OLDEST_AGE: &str = "switchyard_outbox_oldest_age_seconds";
/// Dead letters waiting in `DLQ` per consumer.
pub const DLQ_MESSAGES: &str = "switchyard_dlq_messages";

/// Every metric the platform records.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc {
        name: HTTP_DURATION,
        kind: "histogram",
        labels: "method, route, status",
        help: "HTTP requests by route and status, and how long they took.",
    },
    MetricDoc {
        name: MICRO_DURATION,
        kind: "histogram",
        labels: "endpoint, status",
        help: "Micro requests handled by subject and status (ok or the error code), and how long they took.",
    },
    MetricDoc {
        name: CLIENT_DURATION,
        kind: "histogram",
        labels: "subject, outcome",
        help: "Requests sent by subject and outcome (ok, error_<code>, timeout, no_responders, failed).",
    },
    MetricDoc {
        name: HTTP_RATE_LIMITED,
        kind: "counter",
        labels: "limit",
        help: "HTTP requests answered 429 by a per-client rate limit (limit user or peer).",
    },
    MetricDoc {
        name: MICRO_DEADLINE_DROPPED,
        kind: "counter",
        labels: "endpoint, stage",
        help: "Micro requests answered 504 because the caller's deadline passed: still queued, or cancelled while running.",
    },
    MetricDoc {
        name: CLIENT_RETRIES,
        kind: "counter",
        labels: "subject, outcome",
        help: "Retries of idempotent requests: retried, or refused because the retry budget was spent (budget_exhausted) or the deadline was near (deadline).",
    },
    MetricDoc {
        name: CLIENT_RETRY_BUDGET,
        kind: "gauge",
        labels: "client",
        help: "Retries a client's retry budget allows right now.",
    },
    MetricDoc {
        name: BREAKER_STATE,
        kind: "gauge",
        labels: "breaker",
        help: "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    },
    MetricDoc {
        name: BREAKER_CALLS,
        kind: "counter",
        labels: "breaker, outcome",
        help: "Calls through a circuit breaker by outcome (success, failure, timeout, reject, fallback).",
    },
    MetricDoc {
        name: BREAKER_PEER_UPDATES,
        kind: "counter",
        labels: "breaker, state",
        help: "Shared breakers (--breaker-shared): another instance's transition seen here (open, half_open, closed).",
    },
    MetricDoc {
        name: CONSUMER_DELIVERIES,
        kind: "counter",
        labels: "consumer",
        help: "Messages a durable consumer received (redeliveries included).",
    },
    MetricDoc {
        name: CONSUMER_REDELIVERIES,
        kind: "counter",
        labels: "consumer",
        help: "Messages received again after an earlier delivery was not acked.",
    },
    MetricDoc {
        name: CONSUMER_ACKS,
        kind: "counter",
        labels: "consumer",
        help: "Messages applied and acked.",
    },
    MetricDoc {
        name: CONSUMER_NAKS,
        kind: "counter",
        labels: "consumer",
        help: "Messages given back for a retry (a transient failure, or a stop before they started).",
    },
    MetricDoc {
        name: CONSUMER_DEAD_LETTERS,
        kind: "counter",
        labels: "consumer, reason",
        help: "Messages parked in DLQ (reason poison or max_deliver).",
    },
    MetricDoc {
        name: CONSUMER_HANDLE,
        kind: "histogram",
        labels: "consumer",
        help: "Time to handle one batch of deliveries, from preparation to the last ack.",
    },
    MetricDoc {
        name: CONSUMER_BATCH,
        kind: "histogram",
        labels: "consumer",
        help: "Deliveries per batch (group commit).",
    },
    MetricDoc {
        name: GROUP_COMMIT_BATCH,
        kind: "histogram",
        labels: "writer",
        help: "Synchronous writes per transaction (group commit of concurrent requests' writes).",
    },
    MetricDoc {
        name: CONSUMER_PENDING,
        kind: "gauge",
        labels: "consumer",
        help: "Messages in the stream the durable has not received yet (read at scrape).",
    },
    MetricDoc {
        name: CONSUMER_ACK_PENDING,
        kind: "gauge",
        labels: "consumer",
        help: "Messages the durable received and has not acked yet (read at scrape).",
    },
    MetricDoc {
        name: OUTBOX_PUBLISHED,
        kind: "counter",
        labels: "",
        help: "Events the outbox relay published (acked by JetStream).",
    },
    MetricDoc {
        name: OUTBOX_BACKLOG,
        kind: "gauge",
        labels: "",
        help: "Outbox rows not yet published (read at scrape).",
    },
    MetricDoc {
        name: OUTBOX_OLDEST_AGE,
        kind: "gauge",
        labels: "",
        help: "Age of the oldest unpublished outbox row; 0 when none (read at scrape).",
    },
    MetricDoc {
        name: DLQ_MESSAGES,
        kind: "gauge",
        labels: "consumer",
        help: "Dead letters of the consumer waiting in DLQ (read at scrape).",
    },
];

/// The process's recorder, installed on first use; `None` when another recorder was installed
/// first (then nothing is rendered).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CONSUMER_BATCH.into()), BATCH_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GROUP_COMMIT_BATCH.into()), BATCH_BUCKETS)
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            for doc in METRICS {
                let help = doc.help;
                match doc.kind {
                    "counter" => metrics::describe_counter!(doc.name, help),
                    "gauge" => metrics::describe_gauge!(doc.name, help),
                    _ if doc.name.ends_with("_seconds") => {
                        metrics::describe_histogram!(doc.name, metrics::Unit::Seconds, help)
                    }
                    _ => metrics::describe_histogram!(doc.name, help),
                }
            }
            // Histogram samples are folded into their buckets by upkeep: without a scrape they
            // must not pile up.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        })
        .as_ref()
}

type Collect = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What `/metrics` renders: the recorder's metrics, after running the gauges' collectors.
#[derive(Clone, Default)]
pub struct Scrape {
    collectors: Arc<Mutex<Vec<Collect>>>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").finish_non_exhaustive()
    }
}

/// How long a collector may take before a scrape goes on without it.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Scrape {
    /// A scrape with no collectors yet (installs the recorder).
    pub fn new() -> Self {
        let _ = recorder();
        Scrape::default()
    }

    /// Runs `collect` before every render, to set gauges that cost a request to read.
    pub fn on_scrape<F, Fut>(&self, collect: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let collect: Collect = Arc::new(move || Box::pin(collect()));
        self.collectors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(collect);
    }

    /// The Prometheus text exposition, after the collectors ran (each within 2 s).
    pub async fn render(&self) -> String {
        let collectors: Vec<Collect> =
            self.collectors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        futures_util::future::join_all(collectors.iter().map(|collect| async move {
            if tokio::time::timeout(COLLECT_TIMEOUT, collect()).await.is_err() {
                tracing::debug!("a metrics collector timed out");
            }
        }))
        .await;
        recorder().map(|handle| handle.render()).unwrap_or_default()
    }

    /// `GET /metrics`, to mount on a service's own router.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new().route("/metrics", get(render)).with_state(self.clone())
    }
}

async fn render(State(scrape): State<Scrape>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], scrape.render().await)
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("failed to listen for /metrics on {addr}")]
pub struct ServeError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

/// `/metrics` served on its own address until stopped.
#[derive(Debug, Clone)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Shutdown,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` from `scrape`.
    pub async fn start(addr: SocketAddr, scrape: Scrape) -> Result<Self, ServeError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError { addr, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError { addr, source })?;
        let stop = Shutdown::new();
        let app = scrape.router::<()>();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { signal.wait().await });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "metrics listener failed");
            }
        });
        tracing::info!(%addr, "serving /metrics");
        Ok(MetricsServer { addr, stop, task: Arc::new(Mutex::new(Some(task))) })
    }

    /// The address it listens on (the port chosen when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening.
    pub async fn stop(self) {
        self.stop.trigger();
        let task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
