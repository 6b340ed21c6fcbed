//! The contracts of Switchyard's reference domain, orders: the JSON every service, the nats CLI
//! and other languages exchange, the [`names`] of its subjects, services and consumers, its
//! event [`streams`], and a JSON Schema per message ([`schemas`], checked in under
//! `shared/contracts/schemas`). The platform (`switchyard`) knows none of it.
//!
//! Field names are snake_case; unknown fields are ignored so contracts can grow by adding optional
//! fields. Every request type is validated on decode ([`decode`]), so a handler only ever sees a
//! well-formed request and a caller gets a clear message naming the bad field.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
pub use switchyard::contract::{ContractError, ErrorBody, MAX_PAYLOAD, Validate, decode};
use uuid::Uuid;

pub mod asyncapi;
pub mod evolution;
pub mod names;
pub mod streams;

/// The most items one request may carry.
pub const MAX_ITEMS: usize = 100;
/// The largest quantity of one item in one request.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// The longest SKU, in bytes.
pub const MAX_SKU_LEN: usize = 64;
/// The longest user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// The longest email address, in bytes.
pub const MAX_EMAIL_LEN: usize = 254;

fn invalid(message: String) -> Result<(), ContractError> {
    Err(ContractError::Invalid(message))
}

/// Checks a SKU: non-empty, at most [`MAX_SKU_LEN`] bytes, no whitespace or control characters.
pub fn validate_sku(field: &str, sku: &str) -> Result<(), ContractError> {
    if sku.is_empty() {
        return invalid(format!("{field} must not be empty"));
    }
    if sku.len() > MAX_SKU_LEN {
        return invalid(format!("{field} must be at most {MAX_SKU_LEN} bytes"));
    }
    if sku.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid(format!("{field} must not contain whitespace"));
    }
    Ok(())
}

fn validate_quantity(field: &str, quantity: u32) -> Result<(), ContractError> {
    if quantity == 0 || quantity > MAX_QUANTITY {
        return invalid(format!("{field} must be between 1 and {MAX_QUANTITY}"));
    }
    Ok(())
}

/// One line of an order: a SKU and a positive quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    /// Stock keeping unit: non-empty, no whitespace.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^\S+$"))]
    pub sku: String,
    /// How many units; at least 1.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub quantity: u32,
}

/// Checks a list of items: 1 to [`MAX_ITEMS`] lines, each valid, no SKU twice.
pub fn validate_items(items: &[Item]) -> Result<(), ContractError> {
    if items.is_empty() {
        return invalid("items must not be empty".into());
    }
    if items.len() > MAX_ITEMS {
        return invalid(format!("items must have at most {MAX_ITEMS} entries"));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        validate_sku(&format!("items[{i}].sku"), &item.sku)?;
        validate_quantity(&format!("items[{i}].quantity"), item.quantity)?;
        if !seen.insert(item.sku.as_str()) {
            return invalid(format!("items[{i}].sku {:?} appears more than once", item.sku));
        }
    }
    Ok(())
}

/// `inventory.check` request: are all these items available right now?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckRequest {
    /// The items to check.
    #[schemars(length(min = 1, max = 100))]
    pub items: Vec<Item>,
}

impl Validate for CheckRequest {
    fn validate(&self) -> Result<(), ContractError> {
        validate_items(&self.items)
    }
}

/// `inventory.check` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReply {
    /// True when every item is available in the asked quantity.
    pub all_available: bool,
    /// SKUs that are unknown or short, in request order.
    pub unavailable_ids: Vec<String>,
    /// The SKUs of `unavailable_ids` that are not in the catalogue at all (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_ids: Vec<String>,
}

/// `inventory.reserve` request: take items off the available stock for one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveRequest {
    /// The order the reservation belongs to; a repeated reserve for it changes nothing.
    pub order_id: Uuid,
    /// The items to reserve, all or nothing.
    #[schemars(length(min = 1, max = 100))]
    pub items: Vec<Item>,
}

impl Validate for ReserveRequest {
    fn validate(&self) -> Result<(), ContractError> {
        validate_items(&self.items)
    }
}

/// `inventory.reserve` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveReply {
    /// True when every item was reserved; false when none was.
    pub reserved: bool,
    /// SKUs that are unknown or short, in request order (empty when reserved).
    pub unavailable_ids: Vec<String>,
    /// The SKUs of `unavailable_ids` that are not in the catalogue at all (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_ids: Vec<String>,
}

/// `inventory.release` request: give an order's reserved stock back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseRequest {
    /// The order whose reservation is released.
    pub order_id: Uuid,
}

impl Validate for ReleaseRequest {
    fn validate(&self) -> Result<(), ContractError> {
        Ok(())
    }
}

/// `inventory.release` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseReply {
    /// True when the order's reservation is released (now or earlier); false when it had none.
    pub released: bool,
}

/// `inventory.restock` request: add units of one SKU (created when new).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestockRequest {
    /// The SKU to restock.
    pub sku: String,
    /// Units to add; at least 1.
    pub quantity: u32,
}

impl Validate for RestockRequest {
    fn validate(&self) -> Result<(), ContractError> {
        validate_sku("sku", &self.sku)?;
        validate_quantity("quantity", self.quantity)
    }
}

/// `inventory.restock` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestockReply {
    /// The restocked SKU.
    pub sku: String,
    /// Units now available to reserve.
    pub available: i64,
}

/// `inventory.stock` request: stock levels of these SKUs, or of all when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockRequest {
    /// SKUs to report; empty (or absent) means every SKU.
    #[serde(default)]
    pub skus: Vec<String>,
}

impl Validate for StockRequest {
    fn validate(&self) -> Result<(), ContractError> {
        if self.skus.len() > MAX_ITEMS {
            return invalid(format!("skus must have at most {MAX_ITEMS} entries"));
        }
        for (i, sku) in self.skus.iter().enumerate() {
            validate_sku(&format!("skus[{i}]"), sku)?;
        }
        Ok(())
    }
}

/// Stock of one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units free to reserve.
    pub available: i64,
    /// Units reserved by orders and not yet committed or released.
    pub reserved: i64,
}

/// `inventory.stock` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReply {
    /// One entry per SKU, sorted by SKU. A requested SKU that is unknown is reported with zeros.
    pub items: Vec<StockLevel>,
}

/// `orders.get` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GetOrderRequest {
    /// The order to fetch.
    pub order_id: Uuid,
}

impl Validate for GetOrderRequest {
    fn validate(&self) -> Result<(), ContractError> {
        Ok(())
    }
}

/// `POST /orders` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreateOrder {
    /// Who orders.
    pub user_id: String,
    /// Where the confirmation goes; optional.
    #[serde(default)]
    pub email: Option<String>,
    /// What is ordered.
    #[schemars(length(min = 1, max = 100))]
    pub items: Vec<Item>,
}

impl Validate for CreateOrder {
    fn validate(&self) -> Result<(), ContractError> {
        if self.user_id.trim().is_empty() {
            return invalid("user_id must not be empty".into());
        }
        if self.user_id.len() > MAX_USER_ID_LEN {
            return invalid(format!("user_id must be at most {MAX_USER_ID_LEN} bytes"));
        }
        if let Some(email) = &self.email {
            let well_formed = email.len() <= MAX_EMAIL_LEN
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
                && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'));
            if !well_formed {
                return invalid("email must be an address like user@example.com".into());
            }
        }
        validate_items(&self.items)
    }
}

/// Lifecycle state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock is reserved and the order is recorded.
    Accepted,
    /// The order was cancelled and its stock released.
    Cancelled,
}

impl OrderStatus {
    /// The status as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Accepted => "accepted",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(OrderStatus::Accepted),
            "cancelled" => Some(OrderStatus::Cancelled),
            _ => None,
        }
    }
}

/// An order, as `GET /orders/{id}` and `orders.get` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    /// The order id.
    pub id: Uuid,
    /// Who ordered.
    pub user_id: String,
    /// Where the confirmation goes, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// What was ordered.
    pub items: Vec<Item>,
    /// Where the order is in its lifecycle.
    pub status: OrderStatus,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
}

/// `events.orders.created.<order_id>`: an order was accepted (its stock is reserved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    /// Unique per event; also its `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub user_id: String,
    /// Where the confirmation goes, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// What was ordered.
    pub items: Vec<Item>,
    /// When the order was accepted (RFC 3339).
    pub created_at: String,
}

/// `events.orders.cancelled.<order_id>`: an order was cancelled; its stock goes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    /// Unique per event.
    pub event_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// Why, in words.
    pub reason: String,
    /// When (RFC 3339).
    pub cancelled_at: String,
}

/// Lifecycle events the consumers publish: `stock_committed`, `stock_released`,
/// `confirmation_sent`. The kind is in the subject; `detail` says what happened in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLifecycle {
    /// Unique per event.
    pub event_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// What happened, for people (the reason of a release, the address of a confirmation).
    #[serde(default)]
    pub detail: String,
    /// When (RFC 3339).
    pub at: String,
}

impl OrderLifecycle {
    /// A lifecycle event (`stock_committed`, `stock_released`, `confirmation_sent`, ...) of an
    /// order, ready for the outbox, in the trace of the event that caused it (`cause_traceparent`,
    /// else the current span's).
    pub fn event(
        kind: &str,
        order_id: Uuid,
        detail: impl Into<String>,
        cause_traceparent: Option<&str>,
    ) -> Result<switchyard::outbox::OutboxEvent, serde_json::Error> {
        let event = OrderLifecycle {
            event_id: Uuid::new_v4(),
            order_id,
            detail: detail.into(),
            at: switchyard::time::now_rfc3339(),
        };
        let subject = names::order_event_subject(kind, &order_id);
        // The cause's context (a consumer's `process` span) is the new event's parent.
        let trace =
            cause_traceparent.map(str::to_string).unwrap_or_else(switchyard::telemetry::current_traceparent);
        switchyard::outbox::OutboxEvent::new(event.event_id, subject, &event, trace)
    }
}

/// Any order event, decoded only as far as every event goes: its ids.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EventIds {
    /// Unique per event.
    pub event_id: Uuid,
    /// The order.
    pub order_id: Uuid,
}

/// `POST /orders/{id}/cancel` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CancelOrder {
    /// Why, in words; default "cancelled by customer".
    #[serde(default)]
    pub reason: Option<String>,
}

impl Validate for CancelOrder {
    fn validate(&self) -> Result<(), ContractError> {
        match &self.reason {
            Some(reason) if reason.len() > 500 => invalid("reason must be at most 500 bytes".into()),
            _ => Ok(()),
        }
    }
}

/// `audit.history` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryRequest {
    /// The order whose events are asked for.
    pub order_id: Uuid,
}

impl Validate for HistoryRequest {
    fn validate(&self) -> Result<(), ContractError> {
        Ok(())
    }
}

/// One event in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditedEvent {
    /// Sequence in the `ORDERS` stream.
    pub stream_seq: u64,
    /// The event's subject.
    pub subject: String,
    /// The event kind (`created`, `stock_committed`, ...).
    pub kind: String,
    /// The event as published.
    pub payload: serde_json::Value,
    /// When it was published to the stream (RFC 3339).
    pub published_at: String,
}

/// `audit.history` reply: the order's events in stream order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryReply {
    /// The order.
    pub order_id: Uuid,
    /// Its events, oldest first.
    pub events: Vec<AuditedEvent>,
}

/// The JSON body of every HTTP error answer of order-service (the status is the HTTP status).
/// Micro errors on NATS have the platform's shape: [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpErrorBody {
    /// A stable, machine-readable code: `bad_request`, `not_found`, `method_not_allowed`,
    /// `request_timeout`, `payload_too_large`, `unsupported_media_type`, `validation_failed`,
    /// `idempotency_key_reused`, `unknown_sku`, `out_of_stock`, `conflict`,
    /// `inventory_unavailable`, `overloaded`, `timeout`, `internal_error`, ...
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// With `out_of_stock`: the SKUs that are short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_ids: Option<Vec<String>>,
    /// With `unknown_sku`: the SKUs that are not in the catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_ids: Option<Vec<String>>,
}

/// The JSON Schema of every message, by name, for other languages. `shared/contracts/schemas/<name>.json`
/// holds them, checked in; a test fails when they are stale (`SWITCHYARD_UPDATE_SCHEMAS=1` rewrites).
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    use schemars::schema_for;
    vec![
        ("inventory.check.request", schema_for!(CheckRequest).to_value()),
        ("inventory.check.reply", schema_for!(CheckReply).to_value()),
        ("inventory.reserve.request", schema_for!(ReserveRequest).to_value()),
        ("inventory.reserve.reply", schema_for!(ReserveReply).to_value()),
        ("inventory.release.request", schema_for!(ReleaseRequest).to_value()),
        ("inventory.release.reply", schema_for!(ReleaseReply).to_value()),
        ("inventory.restock.request", schema_for!(RestockRequest).to_value()),
        ("inventory.restock.reply", schema_for!(RestockReply).to_value()),
        ("inventory.stock.request", schema_for!(StockRequest).to_value()),
        ("inventory.stock.reply", schema_for!(StockReply).to_value()),
        ("orders.get.request", schema_for!(GetOrderRequest).to_value()),
        ("order", schema_for!(Order).to_value()),
        ("http.create_order", schema_for!(CreateOrder).to_value()),
        ("http.cancel_order", schema_for!(CancelOrder).to_value()),
        ("audit.history.request", schema_for!(HistoryRequest).to_value()),
        ("audit.history.reply", schema_for!(HistoryReply).to_value()),
        ("events.orders.created", schema_for!(OrderCreated).to_value()),
        ("events.orders.cancelled", schema_for!(OrderCancelled).to_value()),
        ("events.orders.lifecycle", schema_for!(OrderLifecycle).to_value()),
        ("error", schema_for!(ErrorBody).to_value()),
        ("http.error", schema_for!(HttpErrorBody).to_value()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_object_decodes_into_a_contract_type() {
        let array = decode::<StockRequest>(b" []").unwrap_err();
        assert_eq!(array.to_string(), "invalid json: invalid type: an array, expected a JSON object");
        let positional = br#"["u1", null, [{"sku":"A-1","quantity":1}]]"#;
        assert!(
            decode::<CreateOrder>(positional).unwrap_err().to_string().contains("expected a JSON object")
        );
        assert!(decode::<StockRequest>(b"null").unwrap_err().to_string().contains("null"));
        assert!(decode::<StockRequest>(b"{}").is_ok());
    }

    fn item(sku: &str, quantity: u32) -> Item {
        Item { sku: sku.into(), quantity }
    }

    #[test]
    fn checked_in_json_schemas_match_the_contract_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let update = std::env::var_os("SWITCHYARD_UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let path = dir.join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "stale JSON Schemas {stale:?}: run SWITCHYARD_UPDATE_SCHEMAS=1 cargo test -p contracts"
        );
        let files = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            files,
            schemas().len(),
            "shared/contracts/schemas holds a schema per contract type, and no other file"
        );
    }

    #[test]
    fn no_change_breaks_a_consumer_built_against_the_published_schemas() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("published");
        if std::env::var_os("SWITCHYARD_PUBLISH_SCHEMAS").is_some() {
            for (name, schema) in schemas() {
                let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
                std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
            }
        }
        let current: std::collections::BTreeMap<_, _> = schemas().into_iter().collect();
        let mut breaks = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json") else { continue };
            let published: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
            match current.get(name) {
                Some(schema) => breaks.extend(
                    crate::evolution::breaking_changes(&published, schema)
                        .into_iter()
                        .map(|b| format!("{name}: {b}")),
                ),
                None => breaks.push(format!("{name}: the message is gone")),
            }
        }
        assert!(
            breaks.is_empty(),
            "changes that break consumers of the published contract: {breaks:#?}\n\
             Add optional fields only; a breaking change is a new subject or a version header \
             (README: Contract evolution)."
        );
    }

    #[test]
    fn the_checked_in_asyncapi_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("asyncapi.json");
        let text = serde_json::to_string_pretty(&crate::asyncapi::document()).unwrap() + "\n";
        if std::env::var_os("SWITCHYARD_UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()),
            "stale shared/contracts/asyncapi.json: run SWITCHYARD_UPDATE_SCHEMAS=1 cargo test -p contracts"
        );
    }

    #[test]
    fn the_schemas_carry_the_validation_rules() {
        let (_, schema) = schemas().into_iter().find(|(n, _)| *n == "http.create_order").unwrap();
        let text = schema.to_string();
        assert!(text.contains("\"minimum\":1") && text.contains("\"maximum\":1000000"), "{text}");
        assert!(text.contains("\"maxItems\":100"), "{text}");
    }

    #[test]
    fn a_check_request_round_trips_through_json() {
        let request = CheckRequest { items: vec![item("A-1", 2)] };
        let json = serde_json::to_vec(&request).unwrap();
        assert_eq!(std::str::from_utf8(&json).unwrap(), r#"{"items":[{"sku":"A-1","quantity":2}]}"#);
        assert_eq!(decode::<CheckRequest>(&json).unwrap(), request);
    }

    #[test]
    fn every_reply_round_trips_through_json() {
        let reserve =
            ReserveReply { reserved: false, unavailable_ids: vec!["B-2".into()], unknown_ids: vec![] };
        let json = serde_json::to_string(&reserve).unwrap();
        assert_eq!(json, r#"{"reserved":false,"unavailable_ids":["B-2"]}"#);
        assert_eq!(serde_json::from_str::<ReserveReply>(&json).unwrap(), reserve);

        let order = Order {
            id: Uuid::nil(),
            user_id: "u1".into(),
            email: None,
            items: vec![item("A-1", 1)],
            status: OrderStatus::Accepted,
            created_at: "2026-11-27T18:00:00Z".into(),
        };
        let json = serde_json::to_string(&order).unwrap();
        assert!(json.contains(r#""status":"accepted""#), "{json}");
        assert_eq!(serde_json::from_str::<Order>(&json).unwrap(), order);
    }

    #[test]
    fn unknown_fields_are_ignored_so_contracts_can_grow() {
        let request: CheckRequest =
            decode(br#"{"items":[{"sku":"A-1","quantity":1,"note":"x"}],"trace":"t"}"#).unwrap();
        assert_eq!(request.items, vec![item("A-1", 1)]);
    }

    #[test]
    fn an_absent_sku_list_asks_for_all_stock() {
        let request: StockRequest = decode(b"{}").unwrap();
        assert!(request.skus.is_empty());
    }

    #[test]
    fn malformed_json_is_refused_with_a_json_error() {
        let err = decode::<CheckRequest>(b"{not json").unwrap_err();
        assert!(matches!(err, ContractError::Json(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid json:"), "{err}");
    }

    #[test]
    fn a_zero_quantity_is_refused_naming_the_field() {
        let err = decode::<CheckRequest>(br#"{"items":[{"sku":"A-1","quantity":0}]}"#).unwrap_err();
        assert_eq!(err.to_string(), "items[0].quantity must be between 1 and 1000000");
    }

    #[test]
    fn a_negative_quantity_is_refused() {
        let err = decode::<CheckRequest>(br#"{"items":[{"sku":"A-1","quantity":-3}]}"#).unwrap_err();
        assert!(matches!(err, ContractError::Json(_)), "{err:?}");
    }

    #[test]
    fn an_empty_or_spaced_sku_is_refused() {
        let err = decode::<CheckRequest>(br#"{"items":[{"sku":"","quantity":1}]}"#).unwrap_err();
        assert_eq!(err.to_string(), "items[0].sku must not be empty");
        let err = decode::<RestockRequest>(br#"{"sku":"A 1","quantity":1}"#).unwrap_err();
        assert_eq!(err.to_string(), "sku must not contain whitespace");
    }

    #[test]
    fn empty_duplicate_and_too_many_items_are_refused() {
        let err = decode::<CheckRequest>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(err.to_string(), "items must not be empty");

        let err = decode::<CheckRequest>(br#"{"items":[{"sku":"A","quantity":1},{"sku":"A","quantity":2}]}"#)
            .unwrap_err();
        assert_eq!(err.to_string(), "items[1].sku \"A\" appears more than once");

        let many: Vec<Item> = (0..=MAX_ITEMS).map(|i| item(&format!("S-{i}"), 1)).collect();
        let json = serde_json::to_vec(&CheckRequest { items: many }).unwrap();
        let err = decode::<CheckRequest>(&json).unwrap_err();
        assert_eq!(err.to_string(), "items must have at most 100 entries");
    }

    #[test]
    fn a_reserve_without_a_uuid_order_id_is_refused() {
        let err = decode::<ReserveRequest>(br#"{"order_id":"nope","items":[{"sku":"A","quantity":1}]}"#)
            .unwrap_err();
        assert!(matches!(err, ContractError::Json(_)), "{err:?}");
    }

    #[test]
    fn an_oversized_payload_is_refused_before_parsing() {
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(decode::<CheckRequest>(&big).unwrap_err(), ContractError::TooLarge(MAX_PAYLOAD + 1));
    }

    #[test]
    fn an_order_needs_a_user_and_a_plausible_email() {
        let ok = br#"{"user_id":"u1","email":"u1@example.com","items":[{"sku":"A-1","quantity":2}]}"#;
        assert!(decode::<CreateOrder>(ok).is_ok());
        let no_email = br#"{"user_id":"u1","items":[{"sku":"A-1","quantity":2}]}"#;
        assert_eq!(decode::<CreateOrder>(no_email).unwrap().email, None);
        let blank_user = br#"{"user_id":" ","items":[{"sku":"A-1","quantity":2}]}"#;
        assert_eq!(decode::<CreateOrder>(blank_user).unwrap_err().to_string(), "user_id must not be empty");
        let bad_email = br#"{"user_id":"u1","email":"nobody","items":[{"sku":"A-1","quantity":2}]}"#;
        assert_eq!(
            decode::<CreateOrder>(bad_email).unwrap_err().to_string(),
            "email must be an address like user@example.com"
        );
    }
}
