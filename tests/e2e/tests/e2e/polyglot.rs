use crate::helpers::{password, spawn_secure_stack, spawn_stack};

#[tokio::test]
async fn a_python_client_reads_the_same_events_through_its_own_durable_consumer() {
    let stack = spawn_stack().await;
    stack.restock("A-1", 10).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, order) = stack.order("A-1", 1).await;
        assert_eq!(status, 201);
        ids.push(order["id"].as_str().unwrap().to_string());
    }
    stack.wait_events("events.orders.created.*", 3).await;
    let script = switchyard::testkit::workspace_root().join("tests/interop/js_consumer.py");
    let url = stack.nats.url();
    let mut command = tokio::process::Command::new(switchyard::testkit::python());
    command.arg(script).args(["--url", &url, "--expect", "3"]).kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the Python consumer finishes within 60 s")
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python consumer failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for id in ids {
        assert!(stdout.contains(&id), "python saw order {id}:\n{stdout}");
    }
}

#[tokio::test]
async fn a_go_client_discovers_calls_and_reads_an_orders_lifecycle_under_its_own_user() {
    let stack = spawn_secure_stack().await;
    stack.restock("A-1", 10).await;
    let (status, order) = stack.order("A-1", 1).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    stack.wait_events("events.orders.stock_committed.*", 1).await;
    stack.wait_events("events.orders.confirmation_sent.*", 1).await;
    let mut command = tokio::process::Command::new(switchyard::testkit::go_interop_binary());
    command
        .args(["--url", &stack.nats.url(), "--user", "partner", "--password", password("partner")])
        .arg("--schemas")
        .arg(switchyard::testkit::workspace_root().join("shared/contracts/schemas"))
        .args(["--order", &id, "--sku", "A-1", "--kinds", "created,stock_committed,confirmation_sent"])
        // It also provokes every kind of HTTP error and checks each body against http.error.json.
        .args(["--http-url", &stack.base_url])
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the Go client finishes within 60 s")
        .expect("run the Go client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Go client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("go client: all checks passed"), "{stdout}");
    assert_eq!(stdout.matches("valid against http.error.json").count(), 12, "{stdout}");
    for kind in ["created", "stock_committed", "confirmation_sent"] {
        assert!(stdout.contains(&format!("event {kind} {id}")), "{stdout}");
    }
    // Its durable is its own, and acked everything it read.
    let info = stack.js.get_stream("ORDERS").await.unwrap().consumer_info("partner").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    assert_eq!(info.ack_floor.consumer_sequence, 3);
}
