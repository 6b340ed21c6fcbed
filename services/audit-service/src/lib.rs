//! audit-service: the durable consumer `audit` on every order event, an append-only audit trail
//! (stream sequence, subject, headers, payload, time), the micro service `audit` with
//! `audit.history`, and `audit-service replay` to rebuild the trail from the stream.

pub mod app;
pub mod events;
pub mod store;
pub mod trail;

pub use app::{App, AppError, Command, Config};
pub use events::consumer_spec;

use switchyard::db::{Migration, Migrations};

const AUDIT: &str = include_str!("../migrations/0001_audit.sql");

/// The audit schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[Migration { version: 1, description: "audit", sql: AUDIT }],
    postgres: &[Migration { version: 1, description: "audit", sql: AUDIT }],
};
