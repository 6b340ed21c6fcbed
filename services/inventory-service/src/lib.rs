//! inventory-service: the micro service `inventory` (check, reserve, release, restock, stock on
//! `inventory.*`), with stock and reservations in its own database.

pub mod app;
pub mod events;
pub mod store;

pub use app::{App, AppError, Config};
pub use store::{Inventory, InventoryError};

use switchyard::db::{Migration, Migrations};

/// The schema shared by SQLite and Postgres (it uses only types both have).
pub const SCHEMA: &str = include_str!("../migrations/0001_init.sql");

/// The inventory schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration { version: 1, description: "init", sql: SCHEMA },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
    postgres: &[
        Migration { version: 1, description: "init", sql: SCHEMA },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::POSTGRES_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
};
