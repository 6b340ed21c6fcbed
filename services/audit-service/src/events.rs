//! The `audit` consumer: every order event, recorded once, by group commit.

use contracts::names;
use sqlx::AnyConnection;
use switchyard::consumer::{Apply, ApplyFuture, ConsumerSpec, Delivery};

use crate::store::{AuditRow, insert};
use crate::trail::Trail;

/// The `audit` consumer: every order event.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec::new(names::ORDERS_STREAM, names::AUDIT_CONSUMER, vec![names::ORDERS_STREAM_SUBJECTS.into()])
}

/// The audit consumer records events by group commit: a batch of deliveries is one multi-row
/// insert in one write transaction.
impl Apply for Trail {
    fn apply<'a>(&'a self, tx: &'a mut AnyConnection, delivery: &'a Delivery) -> ApplyFuture<'a> {
        Box::pin(async move { insert(tx, &[AuditRow::of(delivery)?]).await })
    }

    fn apply_all<'a>(&'a self, tx: &'a mut AnyConnection, deliveries: &'a [&'a Delivery]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let rows = deliveries.iter().map(|d| AuditRow::of(d)).collect::<Result<Vec<_>, _>>()?;
            insert(tx, &rows).await
        })
    }
}
