//! Placing and reading orders, independent of HTTP.
//!
//! Placing an order reserves its stock first (synchronously, through the breaker) and records the
//! order only once every line is reserved. With an `Idempotency-Key`, the order id is derived from
//! the key, so a retried or concurrent duplicate reserves under the same order id (inventory
//! answers it once) and finds the recorded order instead of making a second one.

use std::time::Duration;

use contracts::names::{self, order_event};
use contracts::{CreateOrder, Order, OrderCancelled, OrderCreated, OrderStatus};
use switchyard::outbox::{OutboxEvent, RelayWaker, current_traceparent};
use uuid::Uuid;

use crate::inventory::{InventoryClient, ReserveError};
use crate::store::{Inserted, NewOrder, OrderStore, StoreError, StoredOrder};

/// Namespace of order ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5f1c_9a8e_4d3b_4c6a_9e2f_7b1d_0c3a_8e41);

/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// What placing an order did.
#[derive(Debug, Clone)]
pub enum Placed {
    /// A new order was accepted.
    Created(Order),
    /// The idempotency key was seen before with the same request: this is that order.
    Replayed(Order),
}

/// Why an order was not placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// Some items are short; nothing was reserved.
    #[error("out of stock: {0:?}")]
    OutOfStock(Vec<String>),
    /// Some items are not in the catalogue at all; nothing was reserved.
    #[error("unknown SKUs: {0:?}")]
    UnknownSku(Vec<String>),
    /// Inventory is unavailable (breaker open, timeout, no responders).
    #[error("inventory unavailable: {reason}")]
    InventoryUnavailable { retry_after: Duration, reason: String },
    /// The request's deadline passed before inventory answered.
    #[error("the request timed out")]
    Timeout,
    /// The idempotency key was used before for a different request.
    #[error("idempotency key was used for a different request")]
    IdempotencyKeyReused,
    /// The idempotency key's earlier attempt was abandoned (its reservation was released).
    #[error("{0}")]
    Abandoned(String),
    /// Something broke inside; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for PlaceError {
    fn from(err: StoreError) -> Self {
        PlaceError::Internal(switchyard::telemetry::error_chain(&err))
    }
}

/// Checks an `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        ));
    }
    Ok(())
}

/// The order id for a request: derived from the idempotency key, or random.
pub fn order_id_for(key: Option<&str>) -> Uuid {
    match key {
        Some(key) => Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()),
        None => Uuid::new_v4(),
    }
}

/// A fingerprint of the request body, to tell a replay from a reused key.
pub fn fingerprint(request: &CreateOrder) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, &canonical).simple().to_string()
}

/// Places and reads orders.
#[derive(Debug, Clone)]
pub struct OrderService {
    store: OrderStore,
    inventory: InventoryClient,
    relay: RelayWaker,
    tally: std::sync::Arc<crate::metrics::OrderTally>,
}

/// Why an order could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such order.
    #[error("order not found")]
    NotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OrderService {
    /// Orders in `store`, reserving through `inventory`; `relay` is woken after each event commit.
    pub fn new(store: OrderStore, inventory: InventoryClient, relay: RelayWaker) -> Self {
        crate::metrics::describe();
        OrderService { store, inventory, relay, tally: Default::default() }
    }

    /// Cancels an order: status `cancelled` and an `events.orders.cancelled.<id>` event, in one
    /// transaction; inventory releases the stock when it consumes the event. Cancelling a
    /// cancelled order returns it unchanged.
    pub async fn cancel(&self, id: Uuid, reason: Option<String>) -> Result<Order, CancelError> {
        let reason = reason.unwrap_or_else(|| "cancelled by customer".to_string());
        let cancelled = self
            .store
            .cancel(id, |order| {
                let event = OrderCancelled {
                    event_id: Uuid::new_v4(),
                    order_id: order.id,
                    reason: reason.clone(),
                    cancelled_at: switchyard::time::now_rfc3339(),
                };
                OutboxEvent::new(
                    event.event_id,
                    names::order_event_subject(order_event::CANCELLED, &order.id),
                    &event,
                    current_traceparent(),
                )
            })
            .await?;
        match cancelled {
            Some((order, changed)) => {
                if changed {
                    self.relay.wake();
                }
                Ok(order)
            }
            None => Err(CancelError::NotFound),
        }
    }

    /// The order store.
    pub fn store(&self) -> &OrderStore {
        &self.store
    }

    /// Attempts to place an order by outcome, since this instance started.
    pub fn tally(&self) -> &crate::metrics::OrderTally {
        &self.tally
    }

    /// The inventory client.
    pub fn inventory(&self) -> &InventoryClient {
        &self.inventory
    }

    /// The order with this id.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.store.get(id).await
    }

    /// Places an order: reserve, then record. `request` must be validated already.
    pub async fn place(
        &self,
        request: CreateOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Placed, PlaceError> {
        let result = self.try_place(request, idempotency_key).await;
        self.tally.count(match &result {
            Ok(Placed::Created(_)) => "accepted",
            Ok(Placed::Replayed(_)) => "replayed",
            Err(PlaceError::OutOfStock(_)) => "out_of_stock",
            Err(PlaceError::UnknownSku(_)) => "unknown_sku",
            Err(PlaceError::InventoryUnavailable { .. }) => "inventory_unavailable",
            Err(PlaceError::Timeout) => "timeout",
            Err(PlaceError::IdempotencyKeyReused | PlaceError::Abandoned(_)) => "rejected",
            Err(PlaceError::Internal(_)) => "error",
        });
        result
    }

    async fn try_place(
        &self,
        request: CreateOrder,
        idempotency_key: Option<&str>,
    ) -> Result<Placed, PlaceError> {
        let fingerprint = fingerprint(&request);
        if let Some(key) = idempotency_key
            && let Some(stored) = self.store.find_by_idempotency_key(key).await?
        {
            return replay(stored, &fingerprint);
        }

        let order_id = order_id_for(idempotency_key);
        let reply = self.inventory.reserve(order_id, &request.items).await.map_err(|err| match err {
            ReserveError::Unavailable { retry_after, reason } => {
                PlaceError::InventoryUnavailable { retry_after, reason }
            }
            ReserveError::DeadlineExceeded => PlaceError::Timeout,
            ReserveError::Released { message } => PlaceError::Abandoned(format!(
                "{message}; the earlier attempt with this Idempotency-Key was abandoned, use a new key"
            )),
            ReserveError::Refused { code, message } => PlaceError::Internal(format!(
                "inventory refused a validated reservation with {code}: {message}"
            )),
        })?;
        if !reply.reserved {
            return Err(if reply.unknown_ids.is_empty() {
                PlaceError::OutOfStock(reply.unavailable_ids)
            } else {
                PlaceError::UnknownSku(reply.unknown_ids)
            });
        }

        let order = Order {
            id: order_id,
            user_id: request.user_id,
            email: request.email,
            items: request.items,
            status: OrderStatus::Accepted,
            created_at: switchyard::time::now_rfc3339(),
        };
        let created = OrderCreated {
            event_id: Uuid::new_v4(),
            order_id,
            user_id: order.user_id.clone(),
            email: order.email.clone(),
            items: order.items.clone(),
            created_at: order.created_at.clone(),
        };
        let event = OutboxEvent::new(
            created.event_id,
            names::order_event_subject(order_event::CREATED, &order_id),
            &created,
            current_traceparent(),
        )
        .map_err(|e| PlaceError::Internal(format!("failed to encode the created event: {e}")))?;
        let new =
            NewOrder { order, idempotency_key: idempotency_key.map(str::to_string), fingerprint, event };
        let fingerprint = new.fingerprint.clone();
        let order = new.order.clone();
        match self.store.insert(new).await {
            Ok(Inserted::Recorded) => {
                self.relay.wake();
                Ok(Placed::Created(order))
            }
            Ok(Inserted::Conflict) => {
                // A concurrent request with the same key recorded the order first.
                let found = match idempotency_key {
                    Some(key) => self.store.find_by_idempotency_key(key).await?,
                    None => None,
                };
                match found {
                    Some(stored) => replay(stored, &fingerprint),
                    None => {
                        Err(PlaceError::Internal(format!("order {order_id} conflicts but cannot be found")))
                    }
                }
            }
            Err(err) => {
                // The stock is reserved but the order is not recorded: give the stock back so it
                // does not wait for the reservation TTL. The caller may retry.
                if let Err(release_err) = self.inventory.release(order_id).await {
                    tracing::warn!(%order_id, error = %release_err, "failed to release an unrecorded reservation");
                }
                Err(PlaceError::Internal(format!("failed to record order {order_id}: {err}")))
            }
        }
    }
}

fn replay(stored: StoredOrder, fingerprint: &str) -> Result<Placed, PlaceError> {
    if stored.fingerprint == fingerprint {
        Ok(Placed::Replayed(stored.order))
    } else {
        Err(PlaceError::IdempotencyKeyReused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::Item;

    fn request(quantity: u32) -> CreateOrder {
        CreateOrder { user_id: "u1".into(), email: None, items: vec![Item { sku: "A-1".into(), quantity }] }
    }

    #[test]
    fn the_same_key_always_gives_the_same_order_id() {
        assert_eq!(order_id_for(Some("k-1")), order_id_for(Some("k-1")));
        assert_ne!(order_id_for(Some("k-1")), order_id_for(Some("k-2")));
        assert_ne!(order_id_for(None), order_id_for(None));
    }

    #[test]
    fn fingerprints_tell_different_requests_apart() {
        assert_eq!(fingerprint(&request(1)), fingerprint(&request(1)));
        assert_ne!(fingerprint(&request(1)), fingerprint(&request(2)));
    }

    #[test]
    fn idempotency_keys_must_be_visible_ascii() {
        assert!(validate_idempotency_key("order-2026-11-27-0001").is_ok());
        assert!(validate_idempotency_key("").is_err());
        assert!(validate_idempotency_key("has space").is_err());
        assert!(validate_idempotency_key(&"k".repeat(256)).is_err());
    }
}
