//! A circuit breaker with opossum's semantics, on tokio time.
//!
//! - Every call gets `timeout`; a slow call counts as a timeout and its caller gets an answer.
//! - Outcomes are counted in a rolling window of `rolling_count_timeout`, split into
//!   `rolling_count_buckets` buckets; old buckets roll out of the window.
//! - The breaker opens when a failure or timeout leaves the window with at least `volume_threshold`
//!   completed calls and an error percentage (failures + timeouts over completed calls) of at least
//!   `error_threshold_percentage`.
//! - While open, calls are rejected at once (the wrapped future is never polled) and the fallback runs.
//! - After `reset_timeout` the breaker is half-open: exactly one trial call goes through and every
//!   other call is rejected. A trial that succeeds closes the breaker and starts a fresh window; one
//!   that fails or times out opens it again for another `reset_timeout`.
//! - An error whose [`TripsBreaker::trips_breaker`] is false (say a "bad request" answer: the service
//!   is up and answering) counts as a success, like opossum's `errorFilter`.
//!
//! - With peers ([`BreakerPeers`], see [`crate::shared_breaker`]) the instances of a service agree:
//!   an instance that opens its breaker tells the others, which open too without making a call of
//!   their own; when the reset timeout passes, only the instance that wins the probe lets a trial
//!   through, the others keep rejecting until it tells them the outcome.
//!
//! All timing uses `tokio::time`, so tests run on paused time.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tracing::Instrument;

use serde::Serialize;
use tokio::time::Instant;

/// The breaker's knobs, named after opossum's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Time a call may take before it counts as a timeout (`timeout`).
    pub timeout: Duration,
    /// Error percentage that opens the breaker, 1 to 100 (`errorThresholdPercentage`).
    pub error_threshold_percentage: u8,
    /// Completed calls the window needs before the breaker may open (`volumeThreshold`).
    pub volume_threshold: u32,
    /// Time the breaker stays open before a trial call (`resetTimeout`).
    pub reset_timeout: Duration,
    /// Length of the rolling window (`rollingCountTimeout`).
    pub rolling_count_timeout: Duration,
    /// Number of buckets in the window (`rollingCountBuckets`).
    pub rolling_count_buckets: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            timeout: Duration::from_secs(3),
            error_threshold_percentage: 50,
            volume_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            rolling_count_timeout: Duration::from_secs(10),
            rolling_count_buckets: 10,
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected until the reset timeout passes.
    Open,
    /// One trial call may go through; the others are rejected.
    HalfOpen,
}

impl BreakerState {
    /// The state as a lowercase word, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Why a call through the breaker did not give a value.
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker is open (or half-open with its trial in flight): the call was not made.
    #[error("circuit breaker is open")]
    Open {
        /// How long until the breaker lets a trial through.
        retry_after: Duration,
    },
    /// The call took longer than the breaker's timeout, or its own request timeout fired first
    /// (after its retries, if any): the time it took.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The call failed.
    #[error(transparent)]
    Failure(E),
}

/// Decides whether an error counts against the service (opossum's `errorFilter`, inverted).
pub trait TripsBreaker {
    /// True when the error means the service is failing; false when it answered properly with an
    /// error of the caller's making.
    fn trips_breaker(&self) -> bool {
        true
    }

    /// True when the error is the call's own timeout firing (a request timeout inside the call);
    /// it then counts as a timeout, exactly like the breaker's timeout.
    fn is_timeout(&self) -> bool {
        false
    }

    /// True when the call ended for a reason that says nothing about the service (the caller's
    /// own deadline passed): the outcome is not counted, and a half-open trial slot is freed.
    fn is_ignored(&self) -> bool {
        false
    }
}

impl TripsBreaker for std::io::Error {
    fn is_timeout(&self) -> bool {
        self.kind() == std::io::ErrorKind::TimedOut
    }
}

/// Counters of call outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed.
    pub failures: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls rejected without being made.
    pub rejects: u64,
    /// Times a fallback answered instead.
    pub fallbacks: u64,
}

impl Counts {
    fn completed(&self) -> u64 {
        self.successes + self.failures + self.timeouts
    }

    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Failure => self.failures += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Reject => self.rejects += 1,
            Outcome::Fallback => self.fallbacks += 1,
        }
    }

    fn merge(&mut self, other: &Counts) {
        self.successes += other.successes;
        self.failures += other.failures;
        self.timeouts += other.timeouts;
        self.rejects += other.rejects;
        self.fallbacks += other.fallbacks;
    }
}

/// What the breaker looks like now: state, window and lifetime counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name (what it protects).
    pub name: String,
    /// Current state.
    pub state: BreakerState,
    /// Outcomes in the rolling window.
    pub window: Counts,
    /// Outcomes since the breaker was made.
    pub totals: Counts,
    /// Times the breaker opened.
    pub opened: u64,
    /// Times another instance's transition was applied here (shared breakers).
    pub peer_updates: u64,
    /// Whether the state is shared with the other instances.
    pub shared: bool,
    /// While open, milliseconds until a trial call is let through.
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Timeout,
    Reject,
    Fallback,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Reject => "reject",
            Outcome::Fallback => "fallback",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    counts: Counts,
}

#[derive(Debug)]
struct Inner {
    state: State,
    buckets: VecDeque<Bucket>,
    totals: Counts,
    opened: u64,
    peer_updates: u64,
}

/// The other instances of a breaker ([`crate::shared_breaker`] keeps them in a NATS KV bucket).
pub trait BreakerPeers: Send + Sync + std::fmt::Debug {
    /// This instance opened its breaker until `until` (wall-clock time, shared across machines).
    fn opened(&self, until: std::time::SystemTime);
    /// This instance's trial succeeded: the breaker is closed.
    fn closed(&self);
    /// Asks to be the one instance that probes for the next `lease`; false when another one is.
    fn claim_probe(&self, lease: Duration) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// A circuit breaker. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    bucket_len: Duration,
    inner: Mutex<Inner>,
    metrics: BreakerMetrics,
    peers: std::sync::OnceLock<std::sync::Arc<dyn BreakerPeers>>,
}

/// A breaker's Prometheus series ([`crate::observe`]).
#[derive(Debug)]
struct BreakerMetrics {
    state: metrics::Gauge,
    /// By outcome: success, failure, timeout, reject, fallback.
    calls: [metrics::Counter; 5],
}

impl BreakerMetrics {
    fn new(name: &str) -> Self {
        use crate::observe::{BREAKER_CALLS, BREAKER_STATE};
        let call = |outcome: &'static str| metrics::counter!(BREAKER_CALLS, "breaker" => name.to_string(), "outcome" => outcome);
        let metrics = BreakerMetrics {
            state: metrics::gauge!(BREAKER_STATE, "breaker" => name.to_string()),
            calls: [call("success"), call("failure"), call("timeout"), call("reject"), call("fallback")],
        };
        metrics.state.set(0.0);
        metrics
    }

    fn publish(&self, state: &State) {
        self.state.set(match state {
            State::Closed => 0.0,
            State::Open { .. } => 1.0,
            State::HalfOpen { .. } => 2.0,
        });
    }
}

/// Permission to make one call; a trial permit dropped before its outcome is recorded frees the
/// half-open slot again, so a cancelled trial cannot wedge the breaker.
struct Admission<'a> {
    breaker: &'a Breaker,
    trial: bool,
    done: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.trial && !self.done {
            let mut inner = self.breaker.lock();
            if let State::HalfOpen { trial_in_flight } = &mut inner.state {
                *trial_in_flight = false;
            }
        }
    }
}

impl Breaker {
    /// A closed breaker named after what it protects.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        let buckets = config.rolling_count_buckets.max(1);
        let bucket_len = (config.rolling_count_timeout / buckets).max(Duration::from_millis(1));
        let name = name.into();
        Breaker {
            metrics: BreakerMetrics::new(&name),
            name,
            config,
            bucket_len,
            inner: Mutex::new(Inner {
                state: State::Closed,
                buckets: VecDeque::with_capacity(buckets as usize + 1),
                totals: Counts::default(),
                opened: 0,
                peer_updates: 0,
            }),
            peers: std::sync::OnceLock::new(),
        }
    }

    /// Shares this breaker's transitions with `peers` (once; later calls are ignored).
    pub fn share_with(&self, peers: std::sync::Arc<dyn BreakerPeers>) {
        let _ = self.peers.set(peers);
    }

    /// Another instance opened the breaker until `until`: open here too, unless a trial of ours
    /// is in flight (its outcome will be shared).
    pub fn peer_opened(&self, until: std::time::SystemTime) {
        let mut inner = self.lock();
        if matches!(inner.state, State::HalfOpen { trial_in_flight: true }) {
            return;
        }
        let left = until.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return;
        }
        let until = Instant::now() + left;
        if let State::Open { until: ours } = inner.state
            && ours >= until
        {
            return;
        }
        if !matches!(inner.state, State::Open { .. }) {
            tracing::warn!(breaker = %self.name, "circuit breaker opened by another instance");
        }
        inner.state = State::Open { until };
        inner.peer_updates += 1;
        self.metrics.publish(&inner.state);
    }

    /// Another instance's trial succeeded: close here too with a fresh window.
    pub fn peer_closed(&self) {
        let mut inner = self.lock();
        if matches!(inner.state, State::Closed | State::HalfOpen { trial_in_flight: true }) {
            return;
        }
        tracing::info!(breaker = %self.name, "circuit breaker closed by another instance");
        inner.state = State::Closed;
        inner.buckets.clear();
        inner.peer_updates += 1;
        self.metrics.publish(&inner.state);
    }

    /// Another instance is probing until `until`: keep rejecting until then (or its outcome).
    pub fn peer_probing(&self, until: std::time::SystemTime) {
        let mut inner = self.lock();
        if matches!(inner.state, State::HalfOpen { trial_in_flight: true }) {
            return;
        }
        let left = until.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO);
        inner.state = State::Open { until: Instant::now() + left };
        inner.peer_updates += 1;
        self.metrics.publish(&inner.state);
    }

    /// What the breaker protects.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Runs `call` through the breaker: rejected at once while open, cut off after the timeout.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, BreakerError<E>>
    where
        E: TripsBreaker,
        F: Future<Output = Result<T, E>>,
    {
        // The call as a span with its outcome; the request inside is its child.
        let span = tracing::info_span!(
            "breaker",
            otel.name = %format_args!("breaker {}", self.name),
            breaker.name = %self.name,
            breaker.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let mut admission = self.try_admit().map_err(|retry_after| {
            span.record("breaker.outcome", "reject");
            BreakerError::Open { retry_after }
        })?;
        // A shared breaker probes from one instance only: the others keep rejecting.
        if admission.trial
            && let Some(peers) = self.peers.get()
            && !peers.claim_probe(self.config.timeout).await
        {
            admission.done = true;
            let retry_after = self.lost_probe();
            span.record("breaker.outcome", "reject");
            return Err(BreakerError::Open { retry_after });
        }
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.config.timeout, call).instrument(span.clone()).await;
        let (outcome, result) = match result {
            Err(_) => (Outcome::Timeout, Err(BreakerError::Timeout(self.config.timeout))),
            Ok(Ok(value)) => (Outcome::Success, Ok(value)),
            Ok(Err(err)) if err.is_ignored() => {
                // Not counted; the admission dropped undone frees a half-open trial slot.
                span.record("breaker.outcome", "ignored");
                return Err(BreakerError::Failure(err));
            }
            // The call's own timeout (or its retries' last one) fired: the time it took, which
            // can be less than the breaker's timeout.
            Ok(Err(err)) if err.is_timeout() => {
                (Outcome::Timeout, Err(BreakerError::Timeout(started.elapsed().min(self.config.timeout))))
            }
            Ok(Err(err)) if err.trips_breaker() => (Outcome::Failure, Err(BreakerError::Failure(err))),
            Ok(Err(err)) => (Outcome::Success, Err(BreakerError::Failure(err))),
        };
        admission.done = true;
        span.record("breaker.outcome", outcome.as_str());
        if matches!(outcome, Outcome::Failure | Outcome::Timeout) {
            span.record("otel.status_code", "error");
        }
        self.record(admission.trial, outcome);
        result
    }

    /// Like [`Breaker::call`], but a rejection, timeout or failure is answered by `fallback`.
    pub async fn call_or_else<T, E, F, G>(&self, call: F, fallback: G) -> T
    where
        E: TripsBreaker,
        F: Future<Output = Result<T, E>>,
        G: FnOnce(BreakerError<E>) -> T,
    {
        match self.call(call).await {
            Ok(value) => value,
            Err(err) => {
                self.count(Outcome::Fallback);
                fallback(err)
            }
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.refresh(&mut inner, Instant::now());
        match inner.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Keeps this breaker's state gauge current at every render of `scrape` (an open breaker
    /// turns half-open with time, not with a call).
    pub fn observe(self: &std::sync::Arc<Self>, scrape: &crate::observe::Scrape) {
        let breaker = std::sync::Arc::downgrade(self);
        scrape.on_scrape(move || {
            if let Some(breaker) = breaker.upgrade() {
                let _ = breaker.state();
            }
            std::future::ready(())
        });
    }

    /// State and counters, for metrics and `switchyard status`.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        self.roll(&mut inner, now);
        let mut window = Counts::default();
        for bucket in &inner.buckets {
            window.merge(&bucket.counts);
        }
        let (state, retry_after) = match inner.state {
            State::Closed => (BreakerState::Closed, None),
            State::Open { until } => (BreakerState::Open, Some(until.saturating_duration_since(now))),
            State::HalfOpen { .. } => (BreakerState::HalfOpen, None),
        };
        BreakerSnapshot {
            name: self.name.clone(),
            state,
            window,
            totals: inner.totals,
            opened: inner.opened,
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            peer_updates: inner.peer_updates,
            shared: self.peers.get().is_some(),
        }
    }

    /// Another instance won the probe: open again for the probe's length, counted as a reject.
    fn lost_probe(&self) -> Duration {
        let now = Instant::now();
        let mut inner = self.lock();
        let until = now + self.config.timeout;
        if matches!(inner.state, State::HalfOpen { .. }) {
            inner.state = State::Open { until };
            self.metrics.publish(&inner.state);
        }
        self.add(&mut inner, now, Outcome::Reject);
        self.config.timeout
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters more than losing the breaker, so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves an open breaker whose reset timeout has passed to half-open.
    fn refresh(&self, inner: &mut Inner, now: Instant) {
        if let State::Open { until } = inner.state
            && now >= until
        {
            inner.state = State::HalfOpen { trial_in_flight: false };
            self.metrics.publish(&inner.state);
        }
    }

    fn try_admit(&self) -> Result<Admission<'_>, Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.refresh(&mut inner, now);
        let rejected_for = match &mut inner.state {
            State::Closed => {
                return Ok(Admission { breaker: self, trial: false, done: false });
            }
            State::HalfOpen { trial_in_flight } if !*trial_in_flight => {
                *trial_in_flight = true;
                return Ok(Admission { breaker: self, trial: true, done: false });
            }
            State::HalfOpen { .. } => Duration::ZERO,
            State::Open { until } => until.saturating_duration_since(now),
        };
        self.add(&mut inner, now, Outcome::Reject);
        Err(rejected_for)
    }

    fn count(&self, outcome: Outcome) {
        let now = Instant::now();
        let mut inner = self.lock();
        self.add(&mut inner, now, outcome);
    }

    fn record(&self, trial: bool, outcome: Outcome) {
        let now = Instant::now();
        let mut inner = self.lock();
        self.add(&mut inner, now, outcome);
        let failed = matches!(outcome, Outcome::Failure | Outcome::Timeout);
        if trial {
            if failed {
                self.open(&mut inner, now);
            } else {
                tracing::info!(breaker = %self.name, "circuit breaker closed");
                inner.state = State::Closed;
                inner.buckets.clear();
                self.metrics.publish(&inner.state);
                if let Some(peers) = self.peers.get() {
                    peers.closed();
                }
            }
            return;
        }
        if failed && matches!(inner.state, State::Closed) {
            let mut window = Counts::default();
            for bucket in &inner.buckets {
                window.merge(&bucket.counts);
            }
            let completed = window.completed();
            let errors = window.failures + window.timeouts;
            if completed >= u64::from(self.config.volume_threshold)
                && completed > 0
                && errors * 100 >= u64::from(self.config.error_threshold_percentage) * completed
            {
                self.open(&mut inner, now);
            }
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        tracing::warn!(breaker = %self.name, reset_timeout = ?self.config.reset_timeout, "circuit breaker opened");
        inner.state = State::Open { until: now + self.config.reset_timeout };
        inner.opened += 1;
        self.metrics.publish(&inner.state);
        if let Some(peers) = self.peers.get() {
            peers.opened(std::time::SystemTime::now() + self.config.reset_timeout);
        }
    }

    fn add(&self, inner: &mut Inner, now: Instant, outcome: Outcome) {
        self.roll(inner, now);
        let needs_bucket = match inner.buckets.back() {
            Some(last) => now >= last.start + self.bucket_len,
            None => true,
        };
        if needs_bucket {
            // Align bucket starts to the bucket length so a bucket always covers one slot.
            let start = match inner.buckets.back() {
                Some(last) => {
                    let slots = (now - last.start).as_nanos() / self.bucket_len.as_nanos();
                    last.start + self.bucket_len * (slots as u32)
                }
                None => now,
            };
            inner.buckets.push_back(Bucket { start, counts: Counts::default() });
        }
        if let Some(bucket) = inner.buckets.back_mut() {
            bucket.counts.add(outcome);
        }
        inner.totals.add(outcome);
        let series = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Timeout => 2,
            Outcome::Reject => 3,
            Outcome::Fallback => 4,
        };
        self.metrics.calls[series].increment(1);
    }

    /// Drops buckets that have left the rolling window.
    fn roll(&self, inner: &mut Inner, now: Instant) {
        while let Some(front) = inner.buckets.front() {
            if front.start + self.config.rolling_count_timeout <= now {
                inner.buckets.pop_front();
            } else {
                break;
            }
        }
    }
}

// The breaker flags, turned into a configuration here, next to it.
impl crate::config::BreakerArgs {
    /// The breaker configuration these flags describe.
    pub fn to_config(&self) -> BreakerConfig {
        BreakerConfig {
            timeout: self.breaker_timeout,
            error_threshold_percentage: self.breaker_error_threshold,
            volume_threshold: self.breaker_volume_threshold,
            reset_timeout: self.breaker_reset_timeout,
            rolling_count_timeout: self.breaker_rolling_window,
            rolling_count_buckets: self.breaker_rolling_buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Boom {
        trips: bool,
    }

    impl TripsBreaker for Boom {
        fn trips_breaker(&self) -> bool {
            self.trips
        }
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            timeout: Duration::from_secs(1),
            error_threshold_percentage: 50,
            volume_threshold: 4,
            reset_timeout: Duration::from_secs(30),
            rolling_count_timeout: Duration::from_secs(10),
            rolling_count_buckets: 10,
        }
    }

    async fn ok(breaker: &Breaker) -> Result<u32, BreakerError<Boom>> {
        breaker.call(async { Ok::<_, Boom>(1) }).await
    }

    async fn fail(breaker: &Breaker) -> Result<u32, BreakerError<Boom>> {
        breaker.call(async { Err::<u32, _>(Boom { trips: true }) }).await
    }

    async fn open_it(breaker: &Breaker) {
        for _ in 0..4 {
            let _ = fail(breaker).await;
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn it_stays_closed_below_the_volume_threshold() {
        let breaker = Breaker::new("t", config());
        for _ in 0..3 {
            assert!(matches!(fail(&breaker).await, Err(BreakerError::Failure(_))));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // The fourth failure reaches the volume threshold at 100 % errors.
        let _ = fail(&breaker).await;
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn it_stays_closed_below_the_error_percentage() {
        let breaker = Breaker::new("t", config());
        for _ in 0..4 {
            ok(&breaker).await.unwrap();
        }
        // 3 failures of 7 calls is 43 %: below 50 %.
        for _ in 0..3 {
            let _ = fail(&breaker).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // 4 of 8 is 50 %: open.
        let _ = fail(&breaker).await;
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn while_open_calls_are_rejected_without_running_and_the_fallback_answers() {
        let breaker = Breaker::new("t", config());
        open_it(&breaker).await;
        let ran = AtomicUsize::new(0);
        let answer = breaker
            .call_or_else(
                async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Boom>("live")
                },
                |err| match err {
                    BreakerError::Open { retry_after } => {
                        assert_eq!(retry_after, Duration::from_secs(30));
                        "fallback"
                    }
                    other => panic!("unexpected {other:?}"),
                },
            )
            .await;
        assert_eq!(answer, "fallback");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.totals.rejects, 1);
        assert_eq!(snapshot.totals.fallbacks, 1);
        assert_eq!(snapshot.opened, 1);
        assert_eq!(snapshot.retry_after_ms, Some(30_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_times_out_and_counts_as_an_error() {
        let breaker = Breaker::new("t", config());
        let started = Instant::now();
        let result = breaker
            .call(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, Boom>(1)
            })
            .await;
        assert!(matches!(result, Err(BreakerError::Timeout(_))), "{result:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(breaker.snapshot().window.timeouts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_inner_timeout_counts_as_a_timeout() {
        let breaker = Breaker::new("t", config());
        let result = breaker
            .call(async {
                tokio::time::sleep(Duration::from_millis(250)).await;
                Err::<u32, _>(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"))
            })
            .await;
        // The error says how long the call took, not the breaker's longer timeout.
        assert!(
            matches!(result, Err(BreakerError::Timeout(after)) if after == Duration::from_millis(250)),
            "{result:?}"
        );
        assert_eq!(breaker.snapshot().window.timeouts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_exactly_one_trial_through() {
        let breaker = Arc::new(Breaker::new("t", config()));
        open_it(&breaker).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);

        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let trial = tokio::spawn({
            let breaker = breaker.clone();
            async move {
                breaker
                    .call(async {
                        let _ = wait.await;
                        Ok::<_, Boom>(7)
                    })
                    .await
            }
        });
        // Let the trial start, then any other call is rejected while it is in flight.
        tokio::task::yield_now().await;
        assert!(matches!(ok(&breaker).await, Err(BreakerError::Open { .. })));
        release.send(()).unwrap();
        assert_eq!(trial.await.unwrap().unwrap(), 7);
        assert_eq!(breaker.state(), BreakerState::Closed);
        ok(&breaker).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_the_breaker_again() {
        let breaker = Breaker::new("t", config());
        open_it(&breaker).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(fail(&breaker).await, Err(BreakerError::Failure(_))));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.snapshot().retry_after_ms, Some(30_000));
        assert_eq!(breaker.snapshot().opened, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_trial_frees_the_half_open_slot() {
        let breaker = Breaker::new("t", config());
        open_it(&breaker).await;
        tokio::time::advance(Duration::from_secs(30)).await;
        let pending = breaker.call(std::future::pending::<Result<u32, Boom>>());
        // Poll the trial once so it takes the slot, then drop it.
        let _ = tokio::time::timeout(Duration::from_millis(1), pending).await;
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        ok(&breaker).await.unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_roll_out_of_the_window() {
        let breaker = Breaker::new("t", config());
        for _ in 0..3 {
            let _ = fail(&breaker).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.snapshot().window, Counts::default());
        // Three fresh failures after the old ones rolled out stay below the volume threshold.
        for _ in 0..3 {
            let _ = fail(&breaker).await;
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.snapshot().totals.failures, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_roll_one_at_a_time() {
        let breaker = Breaker::new("t", config());
        let _ = fail(&breaker).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let _ = fail(&breaker).await;
        assert_eq!(breaker.snapshot().window.failures, 2);
        tokio::time::advance(Duration::from_secs(5)).await;
        // The first bucket (t=0..1s) has left the 10 s window; the one at t=5s has not.
        assert_eq!(breaker.snapshot().window.failures, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_do_not_trip_count_as_successes() {
        let breaker = Breaker::new("t", config());
        for _ in 0..10 {
            let result = breaker.call(async { Err::<u32, _>(Boom { trips: false }) }).await;
            assert!(matches!(result, Err(BreakerError::Failure(Boom { trips: false }))));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.snapshot().window.successes, 10);
    }
}
