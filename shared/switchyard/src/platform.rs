//! What every service opens at start-up, in one call: its database (migrated), its NATS
//! connection, JetStream, and the declared streams.

use std::sync::Arc;

use async_nats::jetstream;

use crate::config::CommonArgs;
use crate::db::{Db, DbError, Migrations};
use crate::micro::ServiceHandle;
use crate::nats::ConnectError;
use crate::observe::{MetricsServer, Scrape};
use crate::outbox::{Relay, RelayConfig};
use crate::ownership::{Ownership, OwnershipError};
use crate::shutdown::Shutdown;
use crate::streams::{EventStream, StreamError};

/// Why a service could not open its connections.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// NATS refused or did not answer.
    #[error(transparent)]
    Nats(#[from] ConnectError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The streams could not be declared.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// `--metrics-addr` could not be bound.
    #[error(transparent)]
    Metrics(#[from] crate::observe::ServeError),
    /// Another process of this service has the SQLite file open.
    #[error("refusing to open the database (one process per SQLite file; run several instances on Postgres)")]
    Owned(#[from] OwnershipError),
}

/// A service's connections.
#[derive(Debug, Clone)]
pub struct Platform {
    /// The service name (NATS client name prefix, default database file name).
    pub service: String,
    /// This instance's id.
    pub instance: String,
    /// The migrated database.
    pub db: Db,
    /// The NATS client, named `<service>-<instance>`.
    pub client: async_nats::Client,
    /// JetStream on that client.
    pub js: jetstream::Context,
    /// What `/metrics` renders for this service (its gauges' collectors).
    pub scrape: Scrape,
    /// `/metrics` on `--metrics-addr`, when set.
    pub metrics_server: Option<MetricsServer>,
}

impl Platform {
    /// Opens and migrates the database, connects to NATS and verifies (with `--declare-streams`,
    /// declares) the event streams `streams` and the platform's `DLQ` and `REPLAY`.
    ///
    /// On SQLite the service first takes `<file>.lock` ([`crate::ownership`]): a second process
    /// of the service on the same file is refused with the first one's pid.
    pub async fn connect(
        common: &CommonArgs,
        service: &str,
        migrations: &Migrations,
        streams: &[EventStream],
    ) -> Result<Self, PlatformError> {
        let instance = common.instance_id();
        let url = common.database_url_for(service);
        let ownership = match crate::db::sqlite_path(&url) {
            Some(path) => Some(own_sqlite_file(path, service)?),
            None => None,
        };
        let mut db = Db::connect(&url, migrations).await?;
        if let Some(ownership) = ownership {
            // Held as long as the pool: every part of the service that uses the database.
            db = db.owned_by(ownership);
        }
        let client = crate::nats::connect(&common.nats, service, &instance).await?;
        let js = jetstream::new(client.clone());
        let settings = common.streams.settings();
        // Until the start-up deadline, a missing stream or an unanswered JetStream request is
        // waited for (provisioning may run beside this start, a cluster may still elect); a
        // stream of another shape is an error at once.
        let deadline = tokio::time::Instant::now() + common.streams.startup_timeout;
        let mut attempt = 0;
        loop {
            let result = if common.streams.declare_streams {
                crate::streams::ensure_streams(&js, streams, &settings).await
            } else {
                crate::streams::verify_streams(&js, streams, &settings).await
            };
            match result {
                Ok(()) => break,
                Err(err @ (StreamError::Missing { .. } | StreamError::JetStream { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    let delay = crate::backoff::delay(attempt + 3);
                    tracing::warn!(error = %err, retry_in = ?delay, "waiting for the streams");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let scrape = Scrape::new();
        let outbox_db = db.clone();
        scrape.on_scrape(move || {
            let db = outbox_db.clone();
            async move {
                match crate::outbox::backlog(&db).await {
                    Ok((rows, age)) => {
                        metrics::gauge!(crate::observe::OUTBOX_BACKLOG).set(rows as f64);
                        metrics::gauge!(crate::observe::OUTBOX_OLDEST_AGE)
                            .set(age.map(|age| age.as_secs_f64()).unwrap_or(0.0));
                    }
                    Err(err) => tracing::debug!(error = %err, "failed to read the outbox backlog"),
                }
            }
        });
        let metrics_server = match common.metrics_addr {
            Some(addr) => Some(MetricsServer::start(addr, scrape.clone()).await?),
            None => None,
        };
        Ok(Platform { service: service.to_string(), instance, db, client, js, scrape, metrics_server })
    }

    /// An outbox relay for this service's database, claiming rows as `<service>-<instance>`.
    pub fn relay(&self) -> Relay {
        Relay::new(
            self.db.clone(),
            self.js.clone(),
            format!("{}-{}", self.service, self.instance),
            RelayConfig::default(),
        )
    }
}

/// An outbox relay running in the background ([`Platform::spawn_relay`]).
#[derive(Debug)]
pub struct RelayTask {
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Platform {
    /// A durable consumer on this service's JetStream that applies its messages with `apply`
    /// in write transactions on its database (group commit; see [`crate::consumer`]).
    pub fn consumer(
        &self,
        spec: crate::consumer::ConsumerSpec,
        apply: impl crate::consumer::Apply,
    ) -> crate::consumer::Consumer {
        let consumer = crate::consumer::Consumer::batched(self.js.clone(), spec, self.db.clone(), apply);
        consumer.observe(&self.scrape);
        consumer
    }

    /// Runs `relay` in the background until [`Platform::stop`].
    pub fn spawn_relay(&self, relay: Relay) -> RelayTask {
        let stop = Shutdown::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        RelayTask { stop, task }
    }

    /// Stops a service's parts in the one sequence that loses nothing: the relay publishes what
    /// was committed and stops; the micro endpoints stop (their in-flight requests answered);
    /// NATS drains (pending publishes and acks flushed, within 5 s); the database closes.
    /// Call it after the service's own work (HTTP, consumers) has finished.
    pub async fn stop(self, relay: Option<RelayTask>, service: Option<ServiceHandle>) {
        if let Some(RelayTask { stop, task }) = relay {
            stop.trigger();
            if let Err(err) = task.await {
                tracing::error!(error = %err, "outbox relay task failed");
            }
        }
        if let Some(service) = service {
            service.stop().await;
        }
        if let Some(server) = self.metrics_server {
            server.stop().await;
        }
        crate::nats::drain(&self.client, std::time::Duration::from_secs(5)).await;
        self.db.close().await;
        tracing::info!(service = %self.service, "stopped");
    }
}

/// Takes `<file>.lock` next to a SQLite file (creating its directory when missing).
fn own_sqlite_file(path: &std::path::Path, service: &str) -> Result<Arc<Ownership>, PlatformError> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| {
            PlatformError::Db(DbError::CreateDir { path: dir.display().to_string(), source })
        })?;
    }
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let ownership = crate::ownership::acquire(
        std::path::Path::new(&lock),
        &format!("database {}", path.display()),
        &format!("{service} pid {}", std::process::id()),
    )?;
    Ok(ownership)
}
