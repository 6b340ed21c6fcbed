//! The whole system as it is deployed: order-service, inventory-service, email-service and
//! audit-service as processes (the binaries next to this one) on their own SQLite files, one
//! nats-server. Orders arrive at a fixed rate (open loop); for each accepted order it measures the
//! time from the 201 to the moment the last of the three consumers had acked its created event,
//! and each service's peak RSS and CPU per order, next to the generator's own CPU.
//!
//! "Done" is read from the consumers' ack floors (`consumer info`, sampled every 20 ms: three
//! JetStream API requests per sample), not by observing every ack on `$JS.ACK.>`: that doubled
//! the broker's ack traffic and cost the generator process more than the load it measured. An
//! order counts as done at the first sample where every consumer's ack floor has reached its
//! created event's stream sequence, so a done time is late by up to one sample (20 ms), or more
//! when an earlier event is acked after it (the floor waits for the gap to close).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer::pull};
use contracts::names;
use contracts::{RestockReply, RestockRequest};
use futures_util::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use switchyard::client::RequestClient;
use switchyard::testkit::{NatsServer, free_port, temp_dir};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::load::{cpu_micros, peak_rss_kb, percentile_ms};

/// One service process under load.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceUsage {
    /// The binary.
    pub service: &'static str,
    /// Peak resident set size over the whole run, in MB.
    pub peak_rss_mb: f64,
    /// CPU microseconds per accepted order, over all rates.
    pub cpu_us_per_order: f64,
}

/// One offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateRow {
    /// Orders offered per second.
    pub offered_per_second: u32,
    /// Orders accepted (201).
    pub accepted: usize,
    /// Orders accepted (201) per second.
    pub accepted_per_second: f64,
    /// Orders not accepted (any other answer, or none).
    pub failed: u64,
    /// POST /orders latency.
    pub http_p50_ms: f64,
    /// POST /orders latency, 99th percentile.
    pub http_p99_ms: f64,
    /// Accepted orders every consumer finished.
    pub done: usize,
    /// From the 201 to the last consumer's ack: median.
    pub done_p50_ms: f64,
    /// 99th percentile.
    pub done_p99_ms: f64,
    /// Slowest.
    pub done_max_ms: f64,
}

/// The pipeline run.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Seconds each rate ran.
    pub seconds_per_rate: f64,
    /// CPU microseconds per accepted order of this process (the load generator and the done
    /// sampler), not counted in `services`.
    pub generator_cpu_us_per_order: f64,
    /// One row per offered rate.
    pub rates: Vec<RateRow>,
    /// Each service process, and nats-server.
    pub services: Vec<ServiceUsage>,
}

const SERVICES: [&str; 4] = ["inventory-service", "order-service", "email-service", "audit-service"];
const CONSUMERS: [&str; 3] = [names::INVENTORY_CONSUMER, names::EMAIL_CONSUMER, names::AUDIT_CONSUMER];
const SKUS: usize = 200;

struct Process {
    name: &'static str,
    child: Child,
    pid: u32,
}

/// Where the service binaries are: next to this binary (or `SWITCHYARD_BIN_DIR`).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SWITCHYARD_BIN_DIR") {
        return Ok(dir.into());
    }
    let exe = std::env::current_exe().context("where is this binary")?;
    Ok(exe.parent().context("binary without a directory")?.to_path_buf())
}

/// Every consumer's ack floor (stream sequence) at one moment.
#[derive(Debug, Clone, Copy)]
struct FloorSample {
    at: Instant,
    /// The lowest ack floor of the three consumers.
    floor: u64,
}

/// How often the consumers' ack floors are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Runs the four services as processes and offers each of `rates` orders/s for `duration`.
pub async fn run(
    rates: &[u32],
    duration: Duration,
    otlp_sink: Option<&str>,
) -> anyhow::Result<PipelineReport> {
    let bin = bin_dir()?;
    for service in SERVICES {
        if !bin.join(service).exists() {
            bail!(
                "{} is missing: build the services first (cargo build --release --bins)",
                bin.join(service).display()
            );
        }
    }
    let nats = NatsServer::start();
    let nats_pid = nats.pid().context("nats-server pid")?;
    let dir = temp_dir();
    let port = free_port().context("no free port")?;
    let mut processes = Vec::new();
    for service in SERVICES {
        let data_dir = dir.path().join(service);
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(dir.path().join(format!("{service}.log")))?;
        let mut command = Command::new(bin.join(service));
        command
            .args(["--nats-url", &nats.url(), "--declare-streams", "--data-dir"])
            .arg(&data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_CREDS")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if service == "order-service" {
            command.args(["--http-addr", &format!("127.0.0.1:{port}")]);
        }
        match otlp_sink {
            Some(sink) => command.env("OTEL_EXPORTER_OTLP_ENDPOINT", sink),
            None => command.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT"),
        };
        let child = command.spawn().with_context(|| format!("failed to start {service}"))?;
        let pid = child.id().context("service pid")?;
        processes.push(Process { name: service, child, pid });
    }

    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        let http_ready =
            matches!(http.get(format!("{base}/health/ready")).send().await, Ok(r) if r.status().is_success());
        let mut consumers_ready = true;
        for consumer in CONSUMERS {
            consumers_ready &= js
                .get_consumer_from_stream::<pull::Config, _, _>(consumer, names::ORDERS_STREAM)
                .await
                .is_ok();
        }
        if http_ready && consumers_ready {
            break;
        }
        if Instant::now() > ready {
            bail!("the services did not become ready; logs are in {}", dir.path().display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = RequestClient::new(client.clone(), Duration::from_secs(5));
    for i in 0..SKUS {
        let restock = RestockRequest { sku: format!("PSKU-{i}"), quantity: 1_000_000 };
        // inventory-service's durable can exist before its endpoints do.
        loop {
            match requests.request::<_, RestockReply>(names::INVENTORY_RESTOCK, &restock).await {
                Err(switchyard::RequestError::NoResponders { .. }) if Instant::now() < ready => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result => {
                    result?;
                    break;
                }
            }
        }
    }

    let samples = Arc::new(Mutex::new(Vec::<FloorSample>::new()));
    let sampler = {
        let (samples, stream) = (samples.clone(), js.get_stream(names::ORDERS_STREAM).await?);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let mut floor = Some(u64::MAX);
                for consumer in CONSUMERS {
                    // A sample with an unanswered request is skipped: the floors must only grow.
                    floor = match stream.consumer_info(consumer).await {
                        Ok(info) => floor.map(|f| f.min(info.ack_floor.stream_sequence)),
                        Err(_) => None,
                    };
                }
                if let Some(floor) = floor
                    && let Ok(mut samples) = samples.lock()
                {
                    samples.push(FloorSample { at: Instant::now(), floor });
                }
            }
        })
    };

    let pids: Vec<u32> = processes.iter().map(|p| p.pid).chain([nats_pid]).collect();
    let cpu_before: Vec<u64> = pids.iter().map(|pid| cpu_micros(*pid)).collect();
    let generator_before = cpu_micros(std::process::id());
    let mut rows = Vec::new();
    let mut accepted_total = 0usize;
    for &rate in rates {
        let row = offer(&http, &base, &js, &samples, rate, duration).await?;
        accepted_total += row.1;
        rows.push(row.0);
    }
    let cpu_after: Vec<u64> = pids.iter().map(|pid| cpu_micros(*pid)).collect();
    let generator_cpu_us_per_order =
        cpu_micros(std::process::id()).saturating_sub(generator_before) as f64 / accepted_total.max(1) as f64;
    let names_of = processes.iter().map(|p| p.name).chain(["nats-server"]);
    let services = names_of
        .zip(pids.iter().zip(cpu_before.iter().zip(cpu_after)))
        .map(|(service, (pid, (before, after)))| ServiceUsage {
            service,
            peak_rss_mb: peak_rss_kb(*pid) as f64 / 1024.0,
            cpu_us_per_order: after.saturating_sub(*before) as f64 / accepted_total.max(1) as f64,
        })
        .collect();
    sampler.abort();

    for process in &mut processes {
        let _ = kill(Pid::from_raw(process.pid as i32), Signal::SIGTERM);
    }
    for process in &mut processes {
        if tokio::time::timeout(Duration::from_secs(15), process.child.wait()).await.is_err() {
            let _ = process.child.kill().await;
        }
    }
    Ok(PipelineReport {
        seconds_per_rate: duration.as_secs_f64(),
        generator_cpu_us_per_order,
        rates: rows,
        services,
    })
}

/// Offers `rate` orders/s for `duration`, then waits for the consumers to finish them.
async fn offer(
    http: &reqwest::Client,
    base: &str,
    js: &jetstream::Context,
    samples: &Arc<Mutex<Vec<FloorSample>>>,
    rate: u32,
    duration: Duration,
) -> anyhow::Result<(RateRow, usize)> {
    let url = format!("{base}/orders");
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut calls = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in 0..total {
        ticker.tick().await;
        let (http, url) = (http.clone(), url.clone());
        calls.spawn(async move {
            let body = serde_json::json!({
                "user_id": format!("pipeline-{}", n % 1000),
                "email": format!("pipeline-{}@example.com", n % 1000),
                "items": [{ "sku": format!("PSKU-{}", n % SKUS as u64), "quantity": 1 }],
            });
            let sent = Instant::now();
            let response = http.post(&url).json(&body).send().await.ok()?;
            if response.status().as_u16() != 201 {
                return None;
            }
            let accepted = Instant::now();
            let order: serde_json::Value = response.json().await.ok()?;
            let id = Uuid::parse_str(order["id"].as_str()?).ok()?;
            Some((id, accepted, accepted - sent))
        });
    }
    let mut accepted = HashMap::new();
    let mut latencies = Vec::new();
    let mut failed = 0u64;
    while let Some(result) = calls.join_next().await {
        match result.ok().flatten() {
            Some((id, at, latency)) => {
                accepted.insert(id, at);
                latencies.push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
            }
            None => failed += 1,
        }
    }
    let offered_for = started.elapsed();

    // Every accepted order's created event, acked by all three consumers.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seq_of_order = HashMap::new();
    let done: Vec<u32> = loop {
        created_sequences(js, &mut seq_of_order).await?;
        let finished = finish_times(samples, &seq_of_order, &accepted);
        if finished.len() == accepted.len() || Instant::now() > deadline {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut done = done;
    done.sort_unstable();
    latencies.sort_unstable();
    let row = RateRow {
        offered_per_second: rate,
        accepted: accepted.len(),
        accepted_per_second: accepted.len() as f64 / offered_for.as_secs_f64(),
        failed,
        http_p50_ms: percentile_ms(&latencies, 50.0),
        http_p99_ms: percentile_ms(&latencies, 99.0),
        done: done.len(),
        done_p50_ms: percentile_ms(&done, 50.0),
        done_p99_ms: percentile_ms(&done, 99.0),
        done_max_ms: done.last().map(|us| f64::from(*us) / 1000.0).unwrap_or_default(),
    };
    Ok((row, accepted.len()))
}

/// Adds the stream sequence of every created event not yet known to `seq_of_order`.
async fn created_sequences(
    js: &jetstream::Context,
    seq_of_order: &mut HashMap<Uuid, u64>,
) -> anyhow::Result<()> {
    let stream = js.get_stream(names::ORDERS_STREAM).await?;
    let after = seq_of_order.values().max().copied().unwrap_or(0);
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: "events.orders.created.*".into(),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    while let Some(message) =
        tokio::time::timeout(Duration::from_secs(5), messages.next()).await.ok().flatten()
    {
        let message = message?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(id) = message.subject.rsplit('.').next().and_then(|id| Uuid::parse_str(id).ok()) {
            seq_of_order.insert(id, info.stream_sequence);
        }
        if info.pending == 0 {
            break;
        }
    }
    Ok(())
}

/// Microseconds from acceptance to the first sample at which every consumer's ack floor had
/// reached the order's created event, for every finished order.
fn finish_times(
    samples: &Mutex<Vec<FloorSample>>,
    seq_of_order: &HashMap<Uuid, u64>,
    accepted: &HashMap<Uuid, Instant>,
) -> Vec<u32> {
    let Ok(samples) = samples.lock() else { return Vec::new() };
    accepted
        .iter()
        .filter_map(|(id, at)| {
            let seq = *seq_of_order.get(id)?;
            // Floors only grow: the first sample at or past `seq` is found by bisection.
            let first = samples.partition_point(|sample| sample.floor < seq);
            let sample = samples.get(first)?;
            Some(sample.at.saturating_duration_since(*at).as_micros().min(u128::from(u32::MAX)) as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn an_order_is_done_at_the_first_sample_whose_floor_reaches_it() {
        let start = Instant::now();
        let sample = |ms: u64, floor: u64| FloorSample { at: start + Duration::from_millis(ms), floor };
        let samples = Mutex::new(vec![sample(20, 1), sample(40, 3), sample(60, 3), sample(80, 7)]);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let seq_of_order = HashMap::from([(a, 2), (b, 7), (c, 9)]);
        let accepted = HashMap::from([(a, start), (b, start + Duration::from_millis(10)), (c, start)]);
        let mut done = finish_times(&samples, &seq_of_order, &accepted);
        done.sort_unstable();
        // a at 40 ms, b at 80 - 10 ms, c not yet.
        assert_eq!(done, vec![40_000, 70_000]);
    }
}
