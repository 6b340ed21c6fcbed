//! The benchmark keeps working: one `--quick` run, checked for what it reports (not for speed).

#[test]
fn the_quick_benchmark_runs_every_measurement_and_writes_its_report() {
    let dir = switchyard::testkit::temp_dir();
    let report_path = dir.path().join("report.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .arg("--quick")
        .arg("--report")
        .arg(&report_path)
        .output()
        .expect("run switchyard-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("switchyard / raw NATS at 64 in flight"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let sync = &report["sync"];
    let rows = sync["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "three transports at 1 and 64 in flight");
    for row in rows {
        assert!(row["sample"]["per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["sample"]["errors"], 0, "{row}");
    }
    for key in ["ratio_vs_raw_nats_64", "ratio_vs_http_64"] {
        assert!(sync[key].as_f64().unwrap() > 0.0, "{key}: {sync}");
    }
    assert!(report["breaker_overhead_ns"].as_f64().is_some());

    let orders = &report["orders"];
    assert_eq!(orders["rows"].as_array().unwrap().len(), 4, "services and monolith on SQLite and Postgres");
    for row in orders["rows"].as_array().unwrap() {
        assert!(row["sample"]["per_second"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(orders["ratios"].as_array().unwrap().len(), 2);

    let events = &report["events"];
    for key in ["relay_events_per_second", "jetstream_publish_per_second", "jetstream_consume_per_second"] {
        assert!(events[key].as_f64().unwrap() > 0.0, "{key}: {events}");
    }
    let consumers = events["consumers"].as_array().unwrap();
    let names: Vec<&str> = consumers.iter().map(|c| c["consumer"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "audit", "inventory", "inventory", "email", "email"]);
    for consumer in consumers {
        assert_eq!(consumer["applied"], events["events"], "every event applied: {consumer}");
    }

    // The four services ran as processes and every accepted order reached all three consumers.
    let pipeline = &report["pipeline"];
    let rates = pipeline["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 1);
    assert!(rates[0]["accepted"].as_u64().unwrap() > 0, "{pipeline}");
    assert_eq!(rates[0]["done"], rates[0]["accepted"], "{pipeline}");
    assert_eq!(rates[0]["failed"], 0, "{pipeline}");
    let services: Vec<&str> =
        pipeline["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(
        services,
        ["inventory-service", "order-service", "email-service", "audit-service", "nats-server"]
    );
    for service in pipeline["services"].as_array().unwrap() {
        assert!(service["peak_rss_mb"].as_f64().unwrap() > 0.0, "{service}");
    }
}
