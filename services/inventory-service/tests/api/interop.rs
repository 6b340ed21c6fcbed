use std::process::Command;

use crate::helpers::spawn_inventory;

/// The Python interpreter with nats-py: `SWITCHYARD_PYTHON`, or the venv `scripts/test` makes.
fn python() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_PYTHON") {
        return path.into();
    }
    let venv = switchyard::testkit::workspace_root().join(".tools/venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with nats-py: run ./scripts/test (it creates .tools/venv), or set SWITCHYARD_PYTHON"
    );
    venv
}

#[tokio::test]
async fn a_python_client_discovers_and_calls_inventory_like_the_nats_cli() {
    let app = spawn_inventory().await;
    app.restock("A-1", 5).await;
    let script = crate::helpers::interop_dir().join("micro_cli.py");
    let url = app.nats.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
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
