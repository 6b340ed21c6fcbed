//! # Switchyard: microservices that talk over NATS, now and later
//!
//! `switchyard` is the platform every Switchyard service links. It knows no domain: a domain
//! brings its own contract crate (message types, subject and stream names, JSON Schemas) and its
//! services; the platform gives them the two ways services talk, on one broker.
//!
//! ## Synchronous: an answer now
//! - [`micro`]: a NATS micro service runtime (`$SRV.PING/INFO/STATS`, queue groups, error
//!   headers), so `nats micro ls` and every language's micro client see the service;
//!   requests are decoded and validated by [`contract::decode`] before a handler runs.
//! - [`client`]: a typed request client with a timeout that turns micro errors into
//!   [`RequestError`]s.
//! - [`breaker`]: a circuit breaker with opossum's semantics (rolling window, volume threshold,
//!   half-open probe) and a fallback, so one dead service never cascades.
//! - [`retry`]: retries of idempotent requests with jittered backoff under a retry budget, and
//!   [`deadline`]: the caller's remaining time sent with every request, so no service works for a
//!   caller who has given up.
//!
//! ## Asynchronous: reliably, not now
//! - [`streams`]: the domain's event streams plus `DLQ` and `REPLAY`, declared by an operator and
//!   verified by every service.
//! - [`outbox`]: events written in the same transaction as the change they announce, published
//!   by a relay with a `Nats-Msg-Id`, so nothing is lost and the stream drops repeats.
//! - [`consumer`]: durable pull consumers with explicit acks, per-key lanes, group commit and an
//!   [`inbox`] of applied event ids, so every effect is applied once.
//! - [`group_commit`]: the writes of concurrent requests committed several to a transaction by
//!   one task, so a busy service pays a transaction per batch instead of per request.
//! - [`dlq`]: poison messages parked in `DLQ` with why, listed, replayed to the one consumer
//!   that failed them, or purged.
//!
//! ## Running a service
//! [`config::CommonArgs`] holds the flags every service shares (with env fallbacks);
//! [`platform::Platform::connect`] opens the database ([`db`], migrated), NATS ([`nats`]) and
//! the streams; [`shutdown`] carries one stop signal; [`telemetry`] sets up logs and trace
//! context; [`ownership`] keeps two processes off one SQLite file. The `testkit` feature starts
//! real nats-servers and databases for tests.
//!
//! The guide to writing a service of your own, with a complete example under
//! `examples/greeter`, is in the repository's `docs/writing-a-service.md`.
//!
//! ```
//! use switchyard::{Breaker, BreakerConfig, BreakerState};
//!
//! // One breaker per dependency: closed until failures fill its window.
//! let breaker = Breaker::new("greeter", BreakerConfig::default());
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! ```

#![warn(missing_docs, rustdoc::broken_intra_doc_links, rustdoc::private_intra_doc_links)]

pub mod backoff;
pub mod breaker;
pub mod client;
pub mod config;
pub mod consumer;
pub mod contract;
pub mod db;
pub mod deadline;
pub mod dlq;
pub mod group_commit;
pub mod inbox;
pub mod micro;
pub mod names;
pub mod nats;
pub mod observe;
pub mod outbox;
pub mod ownership;
pub mod platform;
pub mod ratelimit;
pub mod retry;
pub mod shared_breaker;
pub mod shutdown;
pub mod streams;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;

pub use breaker::{Breaker, BreakerConfig, BreakerError, BreakerState};
pub use client::{RequestClient, RequestError};
pub use config::CommonArgs;
pub use db::Db;
pub use micro::{ServiceError, ServiceHandle, ServiceSpec};
pub use shutdown::Shutdown;
