//! The `email` consumer: order created events become confirmations, sent once each.

use contracts::OrderCreated;
use contracts::names::{self, order_event};
use lettre::message::Mailbox;
use sqlx::AnyConnection;
use switchyard::consumer::{Apply, ApplyFuture, ConsumerSpec, Delivery, HandleError, PrepareAllFuture};
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
    /// Sends the confirmations of a batch of `created` events, except those sent before. Outside
    /// any write transaction, so a slow SMTP server holds up neither the other handlers nor the
    /// relay; the order-keyed emails row and file name keep it to one email. Which went out
    /// before is one query; the others are sent together (their files written in one trip to a
    /// blocking thread).
    async fn send_all(&self, deliveries: &[&Delivery]) -> Vec<Result<(), HandleError>> {
        let mut results: Vec<Result<(), HandleError>> = Vec::with_capacity(deliveries.len());
        // (index in the batch, order id, message) of each confirmation to send.
        let mut to_send = Vec::new();
        let mut orders = Vec::new();
        for (index, delivery) in deliveries.iter().enumerate() {
            match delivery.json::<OrderCreated>() {
                Ok(order) if order.email.is_some() => {
                    orders.push((index, order));
                    results.push(Ok(()));
                }
                Ok(_) => results.push(Ok(())),
                Err(err) => results.push(Err(err)),
            }
        }
        let order_ids: Vec<String> = orders.iter().map(|(_, order)| order.order_id.to_string()).collect();
        let ids: Vec<&str> = order_ids.iter().map(String::as_str).collect();
        let sent = match store::sent_among(&self.db, &ids).await {
            Ok(sent) => sent,
            Err(err) => {
                let err = HandleError::from(err);
                for (index, _) in &orders {
                    results[*index] = Err(err.clone());
                }
                return results;
            }
        };
        for ((index, order), order_id) in orders.iter().zip(&order_ids) {
            if sent.contains(order_id) {
                continue;
            }
            let to = order.email.as_deref().unwrap_or_default();
            match mailer::confirmation(order, &self.from, to) {
                Ok(message) => to_send.push((*index, order_id.as_str(), message)),
                Err(err) => results[*index] = Err(err),
            }
        }
        let emails: Vec<(&str, &lettre::Message)> =
            to_send.iter().map(|(_, id, message)| (*id, message)).collect();
        for ((index, _, _), result) in to_send.iter().zip(self.mailer.send_all(&emails).await) {
            results[*index] = result;
        }
        results
    }

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
        Box::pin(async move {
            let mut results = self.send_all(&[delivery]).await;
            results.pop().unwrap_or(Ok(()))
        })
    }

    fn prepare_all<'a>(&'a self, deliveries: &'a [&'a Delivery]) -> PrepareAllFuture<'a> {
        Box::pin(self.send_all(deliveries))
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
