//! One backoff for everything that waits to try again: NATS reconnects, a relay's or a
//! consumer's next round after a failure, a service waiting for its streams, `up` restarting a
//! child.

use std::time::Duration;

/// The longest wait between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// The wait before attempt `attempt` (0-based): 100 ms doubling up to [`MAX_DELAY`].
pub fn delay(attempt: usize) -> Duration {
    let exp = attempt.min(16) as u32;
    Duration::from_millis(100u64.saturating_mul(1u64 << exp)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_and_is_capped() {
        assert_eq!(delay(0), Duration::from_millis(100));
        assert_eq!(delay(1), Duration::from_millis(200));
        assert_eq!(delay(3), Duration::from_millis(800));
        assert_eq!(delay(10), MAX_DELAY);
        assert_eq!(delay(usize::MAX), MAX_DELAY);
    }
}
