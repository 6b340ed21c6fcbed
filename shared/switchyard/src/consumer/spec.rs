//! What a consumer is: its durable, filters and limits.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};

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
    /// Deliveries one lane applies in one write transaction ([`Apply`](super::Apply) handlers only).
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

    pub(crate) fn retry_delay(&self, delivered: i64) -> Duration {
        let index = (delivered.max(1) - 1) as usize;
        self.retry_backoff.get(index).or(self.retry_backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

// The consumer flags, turned into a spec here, next to it.
impl crate::config::ConsumerArgs {
    /// Applies these flags to a consumer spec.
    pub fn apply(&self, mut spec: ConsumerSpec) -> ConsumerSpec {
        spec.concurrency = usize::from(self.consumer_concurrency);
        if let Some(max_batch) = self.consumer_max_batch {
            spec.max_batch = usize::from(max_batch);
        }
        spec.max_deliver = self.max_deliver;
        spec.ack_wait = self.ack_wait;
        if !self.retry_backoff.is_empty() {
            spec.retry_backoff = self.retry_backoff.clone();
        }
        spec
    }
}
