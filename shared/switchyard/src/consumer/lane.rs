//! The lanes: per-key ordering, batching for group commit, settling (ack, nak, dead letter).

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::db::Db;
use crate::shutdown::Shutdown;

use super::handler::panicked;
use super::{Apply, ConsumerSpec, ConsumerStats, Delivery, HandleError, Handling};

pub(super) fn key_of(subject: &str) -> &str {
    crate::names::subject_key(subject)
}

pub(super) fn lane_of(subject: &str, lanes: usize) -> usize {
    let key = key_of(subject);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

pub(super) struct Lane {
    pub(super) js: jetstream::Context,
    pub(super) spec: Arc<ConsumerSpec>,
    pub(super) handling: Handling,
    pub(super) stats: Arc<ConsumerStats>,
    pub(super) metrics: Arc<ConsumerMetrics>,
}

/// A consumer's Prometheus series ([`crate::observe`]).
pub(super) struct ConsumerMetrics {
    deliveries: metrics::Counter,
    redeliveries: metrics::Counter,
    acks: metrics::Counter,
    naks: metrics::Counter,
    handle: metrics::Histogram,
    batch: metrics::Histogram,
    /// `process <durable>`: the name of each delivery's span.
    span_name: String,
}

impl ConsumerMetrics {
    pub(super) fn new(durable: &str) -> Self {
        use crate::observe::*;
        let label = [("consumer", durable.to_string())];
        ConsumerMetrics {
            deliveries: metrics::counter!(CONSUMER_DELIVERIES, &label),
            redeliveries: metrics::counter!(CONSUMER_REDELIVERIES, &label),
            acks: metrics::counter!(CONSUMER_ACKS, &label),
            naks: metrics::counter!(CONSUMER_NAKS, &label),
            handle: metrics::histogram!(CONSUMER_HANDLE, &label),
            batch: metrics::histogram!(CONSUMER_BATCH, &label),
            span_name: format!("process {durable}"),
        }
    }
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
                published: info.published,
                replay_of: None,
                span: tracing::Span::none(),
            };
            if info.stream == crate::names::REPLAY_STREAM {
                let origin_subject = delivery.header(crate::dlq::headers::ORIGIN_SUBJECT).map(str::to_string);
                let origin_seq =
                    delivery.header(crate::dlq::headers::ORIGIN_SEQ).and_then(|v| v.parse().ok());
                let replay_of = delivery.header(crate::dlq::headers::REPLAY_OF).and_then(|v| v.parse().ok());
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

impl Lane {
    pub(super) async fn run(self, mut messages: mpsc::Receiver<jetstream::Message>, shutdown: Shutdown) {
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
                    self.metrics.naks.increment(1);
                }
                continue;
            }
            let mut deliveries = Vec::with_capacity(batch.len());
            for message in batch.drain(..) {
                if let Some(mut delivery) = delivery_of(&message).await {
                    self.trace(&mut delivery);
                    deliveries.push((message, delivery));
                }
            }
            self.process(deliveries).await;
        }
    }

    /// Opens the delivery's `process` span in the event's trace, and makes it the trace context
    /// the delivery passes on.
    fn trace(&self, delivery: &mut Delivery) {
        let span = tracing::info_span!(
            "process",
            otel.name = %self.metrics.span_name,
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %delivery.subject,
            messaging.consumer.group.name = %self.spec.durable,
            messaging.nats.stream_sequence = delivery.stream_seq,
            messaging.nats.delivered = delivery.delivered,
        );
        crate::telemetry::set_parent(&span, delivery.header(crate::telemetry::TRACEPARENT));
        if let Some(traceparent) = crate::telemetry::traceparent_of(&span) {
            delivery
                .headers
                .get_or_insert_with(async_nats::HeaderMap::new)
                .insert(crate::telemetry::TRACEPARENT, traceparent.as_str());
        }
        delivery.span = span;
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
        let started = std::time::Instant::now();
        self.metrics.deliveries.increment(deliveries.len() as u64);
        let again = deliveries.iter().filter(|(_, delivery)| delivery.delivered > 1).count();
        if again > 0 {
            self.metrics.redeliveries.increment(again as u64);
        }
        self.metrics.batch.record(deliveries.len() as f64);
        let progress = self.keep_alive(&deliveries);
        match &self.handling {
            Handling::Each(handler) => {
                for (message, delivery) in deliveries {
                    let span = delivery.span.clone();
                    let result = AssertUnwindSafe(handler(delivery.clone()).instrument(span))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| Err(panicked()));
                    self.settle(&message, &delivery, result).await;
                }
            }
            Handling::Batched { db, apply } => self.apply_batch(db, apply.as_ref(), deliveries).await,
        }
        progress.abort();
        self.metrics.handle.record(started.elapsed().as_secs_f64());
    }

    /// Group commit: prepares every delivery, applies those prepared in one transaction and
    /// settles them; if the transaction fails, applies each again in one of its own.
    async fn apply_batch(&self, db: &Db, apply: &dyn Apply, deliveries: Vec<(jetstream::Message, Delivery)>) {
        let all: Vec<&Delivery> = deliveries.iter().map(|(_, delivery)| delivery).collect();
        let mut prepared = AssertUnwindSafe(apply.prepare_all(&all))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| all.iter().map(|_| Err(panicked())).collect());
        if prepared.len() != all.len() {
            let err = HandleError::Transient(format!(
                "prepare_all returned {} results for {} deliveries",
                prepared.len(),
                all.len()
            ));
            prepared = all.iter().map(|_| Err(err.clone())).collect();
        }
        drop(all);
        let mut ready = Vec::with_capacity(deliveries.len());
        for ((message, delivery), result) in deliveries.into_iter().zip(prepared) {
            match result {
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
        // One delivery: its own span. Several: a `commit` span linked to each one's.
        let span = match all.as_slice() {
            [one] => one.span.clone(),
            many => {
                let span = tracing::info_span!(
                    "commit",
                    otel.name = %format_args!("commit {}", self.spec.durable),
                    messaging.batch.message_count = many.len(),
                );
                for delivery in many {
                    crate::telemetry::add_link(&span, delivery.header(crate::telemetry::TRACEPARENT));
                }
                span
            }
        };
        async {
            let mut tx = db.begin_write().await?;
            let applied = match all.as_slice() {
                [one] => apply.apply(&mut tx, one),
                many => apply.apply_all(&mut tx, many),
            };
            AssertUnwindSafe(applied).catch_unwind().await.unwrap_or_else(|_| Err(panicked()))?;
            tx.commit().await?;
            Ok::<(), HandleError>(())
        }
        .instrument(span)
        .await?;
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        apply.committed();
        Ok(())
    }

    /// Acks, naks or dead-letters a message by its handler's result, in its `process` span.
    async fn settle(
        &self,
        message: &jetstream::Message,
        delivery: &Delivery,
        result: Result<(), HandleError>,
    ) {
        self.settle_now(message, delivery, result).instrument(delivery.span.clone()).await
    }

    async fn settle_now(
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
                    self.metrics.acks.increment(1);
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
                self.metrics.naks.increment(1);
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
        let (subject, headers) =
            crate::dlq::letter(&self.spec.stream, &self.spec.durable, delivery, reason, error);
        let published = match self.js.publish_with_headers(subject, headers, delivery.payload.clone()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        match published {
            Ok(()) => {
                tracing::warn!(durable = %self.spec.durable, seq = delivery.stream_seq, reason, error, "message dead-lettered");
                let _ = message.ack_with(AckKind::Term).await;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::observe::CONSUMER_DEAD_LETTERS, "consumer" => self.spec.durable.clone(), "reason" => reason.to_string())
                    .increment(1);
            }
            Err(err) => {
                // Never drop a message we could not park: let it come back and try again.
                tracing::error!(seq = delivery.stream_seq, error = %err, "failed to dead-letter; retrying later");
                let _ = message.ack_with(AckKind::Nak(Some(self.spec.retry_delay(delivery.delivered)))).await;
            }
        }
    }
}
