//! Durable pull consumers with every knob spelled out, typed handlers, and dead letters.
//!
//! - The consumer is created (or deliberately updated) with explicit ack, `ack_wait`,
//!   `max_deliver`, `backoff`, `max_ack_pending` and filter subjects; any number of instances bind
//!   the same durable and share its messages.
//! - The handler's result decides: `Ok` acks (after the handler committed its effect);
//!   [`HandleError::Poison`] (say an undecodable payload) copies the message to `DLQ` and terminates
//!   it at once; [`HandleError::Transient`] naks with a growing delay, and once `max_deliver` is
//!   reached the message goes to `DLQ` instead of around in circles.
//! - A handler that runs long sends in-progress acks, so the message is not redelivered under it.
//! - Group commit: a handler whose whole effect is database writes implements [`Apply`] instead;
//!   each lane then applies the deliveries waiting for it (up to `max_batch`) in one write
//!   transaction and acks them after the commit. A batch holds at most one event per key. A
//!   batch that fails is rolled back and its deliveries are applied again one transaction each,
//!   so one bad event decides only its own fate.
//! - Messages run concurrently on `concurrency` lanes; all events of one key (the last subject
//!   token, say an entity id) go to the same lane, so each key's events are handled in stream
//!   sequence.
//! - On shutdown it stops pulling, lets every lane finish the message it is on (and ack it), and
//!   naks what was queued but not started, so another instance takes it at once.
//! - Replays: beside its durable on the stream, each consumer binds a durable on `REPLAY`
//!   (`<stream>_<durable>`, filtered to `replay.<stream>.<durable>.>`) that receives the dead
//!   letters replayed to it alone ([`crate::dlq::replay`]). A replayed message reaches the handler
//!   exactly like the original (its subject, stream sequence, payload and event id, so the inbox
//!   still holds) with [`Delivery::replay_of`] naming the letter; failing again, it becomes one
//!   new dead letter of this consumer.

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use tokio::sync::mpsc;

use crate::db::Db;
use crate::shutdown::Shutdown;

/// Header names of a dead letter.
pub mod dlq_headers {
    /// Stream the message came from.
    pub const ORIGIN_STREAM: &str = "Switchyard-Origin-Stream";
    /// Subject it was published on.
    pub const ORIGIN_SUBJECT: &str = "Switchyard-Origin-Subject";
    /// Its sequence in the origin stream.
    pub const ORIGIN_SEQ: &str = "Switchyard-Origin-Seq";
    /// The consumer that gave up on it.
    pub const CONSUMER: &str = "Switchyard-Consumer";
    /// How often it was delivered.
    pub const DELIVERIES: &str = "Switchyard-Deliveries";
    /// `poison` (could never succeed) or `max_deliver` (kept failing).
    pub const REASON: &str = "Switchyard-Reason";
    /// The last error, in words.
    pub const ERROR: &str = "Switchyard-Error";
    /// The origin message's `Nats-Msg-Id`, when it had one.
    pub const ORIGIN_MSG_ID: &str = "Switchyard-Origin-Msg-Id";
    /// On a replayed message (and on the dead letter it may become again): the `DLQ` sequence of
    /// the letter it replays.
    pub const REPLAY_OF: &str = "Switchyard-Replay-Of";

    /// Whether a header is one of the dead-letter headers above (set anew, never copied).
    pub fn is_dlq_header(name: &str) -> bool {
        [
            ORIGIN_STREAM,
            ORIGIN_SUBJECT,
            ORIGIN_SEQ,
            CONSUMER,
            DELIVERIES,
            REASON,
            ERROR,
            ORIGIN_MSG_ID,
            REPLAY_OF,
        ]
        .iter()
        .any(|header| header.eq_ignore_ascii_case(name))
    }
}

/// A consumer's configuration.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Stream to consume.
    pub stream: String,
    /// Durable name, shared by every instance of the service.
    pub durable: String,
    /// Subjects to receive (empty: all of the stream).
    pub filter_subjects: Vec<String>,
    /// Time the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a failing message is dead-lettered.
    pub max_deliver: i64,
    /// Delays before each redelivery of a message that was nak'd by a failing handler; the last
    /// one repeats.
    pub retry_backoff: Vec<Duration>,
    /// Messages delivered but not yet acked, over all instances.
    pub max_ack_pending: i64,
    /// Lanes that handle messages at once in this instance.
    pub concurrency: usize,
    /// Messages pulled per request.
    pub batch: usize,
    /// Deliveries one lane applies in one write transaction ([`Apply`] handlers only).
    pub max_batch: usize,
}

impl ConsumerSpec {
    /// A spec with the platform's defaults for `durable` on `stream`.
    pub fn new(stream: &str, durable: &str, filter_subjects: Vec<String>) -> Self {
        ConsumerSpec {
            stream: stream.into(),
            durable: durable.into(),
            filter_subjects,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            retry_backoff: vec![
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_secs(10),
                Duration::from_secs(30),
            ],
            max_ack_pending: 4096,
            concurrency: 16,
            batch: 128,
            max_batch: 64,
        }
    }

    /// The JetStream consumer configuration.
    pub fn config(&self) -> pull::Config {
        let (filter_subject, filter_subjects) = match self.filter_subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(format!("switchyard consumer {}", self.durable)),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            // Retries of failed handlers are spaced by the NAK delays of `retry_backoff`; a
            // server-side BackOff list would override those delays, so it stays empty and an
            // unacked message (a crashed instance) comes back after `ack_wait`.
            backoff: Vec::new(),
            max_ack_pending: self.max_ack_pending,
            filter_subject,
            filter_subjects,
            ..Default::default()
        }
    }

    fn retry_delay(&self, delivered: i64) -> Duration {
        let index = (delivered.max(1) - 1) as usize;
        self.retry_backoff.get(index).or(self.retry_backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

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
    /// When it was published (RFC 3339).
    pub published: String,
    /// On a replayed dead letter: the letter's sequence in `DLQ` (the subject, sequence and
    /// payload above are the original's).
    pub replay_of: Option<u64>,
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
        key_of(&self.subject)
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

/// How a consumer's messages are handled.
#[derive(Clone)]
enum Handling {
    /// One handler call per message.
    Each(Handler),
    /// Group commit: a lane's waiting deliveries in one write transaction.
    Batched { db: Db, apply: Arc<dyn Apply> },
}

/// What a consumer has done, since it started.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages handled and acked.
    pub acked: AtomicU64,
    /// Messages nak'd for a retry.
    pub retried: AtomicU64,
    /// Messages copied to `DLQ` and terminated.
    pub dead_lettered: AtomicU64,
    /// Messages nak'd unstarted at shutdown.
    pub returned: AtomicU64,
    /// Write transactions committed by group commit ([`Apply`] handlers only).
    pub commits: AtomicU64,
}

/// Why a consumer could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The stream is missing or JetStream is unavailable.
    #[error("failed to find stream {stream}: {detail}")]
    Stream {
        /// The stream.
        stream: String,
        /// What JetStream said.
        detail: String,
    },
    /// The consumer could not be created or updated.
    #[error("failed to create consumer {durable}: {detail}")]
    Create {
        /// The durable consumer's name.
        durable: String,
        /// What JetStream said.
        detail: String,
    },
}

/// A durable consumer with its handler.
pub struct Consumer {
    js: jetstream::Context,
    spec: Arc<ConsumerSpec>,
    handling: Handling,
    stats: Arc<ConsumerStats>,
}

impl Consumer {
    /// A consumer for `spec` whose messages go to `handler`, one call per message.
    pub fn new(js: jetstream::Context, spec: ConsumerSpec, handler: Handler) -> Self {
        Consumer { js, spec: Arc::new(spec), handling: Handling::Each(handler), stats: Arc::default() }
    }

    /// A consumer for `spec` that applies its messages with `apply` in write transactions on
    /// `db`, several per commit when they arrive faster than one commit takes.
    pub fn batched(js: jetstream::Context, spec: ConsumerSpec, db: Db, apply: impl Apply) -> Self {
        let handling = Handling::Batched { db, apply: Arc::new(apply) };
        Consumer { js, spec: Arc::new(spec), handling, stats: Arc::default() }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        self.stats.clone()
    }

    /// Creates the durable consumer, or updates it to this spec.
    pub async fn bind(&self) -> Result<jetstream::consumer::Consumer<pull::Config>, ConsumerError> {
        self.create(&self.spec.stream, self.spec.config()).await
    }

    /// Creates the consumer's durable on `REPLAY`, or updates it: the same knobs, filtered to the
    /// letters replayed to this consumer alone.
    pub async fn bind_replay(&self) -> Result<jetstream::consumer::Consumer<pull::Config>, ConsumerError> {
        let durable = crate::names::replay_durable(&self.spec.stream, &self.spec.durable);
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!(
                "switchyard replays to consumer {} of {}",
                self.spec.durable, self.spec.stream
            )),
            filter_subject: crate::names::replay_filter(&self.spec.stream, &self.spec.durable),
            filter_subjects: Vec::new(),
            ..self.spec.config()
        };
        self.create(crate::names::REPLAY_STREAM, config).await
    }

    async fn create(
        &self,
        stream: &str,
        config: pull::Config,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, ConsumerError> {
        let durable = config.durable_name.clone().unwrap_or_default();
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| ConsumerError::Stream { stream: stream.to_string(), detail: e.to_string() })?;
        stream
            .create_consumer(config)
            .await
            .map_err(|e| ConsumerError::Create { durable, detail: e.to_string() })
    }

    /// Binds the consumer (and its replay durable), then handles messages until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ConsumerError> {
        let consumer = self.bind().await?;
        let replays = self.bind_replay().await?;
        tracing::info!(durable = %self.spec.durable, stream = %self.spec.stream, "consumer bound");
        let lanes = self.spec.concurrency.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel::<jetstream::Message>(self.spec.max_batch.max(32));
            senders.push(tx);
            let lane = Lane {
                js: self.js.clone(),
                spec: self.spec.clone(),
                handling: self.handling.clone(),
                stats: self.stats.clone(),
            };
            workers.push(tokio::spawn(lane.run(rx, shutdown.clone())));
        }
        // Both durables feed the same lanes: a replayed event takes its key's lane.
        tokio::join!(
            pull(consumer, &self.spec.durable, self.spec.batch, &senders, &shutdown),
            pull(replays, &self.spec.durable, self.spec.batch, &senders, &shutdown),
        );
        drop(senders);
        for worker in workers {
            let _ = worker.await;
        }
        tracing::info!(durable = %self.spec.durable, "consumer stopped");
        Ok(())
    }
}

/// Pulls `consumer`'s messages into the lanes until `shutdown` (or the lanes are gone).
async fn pull(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    durable: &str,
    batch: usize,
    senders: &[mpsc::Sender<jetstream::Message>],
    shutdown: &Shutdown,
) {
    let mut failures = 0usize;
    'pull: while !shutdown.is_triggered() {
        let stream = consumer.stream().max_messages_per_batch(batch).messages().await;
        let mut messages = match stream {
            Ok(messages) => messages,
            Err(err) => {
                failures += 1;
                let delay = crate::nats::reconnect_delay(failures);
                tracing::warn!(durable, error = %err, retry_in = ?delay, "cannot pull messages");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.wait() => break,
                }
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = shutdown.wait() => break 'pull,
            };
            match next {
                Some(Ok(message)) => {
                    failures = 0;
                    let lane = lane_of(message.subject.as_str(), senders.len());
                    if senders[lane].send(message).await.is_err() {
                        break 'pull;
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(durable, error = %err, "pull stream error");
                }
                None => continue 'pull,
            }
        }
    }
}

fn key_of(subject: &str) -> &str {
    crate::names::subject_key(subject)
}

fn lane_of(subject: &str, lanes: usize) -> usize {
    let key = key_of(subject);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

struct Lane {
    js: jetstream::Context,
    spec: Arc<ConsumerSpec>,
    handling: Handling,
    stats: Arc<ConsumerStats>,
}

/// The delivery a message carries, or `None` (after terminating it) when it has no JetStream
/// metadata. A replayed dead letter is presented as its original: subject and stream sequence
/// from its headers, and [`Delivery::replay_of`] set.
async fn delivery_of(message: &jetstream::Message) -> Option<Delivery> {
    match message.info() {
        Ok(info) => {
            let mut delivery = Delivery {
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                headers: message.headers.clone(),
                stream_seq: info.stream_sequence,
                delivered: info.delivered,
                published: crate::time::format_rfc3339(info.published),
                replay_of: None,
            };
            if info.stream == crate::names::REPLAY_STREAM {
                let origin_subject = delivery.header(dlq_headers::ORIGIN_SUBJECT).map(str::to_string);
                let origin_seq = delivery.header(dlq_headers::ORIGIN_SEQ).and_then(|v| v.parse().ok());
                let replay_of = delivery.header(dlq_headers::REPLAY_OF).and_then(|v| v.parse().ok());
                match (origin_subject, origin_seq) {
                    (Some(subject), Some(seq)) => {
                        delivery.subject = subject;
                        delivery.stream_seq = seq;
                        delivery.replay_of = replay_of;
                    }
                    _ => {
                        tracing::warn!(subject = %message.subject, "replayed message without its origin headers; terminating it");
                        let _ = message.ack_with(AckKind::Term).await;
                        return None;
                    }
                }
            }
            Some(delivery)
        }
        Err(err) => {
            tracing::warn!(error = %err, "message without jetstream metadata; terminating it");
            let _ = message.ack_with(AckKind::Term).await;
            None
        }
    }
}

fn panicked() -> HandleError {
    HandleError::Transient("handler panicked".into())
}

impl Lane {
    async fn run(self, mut messages: mpsc::Receiver<jetstream::Message>, shutdown: Shutdown) {
        let max_batch = match self.handling {
            Handling::Each(_) => 1,
            Handling::Batched { .. } => self.spec.max_batch.max(1),
        };
        let mut batch = Vec::with_capacity(max_batch);
        // A batch holds at most one event per key: the next one of the same key starts the
        // next batch, so it sees the first one's effect (and what its preparation did).
        let mut carried: Option<jetstream::Message> = None;
        let mut keys = std::collections::HashSet::new();
        loop {
            let first = match carried.take() {
                Some(message) => message,
                None => match messages.recv().await {
                    Some(message) => message,
                    None => break,
                },
            };
            if max_batch > 1 {
                keys.clear();
                keys.insert(key_of(first.subject.as_str()).to_string());
            }
            batch.push(first);
            while batch.len() < max_batch
                && let Ok(next) = messages.try_recv()
            {
                if keys.insert(key_of(next.subject.as_str()).to_string()) {
                    batch.push(next);
                } else {
                    carried = Some(next);
                    break;
                }
            }
            if shutdown.is_triggered() {
                // Not started: hand them back for another instance (or the restart) at once.
                for message in batch.drain(..) {
                    if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
                        tracing::debug!(error = %err, "failed to return an unstarted message");
                    }
                    self.stats.returned.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let mut deliveries = Vec::with_capacity(batch.len());
            for message in batch.drain(..) {
                if let Some(delivery) = delivery_of(&message).await {
                    deliveries.push((message, delivery));
                }
            }
            self.process(deliveries).await;
        }
    }

    /// In-progress acks keep a long handler's messages from being redelivered under it.
    fn keep_alive(&self, deliveries: &[(jetstream::Message, Delivery)]) -> tokio::task::JoinHandle<()> {
        let replies: Vec<_> = deliveries.iter().filter_map(|(m, _)| m.reply.clone()).collect();
        let client = self.js.client();
        let every = (self.spec.ack_wait / 3).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for reply in &replies {
                    let _ = client.publish(reply.clone(), Bytes::from(AckKind::Progress)).await;
                }
            }
        })
    }

    async fn process(&self, deliveries: Vec<(jetstream::Message, Delivery)>) {
        if deliveries.is_empty() {
            return;
        }
        let progress = self.keep_alive(&deliveries);
        match &self.handling {
            Handling::Each(handler) => {
                for (message, delivery) in deliveries {
                    let result = AssertUnwindSafe(handler(delivery.clone()))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(panicked()));
                    self.settle(&message, &delivery, result).await;
                }
            }
            Handling::Batched { db, apply } => self.apply_batch(db, apply.as_ref(), deliveries).await,
        }
        progress.abort();
    }

    /// Group commit: prepares every delivery, applies those prepared in one transaction and
    /// settles them; if the transaction fails, applies each again in one of its own.
    async fn apply_batch(&self, db: &Db, apply: &dyn Apply, deliveries: Vec<(jetstream::Message, Delivery)>) {
        let prepared = join_all(
            deliveries.iter().map(|(_, delivery)| AssertUnwindSafe(apply.prepare(delivery)).catch_unwind()),
        )
        .await;
        let mut ready = Vec::with_capacity(deliveries.len());
        for ((message, delivery), result) in deliveries.into_iter().zip(prepared) {
            match result.unwrap_or_else(|_| Err(panicked())) {
                Ok(()) => ready.push((message, delivery)),
                Err(err) => self.settle(&message, &delivery, Err(err)).await,
            }
        }
        match self.apply_together(db, apply, &ready).await {
            Ok(()) => {
                for (message, delivery) in &ready {
                    self.settle(message, delivery, Ok(())).await;
                }
            }
            Err(err) if ready.len() > 1 => {
                // Rolled back: each delivery again in its own transaction.
                tracing::debug!(durable = %self.spec.durable, error = %err, size = ready.len(), "batch failed; applying one by one");
                for one in ready.chunks(1) {
                    let result = self.apply_together(db, apply, one).await;
                    self.settle(&one[0].0, &one[0].1, result).await;
                }
            }
            Err(err) => {
                for (message, delivery) in &ready {
                    self.settle(message, delivery, Err(err.clone())).await;
                }
            }
        }
    }

    /// Applies `deliveries` in one write transaction; when any fails, nothing is committed.
    async fn apply_together(
        &self,
        db: &Db,
        apply: &dyn Apply,
        deliveries: &[(jetstream::Message, Delivery)],
    ) -> Result<(), HandleError> {
        let all: Vec<&Delivery> = deliveries.iter().map(|(_, delivery)| delivery).collect();
        if all.is_empty() {
            return Ok(());
        }
        let mut tx = db.begin_write().await?;
        let applied = match all.as_slice() {
            [one] => apply.apply(&mut tx, one),
            many => apply.apply_all(&mut tx, many),
        };
        AssertUnwindSafe(applied).catch_unwind().await.unwrap_or_else(|_| Err(panicked()))?;
        tx.commit().await?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        apply.committed();
        Ok(())
    }

    /// Acks, naks or dead-letters a message by its handler's result.
    async fn settle(
        &self,
        message: &jetstream::Message,
        delivery: &Delivery,
        result: Result<(), HandleError>,
    ) {
        let (stream_seq, delivered) = (delivery.stream_seq, delivery.delivered);
        match result {
            Ok(()) => {
                if let Err(err) = message.ack().await {
                    tracing::warn!(seq = stream_seq, error = %err, "ack failed; the message will be redelivered");
                } else {
                    self.stats.acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(HandleError::Poison(reason)) => self.dead_letter(message, delivery, "poison", &reason).await,
            Err(HandleError::Transient(reason)) if delivered >= self.spec.max_deliver => {
                self.dead_letter(message, delivery, "max_deliver", &reason).await
            }
            Err(HandleError::Transient(reason)) => {
                let delay = self.spec.retry_delay(delivered);
                tracing::warn!(durable = %self.spec.durable, seq = stream_seq, delivered, retry_in = ?delay, error = %reason, "handler failed; retrying");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        delivery: &Delivery,
        reason: &str,
        error: &str,
    ) {
        use dlq_headers::*;
        let mut headers = HeaderMap::new();
        if let Some(original) = &delivery.headers {
            for (name, values) in original.iter() {
                let name: &str = name.as_ref();
                if name.eq_ignore_ascii_case("Nats-Msg-Id") || is_dlq_header(name) {
                    continue;
                }
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        // The original event's message id: on a replay, the one it carried from its letter.
        let origin_msg_id = delivery.header(ORIGIN_MSG_ID).or_else(|| delivery.header("Nats-Msg-Id"));
        if let Some(id) = origin_msg_id {
            headers.insert(ORIGIN_MSG_ID, id);
        }
        if let Some(letter) = delivery.replay_of {
            headers.insert(REPLAY_OF, letter.to_string().as_str());
        }
        headers.insert(ORIGIN_STREAM, self.spec.stream.as_str());
        headers.insert(ORIGIN_SUBJECT, delivery.subject.as_str());
        headers.insert(ORIGIN_SEQ, delivery.stream_seq.to_string().as_str());
        headers.insert(CONSUMER, self.spec.durable.as_str());
        headers.insert(DELIVERIES, delivery.delivered.to_string().as_str());
        headers.insert(REASON, reason);
        let error_line: String = error.chars().filter(|c| !c.is_control()).take(1000).collect();
        headers.insert(ERROR, error_line.as_str());
        // One dead letter per origin message and consumer (and per replay of it), even if this
        // is repeated.
        let msg_id = match delivery.replay_of {
            None => format!("dlq:{}:{}:{}", self.spec.stream, self.spec.durable, delivery.stream_seq),
            Some(letter) => {
                format!(
                    "dlq:{}:{}:{}:replay:{letter}",
                    self.spec.stream, self.spec.durable, delivery.stream_seq
                )
            }
        };
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let subject = crate::names::dlq_subject(&self.spec.stream, &self.spec.durable);
        let published = match self.js.publish_with_headers(subject, headers, delivery.payload.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match published {
            Ok(()) => {
                tracing::warn!(durable = %self.spec.durable, seq = delivery.stream_seq, reason, error, "message dead-lettered");
                let _ = message.ack_with(AckKind::Term).await;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                // Never drop a message we could not park: let it come back and try again.
                tracing::error!(seq = delivery.stream_seq, error = %err, "failed to dead-letter; retrying later");
                let _ = message.ack_with(AckKind::Nak(Some(self.spec.retry_delay(delivery.delivered)))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_grows_and_then_repeats() {
        let spec = ConsumerSpec::new("S", "d", vec![]);
        assert_eq!(spec.retry_delay(1), Duration::from_millis(500));
        assert_eq!(spec.retry_delay(2), Duration::from_secs(2));
        assert_eq!(spec.retry_delay(99), Duration::from_secs(30));
    }

    #[test]
    fn one_key_always_lands_on_one_lane() {
        let a = lane_of("events.things.created.0000-aaaa", 16);
        assert_eq!(a, lane_of("events.things.cancelled.0000-aaaa", 16));
        assert_eq!(a, lane_of("events.things.shipped.0000-aaaa", 16));
    }

    #[test]
    fn the_consumer_config_spells_out_every_knob() {
        let spec = ConsumerSpec::new("EVENTS", "ledger", vec!["a.>".into(), "b.>".into()]);
        let config = spec.config();
        assert_eq!(config.durable_name.as_deref(), Some("ledger"));
        assert_eq!(config.ack_policy, jetstream::consumer::AckPolicy::Explicit);
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.filter_subjects, vec!["a.>".to_string(), "b.>".to_string()]);
        assert_eq!(config.ack_wait, spec.ack_wait);
        assert!(config.backoff.is_empty(), "retries are spaced by NAK delays");
    }
}
