use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use contracts::names;
use switchyard::consumer::{Apply, ApplyFuture, Consumer, ConsumerSpec, Delivery, HandleError, handler};
use switchyard::testkit::{TestDatabase, eventually};
use switchyard::{Shutdown, dlq, inbox};
use uuid::Uuid;

use crate::helpers::nats_with_streams;

fn spec(durable: &str) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(names::ORDERS_STREAM, durable, vec!["events.orders.created.*".into()]);
    spec.max_deliver = 3;
    spec.ack_wait = Duration::from_secs(2);
    spec.retry_backoff = vec![Duration::from_millis(50), Duration::from_millis(100)];
    spec
}

async fn publish(js: &jetstream::Context, order: Uuid, body: serde_json::Value) {
    js.publish(names::order_event_subject("created", &order), body.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

fn event(order: Uuid) -> serde_json::Value {
    serde_json::json!({ "event_id": Uuid::new_v4(), "order_id": order })
}

#[tokio::test]
async fn a_transient_failure_is_retried_with_backoff_and_then_succeeds() {
    let (_nats, _client, js) = nats_with_streams().await;
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = attempts.clone();
    let mut flaky = spec("flaky");
    flaky.max_deliver = 10;
    let consumer = Consumer::new(
        js.clone(),
        flaky,
        handler(move |delivery| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if delivery.delivered < 6 {
                    Err(HandleError::Transient("database busy".into()))
                } else {
                    Ok(())
                }
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    publish(&js, Uuid::new_v4(), event(Uuid::new_v4())).await;
    eventually(Duration::from_secs(10), "the third delivery to succeed", || async {
        stats.acked.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 5);
    assert_eq!(stats.dead_lettered.load(Ordering::SeqCst), 0);
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}

#[tokio::test]
async fn poison_is_dead_lettered_at_once_and_a_failing_message_after_max_deliver_then_replayed() {
    let (_nats, _client, js) = nats_with_streams().await;
    let failing = Arc::new(Mutex::new(true));
    let handled = Arc::new(Mutex::new(Vec::<Uuid>::new()));
    let (fail_flag, record) = (failing.clone(), handled.clone());
    let consumer = Consumer::new(
        js.clone(),
        spec("strict"),
        handler(move |delivery| {
            let (fail_flag, record) = (fail_flag.clone(), record.clone());
            async move {
                let body: serde_json::Value = delivery.json()?;
                let order: Uuid = serde_json::from_value(body["order_id"].clone())
                    .map_err(|e| HandleError::Poison(e.to_string()))?;
                if body["fail"] == true && *fail_flag.lock().unwrap() {
                    return Err(HandleError::Transient("downstream is failing".into()));
                }
                record.lock().unwrap().push(order);
                Ok(())
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    // Invalid JSON: dead-lettered on the first delivery, and the consumer keeps going.
    js.publish("events.orders.created.x", "{not json".into()).await.unwrap().await.unwrap();
    let good = Uuid::new_v4();
    publish(&js, good, event(good)).await;
    let stubborn = Uuid::new_v4();
    publish(
        &js,
        stubborn,
        serde_json::json!({ "event_id": Uuid::new_v4(), "order_id": stubborn, "fail": true }),
    )
    .await;

    eventually(Duration::from_secs(15), "two dead letters", || async {
        stats.dead_lettered.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(handled.lock().unwrap().as_slice(), &[good]);

    let letters = dlq::list(&js, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    let poison = &letters[0];
    assert_eq!(poison.subject, "dlq.ORDERS.strict");
    assert_eq!((poison.reason.as_str(), poison.deliveries), ("poison", 1));
    assert_eq!(poison.origin_subject, "events.orders.created.x");
    assert!(poison.error.contains("undecodable payload"), "{}", poison.error);
    assert_eq!(poison.payload, "{not json");
    let exhausted = &letters[1];
    assert_eq!((exhausted.reason.as_str(), exhausted.deliveries), ("max_deliver", 3));
    assert_eq!(
        exhausted.error,
        "transient failure: downstream is failing".replace("transient failure: ", "")
    );
    assert_eq!(dlq::show(&js, exhausted.seq).await.unwrap(), *exhausted);

    // Once downstream is well again, replaying the dead letter gets it processed.
    *failing.lock().unwrap() = false;
    dlq::replay(&js, exhausted.seq).await.unwrap();
    eventually(Duration::from_secs(10), "the replayed event to be handled", || async {
        handled.lock().unwrap().contains(&stubborn)
    })
    .await;
    assert_eq!(dlq::list(&js, 10).await.unwrap().len(), 1, "the replayed letter left the DLQ");
    assert!(matches!(dlq::show(&js, exhausted.seq).await, Err(dlq::DlqError::NotFound(_))));
    assert_eq!(dlq::purge(&js).await.unwrap(), 1);
    assert!(dlq::list(&js, 10).await.unwrap().is_empty());
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}

#[tokio::test]
async fn each_orders_events_are_handled_in_stream_order_while_orders_run_concurrently() {
    let (_nats, _client, js) = nats_with_streams().await;
    let orders: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for round in 0..10 {
        for order in &orders {
            publish(
                &js,
                *order,
                serde_json::json!({ "event_id": Uuid::new_v4(), "order_id": order, "n": round }),
            )
            .await;
        }
    }
    let seen: Arc<Mutex<HashMap<Uuid, Vec<u64>>>> = Arc::default();
    let in_flight = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (record, now, max) = (seen.clone(), in_flight.clone(), peak.clone());
    let mut spec = spec("ordered");
    spec.concurrency = 8;
    let consumer = Consumer::new(
        js.clone(),
        spec,
        handler(move |delivery| {
            let (record, now, max) = (record.clone(), now.clone(), max.clone());
            async move {
                let body: serde_json::Value = delivery.json()?;
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                let order: Uuid = serde_json::from_value(body["order_id"].clone()).unwrap();
                record.lock().unwrap().entry(order).or_default().push(body["n"].as_u64().unwrap());
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    eventually(Duration::from_secs(15), "80 events handled", || async {
        stats.acked.load(Ordering::SeqCst) == 80
    })
    .await;
    for (order, sequence) in seen.lock().unwrap().iter() {
        assert_eq!(sequence, &(0..10).collect::<Vec<u64>>(), "order {order} out of order");
    }
    assert!(peak.load(Ordering::SeqCst) > 1, "orders ran concurrently");
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}

#[tokio::test]
async fn stopping_finishes_and_acks_the_message_in_flight() {
    let (_nats, _client, js) = nats_with_streams().await;
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    let consumer = Consumer::new(
        js.clone(),
        spec("slow"),
        handler(move |_delivery| {
            let signal = signal.clone();
            async move {
                signal.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    publish(&js, Uuid::new_v4(), event(Uuid::new_v4())).await;
    started.notified().await;
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
    assert_eq!(stats.acked.load(Ordering::SeqCst), 1, "the in-flight message finished and was acked");
    let mut stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
    let info = stream.consumer_info("slow").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    let _ = stream.info().await;
}

#[tokio::test]
async fn instances_sharing_a_durable_split_the_messages() {
    let (_nats, _client, js) = nats_with_streams().await;
    for _ in 0..200 {
        let order = Uuid::new_v4();
        publish(&js, order, event(order)).await;
    }
    let shutdown = Shutdown::new();
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut spec = spec("shared");
        spec.batch = 10;
        let consumer = Consumer::new(
            js.clone(),
            spec,
            handler(|_delivery| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(())
            }),
        );
        stats.push(consumer.stats());
        tasks.push(tokio::spawn(consumer.run(shutdown.clone())));
    }
    eventually(Duration::from_secs(20), "200 messages handled", || async {
        stats.iter().map(|s| s.acked.load(Ordering::SeqCst)).sum::<u64>() == 200
    })
    .await;
    let split: Vec<u64> = stats.iter().map(|s| s.acked.load(Ordering::SeqCst)).collect();
    assert!(split.iter().all(|n| *n > 0), "both instances handled messages: {split:?}");
    shutdown.trigger();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_handler_that_outlasts_ack_wait_keeps_its_message_through_progress_acks() {
    let (_nats, _client, js) = nats_with_streams().await;
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = attempts.clone();
    let mut slow = spec("long");
    slow.ack_wait = Duration::from_secs(1);
    let consumer = Consumer::new(
        js.clone(),
        slow,
        handler(move |_delivery| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                // Three times ack_wait: without in-progress acks the server would redeliver.
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(())
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    publish(&js, Uuid::new_v4(), event(Uuid::new_v4())).await;
    eventually(Duration::from_secs(15), "the slow message to be acked", || async {
        stats.acked.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the message was never redelivered under its handler");
    let stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
    assert_eq!(stream.consumer_info("long").await.unwrap().num_redelivered, 0);
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}

/// Records each event id in the inbox; `"poison": true` can never succeed, `"flaky": true` fails
/// once.
struct Ledger {
    flaky_failed: AtomicU64,
    commits_seen: AtomicU64,
    /// The size of every multi-event transaction whose events all applied.
    batches: Arc<Mutex<Vec<usize>>>,
}

impl Apply for Ledger {
    fn apply<'a>(&'a self, tx: &'a mut sqlx::AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(async move {
            let body: serde_json::Value = delivery.json()?;
            if body["poison"] == true {
                return Err(HandleError::Poison("this event can never be applied".into()));
            }
            if body["flaky"] == true && self.flaky_failed.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(HandleError::Transient("lock timeout".into()));
            }
            let id = body["event_id"].as_str().unwrap_or_default().to_string();
            // A second insert of the same id would be a missed rollback: fail loudly.
            if !inbox::record(tx, "ledger", &id).await? {
                return Err(HandleError::Poison(format!("{id} applied twice")));
            }
            Ok(())
        })
    }

    fn apply_all<'a>(
        &'a self,
        tx: &'a mut sqlx::AnyConnection,
        deliveries: &'a [&'a Delivery],
    ) -> ApplyFuture<'a> {
        Box::pin(async move {
            for delivery in deliveries {
                self.apply(tx, delivery).await?;
            }
            self.batches.lock().unwrap().push(deliveries.len());
            Ok(())
        })
    }

    fn committed(&self) {
        self.commits_seen.fetch_add(1, Ordering::SeqCst);
    }
}

async fn group_commit_applies_a_backlog_in_few_transactions_and_isolates_bad_events(test_db: TestDatabase) {
    let (_nats, _client, js) = nats_with_streams().await;
    let db = crate::helpers::db(&test_db).await;
    // A backlog first, so deliveries wait for the lanes and batches form.
    let mut poison_order = None;
    for n in 0..300 {
        let order = Uuid::new_v4();
        let mut body = event(order);
        if n == 150 {
            body["poison"] = true.into();
            poison_order = Some(order);
        }
        if n == 151 {
            body["flaky"] = true.into();
        }
        publish(&js, order, body).await;
    }
    let mut ledger_spec = spec("ledger");
    ledger_spec.concurrency = 2;
    ledger_spec.max_batch = 64;
    let batches = Arc::new(Mutex::new(Vec::new()));
    let ledger =
        Ledger { flaky_failed: AtomicU64::new(0), commits_seen: AtomicU64::new(0), batches: batches.clone() };
    let consumer = Consumer::batched(js.clone(), ledger_spec, db.clone(), ledger);
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    eventually(Duration::from_secs(20), "299 events applied and one dead-lettered", || async {
        stats.acked.load(Ordering::SeqCst) == 299 && stats.dead_lettered.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(inbox::count(db.pool(), "ledger").await.unwrap(), 299, "each event applied once");
    // Batches formed: every event not caught in one of the (at most two) batches that the poison
    // and the flaky event rolled back, at most 64 events each, was applied in a multi-event
    // transaction, but for a lane that found a single event waiting as the backlog started or
    // ran out (at most two per lane), and those transactions averaged at least 8 events. Applied
    // one per transaction, none of this holds.
    let commits = stats.commits.load(Ordering::SeqCst);
    let batches = batches.lock().unwrap().clone();
    let batched: usize = batches.iter().sum();
    println!("group commit: 299 events in {commits} commits; multi-event batches {batches:?}");
    assert!(batched >= 299 - 2 * 64 - 2 * 2, "most events were applied in batches ({batched} of 299)");
    assert!(batched >= 8 * batches.len(), "batches averaged 8 events or more: {batches:?}");
    assert_eq!(commits as usize, batches.len() + (299 - batched), "one commit per batch or single event");
    // The flaky event's one failure rolls its batch back; applied again on its own it either
    // succeeds at once or, when it was alone, is retried after a NAK: at most one retry.
    assert!(stats.retried.load(Ordering::SeqCst) <= 1, "only the flaky event may be retried");
    let letters = dlq::list(&js, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "poison");
    assert_eq!(letters[0].origin_subject, names::order_event_subject("created", &poison_order.unwrap()));
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}

#[tokio::test]
async fn group_commit_on_sqlite() {
    group_commit_applies_a_backlog_in_few_transactions_and_isolates_bad_events(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn group_commit_on_postgres() {
    group_commit_applies_a_backlog_in_few_transactions_and_isolates_bad_events(
        TestDatabase::postgres().await,
    )
    .await;
}

#[tokio::test]
async fn stopping_naks_every_message_queued_but_not_started_so_it_comes_back_at_once() {
    let (_nats, _client, js) = nats_with_streams().await;
    // One lane, a long ack wait: a message that was not returned would come back only after it.
    let mut queued = spec("queued");
    queued.concurrency = 1;
    queued.ack_wait = Duration::from_secs(120);
    let started = Arc::new(tokio::sync::Notify::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (signal, hold) = (started.clone(), gate.clone());
    let consumer = Consumer::new(
        js.clone(),
        queued.clone(),
        handler(move |_delivery| {
            let (signal, hold) = (signal.clone(), hold.clone());
            async move {
                signal.notify_one();
                hold.acquire().await.expect("gate").forget();
                Ok(())
            }
        }),
    );
    let stats = consumer.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    // Ten events of one order: the first is handled, nine wait on its lane.
    let order = Uuid::new_v4();
    for _ in 0..10 {
        publish(&js, order, event(order)).await;
    }
    started.notified().await;
    eventually(Duration::from_secs(30), "all ten delivered to this instance", || async {
        let stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
        stream.consumer_info("queued").await.map(|i| i.num_ack_pending == 10).unwrap_or(false)
    })
    .await;
    shutdown.trigger();
    gate.add_permits(100);
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
    assert_eq!(stats.acked.load(Ordering::SeqCst), 1, "the message in hand finished and was acked");
    assert_eq!(stats.returned.load(Ordering::SeqCst), 9, "the nine queued ones were handed back");

    // Another instance gets them at once, long before the ack wait would have returned them.
    let again = Consumer::new(js.clone(), queued, handler(|_delivery| async { Ok(()) }));
    let again_stats = again.stats();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(again.run(shutdown.clone()));
    eventually(Duration::from_secs(30), "the nine returned messages handled", || async {
        again_stats.acked.load(Ordering::SeqCst) == 9
    })
    .await;
    shutdown.trigger();
    switchyard::testkit::joined(running, "the consumer to stop").await.unwrap();
}
