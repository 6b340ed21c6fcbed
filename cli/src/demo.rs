//! `switchyard demo`: restock a demo catalogue over NATS, place orders over HTTP at a set
//! concurrency (some deliberately out of stock), and summarise what happened.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use contracts::names;
use contracts::{RestockReply, RestockRequest};
use serde_json::json;
use switchyard::client::RequestClient;

use crate::connect::StackArgs;

/// The demo catalogue: SKU and units restocked. `DEMO-RARE` is short on purpose, so some orders
/// are refused as out of stock.
pub const CATALOGUE: &[(&str, u32)] = &[("DEMO-A", 1_000_000), ("DEMO-B", 1_000_000), ("DEMO-RARE", 5)];

/// Flags of `switchyard demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Base URL of order-service's HTTP API; default the one `switchyard up` recorded, else
    /// http://127.0.0.1:8080.
    #[arg(long, env = "HTTP_URL")]
    pub http_url: Option<String>,

    /// Orders to place.
    #[arg(long, env = "DEMO_ORDERS", default_value_t = 200)]
    pub orders: u64,

    /// Orders in flight at once.
    #[arg(long, env = "DEMO_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,

    /// Do not draw the progress bar.
    #[arg(long, env = "DEMO_QUIET")]
    pub quiet: bool,
}

/// What the demo saw.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// 201 answers.
    pub accepted: u64,
    /// 409 out-of-stock answers.
    pub out_of_stock: u64,
    /// 503 answers (inventory unavailable).
    pub unavailable: u64,
    /// Any other answer, or no answer.
    pub errors: u64,
    /// Latencies of every answered request, sorted.
    pub latencies: Vec<Duration>,
    /// Wall time of the order phase.
    pub elapsed: Duration,
    /// Events in the `ORDERS` stream once every consumer caught up.
    pub events: u64,
    /// Per durable consumer: (name, messages acknowledged, redelivered), once caught up.
    pub consumers: Vec<(String, u64, u64)>,
    /// Whether every consumer caught up before the deadline.
    pub caught_up: bool,
}

impl Summary {
    /// The latency at percentile `p` (0 to 100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }

    /// The summary as a text table.
    pub fn table(&self) -> String {
        let total = self.accepted + self.out_of_stock + self.unavailable + self.errors;
        let rate = total as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        format!(
            "orders placed     {total} in {:.2} s ({rate:.0}/s)\n\
             accepted          {}\n\
             out of stock      {}\n\
             unavailable       {}\n\
             errors            {}\n\
             latency p50       {}\n\
             latency p99       {}\n\
             events in ORDERS  {}{}",
            self.elapsed.as_secs_f64(),
            self.accepted,
            self.out_of_stock,
            self.unavailable,
            self.errors,
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            self.events,
            if self.caught_up { "" } else { " (consumers still catching up)" },
        ) + &self
            .consumers
            .iter()
            .map(|(name, acked, redelivered)| {
                format!("\nconsumer {name:<9} {acked} events applied, {redelivered} redelivered")
            })
            .collect::<String>()
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> anyhow::Result<Summary> {
    let client = args.stack.connect("demo").await?;
    let http_url = args.stack.http_url(args.http_url.as_deref());
    let requests = RequestClient::new(client.clone(), Duration::from_secs(5));
    for (sku, quantity) in CATALOGUE {
        let reply: RestockReply = requests
            .request(names::INVENTORY_RESTOCK, &RestockRequest { sku: sku.to_string(), quantity: *quantity })
            .await
            .with_context(|| format!("failed to restock {sku}: is inventory-service running?"))?;
        tracing::info!(sku = reply.sku, available = reply.available, "restocked");
    }

    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().context("http client")?;
    let url = format!("{}/orders", http_url.trim_end_matches('/'));
    let ready = http.get(format!("{}/health/ready", http_url.trim_end_matches('/'))).send().await;
    match ready {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => bail!("order-service at {http_url} is not ready: {}", response.status()),
        Err(err) => bail!("order-service at {http_url} does not answer: {err}"),
    }

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.min(args.orders.max(1)) {
        let (http, url, next, done, total) =
            (http.clone(), url.clone(), next.clone(), done.clone(), args.orders);
        workers.push(tokio::spawn(async move {
            let mut local = Summary::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                // Every tenth order asks for the rare SKU, so the catalogue runs out on purpose.
                let sku = if n % 10 == 9 {
                    "DEMO-RARE"
                } else if n % 2 == 0 {
                    "DEMO-A"
                } else {
                    "DEMO-B"
                };
                let body = json!({
                    "user_id": format!("demo-user-{}", n % 50),
                    "email": format!("demo-user-{}@example.com", n % 50),
                    "items": [{ "sku": sku, "quantity": 1 }],
                });
                let sent = Instant::now();
                match http.post(&url).json(&body).send().await {
                    Ok(response) => {
                        local.latencies.push(sent.elapsed());
                        match response.status().as_u16() {
                            201 => local.accepted += 1,
                            409 => local.out_of_stock += 1,
                            503 => local.unavailable += 1,
                            _ => local.errors += 1,
                        }
                    }
                    Err(_) => local.errors += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            local
        }));
    }
    let progress = (!args.quiet).then(|| {
        let (done, total) = (done.clone(), args.orders);
        tokio::spawn(async move {
            loop {
                let n = done.load(Ordering::Relaxed);
                draw_progress(n, total);
                if n >= total {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let mut summary = Summary::default();
    for worker in workers {
        let local = worker.await.context("demo worker panicked")?;
        summary.accepted += local.accepted;
        summary.out_of_stock += local.out_of_stock;
        summary.unavailable += local.unavailable;
        summary.errors += local.errors;
        summary.latencies.extend(local.latencies);
    }
    summary.elapsed = started.elapsed();
    summary.latencies.sort();
    if let Some(progress) = progress {
        let _ = progress.await;
        eprintln!();
    }
    let js = async_nats::jetstream::new(client.clone());
    summary.caught_up = wait_for_consumers(&js, Duration::from_secs(60)).await?;
    summary.events = stream_messages(&js).await?;
    summary.consumers = consumer_counts(&js).await?;
    switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    Ok(summary)
}

async fn stream_messages(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(names::ORDERS_STREAM).await.context("no ORDERS stream")?;
    Ok(stream.info().await.context("ORDERS stream info")?.state.messages)
}

/// (name, acknowledged, redelivered) of each durable consumer on `ORDERS`.
async fn consumer_counts(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let stream = js.get_stream(names::ORDERS_STREAM).await.context("no ORDERS stream")?;
    let mut counts = Vec::new();
    for name in [names::INVENTORY_CONSUMER, names::EMAIL_CONSUMER, names::AUDIT_CONSUMER] {
        if let Ok(info) = stream.consumer_info(name).await {
            counts.push((name.to_string(), info.ack_floor.consumer_sequence, info.num_redelivered as u64));
        }
    }
    Ok(counts)
}

/// True when every durable consumer on `ORDERS` has nothing pending and nothing unacked (a
/// consumer that cannot be looked up counts as busy).
async fn consumers_idle(stream: &async_nats::jetstream::stream::Stream) -> bool {
    for name in [names::INVENTORY_CONSUMER, names::EMAIL_CONSUMER, names::AUDIT_CONSUMER] {
        match stream.consumer_info(name).await {
            Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
            _ => return false,
        }
    }
    true
}

/// Waits until every durable consumer on `ORDERS` is idle, twice in a row 300 ms apart: the
/// lifecycle events the consumers publish themselves arrive just after they go idle.
async fn wait_for_consumers(js: &async_nats::jetstream::Context, deadline: Duration) -> anyhow::Result<bool> {
    let stream = js.get_stream(names::ORDERS_STREAM).await.context("no ORDERS stream")?;
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if consumers_idle(&stream).await {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if consumers_idle(&stream).await {
                return Ok(true);
            }
        }
        if tokio::time::Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn draw_progress(done: u64, total: u64) {
    let width: usize = 40;
    let filled = (done.min(total) * width as u64).checked_div(total).map_or(width, |f| f as usize);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(width - filled));
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "\r[{bar}] {done}/{total} orders");
    let _ = stderr.flush();
}
