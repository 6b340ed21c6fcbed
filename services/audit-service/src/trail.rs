//! The audit trail: recording events, reading an order's history, rebuilding from the stream.
//! Its rows are written by [`crate::store`]; the consumer is [`crate::events`].

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use contracts::names;
use contracts::{AuditedEvent, HistoryReply};
use futures_util::StreamExt;
use sqlx::Row;
use switchyard::consumer::HandleError;
use switchyard::db::Db;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store;

/// The audit trail in its database.
#[derive(Debug, Clone)]
pub struct Trail {
    db: Db,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The database failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// JetStream failed.
    #[error("jetstream error: {0}")]
    JetStream(String),
    /// An event in the stream could not be recorded.
    #[error("event at sequence {seq} cannot be recorded: {reason}")]
    Event { seq: u64, reason: String },
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayFrom {
    /// From this stream sequence on.
    Sequence(u64),
    /// From events published at or after this time.
    Time(OffsetDateTime),
}

impl Trail {
    /// The trail in `db`.
    pub fn new(db: Db) -> Self {
        Trail { db }
    }

    /// The database underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    async fn record(
        &self,
        subject: &str,
        payload: &[u8],
        headers: Option<&HeaderMap>,
        seq: u64,
        published: OffsetDateTime,
    ) -> Result<(), HandleError> {
        let row = store::AuditRow::new(subject, payload, headers, seq, published)?;
        // One writer at a time on SQLite (the write slot), instead of meeting at the file lock.
        let mut tx = self.db.begin_write().await?;
        store::insert(&mut tx, &[row]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An order's events, in stream order.
    pub async fn history(&self, order_id: Uuid) -> Result<HistoryReply, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT stream_seq, subject, kind, payload, published_at FROM audit_events WHERE order_id = $1 \
             ORDER BY stream_seq",
        )
        .bind(order_id.to_string())
        .fetch_all(self.db.pool())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let payload: String = row.try_get("payload")?;
            let seq: i64 = row.try_get("stream_seq")?;
            events.push(AuditedEvent {
                stream_seq: seq as u64,
                subject: row.try_get("subject")?,
                kind: row.try_get("kind")?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
                published_at: row.try_get("published_at")?,
            });
        }
        Ok(HistoryReply { order_id, events })
    }

    /// Every recorded row as (seq, event id, subject, payload), for comparisons.
    pub async fn dump(&self) -> Result<Vec<(i64, String, String, String)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT stream_seq, event_id, subject, payload FROM audit_events ORDER BY stream_seq",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("stream_seq")?,
                    r.try_get("event_id")?,
                    r.try_get("subject")?,
                    r.try_get("payload")?,
                ))
            })
            .collect()
    }

    /// Rebuilds the trail from the stream (Kafka-style replay): deletes what was recorded from
    /// `from` on, then reads the `ORDERS` stream from there to its current end with an ordered
    /// consumer and records every event again. Returns how many events were recorded.
    pub async fn replay(&self, js: &jetstream::Context, from: ReplayFrom) -> Result<u64, ReplayError> {
        let mut stream =
            js.get_stream(names::ORDERS_STREAM).await.map_err(|e| ReplayError::JetStream(e.to_string()))?;
        let last =
            stream.info().await.map_err(|e| ReplayError::JetStream(e.to_string()))?.state.last_sequence;
        let (deliver_policy, deleted) = match from {
            ReplayFrom::Sequence(seq) => (
                DeliverPolicy::ByStartSequence { start_sequence: seq.max(1) },
                sqlx::query("DELETE FROM audit_events WHERE stream_seq >= $1")
                    .bind(seq as i64)
                    .execute(self.db.pool())
                    .await?,
            ),
            ReplayFrom::Time(since) => (
                DeliverPolicy::ByStartTime { start_time: since },
                sqlx::query("DELETE FROM audit_events WHERE published_ms >= $1")
                    .bind((since.unix_timestamp_nanos() / 1_000_000) as i64)
                    .execute(self.db.pool())
                    .await?,
            ),
        };
        tracing::info!(deleted = deleted.rows_affected(), last, "replaying the audit trail");
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                name: Some(format!("replay_{}", Uuid::new_v4().simple())),
                filter_subject: names::ORDERS_STREAM_SUBJECTS.into(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| ReplayError::JetStream(e.to_string()))?;
        let mut recorded = 0u64;
        let first_pending = consumer.cached_info().num_pending;
        if first_pending == 0 {
            return Ok(0);
        }
        let mut messages = consumer.messages().await.map_err(|e| ReplayError::JetStream(e.to_string()))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| ReplayError::JetStream(e.to_string()))?;
            let info = message.info().map_err(|e| ReplayError::JetStream(e.to_string()))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            match self
                .record(&message.subject, &message.payload, message.headers.as_ref(), seq, info.published)
                .await
            {
                Ok(()) => recorded += 1,
                // An event the live consumer dead-lettered is skipped here too.
                Err(HandleError::Poison(reason)) => {
                    tracing::warn!(seq, %reason, "skipping an event that cannot be recorded")
                }
                Err(HandleError::Transient(reason)) => return Err(ReplayError::Event { seq, reason }),
            }
            if pending == 0 || seq >= last {
                break;
            }
        }
        Ok(recorded)
    }
}
