//! What every service opens at start-up, in one call: its database (migrated), its NATS
//! connection, JetStream, and the declared streams.

use async_nats::jetstream;

use crate::config::CommonArgs;
use crate::db::{Db, DbError, Migrations};
use crate::nats::ConnectError;
use crate::outbox::{Relay, RelayConfig};
use crate::streams::StreamError;

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
}

impl Platform {
    /// Opens and migrates the database, connects to NATS and declares `ORDERS` and `DLQ`.
    pub async fn connect(
        common: &CommonArgs,
        service: &str,
        migrations: &Migrations,
    ) -> Result<Self, PlatformError> {
        let instance = common.instance_id();
        let db = Db::connect(&common.database_url_for(service), migrations).await?;
        let client = crate::nats::connect(&common.nats, service, &instance).await?;
        let js = jetstream::new(client.clone());
        crate::streams::ensure_streams(&js, &common.streams.settings()).await?;
        Ok(Platform { service: service.to_string(), instance, db, client, js })
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
