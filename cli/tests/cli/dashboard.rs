//! The web dashboard: in a real headless browser against a stack `up` started (the Python
//! Playwright script tests/interop/dashboard_browser.py), its JSON API's errors, and what it
//! says while NATS restarts under it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use switchyard::testkit::{NatsServer, eventually, workspace_root};
use tokio::process::Command;

use crate::{Up, field, find_pid, switchyard};

/// The dashboard URL `up` printed.
fn dashboard_url(startup: &[String]) -> String {
    let line = startup
        .iter()
        .find(|l| l.trim_start().starts_with("dashboard"))
        .unwrap_or_else(|| panic!("up prints the dashboard: {startup:?}"));
    line.split_whitespace().nth(1).unwrap().trim_end_matches('/').to_string()
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_dashboard_in_a_browser_follows_orders_a_dead_service_its_breaker_and_dead_letters() {
    let dir = switchyard::testkit::temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &["--dashboard-actions"]).await;
    let ready = startup.last().unwrap();
    let (nats_url, http_url) = (field(ready, "nats_url"), field(ready, "http_url"));
    let dashboard = dashboard_url(&startup);
    let (demo, ok) = up.run(&["demo", "--orders", "20", "--quiet"]).await;
    assert!(ok, "{demo}");

    // The API's answers to bad input: JSON errors, and no action without its header.
    let (status, body) = get(&format!("{dashboard}/api/dlq/not-a-number")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = get(&format!("{dashboard}/api/orders/not-a-uuid")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = get(&format!("{dashboard}/api/orders/{}", uuid::Uuid::new_v4())).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = get(&format!("{dashboard}/api/nothing")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    let http = reqwest::Client::new();
    let refused =
        http.post(format!("{dashboard}/api/dlq/purge")).body(r#"{"confirm":"purge"}"#).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "an action needs X-Switchyard-Action");
    let unconfirmed = http
        .post(format!("{dashboard}/api/dlq/purge"))
        .header("x-switchyard-action", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(unconfirmed.status().as_u16(), 400, "a purge needs its confirmation");
    let (status, snapshot) = get(&format!("{dashboard}/api/status")).await;
    assert_eq!(status, 200);
    assert_eq!(snapshot["nats"]["connected"], true, "{snapshot}");
    assert_eq!(snapshot["actions"], true);

    let inventory_pid = find_pid("inventory-service", &data_dir);
    assert!(inventory_pid > 0);
    let screenshot = std::env::var("SWITCHYARD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("dashboard.png"));
    let output = Command::new(switchyard::testkit::python())
        .arg(workspace_root().join("tests/interop/dashboard_browser.py"))
        .args(["--dashboard", &dashboard, "--http", &http_url, "--nats", &nats_url])
        .args(["--inventory-pid", &inventory_pid.to_string()])
        .arg("--screenshot")
        .arg(&screenshot)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(180), output).await.expect("the browser test ends").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(Path::new(&screenshot).exists());
    let _ = up.interrupt().await;
}

#[tokio::test]
async fn the_dashboard_says_when_nats_is_gone_and_recovers_when_it_returns() {
    let mut nats = NatsServer::start();
    let dir = switchyard::testkit::temp_dir();
    let mut dashboard = Command::new(switchyard())
        .args(["dashboard", "--addr", "127.0.0.1:0", "--nats-url", &nats.url(), "--interval", "200ms"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = dashboard.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = line.split_whitespace().nth(1).unwrap().trim_end_matches('/').to_string();
    let connected = |want: bool| {
        let url = url.clone();
        async move {
            let (_, snapshot) = get(&format!("{url}/api/status")).await;
            snapshot["nats"]["connected"] == want
        }
    };
    eventually(Duration::from_secs(10), "the dashboard to connect", || connected(true)).await;
    nats.kill();
    eventually(Duration::from_secs(10), "the dashboard to say NATS is gone", || connected(false)).await;
    let (status, body) = get(&format!("{url}/api/dlq")).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("nats_unavailable")), "{body}");
    // The page itself stays up.
    let page = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    nats.restart();
    eventually(Duration::from_secs(20), "the dashboard to reconnect", || connected(true)).await;
    let _ = dashboard.kill().await;
}
