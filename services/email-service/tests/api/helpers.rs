//! Shared set-up for the email tests: NATS with the streams, created events published straight
//! to `ORDERS`, and counts read from the service's database.

use async_nats::jetstream;
use contracts::names;
use contracts::{Item, OrderCreated};
use switchyard::streams::{StreamSettings, ensure_streams};
use switchyard::testkit::{NatsServer, TestDatabase};
use uuid::Uuid;

/// A nats-server with `ORDERS` and `DLQ`.
pub async fn nats() -> (NatsServer, jetstream::Context) {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    ensure_streams(&js, contracts::streams::ALL, &StreamSettings::default()).await.unwrap();
    (nats, js)
}

/// Publishes a created event for a new order; returns it.
pub async fn publish_created(js: &jetstream::Context, email: Option<&str>) -> OrderCreated {
    let event = OrderCreated {
        event_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        user_id: "u1".into(),
        email: email.map(str::to_string),
        items: vec![Item { sku: "A-1".into(), quantity: 2 }],
        created_at: switchyard::time::now_rfc3339(),
    };
    publish(js, &event).await;
    event
}

/// Publishes `event` (again, under a fresh message id if it was published before).
pub async fn publish(js: &jetstream::Context, event: &OrderCreated) {
    js.publish(
        names::order_event_subject("created", &event.order_id),
        serde_json::to_vec(event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Runs a `SELECT COUNT(*)` on the service's database; 0 until the service has created its tables.
pub async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    match switchyard::testkit::try_count(db.url(), sql).await {
        Ok(n) => n,
        // Before the service has run its migrations; any other error fails the test.
        Err(err) if err.to_string().contains("no such table") => 0,
        Err(err) => panic!("count failed: {err}"),
    }
}

/// Messages in `ORDERS` on `subject_filter`.
pub async fn events(js: &jetstream::Context, subject_filter: &str) -> u64 {
    switchyard::testkit::subject_count(js, names::ORDERS_STREAM, subject_filter).await
}
