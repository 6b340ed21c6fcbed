//! Prometheus metrics of the order service, rendered as text for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use switchyard::breaker::{Breaker, BreakerState};

#[derive(Debug, Default)]
struct Inner {
    /// (method, route, status) -> (count, total seconds)
    http: BTreeMap<(String, String, u16), (u64, f64)>,
    /// outcome -> count
    orders: BTreeMap<&'static str, u64>,
}

/// Counters behind `GET /metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one HTTP request.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut inner = self.lock();
        let entry = inner.http.entry((method.to_string(), route.to_string(), status)).or_default();
        entry.0 += 1;
        entry.1 += elapsed.as_secs_f64();
    }

    /// Counts one attempt to place an order, by outcome.
    pub fn count_order(&self, outcome: &'static str) {
        *self.lock().orders.entry(outcome).or_default() += 1;
    }

    /// The Prometheus text exposition of every metric, with the breaker's state.
    pub fn render(&self, breaker: &Breaker) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ =
            writeln!(out, "# HELP switchyard_http_requests_total HTTP requests by method, route and status.");
        let _ = writeln!(out, "# TYPE switchyard_http_requests_total counter");
        for ((method, route, status), (count, _)) in &inner.http {
            let _ = writeln!(
                out,
                "switchyard_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_http_request_duration_seconds_sum Time spent answering HTTP requests."
        );
        let _ = writeln!(out, "# TYPE switchyard_http_request_duration_seconds_sum counter");
        for ((method, route, status), (_, seconds)) in &inner.http {
            let _ = writeln!(
                out,
                "switchyard_http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {seconds:.6}"
            );
        }
        let _ = writeln!(out, "# HELP switchyard_orders_total Attempts to place an order, by outcome.");
        let _ = writeln!(out, "# TYPE switchyard_orders_total counter");
        for (outcome, count) in &inner.orders {
            let _ = writeln!(out, "switchyard_orders_total{{outcome=\"{outcome}\"}} {count}");
        }
        drop(inner);

        let snapshot = breaker.snapshot();
        let name = &snapshot.name;
        let _ = writeln!(
            out,
            "# HELP switchyard_breaker_state Circuit breaker state: 0 closed, 1 open, 2 half-open."
        );
        let _ = writeln!(out, "# TYPE switchyard_breaker_state gauge");
        let state = match snapshot.state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        let _ = writeln!(out, "switchyard_breaker_state{{breaker=\"{name}\"}} {state}");
        let _ = writeln!(out, "# HELP switchyard_breaker_opened_total Times the circuit breaker opened.");
        let _ = writeln!(out, "# TYPE switchyard_breaker_opened_total counter");
        let _ = writeln!(out, "switchyard_breaker_opened_total{{breaker=\"{name}\"}} {}", snapshot.opened);
        let _ = writeln!(
            out,
            "# HELP switchyard_breaker_calls_total Calls through the circuit breaker, by outcome."
        );
        let _ = writeln!(out, "# TYPE switchyard_breaker_calls_total counter");
        let totals = snapshot.totals;
        for (outcome, count) in [
            ("success", totals.successes),
            ("failure", totals.failures),
            ("timeout", totals.timeouts),
            ("reject", totals.rejects),
            ("fallback", totals.fallbacks),
        ] {
            let _ = writeln!(
                out,
                "switchyard_breaker_calls_total{{breaker=\"{name}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        out
    }
}
