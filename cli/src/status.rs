//! `switchyard status`: services from `$SRV.PING|INFO|STATS`, streams and consumers from
//! JetStream, and the order service's circuit breaker, on one screen (or as JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use contracts::names;
use futures_util::StreamExt;
use serde::Serialize;
use switchyard::micro::{InfoResponse, StatsResponse};

use crate::connect::StackArgs;

/// Flags of `switchyard status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Print JSON for scripts instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Refresh in place until Ctrl-C.
    #[arg(long)]
    pub watch: bool,

    /// Refresh interval with --watch.
    #[arg(long, value_parser = switchyard::config::parse_duration, default_value = "2s")]
    pub interval: Duration,

    /// How long to wait for discovery replies.
    #[arg(long, value_parser = switchyard::config::parse_duration, default_value = "500ms")]
    pub wait: Duration,
}

/// One endpoint, summed over the instances of its service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointReport {
    /// Endpoint name.
    pub name: String,
    /// Subject it answers.
    pub subject: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Average processing time, in microseconds.
    pub average_us: f64,
    /// The last error any instance reported.
    pub last_error: String,
}

/// One micro service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServiceReport {
    /// Service name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Instance ids.
    pub instances: Vec<String>,
    /// Its endpoints.
    pub endpoints: Vec<EndpointReport>,
    /// Extra data the service reports (the order service's breaker), of its first instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Extra data by instance id.
    #[serde(skip)]
    pub data_by_instance: BTreeMap<String, serde_json::Value>,
}

/// One stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Stream name.
    pub name: String,
    /// Messages held.
    pub messages: u64,
    /// Bytes held.
    pub bytes: u64,
    /// First sequence.
    pub first_seq: u64,
    /// Last sequence.
    pub last_seq: u64,
    /// Replicas.
    pub replicas: usize,
}

/// One durable consumer.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerReport {
    /// Stream.
    pub stream: String,
    /// Consumer name.
    pub name: String,
    /// Messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: usize,
    /// Redelivered messages.
    pub redelivered: usize,
    /// Messages acknowledged (the ack floor's consumer sequence).
    pub acked: u64,
    /// Last delivery (RFC 3339), if any.
    pub last_active: Option<String>,
}

/// Everything `status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Micro services by name.
    pub services: Vec<ServiceReport>,
    /// Streams.
    pub streams: Vec<StreamReport>,
    /// Durable consumers.
    pub consumers: Vec<ConsumerReport>,
}

async fn gather(
    client: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> anyhow::Result<Vec<async_nats::Message>> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.context("subscribe for discovery replies")?;
    client
        .publish_with_reply(subject.to_string(), inbox, "".into())
        .await
        .context("publish discovery request")?;
    client.flush().await.context("flush")?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut found = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        found.push(message);
    }
    Ok(found)
}

/// Collects the report.
pub async fn collect(client: &async_nats::Client, wait: Duration) -> anyhow::Result<Report> {
    let mut services: BTreeMap<String, ServiceReport> = BTreeMap::new();
    let infos = gather(client, &names::srv_subject("INFO", None, None), wait).await?;
    let mut subjects = BTreeMap::new();
    for message in infos {
        if let Ok(info) = serde_json::from_slice::<InfoResponse>(&message.payload) {
            for endpoint in info.endpoints {
                subjects.insert((info.name.clone(), endpoint.name), endpoint.subject);
            }
        }
    }
    for message in gather(client, &names::srv_subject("STATS", None, None), wait).await? {
        let Ok(stats) = serde_json::from_slice::<StatsResponse>(&message.payload) else { continue };
        let service = services.entry(stats.name.clone()).or_insert_with(|| ServiceReport {
            name: stats.name.clone(),
            version: stats.version.clone(),
            ..Default::default()
        });
        service.instances.push(stats.id.clone());
        for endpoint in stats.endpoints {
            if service.data.is_none() {
                service.data = endpoint.data.clone();
            }
            if let Some(data) = &endpoint.data {
                service.data_by_instance.entry(stats.id.clone()).or_insert_with(|| data.clone());
            }
            let subject = subjects
                .get(&(stats.name.clone(), endpoint.name.clone()))
                .cloned()
                .unwrap_or(endpoint.subject);
            let report = match service.endpoints.iter_mut().find(|e| e.name == endpoint.name) {
                Some(report) => report,
                None => {
                    service.endpoints.push(EndpointReport {
                        name: endpoint.name.clone(),
                        subject,
                        ..Default::default()
                    });
                    service.endpoints.last_mut().expect("just pushed")
                }
            };
            let total_us =
                report.average_us * report.requests as f64 + endpoint.processing_time as f64 / 1000.0;
            report.requests += endpoint.num_requests;
            report.errors += endpoint.num_errors;
            report.average_us = if report.requests == 0 { 0.0 } else { total_us / report.requests as f64 };
            if !endpoint.last_error.is_empty() {
                report.last_error = endpoint.last_error;
            }
        }
    }
    for service in services.values_mut() {
        service.instances.sort();
        service.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    }

    let js = async_nats::jetstream::new(client.clone());
    let mut streams = Vec::new();
    let mut consumers = Vec::new();
    for name in [names::ORDERS_STREAM, names::TIMERS_STREAM, names::DLQ_STREAM, names::REPLAY_STREAM] {
        let Ok(mut stream) = js.get_stream(name).await else { continue };
        let info = stream.info().await.context("stream info")?.clone();
        streams.push(StreamReport {
            name: name.into(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_seq: info.state.first_sequence,
            last_seq: info.state.last_sequence,
            replicas: info.config.num_replicas,
        });
        let mut names = stream.consumer_names();
        let mut found = Vec::new();
        while let Some(Ok(consumer)) = names.next().await {
            found.push(consumer);
        }
        found.sort();
        for consumer in found {
            let Ok(info) = stream.consumer_info(&consumer).await else { continue };
            if info.config.durable_name.is_none() {
                continue;
            }
            consumers.push(ConsumerReport {
                stream: name.into(),
                name: info.name.clone(),
                pending: info.num_pending,
                ack_pending: info.num_ack_pending,
                redelivered: info.num_redelivered,
                acked: info.ack_floor.consumer_sequence,
                last_active: info
                    .delivered
                    .last_active
                    .or(info.ack_floor.last_active)
                    .map(switchyard::time::format_rfc3339),
            });
        }
    }
    Ok(Report { services: services.into_values().collect(), streams, consumers })
}

impl Report {
    /// Whether a Switchyard stack answered: a micro service, or the `ORDERS` stream.
    pub fn is_stack(&self) -> bool {
        !self.services.is_empty() || self.streams.iter().any(|s| s.name == names::ORDERS_STREAM)
    }

    /// The report as text tables.
    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str("SERVICES\n");
        out.push_str(&format!(
            "{:<11} {:<8} {:>9}  {:<20} {:>9} {:>7} {:>10}  {}\n",
            "service", "version", "instances", "endpoint", "requests", "errors", "avg", "last error"
        ));
        for service in &self.services {
            if service.endpoints.is_empty() {
                out.push_str(&format!(
                    "{:<11} {:<8} {:>9}  (no endpoints)\n",
                    service.name,
                    service.version,
                    service.instances.len()
                ));
            }
            for (i, endpoint) in service.endpoints.iter().enumerate() {
                let (name, version, instances) = if i == 0 {
                    (service.name.as_str(), service.version.as_str(), service.instances.len().to_string())
                } else {
                    ("", "", String::new())
                };
                out.push_str(&format!(
                    "{name:<11} {version:<8} {instances:>9}  {:<20} {:>9} {:>7} {:>8.0}us  {}\n",
                    endpoint.subject,
                    endpoint.requests,
                    endpoint.errors,
                    endpoint.average_us,
                    endpoint.last_error
                ));
            }
            if let Some(breaker) = service.data.as_ref().and_then(|d| d.get("breaker")) {
                out.push_str(&format!(
                    "{:<11} breaker {} is {}{} (opened {} times; window: {} ok, {} failed, {} timed out, {} rejected)\n",
                    "",
                    breaker["name"].as_str().unwrap_or("?"),
                    breaker["state"].as_str().unwrap_or("?"),
                    if breaker["shared"] == true {
                        format!(", shared ({} updates from other instances)", breaker["peer_updates"])
                    } else {
                        String::new()
                    },
                    breaker["opened"],
                    breaker["window"]["successes"],
                    breaker["window"]["failures"],
                    breaker["window"]["timeouts"],
                    breaker["window"]["rejects"],
                ));
            }
            if let Some(tally) =
                service.data.as_ref().and_then(|d| d.get("orders")).and_then(|t| t.as_object())
            {
                let counts: Vec<String> = tally
                    .iter()
                    .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
                    .map(|(outcome, count)| format!("{count} {outcome}"))
                    .collect();
                if !counts.is_empty() {
                    out.push_str(&format!("{:<11} orders: {}\n", "", counts.join(", ")));
                }
            }
            if let Some(retry) = service.data.as_ref().and_then(|d| d.get("retry")).filter(|r| r.is_object())
            {
                out.push_str(&format!(
                    "{:<11} retries: {} of {} calls ({} recovered); refused {} by the budget, {} by the deadline; budget {:.0}\n",
                    "",
                    retry["retries"],
                    retry["calls"],
                    retry["recovered"],
                    retry["budget_exhausted"],
                    retry["deadline"],
                    retry["budget_tokens"].as_f64().unwrap_or(0.0),
                ));
            }
        }
        if self.services.is_empty() {
            out.push_str("(no micro service answered $SRV.STATS)\n");
        }
        out.push_str("\nSTREAMS\n");
        out.push_str(&format!(
            "{:<8} {:>10} {:>12} {:>10} {:>10} {:>8}\n",
            "stream", "messages", "bytes", "first seq", "last seq", "replicas"
        ));
        for stream in &self.streams {
            out.push_str(&format!(
                "{:<8} {:>10} {:>12} {:>10} {:>10} {:>8}\n",
                stream.name,
                stream.messages,
                stream.bytes,
                stream.first_seq,
                stream.last_seq,
                stream.replicas
            ));
        }
        out.push_str("\nCONSUMERS\n");
        out.push_str(&format!(
            "{:<8} {:<16} {:>9} {:>11} {:>11} {:>9}  {}\n",
            "stream", "consumer", "pending", "ack pending", "redelivered", "acked", "last active"
        ));
        for consumer in &self.consumers {
            out.push_str(&format!(
                "{:<8} {:<16} {:>9} {:>11} {:>11} {:>9}  {}\n",
                consumer.stream,
                consumer.name,
                consumer.pending,
                consumer.ack_pending,
                consumer.redelivered,
                consumer.acked,
                consumer.last_active.as_deref().unwrap_or("never")
            ));
        }
        out
    }
}

/// Runs `status`.
pub async fn run(args: &StatusArgs) -> anyhow::Result<()> {
    // One listener for the whole watch: a Ctrl-C during a refresh ends it after that refresh.
    let mut signals = if args.watch { Some(crate::signals::Signals::listen()?) } else { None };
    let client = args.stack.connect("status").await?;
    loop {
        let report = collect(&client, args.wait).await?;
        let found = report.is_stack();
        if !found && !args.watch {
            switchyard::nats::drain(&client, Duration::from_secs(2)).await;
            return Err(args.stack.no_stack_error());
        }
        if args.watch && !args.json {
            // Clear the screen and draw the report in place.
            print!("\x1b[2J\x1b[H");
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.text());
            if !found {
                println!("\n{:#}", args.stack.no_stack_error());
            }
        }
        let Some(signals) = signals.as_mut() else { break };
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = signals.recv() => break,
        }
    }
    switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    Ok(())
}
