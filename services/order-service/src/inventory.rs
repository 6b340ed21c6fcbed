//! The order service's view of inventory: `inventory.reserve` and `inventory.release` over NATS,
//! every reserve through the platform's [`GuardedClient`] (circuit breaker, retries of the
//! idempotent reserve, deadline), or any other [`Reservations`] (the benchmark's in-process
//! monolith).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use contracts::names;
use contracts::{Item, ReleaseReply, ReleaseRequest, ReserveReply, ReserveRequest};
use switchyard::breaker::{Breaker, BreakerError};
use switchyard::client::{GuardedClient, RequestError};
use switchyard::telemetry::error_chain;
use uuid::Uuid;

/// Why a reservation got no answer to act on.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// Inventory is down, slow or failing, or the breaker is open: try again later.
    #[error("inventory is unavailable: {reason}")]
    Unavailable {
        /// When a retry may succeed.
        retry_after: Duration,
        /// What happened, for logs.
        reason: String,
    },
    /// The caller's deadline (the HTTP request timeout) passed before inventory answered.
    #[error("the request's deadline passed before inventory answered")]
    DeadlineExceeded,
    /// The order's reservation was released (or committed) already: a reserve under this order
    /// id can never succeed again (inventory's 409).
    #[error("the order's reservation was released: {message}")]
    Released {
        /// Inventory's message.
        message: String,
    },
    /// Inventory refused the request itself (another 4xx): nothing a retry would fix.
    #[error("inventory refused the reservation: {message}")]
    Refused {
        /// The micro error code.
        code: u16,
        /// The micro error message.
        message: String,
    },
}

/// A future of a [`Reservations`] call.
pub type ReservationFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Reservations made without NATS: the inventory logic called as a function on the same
/// database, the "monolith" the benchmarks compare the distributed path against.
pub trait Reservations: Send + Sync + std::fmt::Debug + 'static {
    /// Reserves the request's items, all or nothing.
    fn reserve<'a>(
        &'a self,
        request: &'a ReserveRequest,
    ) -> ReservationFuture<'a, Result<ReserveReply, ReserveError>>;
    /// Releases the order's reservation.
    fn release<'a>(
        &'a self,
        request: &'a ReleaseRequest,
    ) -> ReservationFuture<'a, Result<ReleaseReply, String>>;
}

/// Where the inventory is.
#[derive(Debug, Clone)]
enum Backend {
    /// The `inventory` micro service, over NATS.
    Remote(GuardedClient),
    /// In process (see [`Reservations`]).
    Local(Arc<dyn Reservations>),
}

/// Reserves and releases stock on the `inventory` micro service.
#[derive(Debug, Clone)]
pub struct InventoryClient {
    backend: Backend,
    breaker: Arc<Breaker>,
}

impl InventoryClient {
    /// A client whose reserves go through `client`'s breaker and retry policy.
    pub fn new(client: GuardedClient) -> Self {
        let breaker = client.breaker_arc().clone();
        InventoryClient { backend: Backend::Remote(client), breaker }
    }

    /// An in-process inventory called as a function (no NATS, no breaker): the monolith mode of
    /// the benchmarks.
    pub fn local(inventory: Arc<dyn Reservations>, breaker: Arc<Breaker>) -> Self {
        InventoryClient { backend: Backend::Local(inventory), breaker }
    }

    /// The breaker guarding inventory calls.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// What the retries did (none for an in-process inventory).
    pub fn retries(&self) -> Option<switchyard::retry::RetrySnapshot> {
        match &self.backend {
            Backend::Remote(client) => client.retrier().map(|retrier| retrier.snapshot()),
            Backend::Local(_) => None,
        }
    }

    /// Reserves `items` for the order, all or nothing.
    pub async fn reserve(&self, order_id: Uuid, items: &[Item]) -> Result<ReserveReply, ReserveError> {
        let request = ReserveRequest { order_id, items: items.to_vec() };
        let client = match &self.backend {
            Backend::Remote(client) => client,
            Backend::Local(inventory) => return inventory.reserve(&request).await,
        };
        // The fallback is the answer "unavailable, retry later" (HTTP 503), counted by the breaker.
        client
            .call_or_else(names::INVENTORY_RESERVE, &request, Ok, |err| {
                Err(match err {
                    BreakerError::Open { retry_after } => ReserveError::Unavailable {
                        retry_after: retry_after.max(Duration::from_secs(1)),
                        reason: "circuit breaker is open".into(),
                    },
                    BreakerError::Timeout(after) => ReserveError::Unavailable {
                        retry_after: Duration::from_secs(1),
                        reason: format!("timed out after {after:?}"),
                    },
                    BreakerError::Failure(RequestError::DeadlineExceeded { .. }) => {
                        ReserveError::DeadlineExceeded
                    }
                    BreakerError::Failure(RequestError::Service { code: 409, message, .. }) => {
                        ReserveError::Released { message }
                    }
                    BreakerError::Failure(RequestError::Service { code, message, .. }) if code < 500 => {
                        ReserveError::Refused { code, message }
                    }
                    BreakerError::Failure(err) => ReserveError::Unavailable {
                        retry_after: Duration::from_secs(1),
                        reason: error_chain(&err),
                    },
                })
            })
            .await
    }

    /// Releases the order's reservation (used when an accepted reservation cannot be recorded).
    pub async fn release(&self, order_id: Uuid) -> Result<ReleaseReply, String> {
        let request = ReleaseRequest { order_id };
        match &self.backend {
            // Not through the breaker: a release must be tried even while reserves are refused.
            Backend::Remote(client) => client
                .requests()
                .request(names::INVENTORY_RELEASE, &request)
                .await
                .map_err(|err| error_chain(&err)),
            Backend::Local(inventory) => inventory.release(&request).await,
        }
    }
}
