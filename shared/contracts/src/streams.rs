//! The reference domain's event streams; the platform adds `DLQ` and `REPLAY` to them.

use switchyard::streams::EventStream;

use crate::names;

/// `ORDERS`: every order event (`events.orders.>`).
pub const ORDERS: EventStream = EventStream {
    name: names::ORDERS_STREAM,
    subjects: &[names::ORDERS_STREAM_SUBJECTS],
    description: "Every order event: created, cancelled and lifecycle events",
    schedules: false,
};

/// `TIMERS`: timers the broker fires (`timers.>`): inventory schedules each reservation's expiry
/// here when it reserves, and consumes it when it fires.
pub const TIMERS: EventStream = EventStream {
    name: names::TIMERS_STREAM,
    subjects: &[names::TIMERS_STREAM_SUBJECTS],
    description: "Scheduled messages: reservation expiries, fired by the broker",
    schedules: true,
};

/// Every stream of the domain: what `switchyard provision` declares.
pub const ALL: &[EventStream] = &[ORDERS, TIMERS];

/// The streams every service verifies at start-up (inventory-service adds [`TIMERS`]).
pub const EVENTS: &[EventStream] = &[ORDERS];
