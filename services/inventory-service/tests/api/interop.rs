use std::process::Command;

use crate::helpers::spawn_inventory;

#[tokio::test]
async fn a_python_client_discovers_and_calls_inventory_like_the_nats_cli() {
    let app = spawn_inventory().await;
    app.restock("A-1", 5).await;
    let script = crate::helpers::interop_dir().join("micro_interop_check.py");
    let url = app.nats.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(switchyard::testkit::python())
            .arg(script)
            .args(["--url", &url, "--sku", "A-1", "--available", "5"])
            .output()
            .expect("run the python interop script")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "interop script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("interop: all checks passed"), "{stdout}");
}
