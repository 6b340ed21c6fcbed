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

//!
//! The parts: `spec` (what a consumer is: durable, filters, limits), `handler` (what a
//! service implements: a [`Handler`] or an [`Apply`], and the [`Delivery`] it gets), the pull
//! loop here, and the lanes that batch, apply and settle (`lane`). The dead-letter format is
//! [`crate::dlq`]'s.

mod handler;
mod lane;
mod spec;

pub use handler::{Apply, ApplyFuture, Delivery, HandleError, Handler, PrepareAllFuture, handler};
pub use spec::ConsumerSpec;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::db::Db;
use crate::shutdown::Shutdown;

use lane::{Lane, lane_of};

/// How a consumer's messages are handled.
#[derive(Clone)]
pub(super) enum Handling {
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

    /// Reports this consumer's pending and ack-pending messages (consumer info) and its dead
    /// letters waiting in `DLQ` at every render of `scrape`.
    pub fn observe(&self, scrape: &crate::observe::Scrape) {
        let (js, spec) = (self.js.clone(), self.spec.clone());
        scrape.on_scrape(move || collect(js.clone(), spec.clone()));
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
        let metrics = Arc::new(lane::ConsumerMetrics::new(&self.spec.durable));
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel::<jetstream::Message>(self.spec.max_batch.max(32));
            senders.push(tx);
            let lane = Lane {
                js: self.js.clone(),
                spec: self.spec.clone(),
                handling: self.handling.clone(),
                stats: self.stats.clone(),
                metrics: metrics.clone(),
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

/// Reads the gauges [`Consumer::observe`] reports.
async fn collect(js: jetstream::Context, spec: Arc<ConsumerSpec>) {
    use crate::observe::{CONSUMER_ACK_PENDING, CONSUMER_PENDING, DLQ_MESSAGES};
    let label = [("consumer", spec.durable.clone())];
    let stream = js.get_stream_no_info(&spec.stream).await;
    match stream {
        Ok(stream) => match stream.consumer_info(&spec.durable).await {
            Ok(info) => {
                metrics::gauge!(CONSUMER_PENDING, &label).set(info.num_pending as f64);
                metrics::gauge!(CONSUMER_ACK_PENDING, &label).set(info.num_ack_pending as f64);
            }
            Err(err) => {
                tracing::debug!(durable = %spec.durable, error = %err, "failed to read consumer info")
            }
        },
        Err(err) => tracing::debug!(error = %err, "failed to find the stream"),
    }
    let letters = async {
        let dlq = js.get_stream_no_info(crate::names::DLQ_STREAM).await.ok()?;
        let mut subjects =
            dlq.info_with_subjects(crate::names::dlq_subject(&spec.stream, &spec.durable)).await.ok()?;
        let mut total = 0usize;
        while let Some(Ok((_, count))) = subjects.next().await {
            total += count;
        }
        Some(total)
    };
    if let Some(total) = letters.await {
        metrics::gauge!(DLQ_MESSAGES, &label).set(total as f64);
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
                let delay = crate::backoff::delay(failures);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
