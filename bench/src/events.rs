//! The asynchronous path, measured on a backlog: the outbox relay's publish rate, then each
//! consumer (the real inventory, email and audit services, in this process) working off the same
//! created events, with group commit and, for audit, one transaction per event as the baseline.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use contracts::names;
use contracts::{Item, OrderCreated, ReserveRequest, RestockRequest};
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use switchyard::Shutdown;
use switchyard::db::{Db, sqlite_path};
use switchyard::outbox::{OutboxEvent, Relay, RelayConfig, new_traceparent};
use switchyard::testkit::{NatsServer, TestDatabase, temp_dir};
use uuid::Uuid;

/// How fast one consumer applied the backlog.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerRate {
    /// The durable consumer (`inventory`, `email`, `audit`).
    pub consumer: &'static str,
    /// `--consumer-max-batch` it ran with (1: one transaction per event).
    pub max_batch: u16,
    /// Events applied (counted in the service's own tables afterwards).
    pub applied: u64,
    /// Events applied and acked per second.
    pub events_per_second: f64,
}

/// The asynchronous path's rates.
#[derive(Debug, Clone, Serialize)]
pub struct EventsReport {
    /// Events in the backlog.
    pub events: usize,
    /// Outbox relay: events published (and acked by JetStream) per second.
    pub relay_events_per_second: f64,
    /// Baseline: the same events published straight to JetStream (no database), 512 acks in
    /// flight, per second.
    pub jetstream_publish_per_second: f64,
    /// Baseline: one durable pull consumer acking every event without doing anything, per second.
    pub jetstream_consume_per_second: f64,
    /// Each consumer's rate on the backlog.
    pub consumers: Vec<ConsumerRate>,
}

const SKUS: usize = 100;

fn created(order_id: Uuid, n: usize) -> OrderCreated {
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id,
        user_id: format!("bench-{}", n % 97),
        email: Some(format!("bench-{}@example.com", n % 97)),
        items: vec![Item { sku: format!("ESKU-{}", n % SKUS), quantity: 1 }],
        created_at: switchyard::time::now_rfc3339(),
    }
}

/// Publishes `events` order-created events through the relay, then lets each consumer work the
/// backlog off.
pub async fn run(events: usize) -> anyhow::Result<EventsReport> {
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    switchyard::streams::ensure_streams(
        &js,
        contracts::streams::ALL,
        &switchyard::streams::StreamSettings::default(),
    )
    .await?;

    // The inventory holds a reservation for every order, as after POST /orders.
    let inventory_file = TestDatabase::sqlite();
    let inventory_db = Db::connect(inventory_file.url(), &inventory_service::MIGRATIONS).await?;
    let inventory = inventory_service::Inventory::new(inventory_db.clone(), Duration::from_secs(3600));
    for i in 0..SKUS {
        inventory.restock(&RestockRequest { sku: format!("ESKU-{i}"), quantity: 1_000_000 }).await?;
    }
    let orders: Vec<OrderCreated> = (0..events).map(|n| created(Uuid::new_v4(), n)).collect();
    futures_util::stream::iter(orders.iter().map(|order| {
        let inventory = inventory.clone();
        let request = ReserveRequest { order_id: order.order_id, items: order.items.clone() };
        async move {
            match inventory.reserve(&request).await {
                Ok(reply) if reply.reserved => Ok(()),
                Ok(_) => Err(anyhow::anyhow!("a bench reservation was refused")),
                Err(err) => Err(anyhow::Error::new(err).context("bench reservation")),
            }
        }
    }))
    .buffer_unordered(32)
    .try_collect::<()>()
    .await?;
    inventory_db.close().await;

    // The order-service's outbox holds their created events.
    let outbox_file = TestDatabase::sqlite();
    let outbox_db = Db::connect(outbox_file.url(), &order_service::MIGRATIONS).await?;
    for chunk in orders.chunks(1000) {
        let mut tx = outbox_db.begin_write().await?;
        for order in chunk {
            let subject = names::order_event_subject(names::order_event::CREATED, &order.order_id);
            let event = OutboxEvent::new(order.event_id, subject, order, new_traceparent())?;
            switchyard::outbox::enqueue(&mut tx, &event).await?;
        }
        tx.commit().await?;
    }
    let relay = Relay::new(outbox_db.clone(), js.clone(), "bench", RelayConfig::default());
    let started = Instant::now();
    let mut published = 0;
    while published < events {
        let n = relay.publish_pending().await.context("relay round")?;
        if n == 0 {
            break;
        }
        published += n;
    }
    let relay_events_per_second = published as f64 / started.elapsed().as_secs_f64();
    if published != events {
        bail!("the relay published {published} of {events} events");
    }
    outbox_db.close().await;
    let (jetstream_publish_per_second, jetstream_consume_per_second) = baselines(&js, &orders).await?;

    // A second inventory with the same reservations, for the second inventory run.
    let inventory_copy = TestDatabase::sqlite();
    let (from, to) = (sqlite_path(inventory_file.url()), sqlite_path(inventory_copy.url()));
    std::fs::copy(from.context("inventory file")?, to.context("inventory copy")?)
        .context("copy the inventory database")?;

    let mut consumers = Vec::new();
    let runs = [
        ("audit", 1u16, inventory_file.url()),
        ("audit", 64, inventory_file.url()),
        ("inventory", 1, inventory_file.url()),
        ("inventory", 64, inventory_copy.url()),
        ("email", 1, inventory_file.url()),
        ("email", 64, inventory_file.url()),
    ];
    for (consumer, max_batch, inventory_url) in runs {
        consumers.push(consume(&nats, &js, consumer, max_batch, events, inventory_url).await?);
    }
    Ok(EventsReport {
        events,
        relay_events_per_second,
        jetstream_publish_per_second,
        jetstream_consume_per_second,
        consumers,
    })
}

/// The broker's own rates on this machine, in this run: the same events published straight to a
/// stream of their own, then consumed by a durable consumer that only acks.
async fn baselines(
    js: &async_nats::jetstream::Context,
    orders: &[OrderCreated],
) -> anyhow::Result<(f64, f64)> {
    use async_nats::jetstream::{consumer::pull, stream};
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.events.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let payloads: Vec<(String, bytes::Bytes, String)> = orders
        .iter()
        .map(|order| {
            let subject = format!("bench.events.created.{}", order.order_id);
            (subject, serde_json::to_vec(order).unwrap_or_default().into(), order.event_id.to_string())
        })
        .collect();
    let started = Instant::now();
    for window in payloads.chunks(512) {
        let mut acks = Vec::with_capacity(window.len());
        for (subject, payload, id) in window {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            headers.insert(switchyard::outbox::TRACEPARENT, new_traceparent().as_str());
            acks.push(js.publish_with_headers(subject.clone(), headers, payload.clone()).await?);
        }
        for ack in futures_util::future::join_all(acks.into_iter().map(|ack| ack.into_future())).await {
            ack?;
        }
    }
    let publish_rate = payloads.len() as f64 / started.elapsed().as_secs_f64();

    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 4096,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(128).messages().await?;
    let mut acked = 0;
    while acked < payloads.len() {
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next()).await;
        let message = next.ok().flatten().context("the baseline consumer stalled")?;
        message.map_err(|e| anyhow::anyhow!("{e}"))?.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        acked += 1;
    }
    let consume_rate = acked as f64 / started.elapsed().as_secs_f64();
    js.delete_stream("BENCH").await?;
    Ok((publish_rate, consume_rate))
}

/// Runs one service's consumer on the backlog until it has acked every event; returns its rate.
async fn consume(
    nats: &NatsServer,
    js: &async_nats::jetstream::Context,
    consumer: &'static str,
    max_batch: u16,
    events: usize,
    inventory_url: &str,
) -> anyhow::Result<ConsumerRate> {
    // A consumer that ran before (the baseline) starts over from the first event.
    let _ = js.delete_consumer_from_stream(consumer, names::ORDERS_STREAM).await;
    let own_db = TestDatabase::sqlite();
    let data_dir = temp_dir();
    let database_url = if consumer == "inventory" { inventory_url } else { own_db.url() };
    let batch = max_batch.to_string();
    let url = nats.url();
    let data = data_dir.path().to_string_lossy().to_string();
    let args = [
        consumer,
        "--nats-url",
        &url,
        "--database-url",
        database_url,
        "--data-dir",
        &data,
        "--consumer-max-batch",
        &batch,
    ];
    let shutdown = Shutdown::new();
    let (started, task, count_sql) = match consumer {
        "audit" => {
            let app = audit_service::App::build(audit_service::Config::parse_from(args)).await?;
            (
                Instant::now(),
                tokio::spawn(app.run_until_stopped(shutdown.clone())),
                "SELECT COUNT(*) FROM audit_events",
            )
        }
        "inventory" => {
            let app = inventory_service::App::build(inventory_service::Config::parse_from(args)).await?;
            (
                Instant::now(),
                tokio::spawn(app.run_until_stopped(shutdown.clone())),
                "SELECT COUNT(*) FROM inbox",
            )
        }
        _ => {
            let app = email_service::App::build(email_service::Config::parse_from(args)).await?;
            (
                Instant::now(),
                tokio::spawn(app.run_until_stopped(shutdown.clone())),
                "SELECT COUNT(*) FROM emails",
            )
        }
    };
    let durable = js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
        consumer,
        names::ORDERS_STREAM,
    );
    let mut durable = durable.await.with_context(|| format!("consumer {consumer}"))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let elapsed = loop {
        let info = durable.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0 {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            bail!("consumer {consumer} did not finish the backlog in time");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    shutdown.trigger();
    let _ = task.await;
    let applied = switchyard::testkit::try_count(database_url, count_sql).await? as u64;
    if applied != events as u64 {
        bail!("consumer {consumer} applied {applied} of {events} events");
    }
    Ok(ConsumerRate {
        consumer,
        max_batch,
        applied,
        events_per_second: applied as f64 / elapsed.as_secs_f64(),
    })
}
