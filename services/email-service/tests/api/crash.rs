use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard::testkit::{TestDatabase, eventually};

use crate::helpers::{count, events, nats, publish_created};

fn email_service(nats_url: &str, db: &TestDatabase, data_dir: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_email-service"))
        .args(["--nats-url", nats_url, "--database-url", db.url(), "--declare-streams", "--data-dir"])
        .arg(data_dir)
        .args(["--consumer-concurrency", "1", "--ack-wait", "2s", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start email-service")
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_gets_its_messages_again_and_each_order_is_recorded_and_confirmed_once() {
    let (nats, js) = nats().await;
    const ORDERS: i64 = 400;
    for _ in 0..ORDERS {
        publish_created(&js, Some("crash@example.com")).await;
    }
    let db = TestDatabase::sqlite();
    let data = TestDatabase::sqlite();
    let data_dir =
        std::path::PathBuf::from(data.url().trim_start_matches("sqlite://").split('?').next().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();

    let mut first = email_service(&nats.url(), &db, &data_dir);
    eventually(Duration::from_secs(30), "some emails before the kill", || async {
        count(&db, "SELECT COUNT(*) FROM emails").await >= 10
    })
    .await;
    // A batch is in flight: delivered to the consumer, not yet acked.
    let stream = js.get_stream("ORDERS").await.expect("ORDERS");
    let in_flight = stream.consumer_info("email").await.expect("email durable").num_ack_pending;
    assert!(in_flight > 0, "messages were in flight at the kill");
    first.kill().expect("SIGKILL email-service");
    first.wait().unwrap();
    let at_kill = count(&db, "SELECT COUNT(*) FROM emails").await;
    assert!(at_kill < ORDERS, "the kill landed mid-batch ({at_kill} of {ORDERS} done)");

    let mut second = email_service(&nats.url(), &db, &data_dir);
    eventually(Duration::from_secs(60), "every email after the restart", || async {
        count(&db, "SELECT COUNT(*) FROM emails").await == ORDERS
    })
    .await;
    eventually(Duration::from_secs(30), "every confirmation_sent event", || async {
        events(&js, "events.orders.confirmation_sent.*").await == ORDERS as u64
    })
    .await;
    // Once the second instance has stopped (SIGTERM: it finishes and flushes its outbox), nothing
    // more can be published: the count is final.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(second.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while second.try_wait().expect("wait").is_none() {
        assert!(std::time::Instant::now() < deadline, "email-service did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(events(&js, "events.orders.confirmation_sent.*").await, ORDERS as u64, "no event doubled");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM inbox").await, ORDERS);
    let files = std::fs::read_dir(data_dir.join("emails"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "eml"))
        .count();
    // One file per order (named by order id; a resend after a crash would overwrite it: sending
    // is at-least-once with a stable Message-ID, the row and the event are exactly once).
    assert_eq!(files as i64, ORDERS, "one .eml per order");
}
