//! The whole contract as one AsyncAPI 3.0 document, generated from the code: the servers (NATS,
//! user and password), a channel per subject family (with `{kind}` and `{order_id}`
//! parameters), the operations (each service's publishes and durable consumers, and each micro
//! endpoint as request-reply with its reply and its error reply), the messages with their
//! headers (`Nats-Msg-Id`, `traceparent`, the micro error headers) and payloads (the JSON
//! Schemas of [`crate::schemas`], under `components.schemas`), and the JetStream side (stream,
//! durable, ack policy, max deliver) as `x-jetstream` extensions.
//!
//! `shared/contracts/asyncapi.json` holds it, checked in; a test fails when it is stale
//! (`SWITCHYARD_UPDATE_SCHEMAS=1 cargo test -p contracts` rewrites it), and the suite validates it
//! with the official parser (`@asyncapi/parser`).

use serde_json::{Map, Value, json};

use crate::names::{self, order_event};

/// A micro endpoint: operation id, subject, serving service, request and reply schema names.
const ENDPOINTS: [(&str, &str, &str, &str, &str); 7] = [
    (
        "inventoryCheck",
        names::INVENTORY_CHECK,
        names::INVENTORY_SERVICE,
        "inventory.check.request",
        "inventory.check.reply",
    ),
    (
        "inventoryReserve",
        names::INVENTORY_RESERVE,
        names::INVENTORY_SERVICE,
        "inventory.reserve.request",
        "inventory.reserve.reply",
    ),
    (
        "inventoryRelease",
        names::INVENTORY_RELEASE,
        names::INVENTORY_SERVICE,
        "inventory.release.request",
        "inventory.release.reply",
    ),
    (
        "inventoryRestock",
        names::INVENTORY_RESTOCK,
        names::INVENTORY_SERVICE,
        "inventory.restock.request",
        "inventory.restock.reply",
    ),
    (
        "inventoryStock",
        names::INVENTORY_STOCK,
        names::INVENTORY_SERVICE,
        "inventory.stock.request",
        "inventory.stock.reply",
    ),
    ("ordersGet", names::ORDERS_GET, names::ORDERS_SERVICE, "orders.get.request", "order"),
    (
        "auditHistory",
        names::AUDIT_HISTORY,
        names::AUDIT_SERVICE,
        "audit.history.request",
        "audit.history.reply",
    ),
];

/// A schema name as a component key: `inventory.check.request` -> `InventoryCheckRequest`.
fn component(name: &str) -> String {
    name.split(['.', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

/// Moves a schema's `$defs` into `defs` and points its `$ref`s at `components.schemas`.
fn hoist(mut schema: Value, defs: &mut Map<String, Value>) -> Value {
    if let Some(Value::Object(local)) = schema.as_object_mut().and_then(|s| s.remove("$defs")) {
        for (name, def) in local {
            let def = hoist(def, defs);
            defs.insert(name, def);
        }
    }
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    rewrite_refs(&mut schema);
    schema
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                if key == "$ref"
                    && let Some(target) = value.as_str().and_then(|r| r.strip_prefix("#/$defs/"))
                {
                    *value = Value::String(format!("#/components/schemas/{target}"));
                } else {
                    rewrite_refs(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

fn message(title: &str, summary: &str, payload: &str, headers: &str) -> Value {
    json!({
        "name": title,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": { "$ref": format!("#/components/schemas/{headers}") },
        "payload": { "$ref": format!("#/components/schemas/{}", component(payload)) },
    })
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

/// The document.
pub fn document() -> Value {
    let mut schemas = Map::new();
    let mut defs = Map::new();
    for (name, schema) in crate::schemas() {
        schemas.insert(component(name), hoist(schema, &mut defs));
    }
    for (name, def) in defs {
        schemas.entry(name).or_insert(def);
    }
    schemas.insert(
        "EventHeaders".into(),
        json!({
            "type": "object",
            "description": "Headers of every event on ORDERS.",
            "required": ["Nats-Msg-Id"],
            "properties": {
                "Nats-Msg-Id": { "type": "string", "description": "The event id (= event_id): JetStream drops a repeat within the duplicate window." },
                "traceparent": { "type": "string", "description": "W3C trace context of the span that published it.", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$" }
            }
        }),
    );
    schemas.insert(
        "RequestHeaders".into(),
        json!({
            "type": "object",
            "description": "Headers a request may carry.",
            "properties": {
                "traceparent": { "type": "string", "description": "W3C trace context of the caller's span: the handler's span is its child.", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$" }
            }
        }),
    );
    schemas.insert(
        "ReplyHeaders".into(),
        json!({ "type": "object", "description": "A successful reply carries no header of its own." }),
    );
    schemas.insert(
        "ErrorHeaders".into(),
        json!({
            "type": "object",
            "description": "NATS micro error headers.",
            "required": ["Nats-Service-Error", "Nats-Service-Error-Code"],
            "properties": {
                "Nats-Service-Error": { "type": "string", "description": "What went wrong." },
                "Nats-Service-Error-Code": { "type": "string", "description": "An HTTP-like status: 400 bad request, 404 not found, 409 conflict, 500 internal.", "pattern": "^[0-9]{3}$" }
            }
        }),
    );
    let dead_letter_headers = {
        use switchyard::dlq::headers::*;
        let mut properties = Map::new();
        for name in
            [ORIGIN_STREAM, ORIGIN_SUBJECT, ORIGIN_SEQ, ORIGIN_MSG_ID, CONSUMER, DELIVERIES, ERROR, REPLAY_OF]
        {
            properties.insert(name.to_string(), json!({ "type": "string" }));
        }
        properties.insert(REASON.to_string(), json!({ "type": "string", "enum": ["poison", "max_deliver"] }));
        properties.insert(switchyard::telemetry::TRACEPARENT.to_string(), json!({ "type": "string" }));
        json!({
            "type": "object",
            "description": "A dead letter keeps the original's headers (traceparent too) and adds where it came from and why.",
            "required": [ORIGIN_STREAM, ORIGIN_SUBJECT, ORIGIN_SEQ, CONSUMER, REASON],
            "properties": properties,
        })
    };
    schemas.insert("DeadLetterHeaders".into(), dead_letter_headers);
    schemas.insert(
        "AnyPayload".into(),
        json!({ "description": "The original event's payload, byte for byte (it may not be valid JSON: that can be why it is here)." }),
    );

    let mut messages = Map::new();
    messages.insert(
        "orderCreated".into(),
        message(
            "OrderCreated",
            "An order was accepted (order-service).",
            "events.orders.created",
            "EventHeaders",
        ),
    );
    messages.insert(
        "orderCancelled".into(),
        message(
            "OrderCancelled",
            "An order was cancelled (order-service).",
            "events.orders.cancelled",
            "EventHeaders",
        ),
    );
    messages.insert(
        "orderLifecycle".into(),
        message("OrderLifecycle", "A step of an order's lifecycle: stock_committed and stock_released (inventory-service), confirmation_sent (email-service).", "events.orders.lifecycle", "EventHeaders"),
    );
    messages.insert(
        "serviceError".into(),
        message(
            "ServiceError",
            "A micro error reply: the error headers and a JSON body.",
            "error",
            "ErrorHeaders",
        ),
    );
    messages.insert(
        "deadLetter".into(),
        json!({
            "name": "DeadLetter",
            "title": "DeadLetter",
            "summary": "An event a consumer could not apply, parked with why.",
            "headers": reference("#/components/schemas/DeadLetterHeaders"),
            "payload": reference("#/components/schemas/AnyPayload"),
        }),
    );
    for (id, subject, _, request, reply) in ENDPOINTS {
        messages.insert(
            format!("{id}Request"),
            message(&component(request), &format!("A {subject} request."), request, "RequestHeaders"),
        );
        messages.insert(
            format!("{id}Reply"),
            message(
                &format!("{}Reply", component(request).trim_end_matches("Request")),
                &format!("The {subject} reply."),
                reply,
                "ReplyHeaders",
            ),
        );
    }

    let order_id = json!({ "description": "The order's id (a UUID)." });
    let mut channels = Map::new();
    channels.insert(
        "orderCreated".into(),
        json!({
            "address": format!("events.orders.{}.{{order_id}}", order_event::CREATED),
            "title": "Order created",
            "parameters": { "order_id": order_id },
            "messages": { "orderCreated": reference("#/components/messages/orderCreated") },
            "x-jetstream": { "stream": names::ORDERS_STREAM, "stream_subjects": names::ORDERS_STREAM_SUBJECTS },
        }),
    );
    channels.insert(
        "orderCancelled".into(),
        json!({
            "address": format!("events.orders.{}.{{order_id}}", order_event::CANCELLED),
            "title": "Order cancelled",
            "parameters": { "order_id": order_id },
            "messages": { "orderCancelled": reference("#/components/messages/orderCancelled") },
            "x-jetstream": { "stream": names::ORDERS_STREAM, "stream_subjects": names::ORDERS_STREAM_SUBJECTS },
        }),
    );
    channels.insert(
        "orderLifecycle".into(),
        json!({
            "address": "events.orders.{kind}.{order_id}",
            "title": "Order lifecycle",
            "parameters": {
                "kind": { "enum": [order_event::STOCK_COMMITTED, order_event::STOCK_RELEASED, order_event::CONFIRMATION_SENT], "description": "The step." },
                "order_id": order_id,
            },
            "messages": { "orderLifecycle": reference("#/components/messages/orderLifecycle") },
            "x-jetstream": { "stream": names::ORDERS_STREAM, "stream_subjects": names::ORDERS_STREAM_SUBJECTS },
        }),
    );
    channels.insert(
        "deadLetters".into(),
        json!({
            "address": "dlq.{stream}.{consumer}",
            "title": "Dead letters",
            "parameters": {
                "stream": { "description": "The stream the event came from." },
                "consumer": { "description": "The durable consumer that could not apply it." },
            },
            "messages": { "deadLetter": reference("#/components/messages/deadLetter") },
            "x-jetstream": { "stream": "DLQ", "stream_subjects": "dlq.>" },
        }),
    );
    for (id, subject, service, _, _) in ENDPOINTS {
        channels.insert(
            id.into(),
            json!({
                "address": subject,
                "title": subject,
                "description": format!("NATS micro endpoint of service `{service}` (queue group `q`)."),
                "messages": { format!("{id}Request"): reference(&format!("#/components/messages/{id}Request")) },
            }),
        );
        channels.insert(
            format!("{id}Reply"),
            json!({
                "address": null,
                "title": format!("{subject} reply"),
                "description": "The requester's reply inbox (`_INBOX_<user>.>`), given by NATS with the request.",
                "messages": {
                    format!("{id}Reply"): reference(&format!("#/components/messages/{id}Reply")),
                    "serviceError": reference("#/components/messages/serviceError"),
                },
            }),
        );
    }

    let mut operations = Map::new();
    let send = |channel: &str, message: &str, by: &str| {
        json!({
            "action": "send",
            "channel": reference(&format!("#/channels/{channel}")),
            "summary": format!("{by} publishes it through its outbox (exactly once per event id)."),
            "messages": [reference(&format!("#/channels/{channel}/messages/{message}"))],
            "x-publisher": by,
        })
    };
    operations.insert("publishOrderCreated".into(), send("orderCreated", "orderCreated", "order-service"));
    operations
        .insert("publishOrderCancelled".into(), send("orderCancelled", "orderCancelled", "order-service"));
    operations.insert(
        "publishOrderLifecycle".into(),
        send("orderLifecycle", "orderLifecycle", "inventory-service and email-service"),
    );
    let durable = |durable: &str, filters: Vec<&str>| json!({ "stream": names::ORDERS_STREAM, "durable": durable, "ack_policy": "explicit", "max_deliver": 5, "ack_wait": "30s", "filter_subjects": filters, "dead_letters": format!("dlq.{}.{durable}", names::ORDERS_STREAM) });
    let receive = |id: &str, channel: &str, message: &str, consumer: Value| {
        json!({
            "action": "receive",
            "channel": reference(&format!("#/channels/{channel}")),
            "summary": format!("Durable consumer `{}` applies each event exactly once.", consumer["durable"].as_str().unwrap_or_default()),
            "messages": [reference(&format!("#/channels/{channel}/messages/{message}"))],
            "x-jetstream": consumer,
            "x-operation": id,
        })
    };
    operations.insert(
        "inventoryReceivesCreated".into(),
        receive(
            "inventoryReceivesCreated",
            "orderCreated",
            "orderCreated",
            durable(names::INVENTORY_CONSUMER, vec!["events.orders.created.*", "events.orders.cancelled.*"]),
        ),
    );
    operations.insert(
        "inventoryReceivesCancelled".into(),
        receive(
            "inventoryReceivesCancelled",
            "orderCancelled",
            "orderCancelled",
            durable(names::INVENTORY_CONSUMER, vec!["events.orders.created.*", "events.orders.cancelled.*"]),
        ),
    );
    operations.insert(
        "emailReceivesCreated".into(),
        receive(
            "emailReceivesCreated",
            "orderCreated",
            "orderCreated",
            durable(names::EMAIL_CONSUMER, vec!["events.orders.created.*"]),
        ),
    );
    for (id, channel, message) in [
        ("auditReceivesCreated", "orderCreated", "orderCreated"),
        ("auditReceivesCancelled", "orderCancelled", "orderCancelled"),
        ("auditReceivesLifecycle", "orderLifecycle", "orderLifecycle"),
    ] {
        operations.insert(
            id.into(),
            receive(
                id,
                channel,
                message,
                durable(names::AUDIT_CONSUMER, vec![names::ORDERS_STREAM_SUBJECTS]),
            ),
        );
    }
    operations.insert(
        "publishDeadLetter".into(),
        json!({
            "action": "send",
            "channel": reference("#/channels/deadLetters"),
            "summary": "A consumer parks an event it cannot apply (poison, or max_deliver reached).",
            "messages": [reference("#/channels/deadLetters/messages/deadLetter")],
        }),
    );
    for (id, subject, service, _, _) in ENDPOINTS {
        operations.insert(
            id.into(),
            json!({
                "action": "receive",
                "channel": reference(&format!("#/channels/{id}")),
                "summary": format!("Service `{service}` answers {subject}."),
                "messages": [reference(&format!("#/channels/{id}/messages/{id}Request"))],
                "reply": {
                    "channel": reference(&format!("#/channels/{id}Reply")),
                    "messages": [
                        reference(&format!("#/channels/{id}Reply/messages/{id}Reply")),
                        reference(&format!("#/channels/{id}Reply/messages/serviceError")),
                    ],
                },
            }),
        );
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchyard orders",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The reference domain on Switchyard: order events on the JetStream stream ORDERS (exactly once per event id), dead letters on DLQ, and the inventory, orders and audit services as NATS micro endpoints (request-reply). Generated from the contracts crate.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "development": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "`switchyard up`: nats.conf, one user per service; clients read replies under their own `_INBOX_<user>` prefix.",
                "security": [reference("#/components/securitySchemes/natsUser")],
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "natsUser": { "type": "userPassword", "description": "A nats.conf user and password (README: the permission table)." }
            },
        },
    })
}
