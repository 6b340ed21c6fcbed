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
    let rows = report["sync"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "three transports at 1 and 64 in flight");
    for row in rows {
        assert!(row["sample"]["per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert_eq!(row["sample"]["errors"], 0, "{row}");
    }
    for key in
        ["ratio_vs_raw_nats_64", "ratio_vs_http_64", "relay_events_per_second", "audit_events_per_second"]
    {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(report["breaker_overhead_ns"].as_f64().is_some());
    let orders = report["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 4, "services and monolith on SQLite and Postgres");
    for row in orders {
        assert!(row["sample"]["per_second"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(report["orders_ratio"].as_array().unwrap().len(), 2);
}
