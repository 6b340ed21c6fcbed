//! What a service implements to consume: a [`Handler`] per message or an [`Apply`] for group
//! commit, and the [`Delivery`] each is given.

use std::pin::Pin;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use tracing::Instrument;

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The message can never succeed (undecodable, violates an invariant): dead-letter it now.
    #[error("poison message: {0}")]
    Poison(String),
    /// It may succeed later (a database or network hiccup): retry with backoff.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(err: sqlx::Error) -> Self {
        HandleError::Transient(format!("database error: {err}"))
    }
}

/// A payload that cannot be encoded now never will be: poison.
impl From<serde_json::Error> for HandleError {
    fn from(err: serde_json::Error) -> Self {
        HandleError::Poison(format!("json error: {err}"))
    }
}

/// One delivered message, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its headers.
    pub headers: Option<HeaderMap>,
    /// Its sequence in the stream.
    pub stream_seq: u64,
    /// How often it has been delivered (1 the first time).
    pub delivered: i64,
    /// When it was published (the stream's timestamp).
    pub published: time::OffsetDateTime,
    /// On a replayed dead letter: the letter's sequence in `DLQ` (the subject, sequence and
    /// payload above are the original's).
    pub replay_of: Option<u64>,
    /// Its `process` span: a child of the event's trace context, which the consumer replaces in
    /// [`Delivery::headers`] by this span's own, so events published in its consequence (and its
    /// dead letter) continue the trace from here.
    pub span: tracing::Span,
}

impl Delivery {
    /// Decodes the JSON payload; a payload that does not decode is poison.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandleError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| HandleError::Poison(format!("undecodable payload: {e}")))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str())
    }

    /// The last subject token: the entity key of an event subject.
    pub fn key(&self) -> &str {
        crate::names::subject_key(&self.subject)
    }
}

type HandlerFuture = Pin<Box<dyn std::future::Future<Output = Result<(), HandleError>> + Send>>;
/// A message handler.
pub type Handler = Arc<dyn Fn(Delivery) -> HandlerFuture + Send + Sync>;

/// Wraps an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), HandleError>> + Send + 'static,
{
    Arc::new(move |delivery| Box::pin(f(delivery)))
}

/// What a delivery's handling comes to when its handler panicked: a transient failure, retried.
pub(super) fn panicked() -> HandleError {
    HandleError::Transient("handler panicked".into())
}

/// What [`Apply::prepare_all`] returns: one result per delivery.
pub type PrepareAllFuture<'a> =
    Pin<Box<dyn std::future::Future<Output = Vec<Result<(), HandleError>>> + Send + 'a>>;

/// What [`Apply::apply`] returns.
pub type ApplyFuture<'a> = Pin<Box<dyn std::future::Future<Output = Result<(), HandleError>> + Send + 'a>>;

/// A handler whose effect is all database writes, applied in a transaction the consumer owns so
/// that several deliveries share one commit. It must not commit or roll back `tx` itself; an
/// `Ok` that changes nothing (a repeat, seen in the inbox) is fine.
pub trait Apply: Send + Sync + 'static {
    /// Work outside the database for one delivery, done before its transaction (say, sending a
    /// message over SMTP): the deliveries of a batch are prepared concurrently, and one whose preparation
    /// fails is settled by that error and left out of the transaction. It runs again when a
    /// delivery is retried, so it must be safe to repeat. The default does nothing.
    fn prepare<'a>(&'a self, delivery: &'a Delivery) -> ApplyFuture<'a> {
        let _ = delivery;
        Box::pin(async { Ok(()) })
    }

    /// [`Apply::prepare`] for a whole batch, one result per delivery in the same sequence. The
    /// default prepares each delivery concurrently, in its own span, a panic failing only that
    /// delivery; a handler can do better (one query for the batch, one trip to a blocking thread).
    fn prepare_all<'a>(&'a self, deliveries: &'a [&'a Delivery]) -> PrepareAllFuture<'a> {
        Box::pin(futures_util::future::join_all(deliveries.iter().map(|delivery| {
            std::panic::AssertUnwindSafe(self.prepare(delivery).instrument(delivery.span.clone()))
                .catch_unwind()
                .map(|result| result.unwrap_or_else(|_| Err(panicked())))
        })))
    }

    /// Applies one delivery's effect inside `tx`.
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a>;

    /// Applies several deliveries inside `tx`, in delivery sequence. The default applies them one by one; a
    /// handler can do better (one multi-row statement). On `Err` the consumer rolls back and
    /// applies each again with [`Apply::apply`] in a transaction of its own, so the error need
    /// not say which delivery failed.
    fn apply_all<'a>(&'a self, tx: &'a mut AnyConnection, deliveries: &'a [&'a Delivery]) -> ApplyFuture<'a> {
        Box::pin(async move {
            for delivery in deliveries {
                self.apply(tx, delivery).await?;
            }
            Ok(())
        })
    }

    /// Called after a transaction with at least one applied delivery committed (say, to wake the
    /// outbox relay).
    fn committed(&self) {}
}
