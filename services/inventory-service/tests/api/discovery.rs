use std::time::Duration;

use contracts::names;
use contracts::{CheckReply, CheckRequest};
use futures_util::StreamExt;
use switchyard::micro::{InfoResponse, PingResponse, StatsResponse};

use crate::helpers::{item, spawn_inventory};

/// Sends a discovery request and gathers every reply that arrives within `wait`.
async fn gather(client: &async_nats::Client, subject: &str, wait: Duration) -> Vec<async_nats::Message> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client.publish_with_reply(subject.to_string(), inbox, "".into()).await.unwrap();
    client.flush().await.unwrap();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        found.push(message);
    }
    found
}

#[tokio::test]
async fn the_service_answers_ping_and_info_like_a_micro_service() {
    let app = spawn_inventory().await;
    let nats = app.client.nats();

    let pings = gather(nats, "$SRV.PING", Duration::from_millis(1500)).await;
    assert_eq!(pings.len(), 1);
    let ping: PingResponse = serde_json::from_slice(&pings[0].payload).unwrap();
    assert_eq!(ping.kind, "io.nats.micro.v1.ping_response");
    assert_eq!(ping.name, "inventory");
    assert_eq!(ping.id, app.instances[0].id);

    let reply = nats.request("$SRV.INFO.inventory", "".into()).await.unwrap();
    let info: InfoResponse = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(info.kind, "io.nats.micro.v1.info_response");
    let mut subjects: Vec<_> = info.endpoints.iter().map(|e| e.subject.as_str()).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "inventory.check",
            "inventory.release",
            "inventory.reserve",
            "inventory.restock",
            "inventory.stock"
        ]
    );
    assert!(info.endpoints.iter().all(|e| e.queue_group == "q"));

    // Addressed by id, the instance answers too.
    let by_id = format!("$SRV.PING.inventory.{}", app.instances[0].id);
    let reply = nats.request(by_id, "".into()).await.unwrap();
    let ping: PingResponse = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(ping.id, app.instances[0].id);
}

#[tokio::test]
async fn stats_count_requests_and_errors_per_endpoint() {
    let app = spawn_inventory().await;
    app.restock("A-1", 1).await;
    let _: CheckReply =
        app.call(names::INVENTORY_CHECK, &CheckRequest { items: vec![item("A-1", 1)] }).await.unwrap();
    let _ = app.client.nats().request(names::INVENTORY_CHECK, "oops".into()).await.unwrap();

    let reply = app.client.nats().request("$SRV.STATS.inventory", "".into()).await.unwrap();
    let stats: StatsResponse = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(stats.kind, "io.nats.micro.v1.stats_response");
    let check = stats.endpoints.iter().find(|e| e.name == "check").unwrap();
    assert_eq!((check.num_requests, check.num_errors), (2, 1));
    assert!(check.last_error.starts_with("400: invalid json"), "{}", check.last_error);
    let restock = stats.endpoints.iter().find(|e| e.name == "restock").unwrap();
    assert_eq!((restock.num_requests, restock.num_errors), (1, 0));
    assert!(restock.average_processing_time > 0);
}

#[tokio::test]
async fn two_instances_share_the_load_through_the_queue_group() {
    let mut app = spawn_inventory().await;
    app.add_instance().await;
    app.restock("A-1", 1).await;
    for _ in 0..60 {
        let _: CheckReply =
            app.call(names::INVENTORY_CHECK, &CheckRequest { items: vec![item("A-1", 1)] }).await.unwrap();
    }
    let replies = gather(app.client.nats(), "$SRV.STATS.inventory", Duration::from_millis(1500)).await;
    assert_eq!(replies.len(), 2, "both instances answer discovery");
    let mut served = Vec::new();
    for reply in replies {
        let stats: StatsResponse = serde_json::from_slice(&reply.payload).unwrap();
        let check = stats.endpoints.iter().find(|e| e.name == "check").unwrap();
        served.push(check.num_requests);
    }
    assert_eq!(served.iter().sum::<u64>(), 60);
    assert!(served.iter().all(|n| *n > 0), "each instance served some checks: {served:?}");
}

#[tokio::test]
async fn a_stopped_instance_leaves_discovery_and_the_other_keeps_serving() {
    let mut app = spawn_inventory().await;
    app.add_instance().await;
    let first = app.instances.remove(0);
    let stopped_id = first.id.clone();
    first.stop().await;
    app.restock("A-1", 1).await;
    let pings = gather(app.client.nats(), "$SRV.PING.inventory", Duration::from_millis(1500)).await;
    let ids: Vec<String> =
        pings.iter().map(|m| serde_json::from_slice::<PingResponse>(&m.payload).unwrap().id).collect();
    assert_eq!(ids, vec![app.instances[0].id.clone()]);
    assert!(!ids.contains(&stopped_id));
}
