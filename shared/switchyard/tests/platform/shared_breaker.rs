//! Breakers that agree across instances through the NATS KV bucket `BREAKERS`, on a real
//! nats-server: one instance opens and the others open within a bound without a call of their
//! own; when the reset timeout passes only one instance probes; its success closes them all; an
//! instance that starts while the others are open starts open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard::shared_breaker::{open_bucket, share};
use switchyard::testkit::{NatsServer, eventually};
use switchyard::{Breaker, BreakerConfig, BreakerError, BreakerState, Shutdown};

#[derive(Debug)]
struct Down;

impl switchyard::breaker::TripsBreaker for Down {}

fn config() -> BreakerConfig {
    BreakerConfig {
        timeout: Duration::from_secs(2),
        volume_threshold: 2,
        reset_timeout: Duration::from_secs(1),
        ..BreakerConfig::default()
    }
}

#[tokio::test]
async fn instances_open_together_probe_once_and_close_together() {
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let store = open_bucket(&js, true, 1).await.expect("bucket");
    let stop = Shutdown::new();
    let mut breakers = Vec::new();
    for instance in ["i1", "i2", "i3"] {
        let breaker = Arc::new(Breaker::new("dependency", config()));
        share(store.clone(), breaker.clone(), instance, stop.clone()).await.expect("shared");
        breakers.push(breaker);
    }

    // i1 sees its dependency fail and opens; i2 and i3 follow without calling it.
    for _ in 0..2 {
        let _ = breakers[0].call(async { Err::<(), _>(Down) }).await;
    }
    assert_eq!(breakers[0].state(), BreakerState::Open);
    let opened = Instant::now();
    eventually(Duration::from_secs(5), "the other instances to open", || async {
        breakers[1].state() == BreakerState::Open && breakers[2].state() == BreakerState::Open
    })
    .await;
    let bound = opened.elapsed();
    eprintln!("the other instances opened {bound:?} after the first");
    assert!(bound < Duration::from_secs(1), "within a bound: {bound:?}");
    for breaker in &breakers[1..] {
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.totals.failures + snapshot.totals.successes, 0, "it made no call: {snapshot:?}");
        assert!(snapshot.shared && snapshot.peer_updates >= 1, "{snapshot:?}");
        assert!(matches!(breaker.call(async { Ok::<_, Down>(()) }).await, Err(BreakerError::Open { .. })));
    }
    // An instance that starts now starts open.
    let late = Arc::new(Breaker::new("dependency", config()));
    share(store.clone(), late.clone(), "i4", stop.clone()).await.expect("shared");
    assert_eq!(late.state(), BreakerState::Open, "a new instance reads its peers' state");

    // Past the reset timeout every instance would probe; only one does.
    eventually(Duration::from_secs(5), "the reset timeout to pass", || async {
        breakers.iter().all(|b| b.state() == BreakerState::HalfOpen)
    })
    .await;
    let probes = Arc::new(AtomicUsize::new(0));
    let calls = breakers.iter().chain([&late]).map(|breaker| {
        let (breaker, probes) = (breaker.clone(), probes.clone());
        async move {
            breaker
                .call(async {
                    probes.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, Down>(())
                })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    assert_eq!(probes.load(Ordering::SeqCst), 1, "one probe among four instances: {results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(results.iter().filter(|r| matches!(r, Err(BreakerError::Open { .. }))).count(), 3);

    // Its success closes every instance.
    eventually(Duration::from_secs(5), "every instance to close", || async {
        breakers.iter().chain([&late]).all(|b| b.state() == BreakerState::Closed)
    })
    .await;
    stop.trigger();
}
