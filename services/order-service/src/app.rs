//! Start-up and shutdown of the order service: flags, connections, HTTP server, micro service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use contracts::GetOrderRequest;
use contracts::names;
use switchyard::breaker::Breaker;
use switchyard::client::GuardedClient;
use switchyard::config::{BreakerArgs, CommonArgs, RetryArgs, parse_duration};
use switchyard::micro::{MicroError, ServiceError, ServiceHandle, ServiceSpec};
use switchyard::outbox::Relay;
use switchyard::platform::{Platform, PlatformError};
use switchyard::shutdown::Shutdown;
use tokio::net::TcpListener;

use crate::http::server::ConnectionLimits;
use crate::http::{AppState, Fairness, HttpLimits, router};
use crate::inventory::InventoryClient;
use crate::orders::OrderService;
use crate::store::OrderStore;
use switchyard::ratelimit::KeyedLimiter;

/// order-service: the HTTP API for orders, and the NATS micro service `orders`.
#[derive(Debug, Clone, Parser)]
#[command(name = "order-service", version, about)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Longest time an HTTP request may take before it is answered with 503.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub http_request_timeout: Duration,

    /// Largest HTTP request body, in bytes; a larger declared Content-Length is 413 at once.
    #[arg(long, env = "HTTP_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub http_body_limit: usize,

    /// Longest time a client may take to send a request body; past it, 408. The body is read
    /// before an order slot is taken, so a client that stalls holds none.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub http_body_timeout: Duration,

    /// Open HTTP connections at once; more are closed at once.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// Open HTTP connections at once from one peer address; more are closed at once.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS_PER_PEER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections_per_peer: u32,

    /// Longest time a client may take to send a request's headers; the connection is closed past it.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub http_header_timeout: Duration,

    /// A connection with no bytes in either direction for this long is closed (kept-alive or stalled).
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub http_idle_timeout: Duration,

    /// Order requests this instance handles at once; more are answered 503 with Retry-After at
    /// once (event streams and health checks are not counted).
    #[arg(long, env = "HTTP_MAX_IN_FLIGHT", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_in_flight: u32,

    /// Orders a second one `user_id` may place (each user's token bucket refills at this rate and
    /// holds --rate-limit-burst); past it, 429 with Retry-After. 0 turns it off.
    #[arg(long, env = "RATE_LIMIT_PER_USER", value_parser = parse_rate, default_value = "0")]
    pub rate_limit_per_user: f64,

    /// Order requests a second from one peer address (the same rules as --rate-limit-per-user;
    /// behind a proxy every client shares its address). 0 turns it off.
    #[arg(long, env = "RATE_LIMIT_PER_PEER", value_parser = parse_rate, default_value = "0")]
    pub rate_limit_per_peer: f64,

    /// Requests a user or peer may send at once before its rate applies.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,

    #[command(flatten)]
    pub breaker: BreakerArgs,

    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("failed to start the micro service")]
    Micro(#[from] MicroError),
    #[error(transparent)]
    SharedBreaker(#[from] switchyard::shared_breaker::SharedBreakerError),
    #[error("failed to bind the http listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running order service, bound and connected.
pub struct App {
    platform: Platform,
    listener: TcpListener,
    address: SocketAddr,
    state: AppState,
    limits: HttpLimits,
    connections: ConnectionLimits,
    service: ServiceHandle,
    relay: Relay,
    /// The task sharing the breaker (--breaker-shared), and its stop signal.
    shared_breaker: (Shutdown, Option<tokio::task::JoinHandle<()>>),
}

impl App {
    /// Opens the database, connects to NATS, binds the HTTP port and starts the micro service.
    pub async fn build(config: Config) -> Result<App, AppError> {
        let platform = Platform::connect(
            &config.common,
            names::ORDERS_SERVICE,
            &crate::MIGRATIONS,
            contracts::streams::EVENTS,
        )
        .await?;
        let (instance, db, client, js) =
            (platform.instance.clone(), platform.db.clone(), platform.client.clone(), platform.js.clone());
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AppError::Bind { addr: config.http_addr, source })?;
        let address =
            listener.local_addr().map_err(|source| AppError::Bind { addr: config.http_addr, source })?;

        let relay = platform.relay();
        // Reserves go through the breaker; reserve is idempotent per order id, so it is retried.
        let inventory =
            GuardedClient::new(client.clone(), names::INVENTORY_SERVICE, config.breaker.to_config())
                .with_retry(config.retry.to_policy(), names::IDEMPOTENT);
        inventory.breaker_arc().observe(&platform.scrape);
        // With --breaker-shared, the instances agree on inventory's breaker through NATS KV.
        let sharing = Shutdown::new();
        let shared = if config.breaker.breaker_shared {
            let declare = config.common.streams.declare_streams;
            let replicas = config.common.streams.shape.stream_replicas as usize;
            // Like the streams, the bucket may not be provisioned yet: keep looking until the
            // start-up deadline.
            let deadline = tokio::time::Instant::now() + config.common.streams.startup_timeout;
            let store = loop {
                match switchyard::shared_breaker::open_bucket(&js, declare, replicas).await {
                    Ok(store) => break store,
                    Err(err) if tokio::time::Instant::now() < deadline => {
                        tracing::warn!(error = %err, "waiting for the shared breakers' bucket");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Err(err) => return Err(err.into()),
                }
            };
            let task = switchyard::shared_breaker::share(
                store,
                inventory.breaker_arc().clone(),
                instance.clone(),
                sharing.clone(),
            )
            .await?;
            Some(task)
        } else {
            None
        };
        let orders = OrderService::new(OrderStore::new(db), InventoryClient::new(inventory), relay.waker());
        let service = spec(&orders).start(client.clone()).await?;
        let fairness = Arc::new(Fairness {
            per_user: KeyedLimiter::new(config.rate_limit_per_user, config.rate_limit_burst),
            per_peer: KeyedLimiter::new(config.rate_limit_per_peer, config.rate_limit_burst),
        });
        let state = AppState { orders, nats: client, scrape: platform.scrape.clone(), js, fairness };
        let limits = HttpLimits {
            body_limit: config.http_body_limit,
            request_timeout: config.http_request_timeout,
            max_in_flight: config.http_max_in_flight as usize,
            body_timeout: config.http_body_timeout,
        };
        tracing::info!(instance = %instance, http = %address, "order-service ready");
        let connections = ConnectionLimits {
            max_connections: config.http_max_connections as usize,
            max_per_peer: config.http_max_connections_per_peer as usize,
            header_timeout: config.http_header_timeout,
            idle_timeout: config.http_idle_timeout,
            drain_timeout: config.http_request_timeout + Duration::from_secs(5),
        };
        let shared_breaker = (sharing, shared);
        Ok(App { platform, listener, address, state, limits, connections, service, relay, shared_breaker })
    }

    /// The HTTP address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The HTTP port actually bound.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The circuit breaker guarding inventory calls.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.state.orders.inventory().breaker().clone()
    }

    /// Serves until `shutdown` fires; then drains HTTP, lets the outbox relay publish what was
    /// committed, stops the micro service, drains NATS and closes the database.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), AppError> {
        let App { platform, listener, state, limits, connections, service, relay, shared_breaker, .. } = self;
        let relay = platform.spawn_relay(relay);
        let app = router(state, limits);
        crate::http::server::serve(listener, app, connections, shutdown.clone()).await;
        tracing::info!("order-service stopping: http drained");
        let (sharing, task) = shared_breaker;
        sharing.trigger();
        if let Some(task) = task {
            let _ = task.await;
        }
        platform.stop(Some(relay), Some(service)).await;
        Ok(())
    }
}

/// The `orders` micro service.
pub fn spec(orders: &OrderService) -> ServiceSpec {
    let breaker = orders.inventory().breaker().clone();
    let orders = orders.clone();
    ServiceSpec::new(names::ORDERS_SERVICE, env!("CARGO_PKG_VERSION"))
        .description("Orders by id")
        // `nats micro stats orders` and `switchyard status` show the inventory breaker.
        .stats_data({
            let orders = orders.clone();
            move || {
                serde_json::json!({
                    "breaker": breaker.snapshot(),
                    "retry": orders.inventory().retries(),
                    "orders": orders.tally().to_json(),
                })
            }
        })
        .endpoint("get", names::ORDERS_GET, move |request: GetOrderRequest| {
            let orders = orders.clone();
            async move {
                match orders.get(request.order_id).await {
                    Ok(Some(order)) => Ok(order),
                    Ok(None) => Err(ServiceError::not_found(format!("order {} not found", request.order_id))),
                    Err(err) => Err(ServiceError::internal(switchyard::telemetry::error_chain(&err))),
                }
            }
        })
}

/// A rate in requests a second: a finite number, 0 or more.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate: use a number of requests a second, 0 for off")),
    }
}
