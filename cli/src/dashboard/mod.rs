//! `switchyard dashboard` (and `switchyard up`): the running platform on one web page.
//!
//! An axum server in the CLI serves one page whose HTML, CSS and JavaScript are compiled into
//! the binary (no build step, no CDN), and a JSON API behind it:
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /api/status` | the latest snapshot (JSON) |
//! | `GET /api/stream` | server-sent events: a `status` event with each snapshot (about once a second) |
//! | `GET /api/dlq` | the dead letters (newest last, up to 200) |
//! | `GET /api/dlq/{seq}` | one dead letter: headers, reason, error, payload |
//! | `POST /api/dlq/{seq}/replay` | replays it to its consumer and says whether it was applied (actions only) |
//! | `POST /api/dlq/purge` | `{"confirm":"purge"}`: deletes every dead letter (actions only) |
//! | `GET /api/orders/{id}` | the order (`orders.get`) and its lifecycle (`audit.history`) |
//!
//! One collector (the one behind `switchyard status`) gathers micro PING/INFO/STATS, stream and
//! consumer info and the breaker, and turns successive reports into rates and short histories.
//! When NATS goes away the snapshot says so and the collector reconnects.
//!
//! The actions (replay, purge) are off unless `--allow-actions`, and even then answered only to
//! loopback clients with the header `X-Switchyard-Action: 1` (which a page of another origin
//! cannot send without a CORS preflight, which this server never grants).

mod collect;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::connect::StackArgs;
pub use collect::Snapshot;

/// The page: HTML, CSS and JavaScript in one file, compiled in.
const PAGE: &str = include_str!("page.html");

/// Flags of `switchyard dashboard`.
#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Address to serve the page and its API on. Loopback by default: the page shows the whole
    /// stack to whoever reaches it.
    #[arg(long, env = "DASHBOARD_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,

    /// Allow the DLQ actions (replay, purge) from the page and the API; answered to loopback
    /// clients only.
    #[arg(long, env = "DASHBOARD_ALLOW_ACTIONS")]
    pub allow_actions: bool,

    /// How often the data is gathered and pushed to the page.
    #[arg(long, env = "DASHBOARD_INTERVAL", value_parser = switchyard::config::parse_duration, default_value = "1s")]
    pub interval: Duration,
}

/// A running dashboard.
pub struct Dashboard {
    addr: SocketAddr,
    stop: switchyard::Shutdown,
    server: tokio::task::JoinHandle<()>,
    collector: tokio::task::JoinHandle<()>,
}

struct Shared {
    stack: StackArgs,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    client: watch::Receiver<Option<async_nats::Client>>,
    allow_actions: bool,
}

type AppState = Arc<Shared>;

impl Dashboard {
    /// Binds `addr` and starts gathering every `interval`.
    pub async fn start(
        stack: StackArgs,
        addr: SocketAddr,
        allow_actions: bool,
        interval: Duration,
    ) -> anyhow::Result<Dashboard> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen for the dashboard on {addr}"))?;
        let addr = listener.local_addr()?;
        let stop = switchyard::Shutdown::new();
        let (snapshot_tx, snapshots) = watch::channel(Arc::new(Snapshot::starting(allow_actions)));
        let (client_tx, client) = watch::channel(None);
        let collector = tokio::spawn(collect::run(
            stack.clone(),
            interval,
            allow_actions,
            snapshot_tx,
            client_tx,
            stop.clone(),
        ));
        let shared = Arc::new(Shared { stack, snapshots, client, allow_actions });
        let app = router(shared);
        let signal = stop.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { signal.wait().await });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "dashboard server failed");
            }
        });
        Ok(Dashboard { addr, stop, server, collector })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open event streams end) and gathering.
    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.collector.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

fn router(shared: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/api/status", get(status))
        .route("/api/stream", get(stream))
        .route("/api/dlq", get(dlq_list))
        .route("/api/dlq/purge", post(dlq_purge))
        .route("/api/dlq/{seq}", get(dlq_show))
        .route("/api/dlq/{seq}/replay", post(dlq_replay))
        .route("/api/orders/{id}", get(order))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(shared)
}

/// A JSON error answer: `{"error": code, "message": ...}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.code, "message": self.message }))).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> ApiError {
    ApiError { status, code, message: message.to_string() }
}

type ApiResult = Result<Response, ApiError>;

async fn status(State(shared): State<AppState>) -> Response {
    let snapshot = shared.snapshots.borrow().clone();
    axum::Json(snapshot.as_ref().clone()).into_response()
}

async fn stream(State(shared): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut receiver = shared.snapshots.clone();
    let first = receiver.borrow_and_update().clone();
    // The current snapshot at once, then each new one.
    let events =
        futures_util::stream::unfold((Some(first), receiver), |(pending, mut receiver)| async move {
            let snapshot = match pending {
                Some(snapshot) => snapshot,
                None => {
                    receiver.changed().await.ok()?;
                    receiver.borrow_and_update().clone()
                }
            };
            let data = serde_json::to_string(snapshot.as_ref()).unwrap_or_else(|_| "{}".into());
            Some((Ok(Event::default().event("status").data(data)), (None, receiver)))
        });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The NATS client, or 503 `nats_unavailable`.
fn client(shared: &Shared) -> Result<async_nats::Client, ApiError> {
    let client = shared.client.borrow().clone();
    match client {
        Some(client) if client.connection_state() == async_nats::connection::State::Connected => Ok(client),
        _ => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "nats_unavailable",
            format!("NATS is not reachable at {}", shared.stack.origin()),
        )),
    }
}

fn parse_seq(seq: &str) -> Result<u64, ApiError> {
    seq.parse::<u64>().ok().filter(|seq| *seq > 0).ok_or_else(|| {
        error(StatusCode::BAD_REQUEST, "bad_request", "a dead letter's sequence is a positive number")
    })
}

fn dlq_error(err: switchyard::dlq::DlqError) -> ApiError {
    let text = switchyard::telemetry::error_chain(&err);
    if text.contains("not found") || text.contains("no message") {
        error(StatusCode::NOT_FOUND, "not_found", text)
    } else {
        error(StatusCode::BAD_GATEWAY, "dlq_failed", text)
    }
}

async fn dlq_list(State(shared): State<AppState>) -> ApiResult {
    let js = async_nats::jetstream::new(client(&shared)?);
    let letters = switchyard::dlq::list(&js, 200).await.map_err(dlq_error)?;
    Ok(axum::Json(letters).into_response())
}

async fn dlq_show(State(shared): State<AppState>, Path(seq): Path<String>) -> ApiResult {
    let seq = parse_seq(&seq)?;
    let js = async_nats::jetstream::new(client(&shared)?);
    let letter = switchyard::dlq::show(&js, seq).await.map_err(dlq_error)?;
    Ok(axum::Json(letter).into_response())
}

/// Whether an action may run: the flag, a loopback peer, and the action header.
fn may_act(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> Result<(), ApiError> {
    if !shared.allow_actions {
        return Err(error(
            StatusCode::FORBIDDEN,
            "actions_disabled",
            "DLQ actions are off: start the dashboard with --allow-actions",
        ));
    }
    if !peer.ip().is_loopback() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "DLQ actions are answered to loopback clients only",
        ));
    }
    if headers.get("x-switchyard-action").and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "an action needs the header X-Switchyard-Action: 1",
        ));
    }
    Ok(())
}

async fn dlq_replay(
    State(shared): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(seq): Path<String>,
) -> ApiResult {
    may_act(&shared, peer, &headers)?;
    let seq = parse_seq(&seq)?;
    let js = async_nats::jetstream::new(client(&shared)?);
    let replayed = switchyard::dlq::replay(&js, seq).await.map_err(dlq_error)?;
    let outcome =
        switchyard::dlq::outcome(&js, &replayed, Duration::from_secs(10)).await.map_err(dlq_error)?;
    let mut body =
        json!({ "seq": seq, "consumer": replayed.consumer, "origin_subject": replayed.origin_subject });
    match outcome {
        switchyard::dlq::Outcome::Applied => body["outcome"] = "applied".into(),
        switchyard::dlq::Outcome::FailedAgain(letter) => {
            body["outcome"] = "failed_again".into();
            body["letter"] = serde_json::to_value(letter).unwrap_or(Value::Null);
        }
        switchyard::dlq::Outcome::Pending => body["outcome"] = "pending".into(),
    }
    Ok(axum::Json(body).into_response())
}

async fn dlq_purge(
    State(shared): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    may_act(&shared, peer, &headers)?;
    let confirmed = serde_json::from_slice::<Value>(&body).ok().is_some_and(|v| v["confirm"] == "purge");
    if !confirmed {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "confirmation_required",
            r#"purging deletes every dead letter for good: send {"confirm":"purge"}"#,
        ));
    }
    let js = async_nats::jetstream::new(client(&shared)?);
    let purged = switchyard::dlq::purge(&js).await.map_err(dlq_error)?;
    Ok(axum::Json(json!({ "purged": purged })).into_response())
}

async fn order(State(shared): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = uuid::Uuid::parse_str(id.trim())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "bad_request", "an order id is a UUID"))?;
    let requests = switchyard::RequestClient::new(client(&shared)?, Duration::from_secs(2));
    let request = json!({ "order_id": id });
    let (order, history) = tokio::join!(
        requests.request::<_, Value>(contracts::names::ORDERS_GET, &request),
        requests.request::<_, Value>(contracts::names::AUDIT_HISTORY, &request),
    );
    let unknown_order = matches!(&order, Err(err) if err.service_code() == Some(404));
    let no_history = match &history {
        Ok(history) => history["events"].as_array().is_none_or(|events| events.is_empty()),
        Err(err) => err.service_code() == Some(404),
    };
    if unknown_order && no_history {
        return Err(error(StatusCode::NOT_FOUND, "not_found", format!("no order {id}")));
    }
    let answer = |result: Result<Value, switchyard::RequestError>| match result {
        Ok(value) => json!({ "ok": value }),
        Err(err) => json!({ "error": err.to_string(), "code": err.service_code() }),
    };
    let body = json!({ "order_id": id, "order": answer(order), "history": answer(history) });
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response())
}

/// Runs `dashboard` until Ctrl-C.
pub async fn run(args: &DashboardArgs) -> anyhow::Result<()> {
    let mut signals = crate::signals::Signals::listen()?;
    let dashboard =
        Dashboard::start(args.stack.clone(), args.addr, args.allow_actions, args.interval).await?;
    println!(
        "dashboard   http://{}/   (NATS {}; actions {})",
        dashboard.addr(),
        args.stack.origin(),
        if args.allow_actions { "on" } else { "off" }
    );
    let signal = signals.recv().await;
    println!("{signal} received; stopping");
    dashboard.stop().await;
    Ok(())
}
