use std::process::Command;

use crate::helpers::spawn_stack;

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
    let output = tokio::task::spawn_blocking(move || {
        Command::new(switchyard::testkit::python())
            .arg(script)
            .args(["--url", &url, "--expect", "3"])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
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
