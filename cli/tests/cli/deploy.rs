//! The deployment descriptions agree with the code: the Grafana dashboard is well formed and
//! charts every metric the platform records (and nothing it does not); Prometheus scrapes every
//! service where compose serves its /metrics; the Kubernetes manifests validate against the
//! Kubernetes schemas; compose and Kubernetes take the services' configuration from the same
//! files (deploy/config/*.env), and every variable either sets is one the service's `--help` lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use switchyard::testkit::workspace_root;

/// A YAML file as JSON, read by PyYAML (the suite's Python).
fn yaml(path: &Path) -> Value {
    let output = std::process::Command::new(switchyard::testkit::python())
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(path)
        .output()
        .expect("run python");
    assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// Every document of a multi-document YAML file, as JSON.
fn yaml_all(path: &Path) -> Vec<Value> {
    let output = std::process::Command::new(switchyard::testkit::python())
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json")
}

/// compose.yaml as Compose resolves it (env files read, anchors merged), every profile on.
fn compose() -> Value {
    let compose = switchyard::testkit::python().with_file_name("docker-compose");
    let output = std::process::Command::new(compose)
        .arg("-f")
        .arg(workspace_root().join("compose.yaml"))
        .args(["--profile", "observability", "config", "--format", "json"])
        .output()
        .expect("run docker-compose (./scripts/test installs it)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("compose json")
}

/// `KEY=VALUE` lines of an env file, comments and blank lines left out.
fn env_file(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/config").join(name)).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=VALUE");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The environment variables `binary --help` lists (`[env: NAME=...]`).
fn help_env(binary: &str) -> BTreeSet<String> {
    let path = crate::switchyard().with_file_name(binary);
    let output =
        std::process::Command::new(&path).arg("--help").output().expect("the service binary is built");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect()
}

/// The metric names an expression uses (`switchyard_...`, histogram suffixes removed).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("switchyard_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| base.ends_with("_seconds") || base.ends_with("_size"))
            .unwrap_or(name);
        names.push(base.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_is_well_formed_and_charts_every_platform_metric() {
    let root = workspace_root();
    let text = std::fs::read_to_string(root.join("deploy/grafana/dashboards/switchyard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    for key in ["uid", "title"] {
        assert!(dashboard[key].as_str().is_some_and(|v| !v.is_empty()), "dashboard {key}");
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "a schema Grafana 10+ loads");
    let datasources = yaml(&root.join("deploy/grafana/provisioning/datasources/prometheus.yml"));
    let uid = datasources["datasources"][0]["uid"].as_str().expect("the provisioned data source has a uid");

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(ids.insert(panel["id"].as_u64().expect("a numeric id")), "duplicate id at {title}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(grid["h"].as_u64().unwrap() > 0 && w > 0 && x + w <= 24, "{title} fits the 24-column grid");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["type"], "timeseries", "{title}");
        assert_eq!(panel["datasource"]["uid"], uid, "{title} uses the provisioned Prometheus");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has queries");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().unwrap().to_string()), "{title}: refIds differ");
            let expr = target["expr"].as_str().expect("an expression");
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{title}: {expr}");
            used.extend(metric_names(expr));
        }
    }
    let mut recorded: BTreeSet<String> =
        switchyard::observe::METRICS.iter().map(|m| m.name.to_string()).collect();
    // order-service's own metric.
    recorded.insert("switchyard_orders_total".to_string());
    let unknown: Vec<&String> = used.difference(&recorded).collect();
    assert!(unknown.is_empty(), "the dashboard charts metrics nobody records: {unknown:?}");
    let missing: Vec<&String> = recorded.difference(&used).collect();
    assert!(missing.is_empty(), "metrics the dashboard does not chart: {missing:?}");
}

#[test]
fn the_readme_documents_every_metric() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    for metric in switchyard::observe::METRICS {
        let row = format!("| `{}` | {} |", metric.name, metric.kind);
        assert!(readme.contains(&row), "the README's metrics table lacks {row}");
    }
}

#[test]
fn prometheus_scrapes_every_service_where_compose_serves_its_metrics() {
    let root = workspace_root();
    let compose = compose();
    let prometheus = yaml(&root.join("deploy/prometheus/prometheus.yml"));
    let jobs = prometheus["scrape_configs"].as_array().expect("scrape configs");
    let services = compose["services"].as_object().unwrap();
    for (service, job) in [
        ("orders", "order-service"),
        ("inventory", "inventory-service"),
        ("email", "email-service"),
        ("audit", "audit-service"),
    ] {
        let addr =
            services[service]["environment"]["METRICS_ADDR"].as_str().unwrap_or_else(|| panic!("{service}"));
        let port: u64 = addr.rsplit(':').next().unwrap().parse().unwrap();
        let config = jobs.iter().find(|j| j["job_name"] == job).unwrap_or_else(|| panic!("no job {job}"));
        let sd = &config["dns_sd_configs"][0];
        assert_eq!(sd["names"][0], service, "{job} finds every container of {service}");
        assert_eq!(sd["port"].as_u64(), Some(port), "{job} scrapes {service}'s METRICS_ADDR");
    }
    let nats = jobs.iter().find(|j| j["job_name"] == "nats").expect("nats-server's metrics");
    for target in nats["static_configs"][0]["targets"].as_array().unwrap() {
        let host = target.as_str().unwrap().split(':').next().unwrap();
        let exporter = &services[host];
        assert!(exporter["image"].as_str().unwrap().contains("prometheus-nats-exporter"), "{host}");
        let node = exporter["command"].as_array().unwrap().last().unwrap().as_str().unwrap();
        assert!(node.ends_with(":8222"), "{host} reads a node's monitoring port: {node}");
    }
    // The files the observability services mount exist.
    for service in ["prometheus", "grafana"] {
        for volume in services[service]["volumes"].as_array().unwrap() {
            let source = volume["source"].as_str().unwrap_or_default();
            assert!(Path::new(source).exists(), "{service} mounts {source}, which is missing");
        }
    }
}

#[test]
fn the_kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    let root = workspace_root();
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("deploy/k8s"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 6, "{manifests:?}");
    let validate = switchyard::testkit::python().with_file_name("kubernetes-validate");
    let output = std::process::Command::new(validate)
        .args(["--strict", "--kubernetes-version", "1.37.0"])
        .args(&manifests)
        .output()
        .expect("run kubernetes-validate (./scripts/test installs it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    // Every resource was checked: nothing skipped for want of a schema.
    assert!(!text.contains("skipping") && !text.contains("WARN"), "{text}");
    for kind in [
        "statefulset/nats",
        "deployment/orders",
        "deployment/inventory",
        "deployment/email",
        "deployment/audit",
        "poddisruptionbudget/nats",
        "job/provision",
    ] {
        assert!(text.contains(&format!("passed for resource {kind}")), "{kind} was not validated:\n{text}");
    }
}

#[test]
fn compose_and_kubernetes_share_the_services_configuration_and_it_matches_their_help() {
    let root = workspace_root();
    let compose = compose();
    let documents: Vec<Value> = ["20-config.yaml", "50-services.yaml"]
        .iter()
        .flat_map(|file| yaml_all(&root.join("deploy/k8s").join(file)))
        .collect();
    let config_map = |name: &str| -> BTreeMap<String, String> {
        let found = documents
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"));
        serde_json::from_value(found["data"].clone()).unwrap()
    };
    // nats.conf goes into Kubernetes verbatim.
    let nats = documents.iter().find(|d| d["metadata"]["name"] == "nats-config").unwrap();
    let repo_conf = std::fs::read_to_string(root.join("nats.conf")).unwrap();
    assert_eq!(
        nats["data"]["nats.conf"].as_str(),
        Some(repo_conf.as_str()),
        "the ConfigMap's nats.conf is the repo's"
    );
    assert_eq!(
        config_map("switchyard-common"),
        env_file("common.env"),
        "switchyard-common = deploy/config/common.env"
    );

    for (service, binary) in [
        ("inventory", "inventory-service"),
        ("orders", "order-service"),
        ("email", "email-service"),
        ("audit", "audit-service"),
    ] {
        let own = env_file(&format!("{service}.env"));
        assert_eq!(
            config_map(&format!("switchyard-{service}")),
            own,
            "switchyard-{service} = deploy/config/{service}.env"
        );
        let known = help_env(binary);
        assert!(known.contains("NATS_URL") && known.contains("METRICS_ADDR"), "{binary} --help: {known:?}");

        // Compose: the env files' values, and nothing its --help does not know.
        let environment = compose["services"][service]["environment"].as_object().unwrap();
        for (key, value) in env_file("common.env").iter().chain(own.iter()) {
            assert_eq!(
                environment.get(key).and_then(Value::as_str),
                Some(value.as_str()),
                "compose {service}: {key}"
            );
        }
        for key in environment.keys() {
            assert!(
                key == "RUST_LOG" || known.contains(key),
                "compose sets {key} on {service}, which {binary} --help does not list"
            );
        }

        // Kubernetes: the Deployment takes both ConfigMaps, and sets only what --help knows.
        let deployment = documents
            .iter()
            .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == service)
            .unwrap_or_else(|| panic!("no Deployment {service}"));
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["command"][0], binary);
        let from: Vec<&str> = container["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["configMapRef"]["name"].as_str())
            .collect();
        assert_eq!(from, ["switchyard-common".to_string(), format!("switchyard-{service}")]);
        for variable in container["env"].as_array().unwrap() {
            let key = variable["name"].as_str().unwrap();
            assert!(
                known.contains(key),
                "the {service} Deployment sets {key}, which {binary} --help does not list"
            );
        }
        for key in env_file("common.env").keys().chain(own.keys()) {
            assert!(
                key == "RUST_LOG" || known.contains(key),
                "deploy/config sets {key} for {service}, which {binary} --help does not list"
            );
        }
    }
}
