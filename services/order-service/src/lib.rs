//! order-service: the HTTP API for orders. It reserves stock synchronously from the `inventory`
//! micro service through a circuit breaker, records accepted orders and their events in one
//! transaction (the outbox), relays the events to the `ORDERS` stream, and serves orders over HTTP
//! (with a server-sent event stream of each order's lifecycle) and as the micro service `orders`.

pub mod app;
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod orders;
pub mod store;

pub use app::{App, AppError, Config};

use switchyard::db::{Migration, Migrations};

/// The schema shared by SQLite and Postgres (it uses only types both have).
pub const SCHEMA: &str = include_str!("../migrations/0001_init.sql");

/// The order schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration { version: 1, description: "init", sql: SCHEMA },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
    ],
    postgres: &[
        Migration { version: 1, description: "init", sql: SCHEMA },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::POSTGRES_SQL },
    ],
};
