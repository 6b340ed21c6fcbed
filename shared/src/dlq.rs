//! Dead letters: list, show, replay and purge the `DLQ` stream.
//!
//! A dead letter is the original payload on `dlq.<stream>.<consumer>` with headers naming its
//! origin (stream, subject, sequence), the consumer, deliveries, the reason and the last error (see
//! [`crate::consumer::dlq_headers`]). Replaying republishes the payload to the origin subject under a
//! new `Nats-Msg-Id` (the stream's duplicate window would drop the old one), then deletes the dead
//! letter; consumers that applied the event before skip it through their inbox.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use bytes::Bytes;
use serde::Serialize;

use crate::consumer::dlq_headers;
use crate::names;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Sequence in the `DLQ` stream.
    pub seq: u64,
    /// `dlq.<stream>.<consumer>`.
    pub subject: String,
    /// Stream the message came from.
    pub origin_stream: String,
    /// Subject it was published on.
    pub origin_subject: String,
    /// Its sequence in the origin stream.
    pub origin_seq: u64,
    /// Consumer that gave up.
    pub consumer: String,
    /// How often it was delivered.
    pub deliveries: u64,
    /// `poison` or `max_deliver`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: String,
    /// The original payload, as text (lossy for binary payloads).
    pub payload: String,
    #[serde(skip)]
    raw_payload: Bytes,
    #[serde(skip)]
    headers: HeaderMap,
}

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// No dead letter has that sequence.
    #[error("no dead letter with sequence {0}")]
    NotFound(u64),
    /// JetStream failed.
    #[error("dead-letter stream error: {0}")]
    JetStream(String),
    /// The dead letter lacks its origin headers.
    #[error("dead letter {0} has no origin subject")]
    NoOrigin(u64),
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default()
}

fn decode(message: StreamMessage) -> DeadLetter {
    let headers = message.headers.clone();
    DeadLetter {
        seq: message.sequence,
        subject: message.subject.to_string(),
        origin_stream: header(&headers, dlq_headers::ORIGIN_STREAM),
        origin_subject: header(&headers, dlq_headers::ORIGIN_SUBJECT),
        origin_seq: header(&headers, dlq_headers::ORIGIN_SEQ).parse().unwrap_or(0),
        consumer: header(&headers, dlq_headers::CONSUMER),
        deliveries: header(&headers, dlq_headers::DELIVERIES).parse().unwrap_or(0),
        reason: header(&headers, dlq_headers::REASON),
        error: header(&headers, dlq_headers::ERROR),
        dead_lettered_at: crate::time::format_rfc3339(message.time),
        payload: String::from_utf8_lossy(&message.payload).into_owned(),
        raw_payload: message.payload,
        headers,
    }
}

async fn stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream, DlqError> {
    js.get_stream(names::DLQ_STREAM).await.map_err(|e| DlqError::JetStream(e.to_string()))
}

/// Up to `limit` dead letters, oldest first.
pub async fn list(js: &jetstream::Context, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
    let mut stream = stream(js).await?;
    let state = stream.info().await.map_err(|e| DlqError::JetStream(e.to_string()))?.state.clone();
    let mut found = Vec::new();
    if state.messages == 0 {
        return Ok(found);
    }
    for seq in state.first_sequence..=state.last_sequence {
        if found.len() >= limit {
            break;
        }
        // Deleted sequences (replayed letters) are gaps; skip them.
        if let Ok(message) = stream.get_raw_message(seq).await {
            found.push(decode(message));
        }
    }
    Ok(found)
}

/// The dead letter with this sequence.
pub async fn show(js: &jetstream::Context, seq: u64) -> Result<DeadLetter, DlqError> {
    let stream = stream(js).await?;
    stream.get_raw_message(seq).await.map(decode).map_err(|_| DlqError::NotFound(seq))
}

/// Republishes the dead letter to its origin subject and deletes it from `DLQ`. Returns the new
/// message's sequence in the origin stream.
pub async fn replay(js: &jetstream::Context, seq: u64) -> Result<u64, DlqError> {
    let letter = show(js, seq).await?;
    if letter.origin_subject.is_empty() {
        return Err(DlqError::NoOrigin(seq));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Switchyard-") || name.eq_ignore_ascii_case("Nats-Msg-Id") {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    let origin_id = header(&letter.headers, dlq_headers::ORIGIN_MSG_ID);
    let msg_id = format!("{}:replay:{seq}", if origin_id.is_empty() { "dlq" } else { &origin_id });
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    let ack = js
        .publish_with_headers(letter.origin_subject.clone(), headers, letter.raw_payload.clone())
        .await
        .map_err(|e| DlqError::JetStream(e.to_string()))?
        .await
        .map_err(|e| DlqError::JetStream(e.to_string()))?;
    stream(js).await?.delete_message(seq).await.map_err(|e| DlqError::JetStream(e.to_string()))?;
    tracing::info!(seq, origin = %letter.origin_subject, new_seq = ack.sequence, "dead letter replayed");
    Ok(ack.sequence)
}

/// Deletes every dead letter. Returns how many were deleted.
pub async fn purge(js: &jetstream::Context) -> Result<u64, DlqError> {
    let response = stream(js).await?.purge().await.map_err(|e| DlqError::JetStream(e.to_string()))?;
    Ok(response.purged)
}
