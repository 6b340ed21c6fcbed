//! Every subject, service, stream and consumer name of the public contract, in one place, with
//! the platform's own names ([`switchyard::names`]) re-exported beside them.
//!
//! Services never spell a subject literal themselves: they use these constants and builders, so a
//! rename is one change here and `grep` finds every user.

pub use switchyard::names::*;

/// Micro service name of the inventory service.
pub const INVENTORY_SERVICE: &str = "inventory";
/// Micro service name of the order service.
pub const ORDERS_SERVICE: &str = "orders";
/// Micro service name of the email service.
pub const EMAIL_SERVICE: &str = "email";
/// Micro service name of the audit service.
pub const AUDIT_SERVICE: &str = "audit";

/// Subject prefix (micro group) of the inventory endpoints.
pub const INVENTORY_GROUP: &str = "inventory";
/// `inventory.check`: are these items available? Nothing is reserved.
pub const INVENTORY_CHECK: &str = "inventory.check";
/// `inventory.reserve`: reserve items for an order, idempotent per order id.
pub const INVENTORY_RESERVE: &str = "inventory.reserve";
/// `inventory.release`: give an order's reservation back, idempotent.
pub const INVENTORY_RELEASE: &str = "inventory.release";
/// `inventory.restock`: add stock to a SKU.
pub const INVENTORY_RESTOCK: &str = "inventory.restock";
/// `inventory.stock`: stock levels of some or all SKUs.
pub const INVENTORY_STOCK: &str = "inventory.stock";

/// Subject prefix (micro group) of the order endpoints.
pub const ORDERS_GROUP: &str = "orders";
/// `orders.get`: one order by id.
pub const ORDERS_GET: &str = "orders.get";

/// `audit.history`: one order's events in stream order.
pub const AUDIT_HISTORY: &str = "audit.history";

/// The endpoints a caller may send again without changing the outcome (reads, and writes keyed
/// by the order id): the only ones a client retries
/// ([`switchyard::client::GuardedClient::with_retry`]). `inventory.restock` is not among them: a
/// repeat would add the stock twice.
pub const IDEMPOTENT: &[&str] =
    &[INVENTORY_CHECK, INVENTORY_RESERVE, INVENTORY_RELEASE, INVENTORY_STOCK, ORDERS_GET, AUDIT_HISTORY];

/// The JetStream stream of broker-fired timers.
pub const TIMERS_STREAM: &str = "TIMERS";
/// Its subjects.
pub const TIMERS_STREAM_SUBJECTS: &str = "timers.>";
/// inventory-service's durable on `TIMERS`: reservation expiries as they fire.
pub const INVENTORY_TIMERS_CONSUMER: &str = "inventory_timers";

/// `timers.reservations.schedule.<order_id>`: the schedule of one reservation's expiry (a
/// message with `Nats-Schedule: @at <time>`; one per order, a repeat replaces it).
pub fn reservation_schedule_subject(order_id: &uuid::Uuid) -> String {
    format!("timers.reservations.schedule.{order_id}")
}

/// `timers.reservations.expire.<order_id>`: where the broker publishes the expiry when it fires.
pub fn reservation_expire_subject(order_id: &uuid::Uuid) -> String {
    format!("timers.reservations.expire.{order_id}")
}

/// The filter of inventory's timers durable.
pub const RESERVATION_EXPIRE_FILTER: &str = "timers.reservations.expire.*";

/// The JetStream stream that carries every order event.
pub const ORDERS_STREAM: &str = "ORDERS";
/// Subjects of the `ORDERS` stream.
pub const ORDERS_STREAM_SUBJECTS: &str = "events.orders.>";
/// Durable consumer of the inventory service on `ORDERS`.
pub const INVENTORY_CONSUMER: &str = "inventory";
/// Durable consumer of the email service on `ORDERS`.
pub const EMAIL_CONSUMER: &str = "email";
/// Durable consumer of the audit service on `ORDERS`.
pub const AUDIT_CONSUMER: &str = "audit";

/// Kinds of order event; each is the second-to-last token of its subject.
pub mod order_event {
    /// An order was accepted.
    pub const CREATED: &str = "created";
    /// An order was cancelled.
    pub const CANCELLED: &str = "cancelled";
    /// The reserved stock left the shelf.
    pub const STOCK_COMMITTED: &str = "stock_committed";
    /// The reserved stock went back on the shelf.
    pub const STOCK_RELEASED: &str = "stock_released";
    /// The confirmation email was sent.
    pub const CONFIRMATION_SENT: &str = "confirmation_sent";
}

/// `events.orders.<kind>.<order_id>`: the subject of one order event.
pub fn order_event_subject(kind: &str, order_id: &uuid::Uuid) -> String {
    format!("events.orders.{kind}.{order_id}")
}

/// The order id of an order event's subject (`events.orders.<kind>.<order_id>`), when it is one.
pub fn order_id_of(subject: &str) -> Option<uuid::Uuid> {
    switchyard::names::subject_key(subject).parse().ok()
}

/// The kind of an order event's subject (`created`, `stock_committed`, ...).
pub fn order_event_kind(subject: &str) -> Option<&str> {
    switchyard::names::subject_kind(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_event_subjects_end_with_the_order_id() {
        let id = uuid::Uuid::nil();
        assert_eq!(
            order_event_subject(order_event::CREATED, &id),
            "events.orders.created.00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn order_subjects_parse_back_into_kind_and_id() {
        let id = uuid::Uuid::new_v4();
        let subject = order_event_subject(order_event::STOCK_COMMITTED, &id);
        assert_eq!(order_id_of(&subject), Some(id));
        assert_eq!(order_event_kind(&subject), Some("stock_committed"));
        assert_eq!(order_id_of("events.orders.created.not-a-uuid"), None);
    }
}
