//! `switchyard`: the platform library every Switchyard service links.
//!
//! It holds what services must agree on (the message [`contracts`] and the [`names`] of subjects,
//! services and streams) and what every service needs to run well on NATS: a [`nats`] connection
//! from the shared [`config`] flags, a typed request [`client`], a circuit [`breaker`], a NATS
//! [`micro`] service runtime, the [`db`] pool with embedded migrations, [`telemetry`] and one
//! [`shutdown`] signal. The `testkit` feature adds helpers that start real servers for tests.

pub mod breaker;
pub mod client;
pub mod config;
pub mod consumer;
pub mod contracts;
pub mod db;
pub mod dlq;
pub mod inbox;
pub mod micro;
pub mod names;
pub mod nats;
pub mod outbox;
pub mod ownership;
pub mod platform;
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
