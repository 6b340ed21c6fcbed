//! Shared set-up for the platform tests: a nats-server with the streams, a database with the
//! outbox and inbox tables.

use std::time::Duration;

use async_nats::jetstream;
use switchyard::db::{Db, Migration, Migrations};
use switchyard::streams::{StreamSettings, ensure_streams};
use switchyard::testkit::{NatsServer, TestDatabase};

/// Outbox and inbox tables, the way services include them.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration { version: 1, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
        Migration { version: 2, description: "inbox", sql: switchyard::inbox::SQL },
    ],
    postgres: &[
        Migration { version: 1, description: "outbox", sql: switchyard::outbox::POSTGRES_SQL },
        Migration { version: 2, description: "inbox", sql: switchyard::inbox::SQL },
    ],
};

/// A nats-server with `ORDERS` and `DLQ` declared, and a JetStream context on it.
pub async fn nats_with_streams() -> (NatsServer, async_nats::Client, jetstream::Context) {
    switchyard::telemetry::init(switchyard::config::LogFormat::Text);
    let nats = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(nats.url())
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    ensure_streams(&js, contracts::streams::ALL, &StreamSettings::default()).await.expect("streams");
    (nats, client, js)
}

/// A migrated database.
pub async fn db(test_db: &TestDatabase) -> Db {
    Db::connect(test_db.url(), &MIGRATIONS).await.expect("database")
}

/// Messages in a stream.
pub async fn messages_in(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream");
    stream.info().await.expect("info").state.messages
}
