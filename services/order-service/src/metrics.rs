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
         inventory_unavailable, rejected, error)."
    );
}
