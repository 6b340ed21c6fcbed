use std::time::Duration;

use contracts::names;
use contracts::{HistoryReply, HistoryRequest};
use switchyard::testkit::eventually;
use uuid::Uuid;

use crate::helpers::{count, spawn_stack};

/// Reads server-sent events from `response` until `want` events arrived; returns (event, id, data).
async fn read_sse(mut response: reqwest::Response, want: usize) -> Vec<(String, u64, serde_json::Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < want {
        let chunk =
            tokio::time::timeout_at(deadline, response.chunk()).await.expect("sse timed out").unwrap();
        let Some(chunk) = chunk else { break };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), 0, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !event.is_empty() {
                events.push((event, id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test]
async fn one_accepted_order_is_one_created_event_applied_once_by_every_consumer() {
    let stack = spawn_stack().await;
    stack.restock("A-1", 10).await;
    let (status, order) = stack.order("A-1", 2).await;
    assert_eq!(status, 201);
    let id = order["id"].as_str().unwrap().to_string();

    stack.wait_events("events.orders.stock_committed.*", 1).await;
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    assert_eq!(stack.events("events.orders.created.*").await, 1);
    // Inventory: committed once, the stock left the shelf.
    assert_eq!(stack.stock("A-1").await, (8, 0));
    assert_eq!(stack.inbox(&stack.inventory_db, "inventory").await, 1);
    // Email: exactly one .eml for the order.
    assert_eq!(stack.inbox(&stack.email_db, "email").await, 1);
    let eml = std::fs::read_to_string(stack.email_dir().join(format!("{id}.eml"))).unwrap();
    assert!(eml.contains("To: u1@example.com"), "{eml}");
    assert!(eml.contains(&format!("Subject: Order {id} confirmed")), "{eml}");
    assert_eq!(std::fs::read_dir(stack.email_dir()).unwrap().count(), 1);
    // Audit: every event of the order, in stream order, through audit.history.
    eventually(Duration::from_secs(10), "the audit trail to hold 3 events", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 3
    })
    .await;
    let history: HistoryReply = stack
        .requests
        .request(names::AUDIT_HISTORY, &HistoryRequest { order_id: id.parse().unwrap() })
        .await
        .unwrap();
    let kinds: Vec<&str> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds[0], "created");
    assert!(kinds.contains(&"stock_committed") && kinds.contains(&"confirmation_sent"), "{kinds:?}");
    assert!(history.events.windows(2).all(|w| w[0].stream_seq < w[1].stream_seq));
    assert_eq!(history.events[0].payload["order_id"], id.as_str());
}

#[tokio::test]
async fn the_event_stream_route_streams_the_lifecycle_in_order_past_events_first() {
    let stack = spawn_stack().await;
    stack.restock("A-1", 10).await;
    let (_, order) = stack.order("A-1", 1).await;
    let id = order["id"].as_str().unwrap().to_string();
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    stack.wait_events("events.orders.stock_committed.*", 1).await;

    // Past events first...
    let response = stack.http.get(format!("{}/orders/{id}/events", stack.base_url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let reading = tokio::spawn(read_sse(response, 5));
    // ...then live ones: cancelling adds `cancelled` and `stock_released`.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.cancel(&id).await, 200);
    let events = reading.await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds[0], "created");
    assert!(
        kinds[1..3].contains(&"stock_committed") && kinds[1..3].contains(&"confirmation_sent"),
        "{kinds:?}"
    );
    assert_eq!(&kinds[3..], &["cancelled", "stock_released"]);
    assert!(events.windows(2).all(|w| w[0].1 < w[1].1), "ids are increasing stream sequences");
    assert!(events.iter().all(|(_, _, data)| data["order_id"] == id.as_str()));

    // Cancelling put the committed stock back on the shelf, and the order says so.
    assert_eq!(stack.stock("A-1").await, (10, 0));
    let order: serde_json::Value =
        stack.http.get(format!("{}/orders/{id}", stack.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(order["status"], "cancelled");
    // Cancelling again changes nothing and emits nothing.
    assert_eq!(stack.cancel(&id).await, 200);
    assert_eq!(stack.cancel(&Uuid::new_v4().to_string()).await, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.events("events.orders.cancelled.*").await, 1);
}

#[tokio::test]
async fn audit_replay_rebuilds_an_identical_history() {
    let stack = spawn_stack().await;
    stack.restock("A-1", 100).await;
    for _ in 0..10 {
        assert_eq!(stack.order("A-1", 1).await.0, 201);
    }
    stack.wait_events("events.orders.>", 30).await;
    eventually(Duration::from_secs(10), "the audit trail to hold 30 events", || async {
        count(&stack.audit_db, "SELECT COUNT(*) FROM audit_events").await == 30
    })
    .await;
    let before = dump(&stack).await;

    // Rebuild from the start, and from the middle, with the replay command's library call.
    for (from, expected) in [
        (audit_service::trail::ReplayFrom::Sequence(1), 30),
        (audit_service::trail::ReplayFrom::Sequence(15), 16),
    ] {
        let db = switchyard::Db::connect(stack.audit_db.url(), &audit_service::MIGRATIONS).await.unwrap();
        let trail = audit_service::trail::Trail::new(db);
        let recorded = trail.replay(&stack.js, from).await.unwrap();
        assert_eq!(recorded, expected, "events from {from:?} on are recorded again");
        assert_eq!(dump(&stack).await, before, "replay from {from:?} gives the same trail");
    }
}

async fn dump(stack: &crate::helpers::Stack) -> Vec<(i64, String, String, String)> {
    let db = switchyard::Db::connect(stack.audit_db.url(), &audit_service::MIGRATIONS).await.unwrap();
    audit_service::trail::Trail::new(db).dump().await.unwrap()
}
