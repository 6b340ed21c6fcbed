//! The reference domain's event streams; the platform adds `DLQ` and `REPLAY` to them.

use switchyard::streams::EventStream;

use crate::names;

/// `ORDERS`: every order event (`events.orders.>`).
pub const ORDERS: EventStream = EventStream {
    name: names::ORDERS_STREAM,
    subjects: &[names::ORDERS_STREAM_SUBJECTS],
    description: "Every order event: created, cancelled and lifecycle events",
};

/// Every event stream of the domain: what `switchyard provision` declares and services verify.
pub const ALL: &[EventStream] = &[ORDERS];
