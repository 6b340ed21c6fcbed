//! Deadlines that travel: the time a caller is still willing to wait goes with every request.
//!
//! A deadline is a [`tokio::time::Instant`] held in a task-local for the work done on behalf of
//! one caller ([`scope`]). [`RequestClient`](crate::client::RequestClient) cuts each request's
//! timeout to what is left of it and sends it two ways: the rest in milliseconds
//! ([`DEADLINE_HEADER`], immune to clocks that disagree between machines) and the wall-clock time
//! it ends at ([`DEADLINE_AT_HEADER`], Unix milliseconds, which also counts the time a request
//! spent waiting before the service read it, say in the socket of a stalled process). The micro
//! runtime takes the earlier of the two when the request arrives (so a receiver whose clock runs
//! ahead of the caller's by more than a request's timeout drops work early: keep clocks in sync):
//! a request still waiting for a handler slot when its deadline passes is dropped with a
//! [`DEADLINE_EXCEEDED`] (504) error reply, a handler still running then is cancelled (its future
//! is dropped, so a database transaction in it rolls back), and the handler's own outgoing
//! requests inherit the deadline ([`current`] / [`remaining`] read it). A service with an HTTP API
//! gives every request the deadline of its request timeout.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Header with the caller's remaining time, in whole milliseconds.
pub const DEADLINE_HEADER: &str = "Switchyard-Deadline-Ms";
/// Header with the caller's deadline as wall-clock time, in Unix milliseconds.
pub const DEADLINE_AT_HEADER: &str = "Switchyard-Deadline-At";

/// The micro error code of a request dropped because its deadline passed (the caller has given
/// up: no retry can help it).
pub const DEADLINE_EXCEEDED: u16 = 504;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline of the work in progress, if it has one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Time left until the current deadline (zero once it has passed), if there is one.
pub fn remaining() -> Option<Duration> {
    current().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Runs `work` with `deadline`, or with the current one if that is sooner (a deadline can only
/// shrink on its way down the calls).
pub async fn scope<F: Future>(deadline: Instant, work: F) -> F::Output {
    let deadline = current().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, work).await
}

/// `timeout` cut to what is left of the current deadline.
pub fn clamp(timeout: Duration) -> Duration {
    remaining().map_or(timeout, |left| left.min(timeout))
}

/// Writes `remaining` into `headers`: whole milliseconds (rounded down), and the wall-clock time
/// it ends at.
pub fn inject(headers: &mut async_nats::HeaderMap, remaining: Duration) {
    let millis = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
    headers.insert(DEADLINE_HEADER, millis.to_string().as_str());
    let at = std::time::SystemTime::now()
        .checked_add(remaining)
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_millis());
    if let Some(at) = at {
        headers.insert(DEADLINE_AT_HEADER, at.to_string().as_str());
    }
}

/// The deadline a request's headers carry, counted from `received`; `None` without the header
/// or with a value that is not a number of milliseconds (a bad header is ignored, not fatal).
pub fn from_headers(headers: Option<&async_nats::HeaderMap>, received: Instant) -> Option<Instant> {
    let headers = headers?;
    let millis = |name: &str| -> Option<u64> { headers.get(name)?.as_str().trim().parse().ok() };
    // Ten years is "no deadline" for any practical purpose; it also keeps the addition in range.
    const FAR: u64 = 10 * 365 * 24 * 3600 * 1000;
    let relative = millis(DEADLINE_HEADER).map(|ms| received + Duration::from_millis(ms.min(FAR)));
    let absolute = millis(DEADLINE_AT_HEADER).map(|at| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        received + Duration::from_millis(at.saturating_sub(now).min(FAR))
    });
    match (relative, absolute) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_scope_sets_the_deadline_and_an_inner_one_can_only_shrink_it() {
        assert_eq!(current(), None);
        let now = Instant::now();
        scope(now + Duration::from_secs(5), async {
            assert_eq!(remaining(), Some(Duration::from_secs(5)));
            scope(now + Duration::from_secs(60), async {
                assert_eq!(remaining(), Some(Duration::from_secs(5)));
            })
            .await;
            scope(now + Duration::from_secs(1), async {
                assert_eq!(clamp(Duration::from_secs(3)), Duration::from_secs(1));
            })
            .await;
            tokio::time::advance(Duration::from_secs(6)).await;
            assert_eq!(remaining(), Some(Duration::ZERO));
        })
        .await;
        assert_eq!(clamp(Duration::from_secs(3)), Duration::from_secs(3));
    }

    #[test]
    fn the_header_round_trips_and_garbage_is_ignored() {
        let now = Instant::now();
        let mut headers = async_nats::HeaderMap::new();
        inject(&mut headers, Duration::from_millis(1500));
        let deadline = from_headers(Some(&headers), now).expect("a deadline");
        // The wall-clock form may shave a millisecond off the relative one, never add.
        assert!(deadline <= now + Duration::from_millis(1500), "{deadline:?}");
        assert!(deadline >= now + Duration::from_millis(1480), "{deadline:?}");
        // A request read late (its wall-clock deadline already past) has no time left.
        let mut late = async_nats::HeaderMap::new();
        late.insert(DEADLINE_HEADER, "1500");
        late.insert(DEADLINE_AT_HEADER, "1000");
        assert_eq!(from_headers(Some(&late), now), Some(now));
        for bad in ["soon", "-5", "1.5", ""] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(DEADLINE_HEADER, bad);
            assert_eq!(from_headers(Some(&headers), now), None, "{bad:?}");
        }
        let mut huge = async_nats::HeaderMap::new();
        huge.insert(DEADLINE_HEADER, u64::MAX.to_string().as_str());
        assert!(from_headers(Some(&huge), now).is_some());
        assert_eq!(from_headers(None, now), None);
    }
}
