//! Deadlines that travel and retries of idempotent requests, on a real nats-server: a slow
//! handler is cancelled when its caller gives up, a request whose deadline passed while it queued
//! is never handled, and a hung replica among two costs an idempotent call latency, not an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::{StockReply, StockRequest};
use switchyard::client::GuardedClient;
use switchyard::retry::RetryPolicy;
use switchyard::testkit::{NatsServer, eventually};
use switchyard::{BreakerConfig, RequestError, ServiceSpec};

/// Counts a handler's future dropped before it finished.
struct Cancelled(Arc<AtomicUsize>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Default)]
struct Counters {
    started: AtomicUsize,
    finished: AtomicUsize,
    cancelled: Arc<AtomicUsize>,
    /// The longest deadline a handler saw, in milliseconds (0: none).
    deadline_ms: AtomicUsize,
}

/// A service on `subject` whose handler takes `work` (forever: a hung replica).
async fn slow_service(
    client: &async_nats::Client,
    name: &str,
    subject: &str,
    work: Option<Duration>,
    counters: Arc<Counters>,
) -> switchyard::ServiceHandle {
    ServiceSpec::new(name, "1.0.0")
        .max_in_flight(1)
        .endpoint("work", subject, move |_: StockRequest| {
            let counters = counters.clone();
            async move {
                counters.started.fetch_add(1, Ordering::SeqCst);
                let left = switchyard::deadline::remaining().map_or(0, |left| left.as_millis() as usize);
                counters.deadline_ms.fetch_max(left, Ordering::SeqCst);
                let mut guard = Cancelled(counters.cancelled.clone(), false);
                match work {
                    Some(work) => tokio::time::sleep(work).await,
                    None => std::future::pending::<()>().await,
                }
                guard.1 = true;
                counters.finished.fetch_add(1, Ordering::SeqCst);
                Ok(StockReply { items: Vec::new() })
            }
        })
        .start(client.clone())
        .await
        .expect("service starts")
}

#[tokio::test]
async fn a_slow_handler_never_works_past_a_caller_who_has_given_up() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let counters = Arc::new(Counters::default());
    let service =
        slow_service(&client, "slowpoke", "slow.work", Some(Duration::from_secs(30)), counters.clone()).await;

    // A waits 1 s; B, sent while A holds the only slot, waits 200 ms.
    let patient = switchyard::RequestClient::new(client.clone(), Duration::from_secs(1));
    let hasty = switchyard::RequestClient::new(client.clone(), Duration::from_millis(200));
    let a =
        tokio::spawn(
            async move { patient.request::<_, StockReply>("slow.work", &StockRequest::default()).await },
        );
    eventually(Duration::from_secs(10), "A's handler to start", || async {
        counters.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let b = hasty.request::<_, StockReply>("slow.work", &StockRequest::default()).await;
    assert!(matches!(b, Err(RequestError::TimedOut { .. })), "{b:?}");
    let a = a.await.expect("task");
    assert!(matches!(a, Err(RequestError::TimedOut { .. })), "{a:?}");

    // A's handler was cancelled at its caller's deadline, B's never started.
    eventually(Duration::from_secs(10), "A's handler cancelled and B dropped", || async {
        service.stats().endpoints[0].num_errors == 2
    })
    .await;
    assert_eq!(counters.started.load(Ordering::SeqCst), 1);
    assert_eq!(counters.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(counters.finished.load(Ordering::SeqCst), 0);
    let seen = counters.deadline_ms.load(Ordering::SeqCst);
    assert!((1..=1000).contains(&seen), "the handler read its deadline: {seen} ms");
    assert!(service.stats().endpoints[0].last_error.starts_with("504"), "{:?}", service.stats().endpoints[0]);

    // A request that arrives with no time left is answered 504 at once, a reply the caller knows.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(switchyard::deadline::DEADLINE_HEADER, "0");
    let request = async_nats::Request::new()
        .payload(serde_json::to_vec(&StockRequest::default()).expect("json").into())
        .headers(headers)
        .timeout(Some(Duration::from_secs(10)));
    let reply = client.send_request("slow.work", request).await.expect("a reply");
    let code = reply.headers.as_ref().and_then(|h| h.get(switchyard::micro::SERVICE_ERROR_CODE_HEADER));
    assert_eq!(code.map(|c| c.as_str().to_string()), Some("504".to_string()));
    assert_eq!(counters.started.load(Ordering::SeqCst), 1);
    service.stop().await;
}

#[tokio::test]
async fn a_hung_replica_costs_an_idempotent_call_latency_not_its_answer() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let hung = Arc::new(Counters::default());
    let healthy = Arc::new(Counters::default());
    let hung_service = slow_service(&client, "replica", "replica.read", None, hung.clone()).await;
    let healthy_service =
        slow_service(&client, "replica", "replica.read", Some(Duration::ZERO), healthy.clone()).await;
    let _ = &healthy_service;

    // Each attempt reaches either replica at random: a call fails only if all its attempts land
    // on the hung one (2^-30 with 30 attempts; 10 attempts failed a CI run, 20 calls x 2^-10).
    let breaker = BreakerConfig { timeout: Duration::from_secs(15), ..BreakerConfig::default() };
    let policy = RetryPolicy {
        attempts: 30,
        attempt_timeout: Duration::from_millis(250),
        backoff: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        budget_percent: 100,
        budget_min_per_second: 100,
    };
    let guarded =
        GuardedClient::new(client.clone(), "replica", breaker).with_retry(policy, &["replica.read"]);
    for call in 0..20 {
        let reply: Result<StockReply, _> = guarded.call("replica.read", &StockRequest::default()).await;
        assert!(reply.is_ok(), "call {call}: {reply:?}");
    }
    let retries = guarded.retrier().expect("retries on").snapshot();
    assert_eq!(retries.calls, 20);
    // Queue groups spread requests at random: with 20 calls some reached the hung replica.
    assert!(retries.retries >= 1 && retries.recovered >= 1, "{retries:?}");
    assert_eq!(guarded.breaker().snapshot().totals.successes, 20);
    // The hung replica's handlers were cancelled at each attempt's deadline, not left to pile up.
    eventually(Duration::from_secs(10), "the hung replica's work cancelled", || async {
        hung.cancelled.load(Ordering::SeqCst) == hung.started.load(Ordering::SeqCst)
    })
    .await;

    // A subject not declared idempotent gets one attempt: some calls fail, none is retried.
    let unguarded = GuardedClient::new(
        client.clone(),
        "replica-writes",
        BreakerConfig {
            timeout: Duration::from_millis(100),
            volume_threshold: 1000,
            ..BreakerConfig::default()
        },
    )
    .with_retry(RetryPolicy::default(), &["something.else"]);
    let mut failed = 0;
    for _ in 0..20 {
        let reply: Result<StockReply, _> = unguarded.call("replica.read", &StockRequest::default()).await;
        failed += usize::from(reply.is_err());
    }
    assert!(failed >= 1, "20 calls and none reached the hung replica");
    assert_eq!(unguarded.retrier().expect("retrier").snapshot().retries, 0);
    hung_service.stop().await;
}
