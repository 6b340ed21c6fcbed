//! Retries for idempotent requests: a few attempts with exponential backoff and full jitter,
//! only on outcomes another attempt can change, only while the caller's deadline allows, and only
//! while a retry budget has room.
//!
//! - **What is retried**: a request to a subject the contract declares idempotent (the caller
//!   lists them, [`crate::client::GuardedClient::with_retry`]), after no responders, an attempt
//!   timeout, or a 502/503 micro error. Never a 4xx (the service answered: asking again gives the
//!   same answer), a 500 (a fault, not a lost reply), a transport error or an encoding error. (A
//!   service's 504, "your deadline passed", reaches the retrier as the attempt's timeout.)
//! - **Backoff**: before retry `n` the caller waits a random time in `[0, min(max, base * 2^(n-1))]`
//!   (AWS's "full jitter"), so the retries of many callers spread out instead of arriving together.
//! - **Deadline**: each attempt's timeout is cut to what is left of the current
//!   [`deadline`](crate::deadline); a retry whose backoff would end past it is not made.
//! - **Budget**: a token bucket per client. Every call adds `budget_percent / 100` of a token, every
//!   retry takes one, and `budget_min_per_second` tokens come back each second whatever the traffic
//!   (so a quiet service can still retry); it holds at most [`RetryBudget::capacity`] tokens. So
//!   over any stretch of time retries stay below that share of calls plus the minimum: a service
//!   that is down gets no retry storm on top of its normal load.
//!
//! Inside a [`GuardedClient`](crate::client::GuardedClient) the retries run *inside* the breaker's
//! call: the breaker counts one outcome per call, as opossum counts one `fire()` whatever the
//! action does inside it, and its timeout bounds all attempts together. A call that succeeds on a
//! retry is a success; one whose every attempt failed counts once, as its last failure. An open
//! breaker rejects the call before any attempt.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::client::RequestError;

/// How to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retries).
    pub attempts: u32,
    /// Time one attempt may take before it is abandoned (and retried).
    pub attempt_timeout: Duration,
    /// Upper bound of the first backoff; it doubles with each retry.
    pub backoff: Duration,
    /// Largest upper bound of a backoff.
    pub backoff_max: Duration,
    /// Retries allowed as a percentage of calls.
    pub budget_percent: u8,
    /// Retries allowed per second whatever the traffic.
    pub budget_min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            attempt_timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(25),
            backoff_max: Duration::from_millis(500),
            budget_percent: 10,
            budget_min_per_second: 10,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the backoff before retry `retry` (1 for the first retry).
    pub fn backoff_bound(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

/// True for the outcomes another attempt can change: nobody answered (no responders, a timeout)
/// or the service said it is unavailable (502, 503).
pub fn is_retryable(err: &RequestError) -> bool {
    match err {
        RequestError::NoResponders { .. } | RequestError::TimedOut { .. } => true,
        RequestError::Service { code, .. } => matches!(code, 502 | 503),
        _ => false,
    }
}

/// A retry budget: a token bucket fed by calls and by time.
#[derive(Debug)]
pub struct RetryBudget {
    per_call: f64,
    per_second: f64,
    capacity: f64,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    tokens: f64,
    refilled: Instant,
}

impl RetryBudget {
    /// A full budget of `percent` of calls plus `min_per_second`.
    pub fn new(percent: u8, min_per_second: u32) -> Self {
        let per_second = f64::from(min_per_second);
        let capacity = Self::capacity_for(min_per_second);
        RetryBudget {
            per_call: f64::from(percent.min(100)) / 100.0,
            per_second,
            capacity,
            state: Mutex::new(BudgetState { tokens: capacity, refilled: Instant::now() }),
        }
    }

    /// The most tokens the budget holds: ten seconds of the minimum, and at least 10.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    fn capacity_for(min_per_second: u32) -> f64 {
        (f64::from(min_per_second) * 10.0).max(10.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refill(&self, state: &mut BudgetState) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.capacity);
        state.refilled = now;
    }

    /// A call was made: it earns its share of a retry.
    pub fn deposit(&self) {
        let mut state = self.lock();
        self.refill(&mut state);
        state.tokens = (state.tokens + self.per_call).min(self.capacity);
    }

    /// Takes one retry's token; false when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let mut state = self.lock();
        self.refill(&mut state);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Retries the budget allows right now.
    pub fn tokens(&self) -> f64 {
        let mut state = self.lock();
        self.refill(&mut state);
        state.tokens
    }
}

/// What a retrier did, for `switchyard status` and `nats micro stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RetrySnapshot {
    /// Calls made under the policy.
    pub calls: u64,
    /// Retries made.
    pub retries: u64,
    /// Calls that succeeded on a retry.
    pub recovered: u64,
    /// Retries not made because the budget was spent.
    pub budget_exhausted: u64,
    /// Retries not made because the deadline was too near.
    pub deadline: u64,
    /// Retries the budget allows right now.
    pub budget_tokens: f64,
}

/// Runs calls under a [`RetryPolicy`] with one shared [`RetryBudget`].
#[derive(Debug)]
pub struct Retrier {
    name: String,
    policy: RetryPolicy,
    budget: RetryBudget,
    calls: AtomicU64,
    retries: AtomicU64,
    recovered: AtomicU64,
    budget_exhausted: AtomicU64,
    deadline: AtomicU64,
    tokens: metrics::Gauge,
}

impl Retrier {
    /// A retrier for the client `name` (the metrics' `client` label).
    pub fn new(name: impl Into<String>, policy: RetryPolicy) -> Self {
        let name = name.into();
        let budget = RetryBudget::new(policy.budget_percent, policy.budget_min_per_second);
        let tokens = metrics::gauge!(crate::observe::CLIENT_RETRY_BUDGET, "client" => name.clone());
        tokens.set(budget.tokens());
        Retrier {
            name,
            policy,
            budget,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            tokens,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters and budget now.
    pub fn snapshot(&self) -> RetrySnapshot {
        RetrySnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            recovered: self.recovered.load(Ordering::Relaxed),
            budget_exhausted: self.budget_exhausted.load(Ordering::Relaxed),
            deadline: self.deadline.load(Ordering::Relaxed),
            budget_tokens: self.budget.tokens(),
        }
    }

    /// Runs `attempt` (given each attempt's timeout) until it succeeds, fails in a way a retry
    /// cannot change, or runs out of attempts, budget or time: `until` (the call's own bound, say
    /// the breaker's timeout) and the caller's [`deadline`](crate::deadline). Each attempt's
    /// timeout is cut to `until`; the request client cuts it to the caller's deadline itself
    /// (and tells that apart). The error is the last attempt's.
    pub async fn run<T, F, Fut>(
        &self,
        subject: &str,
        until: Option<Instant>,
        mut attempt: F,
    ) -> Result<T, RequestError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.budget.deposit();
        let mut made = 1;
        loop {
            let left = until.map(|until| until.saturating_duration_since(Instant::now()));
            let timeout =
                left.map_or(self.policy.attempt_timeout, |left| left.min(self.policy.attempt_timeout));
            let err = match attempt(timeout).await {
                Ok(value) => {
                    if made > 1 {
                        self.recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    self.tokens.set(self.budget.tokens());
                    return Ok(value);
                }
                Err(err) => err,
            };
            if !is_retryable(&err) || made >= self.policy.attempts {
                return Err(err);
            }
            let bound = self.policy.backoff_bound(made);
            let delay = bound.mul_f64(jitter());
            // A retry needs its backoff and a little time to be answered before the deadline.
            let left = match (
                until.map(|until| until.saturating_duration_since(Instant::now())),
                crate::deadline::remaining(),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if left.is_some_and(|left| left <= delay + Duration::from_millis(1)) {
                self.refused(subject, "deadline", &self.deadline);
                return Err(err);
            }
            if !self.budget.try_withdraw() {
                self.refused(subject, "budget_exhausted", &self.budget_exhausted);
                return Err(err);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            self.tokens.set(self.budget.tokens());
            metrics::counter!(crate::observe::CLIENT_RETRIES, "subject" => subject.to_string(), "outcome" => "retried")
                .increment(1);
            tracing::debug!(subject, attempt = made + 1, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
            made += 1;
        }
    }

    fn refused(&self, subject: &str, why: &'static str, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.tokens.set(self.budget.tokens());
        metrics::counter!(crate::observe::CLIENT_RETRIES, "subject" => subject.to_string(), "outcome" => why)
            .increment(1);
    }
}

/// A random fraction in [0, 1) (the backoff's jitter), from the same source as UUIDs.
fn jitter() -> f64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    (high >> 11) as f64 / (1u64 << 53) as f64
}

// The retry flags, turned into a policy here, next to it.
impl crate::config::RetryArgs {
    /// The retry policy these flags describe.
    pub fn to_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.request_retry_attempts,
            attempt_timeout: self.request_retry_timeout,
            backoff: self.request_retry_backoff,
            backoff_max: self.request_retry_backoff_max,
            budget_percent: self.request_retry_budget,
            budget_min_per_second: self.request_retry_budget_min,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn timed_out() -> RequestError {
        RequestError::TimedOut { subject: "s".into(), timeout: Duration::from_millis(10) }
    }

    fn service(code: u16) -> RequestError {
        RequestError::Service { subject: "s".into(), code, message: "m".into() }
    }

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy { attempts, ..RetryPolicy::default() }
    }

    #[test]
    fn only_outcomes_a_retry_can_change_are_retried() {
        assert!(is_retryable(&timed_out()));
        assert!(is_retryable(&RequestError::NoResponders { subject: "s".into() }));
        assert!(is_retryable(&service(503)));
        assert!(is_retryable(&service(502)));
        for code in [400, 404, 409, 500, 504] {
            assert!(!is_retryable(&service(code)), "{code}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let policy = RetryPolicy {
            backoff: Duration::from_millis(25),
            backoff_max: Duration::from_millis(150),
            ..RetryPolicy::default()
        };
        let bounds: Vec<_> = (1..=5).map(|n| policy.backoff_bound(n).as_millis()).collect();
        assert_eq!(bounds, [25, 50, 100, 150, 150]);
        assert_eq!(policy.backoff_bound(200), Duration::from_millis(150));
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_retried_until_it_succeeds() {
        let retrier = Retrier::new("t", policy(3));
        let tries = AtomicU32::new(0);
        let result = retrier
            .run("s", None, |_| {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                async move { if n < 2 { Err(timed_out()) } else { Ok(n) } }
            })
            .await;
        assert_eq!(result.unwrap(), 2);
        let snapshot = retrier.snapshot();
        assert_eq!((snapshot.calls, snapshot.retries, snapshot.recovered), (1, 2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_a_4xx_is_never_retried() {
        let retrier = Retrier::new("t", policy(3));
        let tries = AtomicU32::new(0);
        let result: Result<(), _> = retrier
            .run("s", None, |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err(timed_out()) }
            })
            .await;
        assert!(matches!(result, Err(RequestError::TimedOut { .. })));
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let tries = AtomicU32::new(0);
        let result: Result<(), _> = retrier
            .run("s", None, |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err(service(409)) }
            })
            .await;
        assert_eq!(result.unwrap_err().service_code(), Some(409));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_share_the_deadline_and_stop_before_it() {
        let retrier = Retrier::new("t", RetryPolicy { attempts: 100, ..RetryPolicy::default() });
        let started = Instant::now();
        let timeouts = Mutex::new(Vec::new());
        let result: Result<(), _> = retrier
            .run("s", Some(started + Duration::from_millis(2500)), |timeout| {
                timeouts.lock().unwrap().push(timeout);
                async move {
                    tokio::time::sleep(timeout).await;
                    Err(timed_out())
                }
            })
            .await;
        assert!(result.is_err());
        let elapsed = started.elapsed();
        // The caller's deadline stops retries as well.
        let before = retrier.snapshot().deadline;
        let result: Result<(), _> =
            crate::deadline::scope(Instant::now() + Duration::from_millis(10), async {
                retrier.run("s", None, |_| async { Err(service(503)) }).await
            })
            .await;
        assert!(result.is_err());
        assert!(elapsed <= Duration::from_millis(2500), "{elapsed:?}");
        let timeouts = timeouts.into_inner().unwrap();
        assert_eq!(timeouts[0], Duration::from_secs(1));
        // The last attempt got only what was left.
        assert!(*timeouts.last().unwrap() < Duration::from_secs(1), "{timeouts:?}");
        assert!(retrier.snapshot().deadline > before);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_at_a_share_of_calls() {
        // No time-based minimum: only 10 % of calls may be retried, after the initial 10 tokens.
        let retrier = Retrier::new(
            "t",
            RetryPolicy {
                attempts: 2,
                budget_percent: 10,
                budget_min_per_second: 0,
                ..RetryPolicy::default()
            },
        );
        let attempts = AtomicU32::new(0);
        for _ in 0..1000 {
            let _: Result<(), _> = retrier
                .run("s", None, |_| {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    async { Err(service(503)) }
                })
                .await;
        }
        let snapshot = retrier.snapshot();
        assert_eq!(snapshot.calls, 1000);
        // 10 initial tokens plus 0.1 per call.
        assert!((105..=112).contains(&snapshot.retries), "{snapshot:?}");
        assert_eq!(snapshot.retries + snapshot.budget_exhausted, 1000);
        assert_eq!(u64::from(attempts.load(Ordering::SeqCst)), 1000 + snapshot.retries);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_with_time() {
        let budget = RetryBudget::new(0, 5);
        assert_eq!(budget.capacity(), 50.0);
        while budget.try_withdraw() {}
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..5 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw());
    }
}
