//! The transactional outbox: a business row and its event are written in one database
//! transaction, and a relay publishes pending events to JetStream afterwards.
//!
//! So an event is never lost when the process dies between "commit" and "publish" (the row waits
//! in the table), and never doubled when it dies between "publish" and "mark sent" (the event id is
//! the `Nats-Msg-Id`, which the stream's duplicate window drops; consumers' inboxes catch the rest).
//!
//! The relay claims a batch of rows (`FOR UPDATE SKIP LOCKED` on Postgres; SQLite has one writer),
//! publishes the whole batch with acks in flight together, marks each row sent only after its ack,
//! releases the rest for a retry with backoff while NATS is away, and resumes from the table after a
//! restart. Several instances can relay one table: a claim is a lease (`claimed_until`), so rows of
//! a dead instance are picked up once the lease passes, and live instances never publish the same
//! row at once. The HTTP path only inserts a row and wakes the relay; it never waits for NATS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use futures_util::future::join_all;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::db::{Backend, Db};
use crate::shutdown::Shutdown;

/// The outbox table; only the id column differs between the backends.
macro_rules! outbox_table {
    ($id:literal) => {
        concat!(
            "CREATE TABLE outbox (\n    id            ",
            $id,
            ",\n    event_id      TEXT NOT NULL UNIQUE,
    subject       TEXT NOT NULL,
    payload       TEXT NOT NULL,
    headers       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    claimed_by    TEXT,
    claimed_until BIGINT,
    sent_at_ms    BIGINT,
    stream_seq    BIGINT
);
CREATE INDEX outbox_pending ON outbox (sent_at_ms, id);"
        )
    };
}

/// The outbox table for SQLite.
pub const SQLITE_SQL: &str = outbox_table!("INTEGER PRIMARY KEY AUTOINCREMENT");

/// The outbox table for Postgres.
pub const POSTGRES_SQL: &str = outbox_table!("BIGSERIAL PRIMARY KEY");

pub use crate::telemetry::{TRACEPARENT, current_traceparent, new_traceparent};

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Unique id; becomes the `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Subject to publish on.
    pub subject: String,
    /// The JSON payload.
    pub payload: String,
    /// Headers besides `Nats-Msg-Id` (the trace context).
    pub headers: HashMap<String, String>,
}

impl OutboxEvent {
    /// An event with a JSON payload and a trace context.
    pub fn new<T: Serialize>(
        event_id: Uuid,
        subject: String,
        payload: &T,
        traceparent: String,
    ) -> Result<Self, serde_json::Error> {
        Ok(OutboxEvent {
            event_id,
            subject,
            payload: serde_json::to_string(payload)?,
            headers: HashMap::from([(TRACEPARENT.to_string(), traceparent)]),
        })
    }
}

/// Writes `event` to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut AnyConnection, event: &OutboxEvent) -> Result<(), sqlx::Error> {
    let headers = serde_json::to_string(&event.headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, payload, headers, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.event_id.to_string())
    .bind(&event.subject)
    .bind(&event.payload)
    .bind(headers)
    .bind(crate::time::now_rfc3339())
    .execute(conn)
    .await?;
    Ok(())
}

/// [`enqueue`] for several events in one statement, one row each, as given.
pub async fn enqueue_all(conn: &mut AnyConnection, events: &[OutboxEvent]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO outbox (event_id, subject, payload, headers, created_at) VALUES {}",
        crate::db::value_rows(events.len(), 5)
    );
    let sql = crate::db::positional(crate::db::Backend::of(conn), sql);
    let created_at = crate::time::now_rfc3339();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for event in events {
        let headers = serde_json::to_string(&event.headers).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        query = query
            .bind(event.event_id.to_string())
            .bind(&event.subject)
            .bind(&event.payload)
            .bind(headers)
            .bind(created_at.as_str());
    }
    query.execute(conn).await?;
    Ok(())
}

/// Rows not yet published.
pub async fn pending(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NULL").fetch_one(db.pool()).await
}

/// Rows not yet published, and the age of the oldest of them.
pub async fn backlog(db: &Db) -> Result<(i64, Option<Duration>), sqlx::Error> {
    let rows = pending(db).await?;
    let oldest: Option<String> =
        sqlx::query_scalar("SELECT created_at FROM outbox WHERE sent_at_ms IS NULL ORDER BY id LIMIT 1")
            .fetch_optional(db.pool())
            .await?;
    let age = oldest
        .and_then(|at| time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).ok())
        .map(|at| {
            let age = time::OffsetDateTime::now_utc() - at;
            Duration::try_from(age).unwrap_or_default()
        });
    Ok((rows, age))
}

/// Rows published.
pub async fn sent(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at_ms IS NOT NULL").fetch_one(db.pool()).await
}

/// How the relay works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per round; all of a round's acks are in flight together.
    pub batch_size: i64,
    /// How long a claim lasts before another instance may take the rows (longer than a round:
    /// the publishes plus their 5 s ack timeout).
    pub claim_for: Duration,
    /// How often an idle relay looks for rows written by others (it is woken for its own).
    pub idle_poll: Duration,
    /// Sent rows older than this are deleted.
    pub keep_sent: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 512,
            claim_for: Duration::from_secs(10),
            idle_poll: Duration::from_millis(250),
            keep_sent: Duration::from_secs(3600),
        }
    }
}

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed.
    #[error("outbox database error")]
    Db(#[from] sqlx::Error),
    /// NATS is not connected; nothing was claimed.
    #[error("nats is not connected")]
    Disconnected,
    /// Some publishes were not acknowledged; they are retried.
    #[error("{failed} of {total} events were not acknowledged: {first_error}")]
    Publish {
        /// Publishes not acknowledged.
        failed: usize,
        /// Publishes in the round.
        total: usize,
        /// The first failure's error.
        first_error: String,
    },
}

/// Wakes a relay when its service has committed new rows.
#[derive(Debug, Clone, Default)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Tells the relay there is work (it runs a round now instead of at its next poll).
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Publishes outbox rows to JetStream.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Db,
    js: jetstream::Context,
    config: RelayConfig,
    owner: String,
    waker: RelayWaker,
}

struct Claimed {
    id: i64,
    event_id: String,
    subject: String,
    payload: String,
    headers: String,
}

/// Rounds one [`Relay::publish_pending`] call runs at most, so a relay with a deep backlog still
/// looks at its shutdown signal and prunes between calls.
pub const ROUNDS_PER_CALL: usize = 16;

/// A round whose publishes are sent and whose acks are outstanding.
struct SentRound {
    rows: Vec<Claimed>,
    acks: Vec<Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError>>,
    /// Each row's `publish` span, open until its ack is settled.
    spans: Vec<tracing::Span>,
}

impl Relay {
    /// A relay for the outbox in `db`, publishing through `js`, claiming rows as `owner`.
    pub fn new(db: Db, js: jetstream::Context, owner: impl Into<String>, config: RelayConfig) -> Self {
        Relay { db, js, config, owner: owner.into(), waker: RelayWaker::default() }
    }

    /// A handle to wake this relay after a commit.
    pub fn waker(&self) -> RelayWaker {
        self.waker.clone()
    }

    /// Publishes pending rows until `shutdown`, backing off while NATS is away.
    pub async fn run(self, shutdown: Shutdown) {
        let mut failures = 0usize;
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let wait = match self.publish_pending().await {
                Ok(published) if published as i64 >= self.config.batch_size => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    self.config.idle_poll
                }
                Err(err) => {
                    failures += 1;
                    let delay = crate::backoff::delay(failures);
                    tracing::warn!(error = %err, retry_in = ?delay, "outbox relay round failed");
                    delay
                }
            };
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = self.prune().await {
                    tracing::warn!(error = %err, "failed to prune sent outbox rows");
                }
            }
            tokio::select! {
                _ = self.waker.0.notified(), if failures == 0 => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => {}
            }
        }
        // One last round so what was committed just before shutdown goes out now, bounded so a
        // missing NATS cannot hold the exit; anything left is published after the restart.
        match tokio::time::timeout(Duration::from_secs(3), self.publish_pending()).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(published = n, "outbox relay flushed on shutdown"),
            Ok(Err(err)) => tracing::warn!(error = %err, "outbox relay could not flush on shutdown"),
            _ => {}
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes what is pending: rounds of claim, publish, mark. Returns how many events were
    /// published.
    ///
    /// While a full round's acks come back, the next round is claimed and sent, so the database
    /// work of one round overlaps the broker work of the other (two rounds in flight at most, the
    /// second sent after the first, so events still go out in outbox sequence). It stops after a
    /// round that was not full, or after [`ROUNDS_PER_CALL`] rounds.
    ///
    /// While the NATS connection is down it claims nothing: rows stay free, so a restarted or
    /// other instance can take them at once instead of waiting for a lease to pass.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let Some(mut round) = self.send_round().await? else { return Ok(0) };
        let mut published = 0;
        for _ in 1..ROUNDS_PER_CALL {
            if (round.rows.len() as i64) < self.config.batch_size {
                break;
            }
            let (settled, next) = tokio::join!(self.settle(round), self.send_round());
            match (settled, next) {
                (Ok(n), Ok(Some(next))) => {
                    published += n;
                    round = next;
                }
                (Ok(n), Ok(None)) => return Ok(published + n),
                (Ok(_), Err(err)) => return Err(err),
                (Err(err), Ok(Some(next))) => {
                    // Its rows are claimed: settle them too, so they are marked or given back.
                    let _ = self.settle(next).await;
                    return Err(err);
                }
                (Err(err), _) => return Err(err),
            }
        }
        Ok(published + self.settle(round).await?)
    }

    /// Claims a round and sends its publishes (they go out by id on one connection);
    /// `None` when nothing is pending.
    async fn send_round(&self) -> Result<Option<SentRound>, RelayError> {
        if self.js.client().connection_state() != async_nats::connection::State::Connected {
            return Err(RelayError::Disconnected);
        }
        let rows = self.claim().await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut acks = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut headers = HeaderMap::new();
            let mut stored: HashMap<String, String> = serde_json::from_str(&row.headers).unwrap_or_default();
            // The publish is a span in the trace the row was written in; the event carries the
            // publish span's context on.
            let span = tracing::info_span!(
                "publish",
                otel.name = %format_args!("publish {}", crate::names::subject_kind(&row.subject).unwrap_or("event")),
                otel.kind = "producer",
                messaging.system = "nats",
                messaging.destination.name = %row.subject,
                messaging.message.id = %row.event_id,
            );
            crate::telemetry::set_parent(&span, stored.get(TRACEPARENT).map(String::as_str));
            if let Some(traceparent) = crate::telemetry::traceparent_of(&span) {
                stored.insert(TRACEPARENT.to_string(), traceparent);
            }
            spans.push(span);
            for (name, value) in &stored {
                headers.insert(name.as_str(), value.as_str());
            }
            headers.insert(async_nats::header::NATS_MESSAGE_ID, row.event_id.as_str());
            let sent = self
                .js
                .publish_with_headers(row.subject.clone(), headers, row.payload.clone().into_bytes().into())
                .await;
            acks.push(sent);
        }
        Ok(Some(SentRound { rows, acks, spans }))
    }

    /// Awaits a round's acks together and marks its rows: sent, or given back when their
    /// publish failed. Returns how many were published.
    async fn settle(&self, round: SentRound) -> Result<usize, RelayError> {
        let SentRound { rows, acks, spans } = round;
        let total = rows.len();
        let acks = join_all(acks.into_iter().map(|sent| async move {
            match sent {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            }
        }))
        .await;

        let mut published = Vec::with_capacity(total);
        let mut failed = Vec::new();
        let mut first_error = None;
        for (row, ack) in rows.iter().zip(acks) {
            match ack {
                Ok(ack) => published.push((row.id, ack.sequence)),
                Err(err) => {
                    first_error.get_or_insert(err);
                    failed.push(row.id);
                }
            }
        }
        self.mark(&published, &failed).await?;
        drop(spans);
        metrics::counter!(crate::observe::OUTBOX_PUBLISHED).increment(published.len() as u64);
        match first_error {
            None => Ok(published.len()),
            Some(first_error) => Err(RelayError::Publish { failed: failed.len(), total, first_error }),
        }
    }

    async fn claim(&self) -> Result<Vec<Claimed>, sqlx::Error> {
        let now = crate::time::now_unix_millis();
        let until = now + self.config.claim_for.as_millis() as i64;
        let lock = match self.db.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox WHERE sent_at_ms IS NULL \
             AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4{lock}) \
             RETURNING id, event_id, subject, payload, headers"
        );
        // One statement, its own transaction: no `BEGIN`/`COMMIT` round trips.
        let mut conn = self.db.acquire_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&self.owner)
            .bind(until)
            .bind(now)
            .bind(self.config.batch_size)
            .fetch_all(&mut *conn)
            .await?;
        drop(conn);
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("id")?,
                    event_id: row.try_get("event_id")?,
                    subject: row.try_get("subject")?,
                    payload: row.try_get("payload")?,
                    headers: row.try_get("headers")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        claimed.sort_by_key(|row| row.id);
        Ok(claimed)
    }

    async fn mark(&self, published: &[(i64, u64)], failed: &[i64]) -> Result<(), sqlx::Error> {
        let now = crate::time::now_unix_millis();
        // Each statement its own transaction (the two concern different rows, so they need not
        // commit together): no `BEGIN`/`COMMIT` round trips.
        let mut conn = self.db.acquire_write().await?;
        // One statement per batch: each row's stream sequence is in the relay's log, not needed here.
        // A sent row keeps `claimed_by`: the relay that published it.
        if !published.is_empty() {
            let sql = format!(
                "UPDATE outbox SET sent_at_ms = $1, claimed_until = NULL WHERE id IN ({})",
                crate::db::placeholders(2, published.len())
            );
            let sql = crate::db::positional(self.db.backend(), sql);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for (id, _) in published {
                query = query.bind(*id);
            }
            query.execute(&mut *conn).await?;
        }
        if !failed.is_empty() {
            // Give the rows back at once, so the retry after the backoff does not wait for the lease.
            let sql = format!(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1 AND id IN ({})",
                crate::db::placeholders(2, failed.len())
            );
            let sql = crate::db::positional(self.db.backend(), sql);
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(self.owner.clone());
            for id in failed {
                query = query.bind(*id);
            }
            query.execute(&mut *conn).await?;
        }
        drop(conn);
        if let (Some((_, first)), Some((_, last))) = (published.first(), published.last()) {
            tracing::debug!(
                published = published.len(),
                first_seq = first,
                last_seq = last,
                "outbox rows published"
            );
        }
        Ok(())
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        let before = crate::time::now_unix_millis() - self.config.keep_sent.as_millis() as i64;
        sqlx::query("DELETE FROM outbox WHERE sent_at_ms IS NOT NULL AND sent_at_ms < $1")
            .bind(before)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_schema_differs_between_backends_only_in_the_id_column() {
        assert!(SQLITE_SQL.contains("id            INTEGER PRIMARY KEY AUTOINCREMENT,"));
        assert!(POSTGRES_SQL.contains("id            BIGSERIAL PRIMARY KEY,"));
        assert_eq!(
            SQLITE_SQL.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "X"),
            POSTGRES_SQL.replace("BIGSERIAL PRIMARY KEY", "X")
        );
    }

    #[test]
    fn a_traceparent_names_its_trace_and_a_malformed_one_nothing() {
        let parent = new_traceparent();
        assert_eq!(parent.len(), 55);
        assert!(crate::telemetry::parse_traceparent(Some(&parent)).is_some());
        assert!(crate::telemetry::parse_traceparent(Some("garbage")).is_none());
        // Outside any span a new trace starts.
        assert_ne!(current_traceparent()[3..35], parent[3..35]);
    }
}
