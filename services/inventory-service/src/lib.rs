//! inventory-service: the micro service `inventory` (check, reserve, release, restock, stock on
//! `inventory.*`), with stock and reservations in its own database.

pub mod app;
pub mod events;
pub mod store;

pub use app::{App, AppError, Config};
pub use store::{Inventory, InventoryError};

use switchyard::db::{Migration, Migrations};

/// The inventory schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration {
            version: 1,
            description: "init",
            sql: include_str!("../migrations/sqlite/0001_init.sql"),
        },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
    postgres: &[
        Migration {
            version: 1,
            description: "init",
            sql: include_str!("../migrations/postgres/0001_init.sql"),
        },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::POSTGRES_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
};
