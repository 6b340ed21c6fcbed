//! order-service's own metric; the platform's (HTTP latency, breaker, outbox, micro) are
//! recorded by `switchyard` ([`switchyard::observe`]) and rendered with it on `GET /metrics`.

/// Attempts to place an order, by outcome.
pub const ORDERS_TOTAL: &str = "switchyard_orders_total";

/// Counts one attempt to place an order, by outcome.
pub fn count_order(outcome: &'static str) {
    metrics::counter!(ORDERS_TOTAL, "outcome" => outcome).increment(1);
}

/// Gives the metric its help line (once per process is enough; repeating is harmless).
pub fn describe() {
    metrics::describe_counter!(
        ORDERS_TOTAL,
        "Attempts to place an order, by outcome (accepted, replayed, out_of_stock, unknown_sku, \
         inventory_unavailable, timeout, rate_limited, rejected, error)."
    );
}

/// The outcomes [`count_order`] knows, in a fixed order.
pub const OUTCOMES: [&str; 9] = [
    "accepted",
    "replayed",
    "out_of_stock",
    "unknown_sku",
    "inventory_unavailable",
    "timeout",
    "rate_limited",
    "rejected",
    "error",
];

/// Attempts to place an order by outcome, since this instance started: what the `orders` micro
/// service reports in its STATS data (`nats micro stats orders`, the dashboard).
#[derive(Debug, Default)]
pub struct OrderTally {
    counts: [std::sync::atomic::AtomicU64; OUTCOMES.len()],
}

impl OrderTally {
    /// Counts one attempt (and the Prometheus counter).
    pub fn count(&self, outcome: &'static str) {
        count_order(outcome);
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Every outcome and its count, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let counts = OUTCOMES.iter().zip(&self.counts).map(|(o, c)| {
            (o.to_string(), serde_json::Value::from(c.load(std::sync::atomic::Ordering::Relaxed)))
        });
        serde_json::Value::Object(counts.collect())
    }
}
