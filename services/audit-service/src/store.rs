//! audit-service's persistence: rows of `audit_events`, inserted many per statement.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use contracts::EventIds;
use contracts::names;
use sqlx::AnyConnection;
use switchyard::consumer::{Delivery, HandleError};
use time::OffsetDateTime;

fn headers_json(headers: Option<&HeaderMap>) -> String {
    let mut map = BTreeMap::new();
    if let Some(headers) = headers {
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
            map.insert(name.to_string(), values.join(", "));
        }
    }
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// One row of the trail, checked and ready to insert.
pub struct AuditRow<'a> {
    seq: i64,
    event_id: String,
    order_id: String,
    subject: &'a str,
    kind: &'a str,
    headers: String,
    payload: &'a str,
    published_at: String,
    published_ms: i64,
}

impl<'a> AuditRow<'a> {
    /// A row for an event; an event that is not an order event's JSON is poison.
    pub fn new(
        subject: &'a str,
        payload: &'a [u8],
        headers: Option<&HeaderMap>,
        seq: u64,
        published: OffsetDateTime,
    ) -> Result<Self, HandleError> {
        let published_at = switchyard::time::format_rfc3339(published);
        let published_ms = (published.unix_timestamp_nanos() / 1_000_000) as i64;
        let ids: EventIds = serde_json::from_slice(payload)
            .map_err(|e| HandleError::Poison(format!("undecodable payload: {e}")))?;
        let payload = std::str::from_utf8(payload)
            .map_err(|e| HandleError::Poison(format!("payload is not utf-8: {e}")))?;
        Ok(AuditRow {
            seq: seq as i64,
            event_id: ids.event_id.to_string(),
            order_id: ids.order_id.to_string(),
            subject,
            kind: names::order_event_kind(subject).unwrap_or_default(),
            headers: headers_json(headers),
            payload,
            published_at,
            published_ms,
        })
    }

    pub fn of(delivery: &'a Delivery) -> Result<Self, HandleError> {
        AuditRow::new(
            &delivery.subject,
            &delivery.payload,
            delivery.headers.as_ref(),
            delivery.stream_seq,
            delivery.published,
        )
    }
}

/// Columns of an `audit_events` insert.
const COLUMNS: usize = 10;
/// Rows per insert statement (SQLite allows 32,766 parameters in one statement).
const ROWS_PER_INSERT: usize = 256;

/// Inserts rows inside the caller's transaction, many per statement (a repeat of a sequence or
/// event id changes nothing).
pub async fn insert(conn: &mut AnyConnection, rows: &[AuditRow<'_>]) -> Result<(), HandleError> {
    let recorded_at = switchyard::time::now_rfc3339();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_events (stream_seq, event_id, order_id, subject, kind, headers, payload, \
             published_at, published_ms, recorded_at) VALUES {} ON CONFLICT DO NOTHING",
            switchyard::db::value_rows(chunk.len(), COLUMNS)
        );
        let sql = switchyard::db::positional(switchyard::db::Backend::of(conn), sql);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query
                .bind(row.seq)
                .bind(row.event_id.as_str())
                .bind(row.order_id.as_str())
                .bind(row.subject)
                .bind(row.kind)
                .bind(row.headers.as_str())
                .bind(row.payload)
                .bind(row.published_at.as_str())
                .bind(row.published_ms)
                .bind(recorded_at.as_str());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
