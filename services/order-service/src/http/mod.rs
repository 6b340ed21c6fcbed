//! The order service's HTTP API.
//!
//! | route | answer |
//! |---|---|
//! | `POST /orders` | 201 order; 409 out of stock; 429 + Retry-After past a per-user or per-peer rate limit; 503 + Retry-After when inventory is unavailable or the instance is at capacity; 400/413/415/422 on bad input |
//! | `GET /orders/{id}` | 200 order; 404 |
//! | `POST /orders/{id}/cancel` | 200 order with status `cancelled`; 404 |
//! | `GET /orders/{id}/events` | `text/event-stream` of the order's events, past ones first, then live |
//! | `GET /health/live` | 200 while the process runs |
//! | `GET /health/ready` | 200 when NATS is connected and the database answers, else 503 |
//! | `GET /metrics` | Prometheus text (the platform's metrics and `switchyard_orders_total`) |

mod error;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use contracts::names;
use contracts::{CancelOrder, ContractError, CreateOrder, Order, Validate, decode};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

pub use error::{ApiError, JsonLine};

use crate::orders::{CancelError, OrderService, PlaceError, Placed, validate_idempotency_key};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Placing and reading orders.
    pub orders: OrderService,
    /// The NATS client, for readiness.
    pub nats: async_nats::Client,
    /// What `GET /metrics` renders.
    pub scrape: switchyard::observe::Scrape,
    /// JetStream, for the event stream route.
    pub js: async_nats::jetstream::Context,
    /// Per-client rate limits on `POST /orders`.
    pub fairness: Arc<Fairness>,
}

/// Per-client rate limits on `POST /orders` (each off when `None`).
#[derive(Debug, Default)]
pub struct Fairness {
    /// By the order's `user_id`.
    pub per_user: Option<switchyard::ratelimit::KeyedLimiter>,
    /// By the connection's peer address.
    pub per_peer: Option<switchyard::ratelimit::KeyedLimiter>,
}

impl Fairness {
    /// Takes a token from the peer's and the user's buckets; `Err` with the time to wait.
    fn admit(&self, peer: Option<std::net::IpAddr>, user_id: &str) -> Result<(), ApiError> {
        let refuse = |limit: &'static str, retry_after: Duration| {
            metrics::counter!(switchyard::observe::HTTP_RATE_LIMITED, "limit" => limit).increment(1);
            ApiError::RateLimited { retry_after }
        };
        if let (Some(limiter), Some(peer)) = (&self.per_peer, peer) {
            limiter.check(&peer.to_string()).map_err(|wait| refuse("peer", wait))?;
        }
        if let Some(limiter) = &self.per_user {
            limiter.check(user_id).map_err(|wait| refuse("user", wait))?;
        }
        Ok(())
    }
}

/// The address of the client at the other end of the connection (set by [`server::serve`]).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// HTTP limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Longest time a request may take before it is answered with 503.
    pub request_timeout: Duration,
    /// Order requests handled at once; more are answered 503 `overloaded` at once.
    pub max_in_flight: usize,
    /// Longest time a client may take to send a request body (408 past it).
    pub body_timeout: Duration,
}

/// The whole HTTP API.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    // Past the bound, requests are refused at once instead of queueing without limit (memory and
    // latency would grow with the queue). Event streams and health checks are not counted.
    let capacity = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    // The body is read first, with a deadline: a client that is slow to send holds no slot.
    let bounded = Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route_layer(middleware::from_fn_with_state(capacity, shed_load))
        .route_layer(middleware::from_fn_with_state((limits.body_timeout, limits.body_limit), buffer_body));
    Router::new()
        .merge(bounded)
        .route("/orders/{id}/events", get(order_events))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .merge(state.scrape.router())
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(middleware::from_fn_with_state(limits.request_timeout, request_timeout))
        .layer(middleware::from_fn_with_state(limits.body_limit, reject_declared_oversize))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
}

/// A JSON body decoded and validated by the contract types, with JSON errors:
/// 415 without a JSON content type, 413 over the size limit, 400 for malformed JSON,
/// 422 for a value that breaks a rule.
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.to_ascii_lowercase().ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        decode_json(&bytes).map(ValidJson)
    }
}

/// Decodes and validates a JSON body, mapping each failure to its status.
fn decode_json<T: serde::de::DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    match decode::<T>(bytes) {
        Ok(value) => Ok(value),
        Err(ContractError::TooLarge(_)) => Err(ApiError::PayloadTooLarge),
        Err(err @ ContractError::Json(_)) if is_shape_error(&err) => {
            Err(ApiError::Unprocessable { code: "validation_failed", message: err.to_string() })
        }
        Err(err @ ContractError::Json(_)) => Err(ApiError::BadRequest(err.to_string())),
        Err(err @ ContractError::Invalid(_)) => {
            Err(ApiError::Unprocessable { code: "validation_failed", message: err.to_string() })
        }
    }
}

/// Serde reports both syntax errors and wrong types as JSON errors; a body that is valid JSON of
/// the wrong shape (missing field, wrong type) is a 422, like axum's own `Json` extractor.
fn is_shape_error(err: &ContractError) -> bool {
    let text = err.to_string();
    ["missing field", "invalid type", "invalid value", "unknown variant", "invalid length", "UUID"]
        .iter()
        .any(|marker| text.contains(marker))
}

async fn create_order(
    State(state): State<AppState>,
    peer: Option<axum::Extension<PeerAddr>>,
    headers: HeaderMap,
    ValidJson(request): ValidJson<CreateOrder>,
) -> Result<Response, ApiError> {
    if let Err(refused) = state.fairness.admit(peer.map(|p| p.0.0.ip()), &request.user_id) {
        state.orders.tally().count("rate_limited");
        return Err(refused);
    }
    let key = match headers.get("idempotency-key") {
        Some(value) => {
            let key =
                value.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be ASCII".into()))?;
            validate_idempotency_key(key).map_err(ApiError::BadRequest)?;
            Some(key.to_string())
        }
        None => None,
    };
    let placed = state.orders.place(request, key.as_deref()).await.map_err(|err| match err {
        PlaceError::OutOfStock(ids) => ApiError::OutOfStock(ids),
        PlaceError::UnknownSku(ids) => ApiError::UnknownSku(ids),
        PlaceError::InventoryUnavailable { retry_after, reason } => {
            tracing::warn!(%reason, "inventory unavailable, answering 503");
            ApiError::InventoryUnavailable { retry_after }
        }
        PlaceError::Timeout => ApiError::Timeout,
        PlaceError::IdempotencyKeyReused => ApiError::Unprocessable {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request".into(),
        },
        PlaceError::Abandoned(message) => ApiError::Conflict(message),
        PlaceError::Internal(detail) => ApiError::Internal(detail),
    })?;
    let (order, replayed) = match placed {
        Placed::Created(order) => (order, false),
        Placed::Replayed(order) => (order, true),
    };
    let mut response = (StatusCode::CREATED, JsonLine(&order)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<JsonLine<Order>, ApiError> {
    let id = parse_order_id(&id)?;
    match state.orders.get(id).await {
        Ok(Some(order)) => Ok(JsonLine(order)),
        Ok(None) => Err(ApiError::NotFound),
        Err(err) => Err(ApiError::Internal(switchyard::telemetry::error_chain(&err))),
    }
}

fn parse_order_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::BadRequest("order id must be a UUID".into()))
}

async fn cancel_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<JsonLine<Order>, ApiError> {
    let id = parse_order_id(&id)?;
    // The body is optional: none, or `{"reason": "..."}`.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        decode_json::<CancelOrder>(&body)?.reason
    };
    match state.orders.cancel(id, reason).await {
        Ok(order) => Ok(JsonLine(order)),
        Err(CancelError::NotFound) => Err(ApiError::NotFound),
        Err(CancelError::Store(err)) => Err(ApiError::Internal(switchyard::telemetry::error_chain(&err))),
    }
}

/// Server-sent events of one order: every event on `events.orders.*.<id>` from the start of the
/// stream (so past ones come first), then live ones as they are published. Each SSE event is named
/// after the event kind, its id is the stream sequence and its data the event JSON.
async fn order_events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_order_id(&id)?;
    match state.orders.get(id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(ApiError::NotFound),
        Err(err) => return Err(ApiError::Internal(switchyard::telemetry::error_chain(&err))),
    }
    let stream = state
        .js
        .get_stream(names::ORDERS_STREAM)
        .await
        .map_err(|e| ApiError::Internal(format!("cannot open the ORDERS stream: {e}")))?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            // A named consumer is created on `$JS.API.CONSUMER.CREATE.ORDERS.<name>.<filter>`, which
            // lets nats.conf grant order-service consumers over one order's events only.
            name: Some(format!("sse_{}", Uuid::new_v4().simple())),
            filter_subject: format!("events.orders.*.{id}"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("cannot follow order events: {e}")))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| ApiError::Internal(format!("cannot follow order events: {e}")))?;
    let events = messages.filter_map(|message| async move {
        let message = message.ok()?;
        let seq = message.info().map(|info| info.stream_sequence).unwrap_or_default();
        let kind = names::order_event_kind(&message.subject).unwrap_or("event").to_string();
        let data = String::from_utf8_lossy(&message.payload).into_owned();
        Some(Ok::<_, std::convert::Infallible>(
            SseEvent::default().event(kind).id(seq.to_string()).data(data),
        ))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn live() -> JsonLine<serde_json::Value> {
    JsonLine(json!({ "status": "live" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let nats = state.nats.connection_state() == async_nats::connection::State::Connected;
    let database = state.orders.store().db().ping().await.is_ok();
    let status = if nats && database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "nats": if nats { "connected" } else { "disconnected" },
        "database": if database { "ok" } else { "unreachable" },
    });
    (status, JsonLine(body)).into_response()
}

async fn shed_load(State(capacity): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match capacity.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Overloaded.into_response(),
    }
}

/// Reads the whole body before the handler (and before an order slot is taken), within
/// `timeout` (408 past it) and `limit` bytes (413 past it).
async fn buffer_body(
    State((timeout, limit)): State<(Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = async move {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| ApiError::BadRequest(format!("cannot read the body: {err}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(err)) => err.into_response(),
        Err(_) => ApiError::RequestTimeout.into_response(),
    }
}

/// A declared `Content-Length` over the limit is 413 at once, on every route, before a byte of
/// the body is read.
async fn reject_declared_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => ApiError::PayloadTooLarge.into_response(),
        _ => next.run(request).await,
    }
}

/// Every error answer is the documented JSON body: a rejection the framework answered in text
/// (a path that is not UTF-8, a body over the limit, ...) is rewritten, keeping its status and
/// headers (`Allow`, `Retry-After`).
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let message = match text {
        Ok(text) if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut rewritten = ApiError::Status { status, message }.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// Answers 503 past `timeout`, and makes it the request's deadline: every NATS request made on
/// its behalf carries what is left of it, so inventory never works for an order already answered.
async fn request_timeout(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, switchyard::deadline::scope(deadline, next.run(request))).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Each request as a server span (continuing the caller's `traceparent`, else a new trace)
/// and a sample of `switchyard_http_request_duration_seconds`.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = request.headers().get(switchyard::telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
    switchyard::telemetry::set_parent(&span, parent);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
    metrics::histogram!(
        switchyard::observe::HTTP_DURATION,
        "method" => method,
        "route" => route,
        "status" => status.to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}
