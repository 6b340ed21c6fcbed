use std::time::Duration;

use clap::Parser;
use switchyard::Shutdown;
use switchyard::testkit::{SmtpSink, TestDatabase, eventually, free_port};

use crate::helpers::{count, events, nats, publish, publish_created};

/// email-service on `db`, sending to the SMTP server on `port`, with `extra` flags.
async fn start_email(
    nats: &switchyard::testkit::NatsServer,
    db: &TestDatabase,
    port: u16,
    extra: &[&str],
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let mut args = vec!["email-service", "--nats-url"];
    let url = nats.url();
    args.extend([url.as_str(), "--database-url", db.url(), "--smtp-url", smtp_url.as_str()]);
    args.extend_from_slice(extra);
    let app = email_service::App::build(email_service::Config::parse_from(args)).await.unwrap();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (shutdown, running)
}

#[tokio::test]
async fn confirmations_go_over_smtp_once_per_order_however_often_the_event_arrives() {
    let (nats, js) = nats().await;
    let sink = SmtpSink::start_on(free_port().unwrap()).await;
    let db = TestDatabase::sqlite();
    let (shutdown, running) = start_email(&nats, &db, sink.port(), &[]).await;

    let first = publish_created(&js, Some("first@example.com")).await;
    let second = publish_created(&js, Some("second@example.com")).await;
    // The same event delivered again, and another event for the same order.
    publish(&js, &first).await;
    let mut again = first.clone();
    again.event_id = uuid::Uuid::new_v4();
    publish(&js, &again).await;
    // An order without an address gets no email.
    publish_created(&js, None).await;

    eventually(Duration::from_secs(15), "two emails in the SMTP sink", || async {
        sink.delivered().len() == 2
    })
    .await;
    eventually(Duration::from_secs(15), "two confirmation_sent events", || async {
        events(&js, "events.orders.confirmation_sent.*").await == 2
    })
    .await;
    // Stopped (it finishes what it holds), it can send nothing more: the count is final.
    shutdown.trigger();
    switchyard::testkit::joined(running, "email-service to stop").await;
    let mails = sink.delivered();
    assert_eq!(mails.len(), 2, "once per order");
    let first_mail = mails.iter().find(|m| m.contains("To: first@example.com")).expect("first email");
    assert!(
        first_mail.contains(&format!("Message-ID: <order-{}@switchyard>", first.order_id)),
        "{first_mail}"
    );
    assert!(mails.iter().any(|m| m.contains(&format!("Subject: Order {} confirmed", second.order_id))));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM emails").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM emails WHERE transport = 'smtp'").await, 2);
}

#[tokio::test]
async fn an_smtp_outage_is_retried_until_the_server_is_back() {
    let (nats, js) = nats().await;
    // Nothing listens on this port yet.
    let port = free_port().unwrap();
    let db = TestDatabase::sqlite();
    let (shutdown, running) =
        start_email(&nats, &db, port, &["--retry-backoff", "200ms", "--max-deliver", "50"]).await;
    publish_created(&js, Some("late@example.com")).await;
    // Tried and failed more than once (the server's count of deliveries), and nothing recorded.
    eventually(Duration::from_secs(20), "a redelivery after a failed send", || async {
        let stream = js.get_stream("ORDERS").await.expect("ORDERS");
        stream.consumer_info("email").await.map(|i| i.num_redelivered >= 1).unwrap_or(false)
    })
    .await;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM emails").await, 0);

    // The SMTP server comes up on that port: the next retry delivers.
    let sink = SmtpSink::start_on(port).await;
    eventually(Duration::from_secs(20), "the email to arrive after the outage", || async {
        sink.delivered().len() == 1
    })
    .await;
    eventually(Duration::from_secs(10), "the email to be recorded", || async {
        count(&db, "SELECT COUNT(*) FROM emails").await == 1
    })
    .await;
    shutdown.trigger();
    switchyard::testkit::joined(running, "email-service to stop").await;
}

#[tokio::test]
async fn an_smtp_permanent_error_is_dead_lettered_at_once_and_nothing_is_recorded() {
    let (nats, js) = nats().await;
    let port = free_port().unwrap();
    let _server = SmtpSink::start_rejecting(port).await;
    let db = TestDatabase::sqlite();
    let (shutdown, running) = start_email(&nats, &db, port, &["--max-deliver", "5"]).await;
    let event = publish_created(&js, Some("nobody@example.com")).await;
    eventually(Duration::from_secs(20), "the dead letter", || async {
        switchyard::dlq::list(&js, 10).await.map(|l| l.len() == 1).unwrap_or(false)
    })
    .await;
    let letter = switchyard::dlq::list(&js, 10).await.unwrap().remove(0);
    assert_eq!((letter.consumer.as_str(), letter.reason.as_str(), letter.deliveries), ("email", "poison", 1));
    assert!(letter.error.contains("550"), "{letter:?}");
    assert_eq!(letter.origin_subject, format!("events.orders.created.{}", event.order_id));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM emails").await, 0);
    assert_eq!(events(&js, "events.orders.confirmation_sent.*").await, 0);
    shutdown.trigger();
    switchyard::testkit::joined(running, "email-service to stop").await;
}
