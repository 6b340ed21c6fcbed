//! The real nats CLI (Go, v0.5.0) against `switchyard up`, the way the README tells users to use
//! it: every `nats ...` line of the README runs as written, and the CLI's `--json` output (its
//! tables where it has none) says what the stack holds.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::testkit::{eventually, temp_dir, workspace_root};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::{Up, field, number_after};

/// Runs command lines through bash with the nats CLI on PATH and a private config home.
struct Shell {
    path: String,
    home: PathBuf,
}

/// A finished command line.
struct Ran {
    stdout: String,
    stderr: String,
    success: bool,
}

impl Ran {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Shell {
    fn new(home: &Path) -> Shell {
        let cli = switchyard::testkit::nats_cli_binary();
        let dir = cli.parent().expect("the nats CLI's directory").display().to_string();
        let path = format!("{dir}:{}", std::env::var("PATH").unwrap_or_default());
        Shell { path, home: home.to_path_buf() }
    }

    fn command(&self, line: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-c", line])
            .env("PATH", &self.path)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env_remove("NATS_URL")
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs `line` to its end (within 30 s).
    async fn run(&self, line: &str) -> Ran {
        let output = tokio::time::timeout(Duration::from_secs(30), self.command(line).output())
            .await
            .unwrap_or_else(|_| panic!("`{line}` did not finish within 30 s"))
            .expect("run bash");
        Ran {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            success: output.status.success(),
        }
    }

    /// Starts `line`, waits until its output contains `ready`, runs `meanwhile`, waits until the
    /// output contains `until` (each within 30 s), then stops it and returns what it printed.
    async fn run_until(
        &self,
        line: &str,
        ready: &str,
        meanwhile: impl std::future::Future<Output = ()>,
        until: &str,
    ) -> String {
        let mut child = self
            .command(&format!("exec {line}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bash");
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: [Box<dyn tokio::io::AsyncRead + Send + Unpin>; 2] =
            [Box::new(child.stdout.take().expect("stdout")), Box::new(child.stderr.take().expect("stderr"))];
        for mut pipe in pipes {
            let output = output.clone();
            readers.push(tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    output.lock().expect("lock").push_str(&String::from_utf8_lossy(&buffer[..n]));
                }
            }));
        }
        let seen = |text: &str| output.lock().expect("lock").contains(text);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !seen(ready) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        meanwhile.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !seen(until) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill().await;
        for reader in readers {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        let text = output.lock().expect("lock").clone();
        assert!(text.contains(until), "`{line}` never printed {until:?}:\n{text}");
        text
    }
}

/// The `nats ...` lines of the README's shell blocks, as written.
fn readme_nats_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let mut lines = Vec::new();
    let mut in_shell = false;
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_shell = trimmed == "```sh";
            continue;
        }
        if in_shell && trimmed.starts_with("nats ") {
            lines.push(trimmed.to_string());
        }
    }
    lines
}

/// A command line with the value of its `--server` flag left out (the README shows the default
/// port, a test stack runs on a free one).
fn without_server(line: &str) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    if let Some(at) = words.iter().position(|w| *w == "--server") {
        words.drain(at..(at + 2).min(words.len()));
    }
    words.join(" ")
}

/// Rows of one of the CLI's tables (`│`-separated cells), keyed by their first cell.
fn table_row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('│'))
        .map(|l| {
            // Between the outer borders, empty cells kept, so that indexes match the header.
            let cells: Vec<String> = l.split('│').map(|c| c.trim().to_string()).collect();
            cells[1..cells.len().saturating_sub(1)].to_vec()
        })
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

fn json(ran: &Ran) -> serde_json::Value {
    assert!(ran.success, "{}", ran.text());
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", ran.stdout))
}

#[tokio::test]
async fn the_real_nats_cli_works_on_switchyard_up_as_the_readme_says() {
    let dir = temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &[]).await;
    let ready = startup.last().expect("READY line");
    let (nats_url, http_url) = (field(ready, "nats_url"), field(ready, "http_url"));
    let (demo, ok) = up.run(&["demo", "--orders", "20", "--quiet"]).await;
    assert!(ok, "{demo}");
    let accepted = number_after(&demo, "accepted");
    let shell = Shell::new(dir.path());

    // The context line `up` prints, as printed; the README shows the same line for the default port.
    let save = startup.iter().find_map(|l| l.find("nats context save").map(|at| l[at..].to_string()));
    let save = save.expect("up prints a nats context save line");
    let lines = readme_nats_lines();
    let readme_save =
        lines.iter().find(|l| l.starts_with("nats context save")).expect("the README's context line");
    assert_eq!(
        without_server(readme_save),
        without_server(&save),
        "the README's context line is the one up prints"
    );
    let saved = shell.run(&save).await;
    assert!(saved.success && saved.stdout.contains("Connection: OK"), "{}", saved.text());

    // A poison event: three dead letters for `nats stream view DLQ`.
    let ops = crate::ops_client(&nats_url).await;
    let js = async_nats::jetstream::new(ops);
    js.publish("events.orders.created.poison", "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    eventually(Duration::from_secs(15), "three dead letters", || async {
        let mut dlq = js.get_stream("DLQ").await.expect("DLQ");
        dlq.info().await.map(|i| i.state.messages == 3).unwrap_or(false)
    })
    .await;

    // Every README line, as written.
    let mut checks = 0;
    for line in lines.iter().filter(|l| !l.starts_with("nats context save")) {
        if line.starts_with("nats sub ") {
            let http = reqwest::Client::new();
            let url = format!("{http_url}/orders");
            let id = Arc::new(Mutex::new(String::new()));
            let placed = id.clone();
            // Once the CLI says it subscribed, an order is placed; its lifecycle shows up live.
            let order = async move {
                let body =
                    serde_json::json!({ "user_id": "u1", "items": [{ "sku": "DEMO-A", "quantity": 1 }] });
                let created: serde_json::Value =
                    http.post(&url).json(&body).send().await.expect("POST").json().await.expect("order");
                *placed.lock().expect("lock") = created["id"].as_str().expect("id").to_string();
            };
            let text = shell.run_until(line, "Subscribing on", order, "events.orders.stock_committed.").await;
            let id = id.lock().expect("lock").clone();
            assert!(text.contains(&format!("events.orders.created.{id}")), "`{line}`:\n{text}");
        } else if line.starts_with("nats stream view ") {
            // It pages, so it wants a terminal: `script` gives it one.
            let quoted = line.replace('\'', "'\\''");
            let text = shell
                .run_until(
                    &format!("script -qec '{quoted}' /dev/null"),
                    "",
                    async {},
                    "Reached apparent end of data",
                )
                .await;
            for consumer in ["audit", "email", "inventory"] {
                assert!(text.contains(&format!("dlq.ORDERS.{consumer}")), "`{line}`:\n{text}");
            }
            assert!(text.contains("Switchyard-Origin-Subject: events.orders.created.poison"), "{text}");
        } else if line.contains("# denied") {
            let ran = shell.run(line).await;
            assert!(
                ran.text().contains("Permissions Violation for Publish to \"inventory.check\""),
                "`{line}` shows the denial:\n{}",
                ran.text()
            );
        } else {
            let ran = shell.run(line).await;
            assert!(ran.success, "`{line}` failed:\n{}", ran.text());
            assert!(!ran.stdout.trim().is_empty(), "`{line}` printed nothing:\n{}", ran.text());
            if line.contains("'{\"items\":[]}'") {
                assert!(ran.text().contains("Nats-Service-Error-Code: 400"), "`{line}`:\n{}", ran.text());
                assert!(ran.stdout.contains("\"code\":400"), "`{line}`:\n{}", ran.text());
            }
        }
        checks += 1;
    }
    assert!(checks >= 10, "the README lists the CLI lines: {lines:?}");

    // What the CLI says, read from its --json output.
    let ls = json(&shell.run("nats micro ls --json").await);
    let mut names: Vec<&str> =
        ls.as_array().expect("list").iter().map(|s| s["name"].as_str().expect("name")).collect();
    names.sort();
    assert_eq!(names, vec!["audit", "email", "inventory", "orders"]);
    let info = json(&shell.run("nats micro info inventory --json").await);
    let subjects: Vec<&str> = info["info"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["subject"].as_str().expect("subject"))
        .collect();
    assert!(subjects.contains(&"inventory.check") && subjects.contains(&"inventory.reserve"), "{info}");
    // The counts are this test's requests: the README's two checks (one an error) and the
    // demo's reservations.
    let checks_made = lines.iter().filter(|l| l.starts_with("nats req inventory.check")).count() as u64;
    let stats = json(&shell.run("nats micro stats inventory --json").await);
    let endpoint = |name: &str| {
        stats[0]["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .expect("endpoint")
    };
    assert_eq!(endpoint("check")["num_requests"], checks_made, "{stats}");
    assert_eq!(endpoint("check")["num_errors"], 1, "{stats}");
    assert_eq!(
        endpoint("reserve")["num_requests"],
        21,
        "20 demo orders and one while `nats sub` ran: {stats}"
    );
    let orders = json(&shell.run("nats micro stats orders --json").await);
    assert_eq!(orders[0]["endpoints"][0]["data"]["breaker"]["state"], "closed", "{orders}");

    // Streams and consumers: the stream's message count, and every consumer caught up.
    // The demo's orders have three events each; the one placed during `nats sub` (no email
    // address, so no confirmation) two; and the poison one.
    let events = accepted * 3 + 2 + 1;
    eventually(Duration::from_secs(30), "every consumer caught up", || async {
        let report = shell.run("nats consumer report ORDERS -r").await;
        ["audit", "email", "inventory"].iter().all(|c| {
            let row = table_row(&report.stdout, c);
            row[4] == "0" && row[6] == "0"
        })
    })
    .await;
    let info = json(&shell.run("nats stream info ORDERS --json").await);
    assert_eq!(info["state"]["messages"], events, "{info}");
    assert_eq!(info["config"]["subjects"][0], "events.orders.>");
    let report = shell.run("nats stream report -r").await;
    assert!(report.success, "{}", report.text());
    let row = table_row(&report.stdout, "ORDERS");
    assert_eq!((row[3].as_str(), row[4].as_str()), ("3", events.to_string().as_str()), "{}", report.stdout);
    let row = table_row(&report.stdout, "DLQ");
    assert_eq!(row[4], "3", "{}", report.stdout);

    let (_, success) = up.interrupt().await;
    assert!(success);
}
