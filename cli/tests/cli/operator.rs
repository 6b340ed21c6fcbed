//! The operator's path: one owner per data dir and per SQLite file, Ctrl-C in a terminal, user
//! errors, and finding (or not finding) a stack.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use switchyard::testkit::{NatsServer, eventually, temp_dir, workspace_root};
use tokio::process::Command;

use crate::{Up, field, switchyard};

/// A finished command: stdout, stderr, exit code.
struct Ran {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs a binary with a deadline; `RUST_BACKTRACE=1`, as many Rust users export it.
async fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish within 60 s", program.display()))
        .expect("run the command");
    Ran {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// A user error: exit code 1 and one line on stderr, `error: ...` (among a service's log lines),
/// with no backtrace.
fn assert_user_error(ran: &Ran, contains: &str) {
    assert_eq!(ran.code, Some(1), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    let lines: Vec<&str> = ran.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one line `error: ...` on stderr:\n{}", ran.stderr);
    assert!(
        !ran.stderr.to_lowercase().contains("backtrace"),
        "a user error printed a backtrace:\n{}",
        ran.stderr
    );
    assert!(errors[0].contains(contains), "expected {contains:?} in the error:\n{}", ran.stderr);
}

/// A nats-server running the repo's nats.conf with `switchyard up`'s development passwords.
fn secure_nats() -> NatsServer {
    let mut builder = NatsServer::builder().config(workspace_root().join("nats.conf"));
    for user in ["INVENTORY", "ORDERS", "EMAIL", "AUDIT", "OPS", "SYS", "PARTNER", "LOYALTY"] {
        builder = builder.env(format!("{user}_PASSWORD"), format!("dev-{}", user.to_lowercase()));
    }
    builder.start()
}

fn service_binary(name: &str) -> std::path::PathBuf {
    switchyard().parent().expect("target dir").join(name)
}

#[tokio::test]
async fn a_second_up_on_the_same_data_dir_refuses_at_once_and_leaves_the_first_untouched() {
    let dir = temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &[]).await;
    let ready = startup.last().expect("READY line");
    let (nats_url, http_url) = (field(ready, "nats_url"), field(ready, "http_url"));
    let up_pid = up.child.id().expect("up runs");
    let state_before = std::fs::read_to_string(data_dir.join("switchyard.json")).expect("state file");
    let (demo, ok) = up.run(&["demo", "--orders", "10", "--quiet"]).await;
    assert!(ok, "{demo}");

    // The second `up`: refused before it starts anything, naming the first one and its URLs.
    let nats_conf = workspace_root().join("nats.conf").display().to_string();
    let nats_server = switchyard::testkit::nats_server_binary().display().to_string();
    let data = data_dir.display().to_string();
    let second = run(
        &switchyard(),
        &[
            "up",
            "--data-dir",
            &data,
            "--nats-port",
            "0",
            "--nats-config",
            &nats_conf,
            "--nats-server",
            &nats_server,
        ],
        &[],
    )
    .await;
    assert_user_error(&second, &format!("switchyard up pid {up_pid}"));
    assert!(second.stderr.contains(&nats_url) && second.stderr.contains(&http_url), "{}", second.stderr);
    assert!(!second.stdout.contains("READY"), "{}", second.stdout);

    // The first stack's files are as they were: its state file, and one nats-server (its log
    // was neither deleted nor shared).
    assert_eq!(std::fs::read_to_string(data_dir.join("switchyard.json")).expect("state file"), state_before);
    let nats_log = std::fs::read_to_string(data_dir.join("logs/nats-server.log")).expect("nats log");
    assert_eq!(nats_log.matches("Server is ready").count(), 1, "{nats_log}");

    // A service started by hand on the first stack's SQLite file is refused too.
    let refused = run(
        &service_binary("inventory-service"),
        &[
            "--nats-url",
            &nats_url,
            "--nats-user",
            "inventory",
            "--nats-password",
            "dev-inventory",
            "--data-dir",
            &data,
        ],
        &[],
    )
    .await;
    assert_user_error(&refused, "is in use by another process (inventory pid");

    // ...and the first stack still works, with what it had.
    let (status, ok) = up.run(&["status", "--json"]).await;
    assert!(ok, "{status}");
    let report: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    let inventory =
        report["services"].as_array().expect("services").iter().find(|s| s["name"] == "inventory");
    assert_eq!(
        inventory.expect("inventory")["instances"].as_array().expect("instances").len(),
        1,
        "{status}"
    );
    let (accepted, ok) = up.run(&["demo", "--orders", "5", "--quiet"]).await;
    assert!(ok && accepted.lines().any(|l| l.starts_with("accepted") && l.contains(" 5")), "{accepted}");
    let (_, success) = up.interrupt().await;
    assert!(success);
    // Once the first is gone, the data dir is free again.
    let (up, _) = Up::start(&data_dir, &[]).await;
    let (_, success) = up.interrupt().await;
    assert!(success);
}

#[tokio::test]
async fn ctrl_c_in_the_terminal_reaches_up_alone_which_stops_the_stack_in_order_losing_no_order() {
    let dir = temp_dir();
    let data_dir = dir.path().join("stack");
    let (up, startup) = Up::start(&data_dir, &[]).await;
    let http_url = field(startup.last().expect("READY line"), "http_url");
    let (demo, ok) = up.run(&["demo", "--orders", "1", "--quiet"]).await;
    assert!(ok, "{demo}");

    // Orders flow from eight clients until the stack is gone.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client");
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, url, accepted, stop) =
            (http.clone(), format!("{http_url}/orders"), accepted.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let body = serde_json::json!({ "user_id": format!("u{client}"), "items": [{ "sku": "DEMO-A", "quantity": 1 }] });
            while !stop.load(Ordering::Relaxed) {
                let Ok(response) = http.post(&url).json(&body).send().await else { break };
                if response.status().as_u16() == 201 {
                    let order: serde_json::Value = response.json().await.expect("order JSON");
                    accepted.lock().expect("lock").push(order["id"].as_str().expect("id").to_string());
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "orders flowing", || async {
        accepted.lock().expect("lock").len() >= 50
    })
    .await;

    // Ctrl-C: SIGINT to the terminal's process group, while orders flow.
    let (rest, success) = up.interrupt().await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("client stops")
            .expect("client task");
    }
    assert!(success, "{rest:?}");
    let stopped: Vec<String> = rest
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("stopped "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        stopped,
        vec!["order-service", "audit-service", "email-service", "inventory-service", "nats-server"],
        "{rest:?}"
    );
    // The terminal's SIGINT reached `up` alone: each child got SIGTERM from `up`, in turn.
    let logs = data_dir.join("logs");
    let nats_log = std::fs::read_to_string(logs.join("nats-server.log")).expect("nats log");
    assert!(
        !nats_log.contains("Trapped \"interrupt\" signal"),
        "nats-server saw the terminal's SIGINT:\n{nats_log}"
    );
    assert!(nats_log.contains("Trapped \"terminated\" signal"), "{nats_log}");
    for service in ["order-service", "inventory-service", "email-service", "audit-service"] {
        let log = std::fs::read_to_string(logs.join(format!("{service}.log"))).expect("service log");
        assert!(log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"), "{service}:\n{log}");
        assert!(!log.contains("SIGINT"), "{service} saw the terminal's SIGINT:\n{log}");
        assert!(!log.contains("\x1b["), "{service}'s log file holds colour codes");
    }

    // After a restart every accepted order's event is in ORDERS.
    let accepted = accepted.lock().expect("lock").clone();
    assert!(accepted.len() >= 50);
    let (up, startup) = Up::start(&data_dir, &[]).await;
    let nats_url = field(startup.last().expect("READY line"), "nats_url");
    let client = crate::ops_client(&nats_url).await;
    let stream = async_nats::jetstream::new(client).get_stream("ORDERS").await.expect("ORDERS");
    for id in &accepted {
        let subject = format!("events.orders.created.{id}");
        eventually(Duration::from_secs(30), &format!("{subject} in ORDERS"), || async {
            stream.get_last_raw_message_by_subject(&subject).await.is_ok()
        })
        .await;
    }
    let (_, success) = up.interrupt().await;
    assert!(success);
}

#[tokio::test]
async fn status_watch_stops_on_the_first_ctrl_c_even_during_a_refresh() {
    let nats = NatsServer::start();
    let url = nats.url();
    // Each refresh waits 400 ms for discovery replies and the pause between is 50 ms: a signal
    // almost always lands during a refresh.
    let mut watch = Command::new(switchyard())
        .args(["status", "--watch", "--interval", "50ms", "--wait", "400ms", "--nats-url", &url])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start status --watch");
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().expect("stdout"));
    let mut first = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first),
    )
    .await
    .expect("a first screen")
    .expect("read");
    // Past the first screen, into the next refresh.
    tokio::time::sleep(Duration::from_millis(100)).await;
    killpg(Pid::from_raw(watch.id().expect("pid") as i32), Signal::SIGINT).expect("SIGINT");
    let status = tokio::time::timeout(Duration::from_secs(10), watch.wait())
        .await
        .expect("status --watch stops on one Ctrl-C")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn user_errors_are_one_line_and_an_exit_code_without_a_backtrace() {
    let dir = temp_dir();
    let data = dir.path().display().to_string();
    // An unrelated NATS server: no micro services, no ORDERS stream.
    let nats = NatsServer::start();
    let url = nats.url();

    let purge = run(&switchyard(), &["dlq", "purge", "--data-dir", &data], &[]).await;
    assert_user_error(&purge, "--yes");

    let status = run(&switchyard(), &["status", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_user_error(&status, &format!("no Switchyard stack at {url}"));
    assert!(status.stdout.is_empty(), "no empty tables when there is no stack: {}", status.stdout);

    let show = run(&switchyard(), &["dlq", "show", "1", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_user_error(&show, "no Switchyard stack");

    let health =
        run(&switchyard(), &["health", "--service", "nosuch", "--timeout", "300ms", "--nats-url", &url], &[])
            .await;
    assert_user_error(&health, "nosuch");

    let demo = run(&switchyard(), &["demo", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_user_error(&demo, "inventory-service");

    // Nothing recorded in the data dir and nothing at the given URL: say where it looked.
    let port = switchyard::testkit::free_port().expect("free port");
    let nowhere = format!("nats://127.0.0.1:{port}");
    let status = run(&switchyard(), &["status", "--nats-url", &nowhere, "--data-dir", &data], &[]).await;
    assert_user_error(&status, &format!("failed to connect to nats at {nowhere}"));
}

#[tokio::test]
async fn a_hand_given_nats_url_logs_in_as_ops_and_says_when_authorization_fails() {
    let nats = secure_nats();
    let url = nats.url();
    let dir = temp_dir();
    let data = dir.path().display().to_string();
    // No user given: the CLI logs in as ops (with $OPS_PASSWORD's default) and finds no stack.
    let status = run(&switchyard(), &["status", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_user_error(&status, "no Switchyard stack");
    // A wrong password: an authorization failure that names the user and what to pass.
    let refused = run(
        &switchyard(),
        &["status", "--nats-url", &url, "--data-dir", &data, "--nats-password", "wrong"],
        &[],
    )
    .await;
    assert_user_error(&refused, &format!("authorization failed at {url}: the server refused user ops"));
}

#[tokio::test]
async fn provision_declares_the_streams_as_ops_and_services_only_verify_them() {
    let nats = secure_nats();
    let url = nats.url();
    let dir = temp_dir();
    let data = dir.path().display().to_string();

    // A service may not declare the streams: before provisioning it refuses to start, saying why.
    let inventory = |extra: &'static [&'static str]| {
        let (url, data) = (url.clone(), data.clone());
        async move {
            let mut args =
                vec!["--nats-url", &url, "--nats-user", "inventory", "--nats-password", "dev-inventory"];
            args.extend(["--data-dir", &data, "--database-url", "sqlite::memory:"]);
            args.extend(extra);
            run(&service_binary("inventory-service"), &args, &[]).await
        }
    };
    let refused = inventory(&["--startup-timeout", "0s"]).await;
    assert_user_error(&refused, "stream ORDERS does not exist");
    assert!(refused.stderr.contains("switchyard provision"), "{}", refused.stderr);
    // ...not even when told to declare them: its user may not.
    let denied = inventory(&["--declare-streams", "--startup-timeout", "0s"]).await;
    assert_eq!(denied.code, Some(1), "{}", denied.stderr);

    // One started before provisioning waits for the streams (up to --startup-timeout)...
    let log = dir.path().join("inventory.log");
    let mut early = Command::new(service_binary("inventory-service"))
        .args(["--nats-url", &url, "--nats-user", "inventory", "--nats-password", "dev-inventory"])
        .args(["--data-dir", &data, "--database-url", "sqlite::memory:", "--startup-timeout", "120s"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start inventory-service");
    eventually(Duration::from_secs(30), "inventory-service to wait for the streams", || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("waiting for the streams")
    })
    .await;

    // The operator provisions (as ops), once and again.
    let first = run(&switchyard(), &["provision", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    for stream in ["ORDERS", "TIMERS", "DLQ", "REPLAY"] {
        assert!(
            first.stdout.lines().any(|l| l.contains(stream) && l.ends_with(": created")),
            "{}",
            first.stdout
        );
    }
    let again = run(&switchyard(), &["provision", "--nats-url", &url, "--data-dir", &data], &[]).await;
    assert_eq!(again.stdout.lines().filter(|l| l.ends_with(": up to date")).count(), 4, "{}", again.stdout);
    // ...and, the streams there, it starts and answers.
    eventually(Duration::from_secs(60), "the early inventory-service to answer", || async {
        run(
            &switchyard(),
            &["health", "--service", "inventory", "--nats-url", &url, "--timeout", "500ms"],
            &[],
        )
        .await
        .code
            == Some(0)
    })
    .await;
    assert!(early.try_wait().expect("wait").is_none(), "it is still running");
    let _ = early.kill().await;
    // Another user may read the streams but not change them.
    let mut args = vec!["provision", "--nats-url", &url, "--data-dir", &data, "--duplicate-window", "1m"];
    args.extend(["--nats-user", "email", "--nats-password", "dev-email"]);
    let email = run(&switchyard(), &args, &[]).await;
    assert_eq!(email.code, Some(1), "{}{}", email.stdout, email.stderr);
    assert!(email.stderr.contains("failed to provision stream"), "{}", email.stderr);
}
