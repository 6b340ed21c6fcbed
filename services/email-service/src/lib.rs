//! email-service: the durable consumer `email` on `ORDERS`. For every accepted order with an
//! address it sends one confirmation email, however often the event is delivered, and publishes
//! `events.orders.confirmation_sent.<order_id>`.
//!
//! By default emails are written as `.eml` files under `<data-dir>/emails/` (one file per order,
//! written atomically, so a redelivery rewrites the same file); `--smtp-url` sends them over SMTP.

pub mod app;
pub mod events;
pub mod mailer;
pub mod store;

pub use app::{App, AppError, Config};
pub use events::{Emailer, consumer_spec};

use switchyard::db::{Migration, Migrations};

const EMAILS: &str = include_str!("../migrations/0001_emails.sql");

/// The email schema, per backend, embedded at compile time.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        Migration { version: 1, description: "emails", sql: EMAILS },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::SQLITE_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
    postgres: &[
        Migration { version: 1, description: "emails", sql: EMAILS },
        Migration { version: 2, description: "outbox", sql: switchyard::outbox::POSTGRES_SQL },
        Migration { version: 3, description: "inbox", sql: switchyard::inbox::SQL },
    ],
};
