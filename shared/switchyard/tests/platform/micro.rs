//! The micro runtime's bound on requests in flight (`max_in_flight`, inventory's --max-in-flight):
//! past it, requests wait in the subscription, and all are answered once handlers finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::{StockReply, StockRequest};
use switchyard::ServiceSpec;
use switchyard::testkit::{NatsServer, eventually};
use tokio::sync::Semaphore;

#[tokio::test]
async fn no_more_than_max_in_flight_requests_run_at_once_and_the_rest_wait_their_turn() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // Handlers hold until the test lets them go, one permit each.
    let gate = Arc::new(Semaphore::new(0));
    let (r, m, g) = (running.clone(), most.clone(), gate.clone());
    let service = ServiceSpec::new("bounded", "1.0.0")
        .max_in_flight(2)
        .endpoint("slow", "bounded.slow", move |_: StockRequest| {
            let (running, most, gate) = (r.clone(), m.clone(), g.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.expect("gate").forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(StockReply { items: Vec::new() })
            }
        })
        .start(client.clone())
        .await
        .expect("service starts");
    let requests = switchyard::RequestClient::new(client.clone(), Duration::from_secs(30));
    let mut calls = Vec::new();
    for _ in 0..5 {
        let requests = requests.clone();
        calls.push(tokio::spawn(async move {
            requests.request::<_, StockReply>("bounded.slow", &StockRequest::default()).await
        }));
    }
    // Two handlers run; the other three requests wait.
    eventually(Duration::from_secs(30), "two handlers running", || async {
        running.load(Ordering::SeqCst) == 2
    })
    .await;
    // Let them go one at a time: each release lets exactly one waiting request in.
    for released in 1..=5 {
        gate.add_permits(1);
        let left = 5 - released;
        eventually(Duration::from_secs(30), "the next request to start or the last to finish", || async {
            running.load(Ordering::SeqCst) == left.min(2)
        })
        .await;
    }
    for call in calls {
        call.await.expect("task").expect("every request answered");
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "never more than max_in_flight at once");
    service.stop().await;
}
