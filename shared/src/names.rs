//! Every subject, service, stream and consumer name of the public contract, in one place.
//!
//! Services never spell a subject literal themselves: they use these constants and builders, so a
//! rename is one change here and `grep` finds every user.

/// Micro service name of the inventory service.
pub const INVENTORY_SERVICE: &str = "inventory";
/// Micro service name of the order service.
pub const ORDERS_SERVICE: &str = "orders";
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

/// Queue group that every micro endpoint joins, so instances of one service share the load.
/// It is the micro protocol's default, so other languages' micro libraries join the same group.
pub const QUEUE_GROUP: &str = "q";

/// Prefix of the micro discovery subjects (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`).
pub const SRV_PREFIX: &str = "$SRV";

/// The JetStream stream that carries every order event.
pub const ORDERS_STREAM: &str = "ORDERS";
/// Subjects of the `ORDERS` stream.
pub const ORDERS_STREAM_SUBJECTS: &str = "events.orders.>";
/// The dead-letter stream.
pub const DLQ_STREAM: &str = "DLQ";
/// Subjects of the `DLQ` stream.
pub const DLQ_STREAM_SUBJECTS: &str = "dlq.>";

/// The stream that carries dead letters replayed to the one consumer that failed them.
pub const REPLAY_STREAM: &str = "REPLAY";
/// Subjects of the `REPLAY` stream.
pub const REPLAY_STREAM_SUBJECTS: &str = "replay.>";

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

/// `dlq.<stream>.<consumer>`: where a consumer's dead letters go.
pub fn dlq_subject(stream: &str, consumer: &str) -> String {
    format!("dlq.{stream}.{consumer}")
}

/// `replay.<stream>.<consumer>.<origin subject>`: a dead letter of `consumer` on `stream`,
/// replayed to that consumer alone (stream `REPLAY`).
pub fn replay_subject(stream: &str, consumer: &str, origin_subject: &str) -> String {
    format!("replay.{stream}.{consumer}.{origin_subject}")
}

/// `replay.<stream>.<consumer>.>`: what a consumer's replay durable receives.
pub fn replay_filter(stream: &str, consumer: &str) -> String {
    format!("replay.{stream}.{consumer}.>")
}

/// `<stream>_<consumer>`: the durable on `REPLAY` that takes a consumer's replayed letters.
pub fn replay_durable(stream: &str, consumer: &str) -> String {
    format!("{stream}_{consumer}")
}

/// `$SRV.<verb>[.<name>[.<id>]]`: a micro discovery subject.
pub fn srv_subject(verb: &str, name: Option<&str>, id: Option<&str>) -> String {
    match (name, id) {
        (Some(name), Some(id)) => format!("{SRV_PREFIX}.{verb}.{name}.{id}"),
        (Some(name), None) => format!("{SRV_PREFIX}.{verb}.{name}"),
        _ => format!("{SRV_PREFIX}.{verb}"),
    }
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
    fn replay_subjects_name_the_stream_and_the_one_consumer() {
        let origin = "events.orders.created.x";
        assert_eq!(
            replay_subject(ORDERS_STREAM, EMAIL_CONSUMER, origin),
            "replay.ORDERS.email.events.orders.created.x"
        );
        assert_eq!(replay_filter(ORDERS_STREAM, EMAIL_CONSUMER), "replay.ORDERS.email.>");
        assert_eq!(replay_durable(ORDERS_STREAM, EMAIL_CONSUMER), "ORDERS_email");
    }

    #[test]
    fn srv_subjects_narrow_by_name_and_id() {
        assert_eq!(srv_subject("PING", None, None), "$SRV.PING");
        assert_eq!(srv_subject("INFO", Some("inventory"), None), "$SRV.INFO.inventory");
        assert_eq!(srv_subject("STATS", Some("inventory"), Some("abc")), "$SRV.STATS.inventory.abc");
    }
}
