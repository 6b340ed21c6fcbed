use std::collections::HashSet;
use std::time::Duration;

use contracts::names;
use futures_util::StreamExt;
use switchyard::Shutdown;
use switchyard::outbox::{self, OutboxEvent, Relay, RelayConfig, new_traceparent};
use switchyard::testkit::{TestDatabase, eventually};
use uuid::Uuid;

use crate::helpers::{db, messages_in, nats_with_streams};

/// Publishes rounds until one finds nothing to claim; returns how many it published.
async fn publish_all(relay: &Relay) -> usize {
    let mut total = 0;
    loop {
        let published = relay.publish_pending().await.expect("the relay publishes");
        if published == 0 {
            return total;
        }
        total += published;
    }
}

async fn write_events(db: &switchyard::Db, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let order_id = Uuid::new_v4();
        let event_id = Uuid::new_v4();
        let event = OutboxEvent::new(
            event_id,
            names::order_event_subject("created", &order_id),
            &serde_json::json!({ "event_id": event_id, "order_id": order_id }),
            new_traceparent(),
        )
        .unwrap();
        let mut tx = db.begin_write().await.unwrap();
        outbox::enqueue(&mut tx, &event).await.unwrap();
        tx.commit().await.unwrap();
        ids.push(event_id);
    }
    ids
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_nats_is_down_and_all_go_out_once_when_it_returns() {
    let (mut nats, client, js) = nats_with_streams().await;
    let test_db = TestDatabase::sqlite();
    let db = db(&test_db).await;
    let relay = Relay::new(db.clone(), js.clone(), "relay-1", RelayConfig::default());
    let shutdown = Shutdown::new();
    let running = tokio::spawn(relay.clone().run(shutdown.clone()));

    nats.kill();
    eventually(Duration::from_secs(30), "the client to notice NATS is gone", || async {
        client.connection_state() != async_nats::connection::State::Connected
    })
    .await;
    let ids = write_events(&db, 50).await;
    relay.waker().wake();
    // Nothing can go out; everything waits in the table. A round tried now (beside the running
    // loop) claims nothing while the connection is down.
    let round = relay.publish_pending().await;
    assert!(matches!(round, Ok(0) | Err(_)), "{round:?}");
    assert_eq!(outbox::pending(&db).await.unwrap(), 50);
    let claimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE attempts > 0")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(claimed, 0, "no row was claimed while NATS was down");

    nats.restart();
    eventually(Duration::from_secs(30), "the outbox to drain after nats returns", || async {
        outbox::pending(&db).await.unwrap() == 0
    })
    .await;
    assert_eq!(messages_in(&js, names::ORDERS_STREAM).await, 50, "none lost, none doubled");

    // Every event id arrived exactly once, as the Nats-Msg-Id, with a trace context.
    let stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
    let mut seen = HashSet::new();
    for seq in 1..=50 {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().as_str().to_string();
        assert!(message.headers.get("traceparent").is_some());
        assert!(seen.insert(id));
    }
    let expected: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    assert_eq!(seen, expected);
    shutdown.trigger();
    switchyard::testkit::joined(running, "the relay to stop").await;
}

#[tokio::test]
async fn a_crash_between_publish_and_mark_is_deduplicated_by_the_stream() {
    let (_nats, _client, js) = nats_with_streams().await;
    let test_db = TestDatabase::sqlite();
    let db = db(&test_db).await;
    write_events(&db, 20).await;
    let relay = Relay::new(db.clone(), js.clone(), "relay-1", RelayConfig::default());
    assert_eq!(relay.publish_pending().await.unwrap(), 20);
    assert_eq!(messages_in(&js, names::ORDERS_STREAM).await, 20);

    // As if the process died after the acks but before the rows were marked: all pending again.
    sqlx::query("UPDATE outbox SET sent_at_ms = NULL, stream_seq = NULL").execute(db.pool()).await.unwrap();
    let restarted = Relay::new(db.clone(), js.clone(), "relay-after-restart", RelayConfig::default());
    assert_eq!(restarted.publish_pending().await.unwrap(), 20);
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
    assert_eq!(messages_in(&js, names::ORDERS_STREAM).await, 20, "the duplicate window dropped every repeat");
}

async fn two_relays_share_one_table_without_doubles(test_db: TestDatabase) {
    let (_nats, client, js) = nats_with_streams().await;
    let db = db(&test_db).await;
    write_events(&db, 300).await;
    let mut created = client.subscribe("events.orders.created.*").await.unwrap();
    let config = RelayConfig { batch_size: 25, ..RelayConfig::default() };
    let a = Relay::new(db.clone(), js.clone(), "relay-a", config.clone());
    let b = Relay::new(db.clone(), js.clone(), "relay-b", config);
    let (ra, rb) = tokio::join!(publish_all(&a), publish_all(&b));
    assert_eq!(ra + rb, 300, "every row published by exactly one relay (a: {ra}, b: {rb})");
    assert_eq!(outbox::sent(&db).await.unwrap(), 300);
    // Not even a publish was repeated: the core subscription saw each message once.
    let mut ids = HashSet::new();
    for _ in 0..300 {
        let message = tokio::time::timeout(Duration::from_secs(5), created.next()).await.unwrap().unwrap();
        assert!(ids.insert(message.headers.unwrap().get("Nats-Msg-Id").unwrap().as_str().to_string()));
    }
    assert_eq!(messages_in(&js, names::ORDERS_STREAM).await, 300);
}

#[tokio::test]
async fn two_relays_share_one_sqlite_outbox_without_doubles() {
    two_relays_share_one_table_without_doubles(TestDatabase::sqlite()).await;
}

#[tokio::test]
async fn two_relays_share_one_postgres_outbox_without_doubles() {
    two_relays_share_one_table_without_doubles(TestDatabase::postgres().await).await;
}

#[tokio::test]
async fn the_inbox_records_an_event_once_on_postgres_and_sqlite() {
    for test_db in [TestDatabase::sqlite(), TestDatabase::postgres().await] {
        let db = db(&test_db).await;
        let event = Uuid::new_v4().to_string();
        let mut tx = db.begin_write().await.unwrap();
        assert!(switchyard::inbox::record(&mut tx, "c", &event).await.unwrap());
        tx.commit().await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        assert!(!switchyard::inbox::record(&mut tx, "c", &event).await.unwrap(), "a repeat is refused");
        assert!(switchyard::inbox::record(&mut tx, "other", &event).await.unwrap(), "per consumer");
        tx.commit().await.unwrap();
        assert_eq!(switchyard::inbox::count(db.pool(), "c").await.unwrap(), 1);
    }
}

#[tokio::test]
async fn overlapping_rounds_publish_a_backlog_in_outbox_order() {
    let (_nats, _client, js) = nats_with_streams().await;
    let test_db = TestDatabase::sqlite();
    let db = db(&test_db).await;
    let ids = write_events(&db, 95).await;
    // Rounds of 10: while one round's acks come back the next is claimed and sent.
    let relay =
        Relay::new(db.clone(), js.clone(), "relay-1", RelayConfig { batch_size: 10, ..Default::default() });
    assert_eq!(relay.publish_pending().await.unwrap(), 95, "one call works off ten rounds");
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    let stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
    for (seq, id) in ids.iter().enumerate() {
        let message = stream.get_raw_message(seq as u64 + 1).await.unwrap();
        assert_eq!(
            message.headers.get("Nats-Msg-Id").unwrap().as_str(),
            id.to_string(),
            "stream seq {}",
            seq + 1
        );
    }
}

#[tokio::test]
async fn a_relay_that_dies_mid_round_leaves_its_rows_to_another_after_the_lease_nothing_lost_or_doubled() {
    let (_nats, _client, js) = nats_with_streams().await;
    let test_db = TestDatabase::sqlite();
    let db = db(&test_db).await;
    write_events(&db, 50).await;

    // What relay "a" leaves when killed mid-round: it leased the first 30 rows for 1.5 s and had
    // published 20 of them (the stream acked them) when it died, before marking any as sent.
    let lease_until = switchyard::time::now_unix_millis() + 1500;
    sqlx::query(
        "UPDATE outbox SET claimed_by = 'relay-a', claimed_until = $1 \
         WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 30)",
    )
    .bind(lease_until)
    .execute(db.pool())
    .await
    .unwrap();
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT event_id, subject, payload FROM outbox ORDER BY id LIMIT 20")
            .fetch_all(db.pool())
            .await
            .unwrap();
    for (event_id, subject, payload) in rows {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event_id.as_str());
        js.publish_with_headers(subject, headers, payload.into()).await.unwrap().await.unwrap();
    }
    assert_eq!(messages_in(&js, "ORDERS").await, 20);

    // Relay "b" takes what is free now, and leaves the leased rows alone while the lease holds.
    let b = Relay::new(db.clone(), js.clone(), "relay-b", RelayConfig::default());
    assert_eq!(b.publish_pending().await.unwrap(), 20);
    assert_eq!(outbox::pending(&db).await.unwrap(), 30);
    let leased: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE claimed_by = 'relay-a' AND sent_at_ms IS NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(leased, 30, "the dead relay's rows are still leased to it");

    // Once the lease has passed, "b" publishes them: every row is sent, and the 20 that "a"
    // had published are not doubled (the stream drops a repeated message id).
    eventually(Duration::from_secs(30), "the lease to pass", || async {
        switchyard::time::now_unix_millis() > lease_until
    })
    .await;
    assert_eq!(publish_all(&b).await, 30);
    assert_eq!(outbox::sent(&db).await.unwrap(), 50);
    assert_eq!(outbox::pending(&db).await.unwrap(), 0);
    assert_eq!(messages_in(&js, "ORDERS").await, 50, "nothing lost, nothing doubled");
}
