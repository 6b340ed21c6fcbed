//! Breakers that agree across instances, through the NATS KV bucket [`BUCKET`].
//!
//! Each service instance keeps its own [`Breaker`] (its window, its counters), and with
//! `--breaker-shared` publishes its transitions under the breaker's name:
//!
//! - `{"state":"open","until_ms":..,"by":..}` when it opens: every other instance watching the key
//!   opens too, until the same wall-clock time, without making a call of its own;
//! - `{"state":"half_open","until_ms":..,"by":..}` when its reset timeout passes and it wins the
//!   probe: the claim is a compare-and-set on the key's revision, so of the instances whose reset
//!   timeout passed together exactly one wins; the others keep rejecting until `until_ms` (one
//!   breaker timeout) or until the winner's outcome arrives;
//! - `{"state":"closed","by":..}` when its trial succeeds: the others close too.
//!
//! An instance that starts reads the key and starts open if its peers are. opossum declined shared
//! state (its issue 675): there it needs a store; here the broker every instance already talks to
//! is one. If the bucket cannot be reached, a breaker goes on alone (it logs, and probes itself).
//! Times cross machines as wall-clock milliseconds: clocks that disagree by more than the reset
//! timeout make the others' open period shorter or longer by that much.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::breaker::{Breaker, BreakerPeers};
use crate::shutdown::Shutdown;

/// The KV bucket of shared breaker states (stream `KV_BREAKERS`), one key per breaker name.
pub const BUCKET: &str = "BREAKERS";

/// Why the bucket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SharedBreakerError {
    /// The bucket does not exist and this service may not create it.
    #[error(
        "the KV bucket {BUCKET} for shared breakers does not exist: `switchyard provision` creates it, or start with --declare-streams where the NATS user may"
    )]
    Missing,
    /// JetStream refused or did not answer.
    #[error("failed to open the KV bucket {BUCKET}: {0}")]
    JetStream(String),
}

/// The bucket's configuration: the latest state per key only, kept a day.
pub fn bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: BUCKET.to_string(),
        description: "Circuit breaker states shared by the instances of each service".to_string(),
        history: 1,
        max_age: Duration::from_secs(24 * 3600),
        max_value_size: 1024,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// Opens the bucket, or creates it when `declare` is set.
pub async fn open_bucket(
    js: &jetstream::Context,
    declare: bool,
    replicas: usize,
) -> Result<kv::Store, SharedBreakerError> {
    match js.get_key_value(BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) if declare => js
            .create_key_value(bucket_config(replicas))
            .await
            .map_err(|err| SharedBreakerError::JetStream(err.to_string())),
        Err(err) if err.to_string().to_lowercase().contains("not found") => Err(SharedBreakerError::Missing),
        Err(err) => Err(SharedBreakerError::JetStream(err.to_string())),
    }
}

/// One instance's record of a breaker, as stored under the breaker's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `open`, `half_open` or `closed`.
    pub state: String,
    /// Until when an open or probing state holds, in Unix milliseconds.
    #[serde(default)]
    pub until_ms: u64,
    /// The instance that wrote it.
    pub by: String,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// What the breaker tells its peers; one task writes the records, one after another.
#[derive(Debug)]
struct KvPeers {
    store: kv::Store,
    key: String,
    instance: String,
    writes: mpsc::UnboundedSender<Record>,
}

impl BreakerPeers for KvPeers {
    fn opened(&self, until: SystemTime) {
        let record = Record { state: "open".into(), until_ms: unix_ms(until), by: self.instance.clone() };
        let _ = self.writes.send(record);
    }

    fn closed(&self) {
        let _ = self.writes.send(Record { state: "closed".into(), until_ms: 0, by: self.instance.clone() });
    }

    fn claim_probe(&self, lease: Duration) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let now = SystemTime::now();
            let claim = Record {
                state: "half_open".into(),
                until_ms: unix_ms(now + lease),
                by: self.instance.clone(),
            };
            let Ok(value) = serde_json::to_vec(&claim) else { return true };
            let current = match self.store.entry(&self.key).await {
                Ok(entry) => entry,
                Err(err) => {
                    tracing::warn!(key = %self.key, error = %err, "shared breaker unreachable: probing alone");
                    return true;
                }
            };
            let result = match current {
                None => {
                    self.store.create(&self.key, value.into()).await.map(|_| ()).map_err(|e| e.to_string())
                }
                Some(entry) => {
                    let record: Option<Record> = serde_json::from_slice(&entry.value).ok();
                    // Another instance holds a live claim: it probes, this one waits.
                    if let Some(record) = record
                        && record.state == "half_open"
                        && record.by != self.instance
                        && record.until_ms > unix_ms(now)
                    {
                        return false;
                    }
                    self.store
                        .update(&self.key, value.into(), entry.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            };
            match result {
                Ok(()) => true,
                Err(err) => {
                    tracing::debug!(key = %self.key, error = %err, "another instance won the probe");
                    false
                }
            }
        })
    }
}

/// Shares `breaker` with the other instances through `store` until `shutdown`: installs the peers
/// on the breaker, applies the current state, and spawns the task that writes this instance's
/// transitions and applies the others'.
pub async fn share(
    store: kv::Store,
    breaker: Arc<Breaker>,
    instance: impl Into<String>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, SharedBreakerError> {
    let instance = instance.into();
    let key = breaker.name().to_string();
    let mut watch = store.watch(&key).await.map_err(|err| SharedBreakerError::JetStream(err.to_string()))?;
    // The state the peers are in now (after the watch starts, so nothing falls between).
    if let Ok(Some(entry)) = store.entry(&key).await
        && let Ok(record) = serde_json::from_slice::<Record>(&entry.value)
    {
        apply(&breaker, &record, &instance);
    }
    let (writes, mut pending) = mpsc::unbounded_channel::<Record>();
    breaker.share_with(Arc::new(KvPeers {
        store: store.clone(),
        key: key.clone(),
        instance: instance.clone(),
        writes,
    }));
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                record = pending.recv() => {
                    let Some(record) = record else { break };
                    let Ok(value) = serde_json::to_vec(&record) else { continue };
                    if let Err(err) = store.put(&key, value.into()).await {
                        tracing::warn!(key = %key, error = %err, "failed to share a breaker transition");
                    }
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        if let Ok(record) = serde_json::from_slice::<Record>(&entry.value) {
                            apply(&breaker, &record, &instance);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::warn!(key = %key, error = %err, "shared breaker watch failed"),
                    None => {
                        tracing::warn!(key = %key, "shared breaker watch ended: this instance's breaker goes on alone");
                        break;
                    }
                },
                _ = shutdown.wait() => break,
            }
        }
    }))
}

fn apply(breaker: &Breaker, record: &Record, instance: &str) {
    if record.by == instance {
        return;
    }
    metrics::counter!(crate::observe::BREAKER_PEER_UPDATES, "breaker" => breaker.name().to_string(), "state" => record.state.clone())
        .increment(1);
    match record.state.as_str() {
        "open" => breaker.peer_opened(from_unix_ms(record.until_ms)),
        "half_open" => breaker.peer_probing(from_unix_ms(record.until_ms)),
        "closed" => breaker.peer_closed(),
        other => tracing::debug!(state = other, "unknown shared breaker state ignored"),
    }
}
