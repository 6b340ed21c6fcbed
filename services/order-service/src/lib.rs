//! order-service: the HTTP API for orders. It reserves stock synchronously from the `inventory`
//! micro service through a circuit breaker, records accepted orders in its own database and serves
//! them over HTTP and as the micro service `orders` (`orders.get`).

pub mod app;
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod orders;
pub mod store;

pub use app::{App, AppError, Config};

use switchyard::db::{Migration, Migrations};

/// The order schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration {
        version: 1,
        description: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        description: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    }],
};
