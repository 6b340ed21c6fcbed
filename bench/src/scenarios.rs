//! The measurements, each against a baseline taken in the same run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use contracts::names;
use contracts::{CheckReply, CheckRequest, Item, RestockRequest};
use futures_util::StreamExt;
use serde::Serialize;
use switchyard::Shutdown;
use switchyard::breaker::{Breaker, BreakerConfig};
use switchyard::client::RequestClient;
use switchyard::db::Db;
use switchyard::outbox::{Relay, RelayConfig};
use switchyard::testkit::{NatsServer, TestDatabase};

use crate::load::{Sample, drive, median, peak_rss_kb};
use crate::{Config, Section};

/// One request-reply measurement.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRow {
    /// `switchyard`, `raw_nats` or `http`.
    pub transport: &'static str,
    /// Requests in flight.
    pub in_flight: usize,
    /// The median round.
    pub sample: Sample,
}

/// One POST /orders measurement.
#[derive(Debug, Clone, Serialize)]
pub struct OrdersRow {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// `services` (order-service -> NATS -> inventory-service, a database each) or `monolith`
    /// (the same order logic calling the inventory logic as a function on one database).
    pub mode: &'static str,
    /// The median round at 64 in flight.
    pub sample: Sample,
}

/// `inventory.check` over the three transports.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// One row per transport and in-flight count.
    pub rows: Vec<SyncRow>,
    /// Switchyard req/s over raw NATS req/s at 64 in flight.
    pub ratio_vs_raw_nats_64: f64,
    /// Switchyard req/s over HTTP req/s at 64 in flight.
    pub ratio_vs_http_64: f64,
}

/// POST /orders through the services against the monolith.
#[derive(Debug, Clone, Serialize)]
pub struct OrdersReport {
    /// Services and monolith, per database.
    pub rows: Vec<OrdersRow>,
    /// Services orders/s over monolith orders/s, per database.
    pub ratios: Vec<(String, f64)>,
}

/// Everything one run measured; a section left out with `--only` is absent.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Cores and memory of the machine.
    pub machine: String,
    /// nats-server version.
    pub nats_server: String,
    /// Rounds per measurement.
    pub rounds: usize,
    /// Seconds per request-reply round.
    pub round_seconds: f64,
    /// Tracing in this run: `off` (the default, as a service without `--otlp-endpoint`) or
    /// `exported` (every span sent with OTLP to a discarding sink).
    pub tracing: String,
    /// `inventory.check` over each transport.
    pub sync: Option<SyncReport>,
    /// POST /orders end to end: the services over NATS against the monolith, per database.
    pub orders: Option<OrdersReport>,
    /// Nanoseconds a call through the breaker costs more than the bare call (a timing loop; the
    /// criterion benchmark `cargo bench -p switchyard-bench --bench breaker` measures the same).
    pub breaker_overhead_ns: Option<f64>,
    /// The relay and the consumers on a backlog.
    pub events: Option<crate::events::EventsReport>,
    /// The four services as processes at fixed order rates.
    pub pipeline: Option<crate::pipeline::PipelineReport>,
    /// Peak RSS of this process (the in-process services of `sync`, `orders` and `events`, and
    /// every client), in MB.
    pub bench_process_peak_rss_mb: f64,
}

impl Report {
    /// The report as text tables.
    pub fn table(&self) -> String {
        let mut out = format!(
            "machine: {}; {}; {} round(s) of {:.1} s, median round shown; tracing {}\n",
            self.machine, self.nats_server, self.rounds, self.round_seconds, self.tracing
        );
        if let Some(sync) = &self.sync {
            out.push_str(&format!(
                "\ninventory.check\n{:<11} {:>9} {:>10} {:>9} {:>9} {:>10} {:>11} {:>7}\n",
                "transport", "in flight", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "cpu us/req", "errors"
            ));
            for row in &sync.rows {
                let s = &row.sample;
                out.push_str(&format!(
                    "{:<11} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>10.3} {:>11.1} {:>7}\n",
                    row.transport,
                    row.in_flight,
                    s.per_second,
                    s.p50_ms,
                    s.p99_ms,
                    s.p999_ms,
                    s.cpu_us_per_request,
                    s.errors
                ));
            }
            out.push_str(&format!(
                "switchyard / raw NATS at 64 in flight: {:.2}x\nswitchyard / HTTP at 64 in flight:     {:.2}x\n",
                sync.ratio_vs_raw_nats_64, sync.ratio_vs_http_64
            ));
        }
        if let Some(orders) = &self.orders {
            out.push_str(&format!(
                "\nPOST /orders at 64 in flight\n{:<9} {:<9} {:>9} {:>9} {:>9} {:>11}\n",
                "database", "mode", "orders/s", "p50 ms", "p99 ms", "cpu us/req"
            ));
            for row in &orders.rows {
                let s = &row.sample;
                out.push_str(&format!(
                    "{:<9} {:<9} {:>9.0} {:>9.3} {:>9.3} {:>11.1}\n",
                    row.database, row.mode, s.per_second, s.p50_ms, s.p99_ms, s.cpu_us_per_request
                ));
            }
            for (database, ratio) in &orders.ratios {
                out.push_str(&format!("services / monolith on {database}: {ratio:.2}x\n"));
            }
        }
        if let Some(ns) = self.breaker_overhead_ns {
            out.push_str(&format!("\nbreaker overhead per call: {ns:.0} ns\n"));
        }
        if let Some(events) = &self.events {
            out.push_str(&format!(
                "\nevents ({} in the backlog)\noutbox relay: {:.0} events/s (JetStream publish alone: {:.0}/s)\n\
                 a pull consumer that only acks: {:.0} events/s\n",
                events.events,
                events.relay_events_per_second,
                events.jetstream_publish_per_second,
                events.jetstream_consume_per_second
            ));
            for c in &events.consumers {
                out.push_str(&format!(
                    "consumer {:<10} max batch {:>3}: {:>8.0} events/s\n",
                    c.consumer, c.max_batch, c.events_per_second
                ));
            }
        }
        if let Some(pipeline) = &self.pipeline {
            out.push_str(&format!(
                "\npipeline: four services as processes, {:.0} s per rate; done = all three consumers acked\n\
                 {:>8} {:>10} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}\n",
                pipeline.seconds_per_rate,
                "offered",
                "accepted/s",
                "failed",
                "http p50",
                "http p99",
                "done",
                "done p50",
                "done p99",
                "done max"
            ));
            for r in &pipeline.rates {
                out.push_str(&format!(
                    "{:>8} {:>10.0} {:>7} {:>8.1} {:>8.1} {:>8} {:>9.1} {:>9.1} {:>9.1}\n",
                    r.offered_per_second,
                    r.accepted_per_second,
                    r.failed,
                    r.http_p50_ms,
                    r.http_p99_ms,
                    r.done,
                    r.done_p50_ms,
                    r.done_p99_ms,
                    r.done_max_ms
                ));
            }
            for s in &pipeline.services {
                out.push_str(&format!(
                    "{:<18} peak RSS {:>6.1} MB, {:>7.0} CPU us/order\n",
                    s.service, s.peak_rss_mb, s.cpu_us_per_order
                ));
            }
        }
        out.push_str(&format!("\npeak RSS of the bench process: {:.1} MB\n", self.bench_process_peak_rss_mb));
        out
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores, {memory}")
}

const SKUS: usize = 100;

fn check_request(n: u64) -> CheckRequest {
    let a = (n % SKUS as u64) as usize;
    let b = ((n + 7) % SKUS as u64) as usize;
    CheckRequest {
        items: vec![
            Item { sku: format!("SKU-{a}"), quantity: 1 },
            Item { sku: format!("SKU-{b}"), quantity: 2 },
        ],
    }
}

/// Runs every measurement.
/// Runs the sections `config` asks for; `otlp_sink`: where the pipeline's services export spans.
pub async fn run(config: &Config, otlp_sink: Option<&str>) -> anyhow::Result<Report> {
    let version = std::process::Command::new(switchyard::testkit::nats_server_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let sync = if config.runs(Section::Sync) { Some(sync(config).await?) } else { None };
    let orders = if config.runs(Section::Orders) { Some(orders(config).await?) } else { None };
    let breaker_overhead_ns = if config.runs(Section::Breaker) {
        Some(breaker_overhead(if config.quick { 20_000 } else { 1_000_000 }).await)
    } else {
        None
    };
    let events =
        if config.runs(Section::Events) { Some(crate::events::run(config.events).await?) } else { None };
    let pipeline = if config.runs(Section::Pipeline) {
        Some(
            crate::pipeline::run(
                &config.pipeline_rates,
                config.pipeline_duration.unwrap_or(config.duration),
                otlp_sink,
            )
            .await?,
        )
    } else {
        None
    };
    Ok(Report {
        machine: machine(),
        nats_server: version,
        rounds: config.rounds,
        round_seconds: config.duration.as_secs_f64(),
        tracing: if otlp_sink.is_some() { "exported" } else { "off" }.to_string(),
        sync,
        orders,
        breaker_overhead_ns,
        events,
        pipeline,
        bench_process_peak_rss_mb: peak_rss_kb(std::process::id()) as f64 / 1024.0,
    })
}

/// `inventory.check` over Switchyard, raw NATS and HTTP, at 1 and 64 in flight.
async fn sync(config: &Config) -> anyhow::Result<SyncReport> {
    let nats = NatsServer::start();
    let nats_pid = nats.pid().context("nats-server pid")?;

    // The inventory logic on a real SQLite file, shared by the three transports.
    let db_file = TestDatabase::sqlite();
    let db = Db::connect(db_file.url(), &inventory_service::MIGRATIONS).await?;
    let inventory = inventory_service::Inventory::new(db, Duration::from_secs(900));
    for i in 0..SKUS {
        inventory.restock(&RestockRequest { sku: format!("SKU-{i}"), quantity: 1_000_000 }).await?;
    }

    // Switchyard: the inventory micro service, called through the typed client and the breaker.
    let service = inventory_service::app::spec(&inventory).start(nats.client().await).await?;
    let requests = RequestClient::new(nats.client().await, Duration::from_secs(5));
    let breaker = Arc::new(Breaker::new("bench", BreakerConfig::default()));

    // Raw NATS: a queue subscriber doing the same decode, lookup and encode, concurrently.
    let raw_server = nats.client().await;
    let mut raw_sub = raw_server.queue_subscribe("bench.raw.check", "q".into()).await?;
    let raw_inventory = inventory.clone();
    let raw_task = tokio::spawn(async move {
        while let Some(message) = raw_sub.next().await {
            let (client, inventory) = (raw_server.clone(), raw_inventory.clone());
            tokio::spawn(async move {
                let Some(reply) = message.reply else { return };
                let Ok(request) = serde_json::from_slice::<CheckRequest>(&message.payload) else { return };
                if let Ok(answer) = inventory.check(&request).await
                    && let Ok(body) = serde_json::to_vec(&answer)
                {
                    let _ = client.publish(reply, body.into()).await;
                }
            });
        }
    });
    let raw_client = nats.client().await;

    // HTTP: axum with the same lookup; reqwest with keep-alive.
    let app =
        axum::Router::new()
            .route(
                "/check",
                axum::routing::post(
                    |State(inventory): State<inventory_service::Inventory>,
                     Json(request): Json<CheckRequest>| async move {
                        inventory
                            .check(&request)
                            .await
                            .map(Json)
                            .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                    },
                ),
            )
            .with_state(inventory.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_url = format!("http://{}/check", listener.local_addr()?);
    let http_server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build()?;

    let mut rows = Vec::new();
    for in_flight in [1usize, 64] {
        let mut samples: [Vec<Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..config.rounds {
            let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (r, b, c) = (requests.clone(), breaker.clone(), counter.clone());
            samples[0].push(
                drive(in_flight, config.duration, &[nats_pid], move || {
                    let (r, b, c) = (r.clone(), b.clone(), c.clone());
                    async move {
                        let request = check_request(c.fetch_add(1, Ordering::Relaxed));
                        b.call(r.request::<_, CheckReply>(names::INVENTORY_CHECK, &request)).await.is_ok()
                    }
                })
                .await,
            );
            let (client, c) = (raw_client.clone(), counter.clone());
            samples[1].push(
                drive(in_flight, config.duration, &[nats_pid], move || {
                    let (client, c) = (client.clone(), c.clone());
                    async move {
                        let request = check_request(c.fetch_add(1, Ordering::Relaxed));
                        let Ok(body) = serde_json::to_vec(&request) else { return false };
                        match client.request("bench.raw.check", Bytes::from(body)).await {
                            Ok(reply) => serde_json::from_slice::<CheckReply>(&reply.payload).is_ok(),
                            Err(_) => false,
                        }
                    }
                })
                .await,
            );
            let (http, url, c) = (http.clone(), http_url.clone(), counter.clone());
            samples[2].push(
                drive(in_flight, config.duration, &[], move || {
                    let (http, url, c) = (http.clone(), url.clone(), c.clone());
                    async move {
                        let request = check_request(c.fetch_add(1, Ordering::Relaxed));
                        match http.post(&url).json(&request).send().await {
                            Ok(response) => response.json::<CheckReply>().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                })
                .await,
            );
        }
        for (transport, rounds) in ["switchyard", "raw_nats", "http"].into_iter().zip(samples) {
            rows.push(SyncRow { transport, in_flight, sample: median(rounds) });
        }
    }
    let rate = |transport: &str| {
        rows.iter()
            .find(|r| r.transport == transport && r.in_flight == 64)
            .map(|r| r.sample.per_second)
            .unwrap_or(0.0)
    };
    let (ratio_vs_raw_nats_64, ratio_vs_http_64) =
        (rate("switchyard") / rate("raw_nats").max(1.0), rate("switchyard") / rate("http").max(1.0));
    service.stop().await;
    raw_task.abort();
    http_server.abort();

    Ok(SyncReport { rows, ratio_vs_raw_nats_64, ratio_vs_http_64 })
}

/// POST /orders through the services and in the monolith, on SQLite and Postgres.
async fn orders(config: &Config) -> anyhow::Result<OrdersReport> {
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for database in ["sqlite", "postgres"] {
        let mut services = Vec::new();
        let mut monolith = Vec::new();
        for _ in 0..config.rounds {
            // A fresh broker per run: no stream or durable consumer carries over between modes.
            services.push(orders_through_services(&NatsServer::start(), database, config.duration).await?);
            monolith.push(orders_in_monolith(&NatsServer::start(), database, config.duration).await?);
        }
        let (services, monolith) = (median(services), median(monolith));
        ratios.push((database.to_string(), services.per_second / monolith.per_second.max(1.0)));
        rows.push(OrdersRow { database, mode: "services", sample: services });
        rows.push(OrdersRow { database, mode: "monolith", sample: monolith });
    }
    Ok(OrdersReport { rows, ratios })
}

/// Nanoseconds per call a breaker adds to a call that completes at once.
async fn breaker_overhead(calls: u32) -> f64 {
    let breaker = Breaker::new("overhead", BreakerConfig::default());
    let bare = Instant::now();
    for i in 0..calls {
        let value = std::hint::black_box(async { Ok::<u32, std::io::Error>(i) }.await);
        std::hint::black_box(value.is_ok());
    }
    let bare = bare.elapsed();
    let wrapped = Instant::now();
    for i in 0..calls {
        let value = breaker.call(async { Ok::<u32, std::io::Error>(i) }).await;
        std::hint::black_box(value.is_ok());
    }
    let wrapped = wrapped.elapsed();
    (wrapped.as_nanos() as f64 - bare.as_nanos() as f64).max(0.0) / f64::from(calls)
}

/// Both schemas on one database, for the monolith.
const MONOLITH: switchyard::db::Migrations = switchyard::db::Migrations {
    sqlite: &[
        switchyard::db::Migration { version: 1, description: "inventory", sql: inventory_service::SCHEMA },
        switchyard::db::Migration { version: 2, description: "orders", sql: order_service::SCHEMA },
        switchyard::db::Migration { version: 3, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
    ],
    postgres: &[
        switchyard::db::Migration { version: 1, description: "inventory", sql: inventory_service::SCHEMA },
        switchyard::db::Migration { version: 2, description: "orders", sql: order_service::SCHEMA },
        switchyard::db::Migration {
            version: 3,
            description: "outbox",
            sql: switchyard::outbox::POSTGRES_SQL,
        },
    ],
};

const ORDER_SKUS: usize = 200;

async fn database(kind: &str) -> TestDatabase {
    if kind == "postgres" { TestDatabase::postgres().await } else { TestDatabase::sqlite() }
}

/// POST /orders at 64 in flight against `base_url` for `duration`.
async fn drive_orders(base_url: &str, duration: Duration, other_pids: &[u32]) -> Sample {
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().unwrap_or_default();
    let url = format!("{base_url}/orders");
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    drive(64, duration, other_pids, move || {
        let (http, url, counter) = (http.clone(), url.clone(), counter.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::json!({
                "user_id": "bench",
                "items": [{ "sku": format!("OSKU-{}", n % ORDER_SKUS as u64), "quantity": 1 }],
            });
            matches!(http.post(&url).json(&body).send().await, Ok(r) if r.status().as_u16() == 201)
        }
    })
    .await
}

/// order-service -> NATS -> inventory-service, each on its own database. inventory-service also
/// runs its durable consumer (it commits the reservations of the orders as they come in), as in
/// production; the monolith has no asynchronous side.
async fn orders_through_services(
    nats: &NatsServer,
    kind: &str,
    duration: Duration,
) -> anyhow::Result<Sample> {
    use clap::Parser;
    let (inventory_db, orders_db) = (database(kind).await, database(kind).await);
    let shutdown = Shutdown::new();
    let inventory = inventory_service::App::build(inventory_service::Config::parse_from([
        "inventory-service",
        "--nats-url",
        &nats.url(),
        "--database-url",
        inventory_db.url(),
        "--declare-streams",
    ]))
    .await?;
    for i in 0..ORDER_SKUS {
        inventory
            .inventory()
            .restock(&RestockRequest { sku: format!("OSKU-{i}"), quantity: 1_000_000 })
            .await?;
    }
    let inventory_task = tokio::spawn(inventory.run_until_stopped(shutdown.clone()));
    let orders = order_service::App::build(order_service::Config::parse_from([
        "order-service",
        "--nats-url",
        &nats.url(),
        "--database-url",
        orders_db.url(),
        "--http-addr",
        "127.0.0.1:0",
    ]))
    .await?;
    let base_url = format!("http://127.0.0.1:{}", orders.port());
    let orders_task = tokio::spawn(orders.run_until_stopped(shutdown.clone()));
    let sample = drive_orders(&base_url, duration, &nats.pid().into_iter().collect::<Vec<_>>()).await;
    shutdown.trigger();
    let _ = orders_task.await;
    let _ = inventory_task.await;
    Ok(sample)
}

/// The same order logic calling the inventory logic as a function, both on one database.
async fn orders_in_monolith(nats: &NatsServer, kind: &str, duration: Duration) -> anyhow::Result<Sample> {
    let file = database(kind).await;
    let db = Db::connect(file.url(), &MONOLITH).await?;
    let inventory = inventory_service::Inventory::new(db.clone(), Duration::from_secs(900));
    for i in 0..ORDER_SKUS {
        inventory.restock(&RestockRequest { sku: format!("OSKU-{i}"), quantity: 1_000_000 }).await?;
    }
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    switchyard::streams::ensure_streams(
        &js,
        contracts::streams::ALL,
        &switchyard::streams::StreamSettings::default(),
    )
    .await?;
    let relay = Relay::new(db.clone(), js.clone(), "monolith", RelayConfig::default());
    let shutdown = Shutdown::new();
    let relay_task = tokio::spawn(relay.clone().run(shutdown.clone()));
    let orders = order_service::orders::OrderService::new(
        order_service::store::OrderStore::new(db),
        order_service::inventory::InventoryClient::local(
            Arc::new(Monolith(inventory)),
            Arc::new(Breaker::new(names::INVENTORY_SERVICE, BreakerConfig::default())),
        ),
        relay.waker(),
    );
    let scrape = switchyard::observe::Scrape::new();
    let state =
        order_service::http::AppState { orders, nats: client, scrape, js, fairness: Default::default() };
    let limits = order_service::http::HttpLimits {
        body_limit: 64 * 1024,
        request_timeout: Duration::from_secs(10),
        max_in_flight: 512,
        body_timeout: Duration::from_secs(5),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let signal = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, order_service::http::router(state, limits))
            .with_graceful_shutdown(async move { signal.wait().await })
            .await
    });
    let sample = drive_orders(&base_url, duration, &nats.pid().into_iter().collect::<Vec<_>>()).await;
    shutdown.trigger();
    let _ = server.await;
    let _ = relay_task.await;
    Ok(sample)
}

/// The inventory logic as a function on the order service's own database: the monolith's
/// reservations.
#[derive(Debug)]
struct Monolith(inventory_service::Inventory);

impl order_service::inventory::Reservations for Monolith {
    fn reserve<'a>(
        &'a self,
        request: &'a contracts::ReserveRequest,
    ) -> order_service::inventory::ReservationFuture<
        'a,
        Result<contracts::ReserveReply, order_service::inventory::ReserveError>,
    > {
        use order_service::inventory::ReserveError;
        Box::pin(async move {
            self.0.reserve(request).await.map_err(|err| match err {
                inventory_service::InventoryError::Conflict(message) => ReserveError::Released { message },
                other => ReserveError::Unavailable {
                    retry_after: Duration::from_secs(1),
                    reason: switchyard::telemetry::error_chain(&other),
                },
            })
        })
    }

    fn release<'a>(
        &'a self,
        request: &'a contracts::ReleaseRequest,
    ) -> order_service::inventory::ReservationFuture<'a, Result<contracts::ReleaseReply, String>> {
        Box::pin(async move {
            self.0.release(request).await.map_err(|err| switchyard::telemetry::error_chain(&err))
        })
    }
}
