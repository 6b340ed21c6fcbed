//! Dead letters: list, show, replay and purge the `DLQ` stream.
//!
//! A dead letter is the original payload on `dlq.<stream>.<consumer>` with headers naming its
//! origin (stream, subject, sequence), the consumer, deliveries, the reason and the last error (see
//! [`headers`]).
//!
//! Replaying goes back to the one consumer that failed, and only to it: the payload is published
//! to `replay.<stream>.<consumer>.<origin subject>` in stream `REPLAY`, where only that consumer's
//! replay durable receives it (the origin stream keeps its one copy; no other consumer, no
//! history and no event stream sees it again). The consumer runtime hands it to the handler as the
//! original (same subject, sequence, payload and event id, so an inbox still holds) marked as a
//! replay of the letter. The letter leaves `DLQ` only once `REPLAY` has accepted the copy; a
//! replay that fails again becomes one new letter of that consumer, naming the letter it replayed.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::StreamMessage};
use bytes::Bytes;
use serde::Serialize;

use crate::names;

/// Header names of a dead letter.
pub mod headers {
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

/// The subject and headers of `delivery`'s dead letter, as `durable` on `stream` writes it: the
/// original's headers (but its `Nats-Msg-Id` and any dead-letter header), where it came from, who
/// gave up, how often, why, and a message id that makes a repeat a duplicate (one letter per
/// origin message and consumer, and per replay of it).
pub fn letter(
    stream: &str,
    durable: &str,
    delivery: &crate::consumer::Delivery,
    reason: &str,
    error: &str,
) -> (String, async_nats::HeaderMap) {
    use headers::*;
    let mut headers = async_nats::HeaderMap::new();
    if let Some(original) = &delivery.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            if name.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref()) || is_dlq_header(name)
            {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
    }
    // The original event's message id: on a replay, the one it carried from its letter.
    let origin_msg_id = delivery
        .header(ORIGIN_MSG_ID)
        .or_else(|| delivery.header(async_nats::header::NATS_MESSAGE_ID.as_ref()));
    if let Some(id) = origin_msg_id {
        headers.insert(ORIGIN_MSG_ID, id);
    }
    if let Some(letter) = delivery.replay_of {
        headers.insert(REPLAY_OF, letter.to_string().as_str());
    }
    headers.insert(ORIGIN_STREAM, stream);
    headers.insert(ORIGIN_SUBJECT, delivery.subject.as_str());
    headers.insert(ORIGIN_SEQ, delivery.stream_seq.to_string().as_str());
    headers.insert(CONSUMER, durable);
    headers.insert(DELIVERIES, delivery.delivered.to_string().as_str());
    headers.insert(REASON, reason);
    let error_line: String = error.chars().filter(|c| !c.is_control()).take(1000).collect();
    headers.insert(ERROR, error_line.as_str());
    // One dead letter per origin message and consumer (and per replay of it), even if this
    // is repeated.
    let msg_id = match delivery.replay_of {
        None => format!("dlq:{}:{}:{}", stream, durable, delivery.stream_seq),
        Some(letter) => {
            format!("dlq:{}:{}:{}:replay:{letter}", stream, durable, delivery.stream_seq)
        }
    };
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    (crate::names::dlq_subject(stream, durable), headers)
}

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
    /// On a letter made by a replay that failed again: the letter that was replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<u64>,
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
    #[error("dead letter {0} has no origin stream, subject or consumer")]
    NoOrigin(u64),
}

/// A dead letter on its way back to its consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// The letter's sequence in `DLQ` (now deleted).
    pub letter: u64,
    /// The consumer it went back to.
    pub consumer: String,
    /// The subject it was first published on.
    pub origin_subject: String,
    /// Its sequence in `REPLAY`.
    pub replay_seq: u64,
    /// The durable on `REPLAY` that delivers it.
    pub replay_durable: String,
    /// `DLQ`'s last sequence before the replay: a new letter comes after it.
    dlq_last_seq: u64,
}

/// What became of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The consumer handled it and acked it.
    Applied,
    /// It failed again: this is the new letter.
    FailedAgain(Box<DeadLetter>),
    /// Not settled yet (the consumer is not running, or still retrying).
    Pending,
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default()
}

fn decode(message: StreamMessage) -> DeadLetter {
    let headers = message.headers.clone();
    DeadLetter {
        seq: message.sequence,
        subject: message.subject.to_string(),
        origin_stream: header(&headers, headers::ORIGIN_STREAM),
        origin_subject: header(&headers, headers::ORIGIN_SUBJECT),
        origin_seq: header(&headers, headers::ORIGIN_SEQ).parse().unwrap_or(0),
        consumer: header(&headers, headers::CONSUMER),
        deliveries: header(&headers, headers::DELIVERIES).parse().unwrap_or(0),
        reason: header(&headers, headers::REASON),
        error: header(&headers, headers::ERROR),
        dead_lettered_at: crate::time::format_rfc3339(message.time),
        payload: String::from_utf8_lossy(&message.payload).into_owned(),
        replay_of: header(&headers, headers::REPLAY_OF).parse().ok(),
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

/// Replays the dead letter to the one consumer that failed it (see the module doc), then deletes
/// it from `DLQ`. [`outcome`] tells what became of it.
pub async fn replay(js: &jetstream::Context, seq: u64) -> Result<Replayed, DlqError> {
    let letter = show(js, seq).await?;
    if letter.origin_subject.is_empty() || letter.origin_stream.is_empty() || letter.consumer.is_empty() {
        return Err(DlqError::NoOrigin(seq));
    }
    let mut headers = HeaderMap::new();
    for (name, values) in letter.headers.iter() {
        let name: &str = name.as_ref();
        if name.starts_with("Switchyard-")
            || name.eq_ignore_ascii_case(async_nats::header::NATS_MESSAGE_ID.as_ref())
        {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers.insert(headers::ORIGIN_STREAM, letter.origin_stream.as_str());
    headers.insert(headers::ORIGIN_SUBJECT, letter.origin_subject.as_str());
    headers.insert(headers::ORIGIN_SEQ, letter.origin_seq.to_string().as_str());
    let origin_id = header(&letter.headers, headers::ORIGIN_MSG_ID);
    if !origin_id.is_empty() {
        headers.insert(headers::ORIGIN_MSG_ID, origin_id.as_str());
    }
    headers.insert(headers::REPLAY_OF, seq.to_string().as_str());
    // One copy per letter in REPLAY, even if a replay is repeated after a lost ack.
    let msg_id = format!("replay:{}:{}:{}:{seq}", letter.origin_stream, letter.consumer, letter.origin_seq);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    let subject = names::replay_subject(&letter.origin_stream, &letter.consumer, &letter.origin_subject);
    let mut dlq = stream(js).await?;
    let dlq_last_seq = dlq.info().await.map_err(|e| DlqError::JetStream(e.to_string()))?.state.last_sequence;
    let ack = js
        .publish_with_headers(subject, headers, letter.raw_payload.clone())
        .await
        .map_err(|e| DlqError::JetStream(e.to_string()))?
        .await
        .map_err(|e| DlqError::JetStream(e.to_string()))?;
    // Only now that REPLAY holds the copy does the letter leave DLQ.
    dlq.delete_message(seq).await.map_err(|e| DlqError::JetStream(e.to_string()))?;
    tracing::info!(seq, consumer = %letter.consumer, origin = %letter.origin_subject, replay_seq = ack.sequence, "dead letter replayed");
    Ok(Replayed {
        letter: seq,
        replay_durable: names::replay_durable(&letter.origin_stream, &letter.consumer),
        consumer: letter.consumer,
        origin_subject: letter.origin_subject,
        replay_seq: ack.sequence,
        dlq_last_seq,
    })
}

/// Waits up to `wait` for a replay to settle: a new letter naming it (failed again), or the
/// consumer's ack floor on `REPLAY` past it (applied).
pub async fn outcome(
    js: &jetstream::Context,
    replayed: &Replayed,
    wait: Duration,
) -> Result<Outcome, DlqError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(letter) = letter_replaying(js, replayed).await? {
            return Ok(Outcome::FailedAgain(Box::new(letter)));
        }
        let acked = match js.get_stream(names::REPLAY_STREAM).await {
            Ok(stream) => match stream.consumer_info(&replayed.replay_durable).await {
                Ok(info) => info.ack_floor.stream_sequence >= replayed.replay_seq,
                Err(_) => false,
            },
            Err(err) => return Err(DlqError::JetStream(err.to_string())),
        };
        if acked {
            // A letter is published before the message is terminated: look once more.
            return Ok(match letter_replaying(js, replayed).await? {
                Some(letter) => Outcome::FailedAgain(Box::new(letter)),
                None => Outcome::Applied,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Outcome::Pending);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The letter that a failed replay made, if any.
async fn letter_replaying(
    js: &jetstream::Context,
    replayed: &Replayed,
) -> Result<Option<DeadLetter>, DlqError> {
    let mut dlq = stream(js).await?;
    let last = dlq.info().await.map_err(|e| DlqError::JetStream(e.to_string()))?.state.last_sequence;
    for seq in replayed.dlq_last_seq + 1..=last {
        if let Ok(message) = dlq.get_raw_message(seq).await {
            let letter = decode(message);
            if letter.replay_of == Some(replayed.letter) {
                return Ok(Some(letter));
            }
        }
    }
    Ok(None)
}

/// Deletes every dead letter. Returns how many were deleted.
pub async fn purge(js: &jetstream::Context) -> Result<u64, DlqError> {
    let response = stream(js).await?.purge().await.map_err(|e| DlqError::JetStream(e.to_string()))?;
    Ok(response.purged)
}
