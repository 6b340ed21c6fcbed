//! Group commit, set-based: a backlog worked off in batches records each order's confirmation
//! once, with one `confirmation_sent` event, whatever the batch holds (the same event twice, a
//! second event for one order, an order without an address).

use std::time::Duration;

use clap::Parser;
use switchyard::Shutdown;
use switchyard::testkit::{TestDatabase, eventually, temp_dir};

use crate::helpers::{count, events, nats, publish, publish_created};

#[tokio::test]
async fn a_backlog_with_repeats_is_recorded_once_per_order_in_batches() {
    let (nats, js) = nats().await;
    let first = publish_created(&js, Some("first@example.com")).await;
    publish(&js, &first).await;
    let mut again = first.clone();
    again.event_id = uuid::Uuid::new_v4();
    publish(&js, &again).await;
    publish_created(&js, None).await;
    let second = publish_created(&js, Some("second@example.com")).await;
    for _ in 0..20 {
        publish_created(&js, Some("more@example.com")).await;
    }

    // One lane, so the backlog is applied in batches.
    let db = TestDatabase::sqlite();
    let data = temp_dir();
    let url = nats.url();
    let data_dir = data.path().display().to_string();
    let args = ["email-service", "--nats-url", &url, "--database-url", db.url(), "--data-dir", &data_dir];
    let config = email_service::Config::parse_from(args.iter().chain(&["--consumer-concurrency", "1"]));
    let app = email_service::App::build(config).await.expect("email-service starts");
    let shutdown = Shutdown::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    eventually(Duration::from_secs(30), "every event applied", || async {
        count(&db, "SELECT COUNT(*) FROM inbox").await == 24
    })
    .await;
    eventually(Duration::from_secs(30), "22 confirmation_sent events", || async {
        events(&js, "events.orders.confirmation_sent.*").await == 22
    })
    .await;
    shutdown.trigger();
    switchyard::testkit::joined(running, "email-service to stop").await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM emails").await, 22, "one row per order with an address");
    assert_eq!(events(&js, "events.orders.confirmation_sent.*").await, 22, "no event doubled");
    for order in [first.order_id, second.order_id] {
        let file = data.path().join("emails").join(format!("{order}.eml"));
        assert!(file.exists(), "{}", file.display());
    }
    let files = std::fs::read_dir(data.path().join("emails")).expect("emails dir").count();
    assert_eq!(files, 22, "one file per order, no temporary file left");
}
