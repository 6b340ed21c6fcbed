//! Per-client fairness: a token bucket per key (a user id, a peer address), so one client that
//! floods is refused with a time to come back while every other client keeps its share.
//!
//! Each key's bucket holds up to `burst` tokens and gains `rate` tokens a second; a request takes
//! one. A bucket that has refilled completely is the same as no bucket, so idle keys are dropped
//! when the table grows past its bound: memory stays bounded by the clients active in the last
//! `burst / rate` seconds (and by `max_keys`; past it, new keys are let through uncounted rather
//! than refused, and a warning is logged).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Keys a limiter tracks at most.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct KeyedLimiter {
    rate: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyedLimiter {
    /// `rate` requests a second per key, `burst` at once; `None` when `rate` is 0 (off).
    pub fn new(rate: f64, burst: u32) -> Option<Self> {
        (rate > 0.0 && rate.is_finite()).then(|| KeyedLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            max_keys: MAX_KEYS,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a token for `key`: `Ok` to go ahead, or `Err` with the time until one is back.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Full buckets carry no information: forget them.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| refilled(bucket, now, rate, burst) < burst);
            if buckets.len() >= self.max_keys {
                tracing::warn!(
                    keys = buckets.len(),
                    "rate limiter table full: letting a new client through uncounted"
                );
                return Ok(());
            }
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, updated: now });
        bucket.tokens = refilled(bucket, now, self.rate, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Keys tracked now.
    pub fn keys(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let limiter = KeyedLimiter::new(2.0, 3).expect("on");
        for _ in 0..3 {
            assert!(limiter.check("flood").is_ok());
        }
        let wait = limiter.check("flood").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.check("quiet").is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check("flood").is_ok());
        assert!(limiter.check("flood").is_err());
    }

    #[test]
    fn a_rate_of_zero_is_off() {
        assert!(KeyedLimiter::new(0.0, 10).is_none());
        assert!(KeyedLimiter::new(f64::NAN, 10).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_when_the_table_is_full() {
        let mut limiter = KeyedLimiter::new(10.0, 1).expect("on");
        limiter.max_keys = 4;
        for key in ["a", "b", "c", "d"] {
            limiter.check(key).expect("first request");
        }
        // All four are empty: a fifth key is let through uncounted.
        assert!(limiter.check("e").is_ok());
        assert_eq!(limiter.keys(), 4);
        // After a refill they are forgotten and the new key is tracked.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check("e").is_ok());
        assert_eq!(limiter.keys(), 1);
        assert!(limiter.check("e").is_err());
    }
}
