//! The `switchyard` command against a real stack it starts itself.

mod dashboard;
mod deploy;
mod natscli;
mod observability;
mod operator;
mod resilience;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn switchyard() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

/// `switchyard up` in `data_dir`, with every default port held by someone else.
struct Up {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    data_dir: PathBuf,
    _taken: Vec<TcpListener>,
}

impl Up {
    async fn start(data_dir: &Path, extra: &[&str]) -> (Up, Vec<String>) {
        Up::start_with_env(data_dir, extra, &[]).await
    }

    /// Like [`Up::start`], with environment variables for `up` (and so its services).
    async fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Up, Vec<String>) {
        let bin_dir = switchyard().parent().unwrap().to_path_buf();
        for service in ["inventory-service", "order-service", "email-service", "audit-service"] {
            assert!(
                bin_dir.join(service).exists(),
                "{service} is not built: run ./scripts/test (it builds every binary)"
            );
        }
        // Hold three ports so `up` must notice and pick free ones.
        let taken: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let ports: Vec<String> = taken.iter().map(|l| l.local_addr().unwrap().port().to_string()).collect();
        let mut child = Command::new(switchyard())
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .args(["--nats-port", &ports[0], "--monitor-port", &ports[1], "--http-port", &ports[2]])
            // Free ports for the /metrics listeners and the dashboard: tests run side by side.
            .args(["--metrics-port", "0", "--dashboard-port", "0"])
            .envs(env.iter().copied())
            .args(["--nats-config"])
            .arg(switchyard::testkit::workspace_root().join("nats.conf"))
            .args(["--nats-server"])
            .arg(switchyard::testkit::nats_server_binary())
            .args(extra)
            // A process group of its own, as a shell gives a foreground job: Ctrl-C in a
            // terminal is SIGINT to the whole group, which `interrupt` sends.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start switchyard up");
        let stdout = child.stdout.take().unwrap();
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no READY line; saw:\n{}", seen.join("\n")))
                .unwrap_or_else(|| panic!("switchyard up exited; saw:\n{}", seen.join("\n")));
            let ready = line.starts_with("READY ");
            seen.push(line);
            if ready {
                break;
            }
        }
        (Up { child, lines, data_dir: data_dir.to_path_buf(), _taken: taken }, seen)
    }

    /// Sends Ctrl-C as a terminal does (SIGINT to the process group) and returns the rest of
    /// the output and the exit success.
    async fn interrupt(mut self) -> (Vec<String>, bool) {
        let pid = self.child.id().unwrap();
        nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("up stops")
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(200), self.lines.recv()).await {
            rest.push(line);
        }
        (rest, status.success())
    }

    async fn run(&self, args: &[&str]) -> (String, bool) {
        let mut command = Command::new(switchyard());
        command.args(args).arg("--data-dir").arg(&self.data_dir).kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("switchyard {args:?} did not finish within 60 s"))
            .expect("run switchyard");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (format!("{text}{}", String::from_utf8_lossy(&output.stderr)), output.status.success())
    }
}

/// A client logged in as `ops`, with its own reply prefix (the only one nats.conf lets it read).
async fn ops_client(nats_url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password("ops".into(), "dev-ops".into())
        .custom_inbox_prefix("_INBOX_ops")
        .connect(nats_url)
        .await
        .expect("connect as ops")
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap().to_string()
}

fn number_after(text: &str, label: &str) -> u64 {
    let line =
        text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    line[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn up_demo_status_and_dlq_work_together_on_free_ports() {
    let dir = switchyard::testkit::temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &[]).await;
    let ready = startup.last().unwrap();
    assert!(
        startup.iter().filter(|l| l.starts_with("note:") && l.contains("is taken")).count() == 3,
        "{startup:?}"
    );
    let (nats_url, http_url) = (field(ready, "nats_url"), field(ready, "http_url"));
    assert!(startup.iter().any(|l| l.contains("nats context save")), "{startup:?}");
    assert!(data_dir.join("switchyard.json").exists(), "up leaves its state for the other commands");

    // demo: against the running stack, found through the state file; the figures reconcile.
    let (demo, ok) = up.run(&["demo", "--orders", "60", "--quiet"]).await;
    assert!(ok, "{demo}");
    let (accepted, out_of_stock) = (number_after(&demo, "accepted"), number_after(&demo, "out of stock"));
    assert_eq!(accepted + out_of_stock, 60, "{demo}");
    assert_eq!(number_after(&demo, "unavailable") + number_after(&demo, "errors"), 0, "{demo}");
    assert_eq!(number_after(&demo, "events in ORDERS"), accepted * 3, "{demo}");
    assert_eq!(number_after(&demo, "consumer inventory"), accepted, "{demo}");
    assert_eq!(number_after(&demo, "consumer email"), accepted, "{demo}");
    assert_eq!(number_after(&demo, "consumer audit"), accepted * 3, "{demo}");
    // No secret and no address in the services' logs: passwords, the demo's email addresses.
    for entry in std::fs::read_dir(data_dir.join("logs")).unwrap().flatten() {
        let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for secret in ["dev-ops", "dev-inventory", "dev-orders", "dev-email", "dev-audit", "@example.com"] {
            assert!(!log.contains(secret), "{} holds {secret:?}", entry.path().display());
        }
    }

    // status --json: every service and consumer, and the breaker.
    let (status, ok) = up.run(&["status", "--json"]).await;
    assert!(ok, "{status}");
    let report: serde_json::Value = serde_json::from_str(&status).unwrap();
    let services: Vec<&str> =
        report["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(services, vec!["audit", "email", "inventory", "orders"]);
    let orders = report["services"].as_array().unwrap().iter().find(|s| s["name"] == "orders").unwrap();
    assert_eq!(orders["data"]["breaker"]["state"], "closed");
    let inventory = report["services"].as_array().unwrap().iter().find(|s| s["name"] == "inventory").unwrap();
    let reserve = inventory["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "reserve").unwrap();
    assert_eq!(reserve["requests"].as_u64().unwrap(), 60);
    let consumers: Vec<(&str, &str)> = report["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["stream"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        consumers,
        vec![
            ("ORDERS", "audit"),
            ("ORDERS", "email"),
            ("ORDERS", "inventory"),
            ("TIMERS", "inventory_timers"),
            ("REPLAY", "ORDERS_audit"),
            ("REPLAY", "ORDERS_email"),
            ("REPLAY", "ORDERS_inventory"),
            ("REPLAY", "TIMERS_inventory_timers")
        ]
    );
    assert!(
        report["consumers"].as_array().unwrap().iter().all(|c| c["pending"] == 0 && c["ack_pending"] == 0)
    );
    let orders_stream = report["streams"].as_array().unwrap().iter().find(|s| s["name"] == "ORDERS").unwrap();
    assert_eq!(orders_stream["messages"].as_u64().unwrap(), accepted * 3);
    let (text, ok) = up.run(&["status"]).await;
    assert!(ok && text.contains("SERVICES") && text.contains("breaker inventory is closed"), "{text}");
    // The resilience policies are visible: the orders' outcomes and the retries.
    assert!(text.contains(&format!("orders: {accepted} accepted")), "{text}");
    assert!(text.contains("retries: 0 of "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("email") && l.contains("(no endpoints)")), "{text}");

    // dlq: a poison event lands in the DLQ once per consumer; show, replay and purge.
    let client = crate::ops_client(&nats_url).await;
    let js = async_nats::jetstream::new(client);
    js.publish("events.orders.created.poison", "{not json".into()).await.unwrap().await.unwrap();
    let mut letters = serde_json::Value::Null;
    for _ in 0..100 {
        let (ls, ok) = up.run(&["dlq", "ls", "--json"]).await;
        assert!(ok, "{ls}");
        letters = serde_json::from_str(&ls).unwrap();
        if letters.as_array().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(letters.as_array().unwrap().len(), 3, "{letters}");
    let seq = letters[0]["seq"].as_u64().unwrap().to_string();
    let (shown, ok) = up.run(&["dlq", "show", &seq]).await;
    assert!(ok && shown.contains("\"reason\": \"poison\""), "{shown}");
    // A poison replayed to its one consumer fails again: one new letter, reported, exit 1.
    let consumer = letters[0]["consumer"].as_str().unwrap().to_string();
    let (replayed, ok) = up.run(&["dlq", "replay", &seq]).await;
    assert!(!ok, "{replayed}");
    assert!(
        replayed.contains(&format!(
            "dead letter {seq} (events.orders.created.poison) replayed to consumer {consumer}"
        )) && replayed.contains("failed again, now dead letter")
            && replayed.contains("1 replayed: 0 applied, 1 failed again, 0 not settled"),
        "{replayed}"
    );
    let (ls, ok) = up.run(&["dlq", "ls", "--json"]).await;
    assert!(ok, "{ls}");
    let after: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), 3, "one new letter for the one replayed: {after:?}");
    assert!(after.iter().all(|l| l["seq"].as_u64().unwrap().to_string() != seq), "{after:?}");
    assert_eq!(
        after.iter().filter(|l| l["replay_of"].as_u64().map(|s| s.to_string()) == Some(seq.clone())).count(),
        1,
        "{after:?}"
    );
    let (refused, ok) = up.run(&["dlq", "purge"]).await;
    assert!(!ok && refused.contains("--yes"), "{refused}");
    let (purged, ok) = up.run(&["dlq", "purge", "--yes"]).await;
    assert!(ok && purged.contains("purged 3 dead letters"), "{purged}");
    let (ls, ok) = up.run(&["dlq", "ls", "--json"]).await;
    assert!(
        ok && serde_json::from_str::<serde_json::Value>(&ls).unwrap().as_array().unwrap().is_empty(),
        "{ls}"
    );

    // health: for container health checks.
    let (health, ok) = up.run(&["health", "--service", "email", "--http-url", &http_url]).await;
    assert!(ok && health.contains("email: up") && health.contains("ready"), "{health}");
    let (health, ok) = up.run(&["health", "--service", "nobody", "--timeout", "300ms"]).await;
    assert!(!ok && health.contains("does not answer"), "{health}");

    // HTTP still answers through the whole run, then Ctrl-C stops everything in order.
    let health = reqwest_free_get(&format!("{http_url}/health/ready")).await;
    assert!(health.contains("ready"), "{health}");
    let (rest, success) = up.interrupt().await;
    assert!(success, "{rest:?}");
    let stopped: Vec<&String> = rest.iter().filter(|l| l.trim_start().starts_with("stopped ")).collect();
    assert_eq!(stopped.len(), 5, "{rest:?}");
    assert!(stopped.last().unwrap().contains("nats-server"), "NATS stops last: {rest:?}");
    assert!(!data_dir.join("switchyard.json").exists());
}

/// A GET without an HTTP client dependency: the test only needs the body of a tiny response.
async fn reqwest_free_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let (host, path) = address.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream
        .write_all(format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test]
async fn up_restarts_a_service_that_dies_when_asked_to() {
    let dir = switchyard::testkit::temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, _) = Up::start(&data_dir, &["--restart"]).await;
    // Kill email-service behind up's back.
    let email_pid = find_pid("email-service", &data_dir);
    assert!(email_pid > 0, "email-service runs");
    kill(Pid::from_raw(email_pid), Signal::SIGKILL).unwrap();
    // up notices, reports it on stderr and starts a new one.
    let new_pid = wait_for_new_pid("email-service", &data_dir, email_pid).await;
    assert_ne!(new_pid, email_pid);
    // ...which is a working email-service: it answers discovery and takes over the durable.
    switchyard::testkit::eventually(
        Duration::from_secs(30),
        "the restarted email-service to answer",
        || async { up.run(&["health", "--service", "email", "--timeout", "500ms"]).await.1 },
    )
    .await;
    let (demo, ok) = up.run(&["demo", "--orders", "5", "--quiet"]).await;
    assert!(ok, "{demo}");
    assert_eq!(number_after(&demo, "consumer email"), number_after(&demo, "accepted"), "{demo}");
    let (_, success) = up.interrupt().await;
    assert!(success);
}

/// The pid of the `service` process `up` started for `data_dir` (from /proc).
fn find_pid(service: &str, data_dir: &Path) -> i32 {
    let wanted = data_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline);
        let environ = String::from_utf8_lossy(&environ);
        if cmdline.contains(service) && environ.contains(&format!("DATA_DIR={wanted}")) {
            return pid;
        }
    }
    -1
}

async fn wait_for_new_pid(service: &str, data_dir: &Path, old: i32) -> i32 {
    for _ in 0..200 {
        let pid = find_pid(service, data_dir);
        if pid > 0 && pid != old {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} was not restarted");
}
