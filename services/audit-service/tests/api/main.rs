//! audit-service against a real nats-server and SQLite: one row per event id however often the
//! event arrives, history in stream order, and `audit-service replay --since` / `--from-seq`.

use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use contracts::names;
use contracts::{HistoryReply, HistoryRequest, Item, OrderCreated, OrderLifecycle};
use switchyard::Shutdown;
use switchyard::testkit::{NatsServer, TestDatabase, eventually};
use uuid::Uuid;

struct Audit {
    nats: NatsServer,
    db: TestDatabase,
    js: jetstream::Context,
    shutdown: Shutdown,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn start() -> Audit {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let db = TestDatabase::sqlite();
    let url = nats.url();
    let args = ["audit-service", "--nats-url", &url, "--database-url", db.url(), "--declare-streams"];
    let app =
        audit_service::App::build(audit_service::Config::parse_from(args)).await.expect("audit-service");
    let shutdown = Shutdown::new();
    let task = Some(tokio::spawn(app.run_until_stopped(shutdown.clone())));
    let js = jetstream::new(nats.client().await);
    Audit { nats, db, js, shutdown, task }
}

impl Audit {
    /// Stops the service and waits until it has drained.
    async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            switchyard::testkit::joined(task, "audit-service to stop").await;
        }
    }

    async fn publish(&self, subject: String, payload: &impl serde::Serialize) -> u64 {
        let ack = self
            .js
            .publish(subject, serde_json::to_vec(payload).expect("json").into())
            .await
            .expect("publish");
        ack.await.expect("ack").sequence
    }

    /// Waits until the `audit` durable has acked every message of the stream.
    async fn caught_up(&self) {
        eventually(Duration::from_secs(30), "audit to ack every event", || async {
            let stream = self.js.get_stream(names::ORDERS_STREAM).await.expect("ORDERS");
            let info = stream.consumer_info(names::AUDIT_CONSUMER).await.expect("audit durable");
            info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0
        })
        .await;
    }

    async fn rows(&self) -> i64 {
        switchyard::testkit::count(self.db.url(), "SELECT COUNT(*) FROM audit_events").await
    }
}

fn created(order: Uuid) -> OrderCreated {
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id: order,
        user_id: "u1".into(),
        email: None,
        items: vec![Item { sku: "A-1".into(), quantity: 1 }],
        created_at: switchyard::time::now_rfc3339(),
    }
}

fn committed(order: Uuid) -> OrderLifecycle {
    OrderLifecycle {
        event_id: Uuid::new_v4(),
        order_id: order,
        detail: "1 unit".into(),
        at: switchyard::time::now_rfc3339(),
    }
}

#[tokio::test]
async fn an_event_delivered_twice_is_recorded_once_and_history_is_in_stream_order() {
    let audit = start().await;
    let order = Uuid::new_v4();
    let first = created(order);
    let created_subject = names::order_event_subject(names::order_event::CREATED, &order);
    let seq = audit.publish(created_subject.clone(), &first).await;
    // The same event again (published twice: no message id, so the stream keeps both).
    let again = audit.publish(created_subject, &first).await;
    assert_ne!(seq, again, "the stream holds two copies");
    audit
        .publish(names::order_event_subject(names::order_event::STOCK_COMMITTED, &order), &committed(order))
        .await;
    audit.caught_up().await;
    assert_eq!(audit.rows().await, 2, "one row per event id");

    let requests = switchyard::RequestClient::new(audit.nats.client().await, Duration::from_secs(10));
    let history: HistoryReply =
        requests.request(names::AUDIT_HISTORY, &HistoryRequest { order_id: order }).await.expect("history");
    let kinds: Vec<&str> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["created", "stock_committed"]);
    assert_eq!(history.events[0].stream_seq, seq, "the first copy is the one recorded");
    let mut audit = audit;
    audit.stop().await;
}

#[tokio::test]
async fn replay_since_a_time_or_from_a_sequence_rebuilds_the_trail_from_the_stream() {
    let audit = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for order in [a, a] {
        audit.publish(names::order_event_subject(names::order_event::CREATED, &order), &created(order)).await;
    }
    audit.caught_up().await;
    let since = time::OffsetDateTime::now_utc();
    let mut later = Vec::new();
    for _ in 0..3 {
        later.push(
            audit.publish(names::order_event_subject(names::order_event::CREATED, &b), &created(b)).await,
        );
    }
    audit.caught_up().await;
    assert_eq!(audit.rows().await, 5);
    let mut audit = audit;
    audit.stop().await;

    // Lose the later rows (as a bad restore would), then rebuild from the time they came.
    {
        let pool = sqlx::AnyPool::connect(audit.db.url()).await.expect("db");
        sqlx::query("DELETE FROM audit_events WHERE stream_seq >= $1")
            .bind(later[0] as i64)
            .execute(&pool)
            .await
            .expect("delete");
        pool.close().await;
    }
    assert_eq!(audit.rows().await, 2);
    let since = since.format(&time::format_description::well_known::Rfc3339).expect("time");
    let out = replay(&audit, &["--since", &since]).await;
    assert!(out.contains("replayed 3 events"), "{out}");
    assert_eq!(audit.rows().await, 5);
    // From the first sequence: everything again, nothing doubled.
    let out = replay(&audit, &["--from-seq", "1"]).await;
    assert!(out.contains("replayed 5 events"), "{out}");
    assert_eq!(audit.rows().await, 5);
}

async fn replay(audit: &Audit, from: &[&str]) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_audit-service"));
    command
        .args(["--nats-url", &audit.nats.url(), "--database-url", audit.db.url(), "replay"])
        .args(from)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("replay finishes")
        .expect("run audit-service replay");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    text
}
