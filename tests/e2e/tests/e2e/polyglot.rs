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

/// A Python client (nats-py, jsonschema) as `partner`: discovery, requests and a micro error,
/// an order over HTTP and its lifecycle through its own durable, every payload validated against
/// the JSON Schemas and the AsyncAPI document's messages.
#[tokio::test]
async fn a_python_client_validates_everything_it_sends_and_receives_against_the_contract() {
    let script = switchyard::testkit::workspace_root().join("tests/interop/python_client.py");
    let mut command = tokio::process::Command::new(switchyard::testkit::python());
    command.arg(script);
    run_partner_client(command, "python client").await;
}

/// A TypeScript client (@nats-io/transport-node, @nats-io/jetstream, ajv) as `partner`: discovery,
/// inventory.check, a micro error, an order over HTTP, orders.get, and the order's lifecycle
/// through its own durable, every payload validated against the JSON Schemas and the AsyncAPI
/// document's messages.
#[tokio::test]
async fn a_typescript_client_validates_everything_it_sends_and_receives_against_the_contract() {
    let dir = switchyard::testkit::workspace_root().join("tests/interop/node");
    let compiled = tokio::process::Command::new(dir.join("node_modules/.bin/tsc"))
        .args(["-p"])
        .arg(&dir)
        .output()
        .await
        .expect("run tsc (./scripts/test installs it with npm ci)");
    assert!(compiled.status.success(), "tsc: {}", String::from_utf8_lossy(&compiled.stdout));
    let mut command = tokio::process::Command::new("node");
    command.arg(dir.join("dist/client.js"));
    run_partner_client(command, "typescript client").await;
}

/// Runs a client (`command`, given the stack's URLs, the partner's password and a SKU in stock)
/// against a secure stack: it must print `<name>: all checks passed` and leave the durable
/// `partner` with nothing pending or unacked.
async fn run_partner_client(mut command: tokio::process::Command, name: &str) {
    let stack = spawn_secure_stack().await;
    stack.restock("A-1", 10).await;
    command
        .args(["--url", &stack.nats.url(), "--password", password("partner")])
        .args(["--http-url", &stack.base_url, "--sku", "A-1"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("the {name} finishes within 90 s"))
        .unwrap_or_else(|err| panic!("run the {name}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("{name}: all checks passed")), "{stdout}");
    println!("{stdout}");
    let info = stack.js.get_stream("ORDERS").await.unwrap().consumer_info("partner").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0), "it acked everything it read");
}

/// The AsyncAPI document of the contract (shared/contracts/asyncapi.json, generated from the code)
/// is valid for the official parser, and names the durable consumers as the services declare them.
#[tokio::test]
async fn the_asyncapi_document_validates_with_the_official_parser_and_matches_the_consumers() {
    let root = switchyard::testkit::workspace_root();
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests/interop/node/validate_asyncapi.mjs"))
        .arg(root.join("shared/contracts/asyncapi.json"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node (./scripts/test installs the parser)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    for address in [
        "events.orders.created.{order_id}",
        "events.orders.{kind}.{order_id}",
        "dlq.{stream}.{consumer}",
        "inventory.reserve",
        "orders.get",
        "audit.history",
    ] {
        assert!(summary["channels"].as_array().unwrap().iter().any(|c| c == address), "{address}: {summary}");
    }
    assert!(
        summary["operations"].as_array().unwrap().iter().any(|o| o == "receive inventoryReserve"),
        "{summary}"
    );

    // The JetStream side the document states is the one the services run.
    let document = contracts::asyncapi::document();
    for spec in [
        inventory_service::events::consumer_spec(),
        email_service::consumer_spec(),
        audit_service::consumer_spec(),
    ] {
        let stated: Vec<&serde_json::Value> = document["operations"]
            .as_object()
            .unwrap()
            .values()
            .filter(|operation| operation["x-jetstream"]["durable"] == spec.durable.as_str())
            .map(|operation| &operation["x-jetstream"])
            .collect();
        assert!(!stated.is_empty(), "no operation of consumer {}", spec.durable);
        for jetstream in stated {
            assert_eq!(jetstream["stream"], spec.stream.as_str());
            assert_eq!(
                jetstream["filter_subjects"],
                serde_json::json!(spec.filter_subjects),
                "{}",
                spec.durable
            );
            assert_eq!(jetstream["max_deliver"], spec.max_deliver, "{}", spec.durable);
            assert_eq!(jetstream["ack_wait"], format!("{}s", spec.ack_wait.as_secs()), "{}", spec.durable);
        }
    }
}
