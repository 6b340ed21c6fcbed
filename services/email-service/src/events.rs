//! The `email` consumer: order created events become confirmations, sent once each.

use contracts::OrderCreated;
use contracts::names::{self, order_event};
use lettre::message::Mailbox;
use sqlx::AnyConnection;
use switchyard::consumer::{Apply, ApplyFuture, ConsumerSpec, Delivery, HandleError};
use switchyard::db::Db;
use switchyard::inbox;
use switchyard::outbox::{self, RelayWaker, TRACEPARENT};

use crate::mailer::{self, Mailer};
use crate::store;

/// What the handler needs.
#[derive(Debug, Clone)]
pub struct Emailer {
    db: Db,
    mailer: Mailer,
    from: Mailbox,
    waker: RelayWaker,
}

impl Emailer {
    /// A handler that sends with `mailer` from `from` and records on `db`, waking the relay
    /// after each commit.
    pub fn new(db: Db, mailer: Mailer, from: Mailbox, waker: RelayWaker) -> Self {
        Emailer { db, mailer, from, waker }
    }

    /// How it sends.
    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Confirmations recorded as sent.
    pub async fn sent(&self) -> Result<i64, sqlx::Error> {
        store::sent_count(self.db.pool()).await
    }

    /// Sends the confirmation of one `created` event, unless it was sent before. Outside any
    /// write transaction, so a slow SMTP server holds up neither the other handlers nor the
    /// relay; the order-keyed emails row and file name keep it to one email.
    async fn send(&self, delivery: &Delivery) -> Result<(), HandleError> {
        let order: OrderCreated = delivery.json()?;
        let Some(to) = order.email.as_deref() else { return Ok(()) };
        let order_id = order.order_id.to_string();
        if !store::was_sent(self.db.pool(), &order_id).await? {
            let message = mailer::confirmation(&order, &self.from, to)?;
            self.mailer.send(&order_id, &message).await?;
        }
        Ok(())
    }

    /// Records a sent confirmation inside `tx`, once, with its `confirmation_sent` event.
    async fn record(&self, tx: &mut AnyConnection, delivery: &Delivery) -> Result<(), HandleError> {
        let order: OrderCreated = delivery.json()?;
        if !inbox::record(tx, names::EMAIL_CONSUMER, &order.event_id.to_string()).await? {
            return Ok(());
        }
        let Some(to) = order.email.as_deref() else { return Ok(()) };
        let sent = store::Sent {
            order_id: &order.order_id.to_string(),
            recipient: to,
            message_id: &mailer::message_id(&order),
            transport: self.mailer.kind(),
        };
        if store::record_sent(tx, &sent).await? {
            let event = contracts::OrderLifecycle::event(
                order_event::CONFIRMATION_SENT,
                order.order_id,
                format!("confirmation sent to {to}"),
                delivery.header(TRACEPARENT),
            )?;
            outbox::enqueue(tx, &event).await?;
        }
        Ok(())
    }
}

impl Emailer {
    /// [`Emailer::record`] for a batch, set-based: one statement each for the inbox, the emails
    /// and the outbox, whatever the batch's size.
    async fn record_all(&self, tx: &mut AnyConnection, deliveries: &[&Delivery]) -> Result<(), HandleError> {
        let orders = deliveries.iter().map(|d| d.json::<OrderCreated>()).collect::<Result<Vec<_>, _>>()?;
        let event_ids: Vec<String> = orders.iter().map(|order| order.event_id.to_string()).collect();
        let ids: Vec<&str> = event_ids.iter().map(String::as_str).collect();
        let fresh = inbox::record_all(tx, names::EMAIL_CONSUMER, &ids).await?;
        // (delivery, order, its id, recipient, Message-ID): each order once.
        let mut confirmations = Vec::new();
        for ((delivery, order), event_id) in deliveries.iter().zip(&orders).zip(&event_ids) {
            let Some(to) = order.email.as_deref() else { continue };
            let order_id = order.order_id.to_string();
            if fresh.contains(event_id) && !confirmations.iter().any(|(_, _, id, _, _)| *id == order_id) {
                confirmations.push((*delivery, order, order_id, to, mailer::message_id(order)));
            }
        }
        let sent: Vec<store::Sent<'_>> = confirmations
            .iter()
            .map(|(_, _, order_id, to, message_id)| store::Sent {
                order_id,
                recipient: to,
                message_id,
                transport: self.mailer.kind(),
            })
            .collect();
        let recorded = store::record_all_sent(tx, &sent).await?;
        let mut events = Vec::with_capacity(recorded.len());
        for (delivery, order, order_id, to, _) in &confirmations {
            if recorded.contains(order_id) {
                events.push(contracts::OrderLifecycle::event(
                    order_event::CONFIRMATION_SENT,
                    order.order_id,
                    format!("confirmation sent to {to}"),
                    delivery.header(TRACEPARENT),
                )?);
            }
        }
        outbox::enqueue_all(tx, &events).await?;
        Ok(())
    }
}

/// The `email` consumer: each batch's confirmations are sent concurrently, then recorded by
/// group commit.
impl Apply for Emailer {
    fn prepare<'a>(&'a self, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(self.send(delivery))
    }

    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(self.record(tx, delivery))
    }

    fn apply_all<'a>(&'a self, tx: &'a mut AnyConnection, deliveries: &'a [&'a Delivery]) -> ApplyFuture<'a> {
        Box::pin(self.record_all(tx, deliveries))
    }

    fn committed(&self) {
        self.waker.wake();
    }
}

/// The `email` consumer: order created events.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(names::ORDERS_STREAM, names::EMAIL_CONSUMER, vec!["events.orders.created.*".into()])
}
