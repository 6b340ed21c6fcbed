//! The JetStream streams every service relies on, declared once by an operator, verified by
//! every service at start-up.
//!
//! A domain names its event streams ([`EventStream`]: file storage, limits retention, a
//! duplicate window for the outbox's event ids); the platform adds its own: `DLQ` holds dead
//! letters (`dlq.>`); `REPLAY` holds dead letters replayed to the one consumer that failed them
//! (`replay.>`, see [`crate::dlq`]). Declaring a stream that is already there compares its
//! configuration: equal is fine; a difference in what may change (limits, replicas, duplicate
//! window) is logged and updated on purpose; a difference that cannot change in place (storage,
//! subjects) is an error that names it. Services only verify the streams; `switchyard provision`
//! declares them.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::names;

/// How the streams are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Replicas of each stream: 1 on one machine, 3 on a cluster.
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate. It must cover the
    /// outbox relay's retry horizon: the time between a publish that reached the stream and the
    /// relay's retry of it when the ack was lost (seconds, at most the relay's 5 s backoff), or
    /// the restart of a service killed between publish and mark (minutes).
    pub duplicate_window: Duration,
    /// How long events are kept.
    pub max_age: Duration,
    /// Largest size of each event stream, in bytes (`DLQ`, `REPLAY` and a stream of timers get
    /// an eighth).
    pub max_bytes: i64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            duplicate_window: Duration::from_secs(15 * 60),
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

/// Why a stream could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The stream exists with a configuration that cannot be changed in place.
    #[error(
        "stream {stream} exists with {field} = {existing}, but this service needs {wanted}; fix or delete the stream"
    )]
    Conflict {
        /// The stream.
        stream: String,
        /// The field that differs.
        field: &'static str,
        /// Its value on the server.
        existing: String,
        /// The value this service needs.
        wanted: String,
    },
    /// JetStream did not answer or refused.
    #[error("failed to declare stream {stream}: {detail}")]
    JetStream {
        /// The stream.
        stream: String,
        /// What JetStream said.
        detail: String,
    },
    /// The stream does not exist, and this service may not create it.
    #[error(
        "stream {stream} does not exist: an operator provisions the streams (`switchyard provision`, which `switchyard up` runs), or start the service with --declare-streams where its NATS user may create streams"
    )]
    Missing {
        /// The stream.
        stream: String,
    },
}

/// What declaring a stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// It did not exist and was created.
    Created,
    /// It existed as wanted.
    Unchanged,
    /// It existed with other limits, which were updated.
    Updated,
}

impl std::fmt::Display for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Declared::Created => "created",
            Declared::Unchanged => "up to date",
            Declared::Updated => "updated",
        })
    }
}

/// A stream of domain events, as its contract crate declares it.
///
/// ```
/// use switchyard::streams::{EventStream, StreamSettings};
///
/// const TICKETS: EventStream = EventStream {
///     name: "TICKETS",
///     subjects: &["events.tickets.>"],
///     description: "Every ticket event",
///     schedules: false,
/// };
/// let config = TICKETS.config(&StreamSettings::default());
/// assert_eq!(config.subjects, vec!["events.tickets.>".to_string()]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStream {
    /// The stream's name (upper case by convention).
    pub name: &'static str,
    /// The subjects it captures, e.g. `events.<family>.>`.
    pub subjects: &'static [&'static str],
    /// One line for operators (`nats stream info`).
    pub description: &'static str,
    /// Whether the stream holds scheduled messages (`Nats-Schedule`, nats-server 2.12+): timers
    /// the broker fires, such as a reservation's expiry.
    pub schedules: bool,
}

impl EventStream {
    /// Its JetStream configuration: file storage, limits retention, old messages discarded,
    /// sized by `settings`.
    pub fn config(&self, settings: &StreamSettings) -> stream::Config {
        stream::Config {
            duplicate_window: settings.duplicate_window,
            max_age: settings.max_age,
            // A stream of timers holds small messages: an eighth of the size, like DLQ.
            max_bytes: if self.schedules { settings.max_bytes / 8 } else { settings.max_bytes },
            max_message_size: 1024 * 1024,
            allow_direct: true,
            allow_message_schedules: self.schedules,
            ..file_stream(self.name, self.description, self.subjects, settings)
        }
    }
}

/// What every stream here shares: file storage, limits retention, the oldest messages discarded
/// first, no message-count limit, the settings' replicas.
fn file_stream(
    name: &str,
    description: &str,
    subjects: &[&str],
    settings: &StreamSettings,
) -> stream::Config {
    stream::Config {
        name: name.into(),
        description: Some(description.into()),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        num_replicas: settings.replicas,
        max_messages: -1,
        ..Default::default()
    }
}

/// The `DLQ` stream's configuration.
pub fn dlq_config(settings: &StreamSettings) -> stream::Config {
    let description = "Dead letters: messages a consumer could not process";
    stream::Config {
        duplicate_window: Duration::from_secs(120),
        max_age: settings.max_age,
        max_bytes: settings.max_bytes / 8,
        max_message_size: 2 * 1024 * 1024,
        allow_direct: true,
        ..file_stream(names::DLQ_STREAM, description, &[names::DLQ_STREAM_SUBJECTS], settings)
    }
}

/// The `REPLAY` stream's configuration: dead letters on their way back to the one consumer that
/// failed them (`replay.<stream>.<consumer>.<origin subject>`), kept a week.
pub fn replay_config(settings: &StreamSettings) -> stream::Config {
    let description = "Dead letters replayed to the one consumer that failed them";
    stream::Config {
        duplicate_window: Duration::from_secs(120),
        max_age: Duration::from_secs(7 * 24 * 3600).min(settings.max_age),
        max_bytes: settings.max_bytes / 8,
        max_message_size: 2 * 1024 * 1024,
        ..file_stream(names::REPLAY_STREAM, description, &[names::REPLAY_STREAM_SUBJECTS], settings)
    }
}

/// The streams a system runs on: its event streams, then `DLQ` and `REPLAY`.
pub fn stream_configs(events: &[EventStream], settings: &StreamSettings) -> Vec<stream::Config> {
    let mut configs: Vec<stream::Config> = events.iter().map(|e| e.config(settings)).collect();
    configs.extend([dlq_config(settings), replay_config(settings)]);
    configs
}

/// Declares the event streams, `DLQ` and `REPLAY` (an operator's step: `switchyard provision`).
pub async fn ensure_streams(
    js: &jetstream::Context,
    events: &[EventStream],
    settings: &StreamSettings,
) -> Result<(), StreamError> {
    for config in stream_configs(events, settings) {
        ensure(js, config).await?;
    }
    Ok(())
}

/// Checks that the event streams, `DLQ` and `REPLAY` exist as a service needs them, without
/// changing them (a service's start-up: its NATS user may not create or update streams).
/// Different limits are logged; a missing stream or a different storage or subject list is an
/// error.
pub async fn verify_streams(
    js: &jetstream::Context,
    events: &[EventStream],
    settings: &StreamSettings,
) -> Result<(), StreamError> {
    for wanted in stream_configs(events, settings) {
        let name = wanted.name.clone();
        let failed = |detail: String| StreamError::JetStream { stream: name.clone(), detail };
        match js.get_stream(&name).await {
            Ok(mut existing) => {
                let info = existing.info().await.map_err(|e| failed(e.to_string()))?;
                if compare(&info.config, &wanted)? {
                    tracing::warn!(stream = %name, "stream limits differ from this service's; an operator may update them with `switchyard provision`");
                }
            }
            Err(err) if is_not_found(&err) => return Err(StreamError::Missing { stream: name }),
            Err(err) => return Err(failed(err.to_string())),
        }
    }
    Ok(())
}

fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Compares an existing stream with the wanted one: `Err` when they cannot be reconciled in
/// place, `Ok(true)` when limits differ (and an update would change them).
fn compare(have: &stream::Config, wanted: &stream::Config) -> Result<bool, StreamError> {
    let conflict = |field: &'static str, existing: String, wanted_value: String| StreamError::Conflict {
        stream: wanted.name.clone(),
        field,
        existing,
        wanted: wanted_value,
    };
    if have.storage != wanted.storage {
        return Err(conflict("storage", format!("{:?}", have.storage), format!("{:?}", wanted.storage)));
    }
    if have.subjects != wanted.subjects {
        return Err(conflict("subjects", format!("{:?}", have.subjects), format!("{:?}", wanted.subjects)));
    }
    Ok(have.num_replicas != wanted.num_replicas
        || have.duplicate_window != wanted.duplicate_window
        || have.max_age != wanted.max_age
        || have.max_bytes != wanted.max_bytes
        || have.max_message_size != wanted.max_message_size
        || have.allow_message_schedules != wanted.allow_message_schedules)
}

/// Creates the stream, or checks and (when only mutable settings differ) updates it.
pub async fn ensure(js: &jetstream::Context, wanted: stream::Config) -> Result<Declared, StreamError> {
    let name = wanted.name.clone();
    let failed = |detail: String| StreamError::JetStream { stream: name.clone(), detail };
    match js.get_stream(&name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| failed(e.to_string()))?;
            let have = &info.config;
            let differs = compare(have, &wanted)?;
            if differs {
                tracing::warn!(
                    stream = %name,
                    replicas = have.num_replicas,
                    wanted_replicas = wanted.num_replicas,
                    duplicate_window = ?have.duplicate_window,
                    wanted_duplicate_window = ?wanted.duplicate_window,
                    "stream limits differ; updating the stream"
                );
                js.update_stream(&wanted).await.map_err(|e| failed(e.to_string()))?;
                return Ok(Declared::Updated);
            }
            Ok(Declared::Unchanged)
        }
        Err(err) => {
            if !is_not_found(&err) {
                return Err(failed(err.to_string()));
            }
            match js.create_stream(wanted.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = %name, "stream created");
                    Ok(Declared::Created)
                }
                // Another instance created it between our look and our create: check it again.
                Err(_) if js.get_stream(&name).await.is_ok() => Ok(Declared::Unchanged),
                Err(err) => Err(failed(err.to_string())),
            }
        }
    }
}

// The flags that describe the streams, turned into settings here, next to them.
impl crate::config::StreamShapeArgs {
    /// The stream settings these flags describe.
    pub fn settings(&self) -> StreamSettings {
        StreamSettings {
            replicas: usize::from(self.stream_replicas),
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }
}

impl crate::config::StreamArgs {
    /// The stream settings these flags describe.
    pub fn settings(&self) -> StreamSettings {
        self.shape.settings()
    }
}
