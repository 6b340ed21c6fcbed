//! The observability configurations under deploy/ and in compose.yaml agree with the code: the
//! Grafana dashboard is well formed and charts every metric the platform records (and nothing it
//! does not), and Prometheus scrapes every service where compose serves its /metrics.

use std::collections::BTreeSet;
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
    let compose = yaml(&root.join("compose.yaml"));
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
            let source = volume.as_str().and_then(|v| v.split(':').next()).unwrap_or_default();
            assert!(root.join(source).exists(), "{service} mounts {source}, which is missing");
        }
    }
}
