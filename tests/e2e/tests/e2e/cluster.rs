use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use contracts::names;
use switchyard::Shutdown;
use switchyard::testkit::{NatsCluster, TestDatabase, count, eventually, try_count, try_subject_count};

/// Which node of the cluster dies mid-run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    /// The node that leads the `ORDERS` stream: the stream must elect another leader.
    StreamLeader,
    /// The node order-service is connected to: order-service must reconnect to another node.
    OrderServiceNode,
}

/// The compose topology without Docker: three clustered nodes, `ORDERS` at three replicas, every
/// service given all three URLs. The stream's leader dies mid-run; the stream fails over, orders
/// keep flowing and nothing is lost.
#[tokio::test]
async fn the_stack_survives_losing_the_stream_leader_of_a_three_node_cluster() {
    survive_losing(Victim::StreamLeader).await;
}

/// As above, but the node that dies is the one order-service is connected to: order-service
/// reconnects to a survivor and orders keep flowing.
#[tokio::test]
async fn the_stack_survives_losing_the_node_order_service_is_connected_to() {
    survive_losing(Victim::OrderServiceNode).await;
}

/// The nodes (by index) that have a client connection whose name starts with `prefix`, read from
/// each live node's `/connz`.
async fn nodes_serving(cluster: &NatsCluster, prefix: &str, skip: Option<usize>) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        let monitor = node.monitor_url().expect("a live node has a monitoring port");
        let connections = crate::helpers::connections(&monitor).await;
        if connections.iter().any(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix))) {
            found.push(i);
        }
    }
    found
}

/// A service's command line on a loopback cluster: every node's URL, its own database, the
/// shared data dir, R3 streams it may declare (the test servers have no authorization).
pub fn cluster_args(name: &str, urls: &str, db: &TestDatabase, data_dir: &std::path::Path) -> Vec<String> {
    let data_dir = data_dir.display().to_string();
    [name, "--nats-url", urls, "--database-url", db.url(), "--data-dir", &data_dir]
        .into_iter()
        .chain(["--stream-replicas", "3", "--declare-streams"])
        .map(String::from)
        .collect()
}

/// Waits until the cluster has a JetStream meta leader: an R3 stream can be created.
pub async fn wait_for_replicated_streams(cluster: &NatsCluster) {
    let probe = async_nats::ConnectOptions::new().connect(cluster.nodes[1].url()).await.unwrap();
    let probe_js = jetstream::new(probe.clone());
    eventually(Duration::from_secs(60), "the cluster to accept an R3 stream", || async {
        let config = jetstream::stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe".into()],
            num_replicas: 3,
            ..Default::default()
        };
        probe_js.create_stream(config).await.is_ok()
    })
    .await;
    probe_js.delete_stream("PROBE").await.unwrap();
}

async fn survive_losing(victim_kind: Victim) {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let mut cluster = NatsCluster::start(3, "");
    let urls = cluster.urls();

    wait_for_replicated_streams(&cluster).await;

    let data = TestDatabase::sqlite();
    let data_dir =
        std::path::PathBuf::from(data.url().trim_start_matches("sqlite://").split('?').next().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
    let (inventory_db, orders_db, email_db, audit_db) =
        (TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite());
    let args = |name: &str, db: &TestDatabase| cluster_args(name, &urls, db, &data_dir);
    let shutdown = Shutdown::new();
    let mut tasks = Vec::new();
    let inventory = inventory_service::App::build(inventory_service::Config::parse_from(args(
        "inventory-service",
        &inventory_db,
    )))
    .await
    .unwrap();
    tasks.push(tokio::spawn(inventory.run_until_stopped(shutdown.clone())));
    let email =
        email_service::App::build(email_service::Config::parse_from(args("email-service", &email_db)))
            .await
            .unwrap();
    tasks.push(tokio::spawn(email.run_until_stopped(shutdown.clone())));
    let audit =
        audit_service::App::build(audit_service::Config::parse_from(args("audit-service", &audit_db)))
            .await
            .unwrap();
    tasks.push(tokio::spawn(audit.run_until_stopped(shutdown.clone())));
    let mut order_args = args("order-service", &orders_db);
    order_args.extend([
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--breaker-volume-threshold".into(),
        "1000".into(),
    ]);
    let orders = order_service::App::build(order_service::Config::parse_from(order_args)).await.unwrap();
    let base_url = format!("http://127.0.0.1:{}", orders.port());
    let order_shutdown = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        orders.run_until_stopped(order_shutdown).await.expect("order-service runs and stops cleanly");
    }));

    // The test's own client fails over too.
    let client =
        switchyard::nats::connect(&switchyard::config::NatsArgs::plain(urls.clone()), "test", "cluster")
            .await
            .unwrap();
    let js = jetstream::new(client.clone());
    let requests = switchyard::client::RequestClient::new(client.clone(), Duration::from_secs(5));
    let _: contracts::RestockReply = requests
        .request(names::INVENTORY_RESTOCK, &serde_json::json!({ "sku": "A-1", "quantity": 10000 }))
        .await
        .unwrap();
    let mut stream = js.get_stream(names::ORDERS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.num_replicas, 3);
    // The node that leads ORDERS (nodes are named n1, n2, n3 in start order).
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).expect("ORDERS has a leader");
    let leader_node: usize = leader.trim_start_matches('n').parse::<usize>().expect("node name") - 1;
    let victim = match victim_kind {
        Victim::StreamLeader => leader_node,
        Victim::OrderServiceNode => {
            let serving = nodes_serving(&cluster, "orders-", None).await;
            assert_eq!(serving.len(), 1, "order-service has one connection, on one node: {serving:?}");
            serving[0]
        }
    };

    // Orders flow; a third of the way in, the victim dies.
    let http = reqwest::Client::new();
    let (mut accepted, mut unavailable, mut accepted_after_kill) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for n in 0..150 {
        if n == 50 {
            cluster.nodes[victim].kill();
        }
        let body = serde_json::json!({ "user_id": format!("u{n}"), "email": "u@example.com", "items": [{ "sku": "A-1", "quantity": 1 }] });
        // A request caught in the failover may fail; the client retries it as a user would.
        let mut status = 0;
        for _ in 0..20 {
            status = match http.post(format!("{base_url}/orders")).json(&body).send().await {
                Ok(response) => response.status().as_u16(),
                Err(_) => 0,
            };
            if status == 201 {
                break;
            }
            unavailable += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(status, 201, "order {n} was never accepted");
        accepted += 1;
        if n >= 50 {
            accepted_after_kill += 1;
        }
    }
    assert_eq!((accepted, accepted_after_kill), (150, 100));
    if victim_kind == Victim::OrderServiceNode {
        // order-service moved: its connection is on a survivor now.
        let moved = nodes_serving(&cluster, "orders-", Some(victim)).await;
        assert_eq!(moved.len(), 1, "order-service reconnected to one surviving node: {moved:?}");
        assert_ne!(moved[0], victim);
    }
    if victim == leader_node {
        // The stream failed over: another node leads it now.
        eventually(Duration::from_secs(30), "ORDERS to have a new leader", || async {
            match js.get_stream(names::ORDERS_STREAM).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()))
                    .is_some_and(|now| now != leader),
                Err(_) => false,
            }
        })
        .await;
    }

    // Nothing lost, nothing doubled: every accepted order is one created event, one commit, one
    // email, and the audit trail holds every event.
    eventually(Duration::from_secs(90), "every consumer to apply every event", || async {
        let events = |filter| try_subject_count(&js, names::ORDERS_STREAM, filter);
        events("events.orders.created.*").await == Ok(150)
            && events("events.orders.stock_committed.*").await == Ok(150)
            && events("events.orders.confirmation_sent.*").await == Ok(150)
            && try_count(audit_db.url(), "SELECT COUNT(*) FROM audit_events").await.ok() == Some(450)
    })
    .await;
    assert_eq!(count(email_db.url(), "SELECT COUNT(*) FROM emails").await, 150);
    assert_eq!(
        count(inventory_db.url(), "SELECT COUNT(*) FROM inbox WHERE consumer = 'inventory'").await,
        150
    );
    assert_eq!(count(orders_db.url(), "SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").await, 0);
    println!(
        "cluster run ({victim_kind:?}, n{} killed, {leader} led ORDERS): 150 orders accepted ({unavailable} retried during the failover) in {:?}; \
         450 events, 150 commits, 150 emails, 450 audit rows",
        victim + 1,
        started.elapsed()
    );
    shutdown.trigger();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Day one on a cluster: a fresh 3-node cluster (still electing its JetStream leader) and the
/// four services started at the same instant, all declaring the R3 streams at once. Each waits
/// for JetStream and retries with backoff until `--startup-timeout`; every one becomes ready,
/// ten times in a row.
#[tokio::test]
async fn services_started_at_once_on_a_fresh_cluster_all_become_ready_ten_times_in_a_row() {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let mut took = Vec::new();
    for round in 0..10 {
        let cluster = NatsCluster::start(3, "");
        let urls = cluster.urls();
        let data = switchyard::testkit::temp_dir();
        let dbs =
            [TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite(), TestDatabase::sqlite()];
        let args = |name: &str, db: &TestDatabase| {
            let mut args: Vec<String> = vec![name.into()];
            args.extend(
                [
                    "--nats-url",
                    &urls,
                    "--database-url",
                    db.url(),
                    "--stream-replicas",
                    "3",
                    "--declare-streams",
                ]
                .map(String::from),
            );
            args.extend(["--data-dir".to_string(), data.path().display().to_string()]);
            args
        };
        let mut order_args = args("order-service", &dbs[3]);
        order_args.extend(["--http-addr".to_string(), "127.0.0.1:0".to_string()]);
        let started = Instant::now();
        let (inventory, email, audit, orders) = tokio::join!(
            inventory_service::App::build(inventory_service::Config::parse_from(args(
                "inventory-service",
                &dbs[0]
            ))),
            email_service::App::build(email_service::Config::parse_from(args("email-service", &dbs[1]))),
            audit_service::App::build(audit_service::Config::parse_from(args("audit-service", &dbs[2]))),
            order_service::App::build(order_service::Config::parse_from(order_args)),
        );
        let (inventory, email, audit, orders) = (
            inventory.unwrap_or_else(|e| panic!("round {round}: inventory-service: {e}")),
            email.unwrap_or_else(|e| panic!("round {round}: email-service: {e}")),
            audit.unwrap_or_else(|e| panic!("round {round}: audit-service: {e}")),
            orders.unwrap_or_else(|e| panic!("round {round}: order-service: {e}")),
        );
        let shutdown = Shutdown::new();
        let ready = format!("http://127.0.0.1:{}/health/ready", orders.port());
        let stop = shutdown.clone();
        let tasks = vec![
            tokio::spawn(inventory.run_until_stopped(shutdown.clone())),
            tokio::spawn(email.run_until_stopped(shutdown.clone())),
            tokio::spawn(audit.run_until_stopped(shutdown.clone())),
            tokio::spawn(async move {
                orders.run_until_stopped(stop).await.expect("order-service runs and stops cleanly");
            }),
        ];
        // Ready: order-service says so, and every micro service answers its PING.
        let client = async_nats::connect(cluster.nodes[round % 3].url()).await.expect("connect");
        eventually(Duration::from_secs(60), "every service to be ready", || async {
            let http_ready = reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success());
            let mut pinged = true;
            for name in
                [names::INVENTORY_SERVICE, names::EMAIL_SERVICE, names::AUDIT_SERVICE, names::ORDERS_SERVICE]
            {
                pinged &=
                    client.request(names::srv_subject("PING", Some(name), None), "".into()).await.is_ok();
            }
            http_ready && pinged
        })
        .await;
        took.push(started.elapsed());
        let js = jetstream::new(client.clone());
        let mut orders_stream = js.get_stream(names::ORDERS_STREAM).await.expect("ORDERS");
        let replicas = orders_stream.info().await.expect("info").config.num_replicas;
        assert_eq!(replicas, 3, "round {round}");
        shutdown.trigger();
        for task in tasks {
            switchyard::testkit::joined(task, "a service to stop").await;
        }
    }
    println!("fresh 3-node cluster, four services started at once: all ready in each of 10 rounds: {took:?}");
}
