//! Fuzzing every contract decoder: random bytes, and structure-aware mutations of valid messages
//! (values swapped for other JSON, fields dropped or added, text truncated or bytes flipped),
//! never panic: each input decodes or is refused with an error. `FUZZ_CASES` sets how many cases
//! each property runs (the suite runs 256; e.g. `FUZZ_CASES=100000` for a longer run).

use contracts::{self, Validate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// Valid messages, one per decoder, as the mutations' seeds.
fn samples() -> Vec<(&'static str, Value)> {
    let id = "6ef1143e-b1bb-5d80-bf8d-a5636e9cdafa";
    let items = json!([{ "sku": "A-1", "quantity": 2 }, { "sku": "B-2", "quantity": 1 }]);
    vec![
        ("check", json!({ "items": items })),
        ("reserve", json!({ "order_id": id, "items": items })),
        ("release", json!({ "order_id": id })),
        ("restock", json!({ "sku": "A-1", "quantity": 10 })),
        ("stock", json!({ "skus": ["A-1", "B-2"] })),
        ("get", json!({ "order_id": id })),
        ("history", json!({ "order_id": id })),
        ("create", json!({ "user_id": "u1", "email": "u1@example.com", "items": items })),
        ("cancel", json!({ "reason": "changed my mind" })),
        (
            "created",
            json!({ "event_id": id, "order_id": id, "user_id": "u1", "items": items, "created_at": "2026-11-28T10:00:00Z" }),
        ),
        (
            "cancelled",
            json!({ "event_id": id, "order_id": id, "reason": "r", "cancelled_at": "2026-11-28T10:00:00Z" }),
        ),
        ("lifecycle", json!({ "event_id": id, "order_id": id, "detail": "d", "at": "2026-11-28T10:00:00Z" })),
    ]
}

fn request<T: DeserializeOwned + Validate>(bytes: &[u8]) {
    let _ = contracts::decode::<T>(bytes);
}

fn event<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = serde_json::from_slice::<T>(bytes);
}

/// Runs every decoder on `bytes`; a panic fails the property.
fn decode_all(bytes: &[u8]) {
    use contracts::*;
    request::<CheckRequest>(bytes);
    request::<ReserveRequest>(bytes);
    request::<ReleaseRequest>(bytes);
    request::<RestockRequest>(bytes);
    request::<StockRequest>(bytes);
    request::<GetOrderRequest>(bytes);
    request::<HistoryRequest>(bytes);
    request::<CreateOrder>(bytes);
    request::<CancelOrder>(bytes);
    event::<OrderCreated>(bytes);
    event::<OrderCancelled>(bytes);
    event::<OrderLifecycle>(bytes);
    event::<EventIds>(bytes);
}

/// Any JSON value, nested a little.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        ".{0,80}".prop_map(Value::from),
        Just(Value::from("6ef1143e-b1bb-5d80-bf8d-a5636e9cdafa")),
        Just(Value::from("x".repeat(70_000))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One change to a message.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set a field (existing or new) to a value.
    Set(String, Value),
    /// Drop the n-th field.
    Drop(usize),
    /// Replace the n-th field's value, or an element inside it.
    Replace(usize, Value),
    /// Replace the whole message.
    Root(Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop_oneof![
        Just("items".to_string()),
        Just("sku".to_string()),
        Just("quantity".to_string()),
        Just("order_id".to_string()),
        Just("user_id".to_string()),
        Just("email".to_string()),
        Just("skus".to_string()),
        "[a-z_]{1,10}",
    ];
    prop_oneof![
        (field, any_json()).prop_map(|(f, v)| Mutation::Set(f, v)),
        (0usize..8).prop_map(Mutation::Drop),
        (0usize..8, any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        any_json().prop_map(Mutation::Root),
    ]
}

fn apply(mut value: Value, mutation: &Mutation) -> Value {
    let Some(object) = value.as_object_mut() else { return value };
    let keys: Vec<String> = object.keys().cloned().collect();
    match mutation {
        Mutation::Set(field, v) => {
            object.insert(field.clone(), v.clone());
        }
        Mutation::Drop(i) if !keys.is_empty() => {
            object.remove(&keys[i % keys.len()]);
        }
        Mutation::Replace(i, v) if !keys.is_empty() => {
            let key = &keys[i % keys.len()];
            match object.get_mut(key) {
                Some(Value::Array(elements)) if !elements.is_empty() => {
                    let n = i % elements.len();
                    elements[n] = v.clone();
                }
                Some(slot) => *slot = v.clone(),
                None => {}
            }
        }
        Mutation::Root(v) => return v.clone(),
        _ => {}
    }
    value
}

#[test]
fn random_bytes_never_panic_a_decoder() {
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..2048), |bytes| {
            decode_all(&bytes);
            Ok(())
        })
        .expect("every decoder refuses random bytes without panicking");
}

#[test]
fn mutated_messages_never_panic_a_decoder() {
    let samples = samples();
    let strategy = (0..samples.len(), proptest::collection::vec(mutation(), 1..5), any::<u16>(), any::<u8>());
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&strategy, |(sample, mutations, cut, flip)| {
            let mut value = samples[sample].1.clone();
            for m in &mutations {
                value = apply(value, m);
            }
            let text = serde_json::to_vec(&value).expect("JSON");
            decode_all(&text);
            // The same text cut short, and with one byte changed.
            decode_all(&text[..usize::from(cut) % (text.len() + 1)]);
            let mut flipped = text.clone();
            if !flipped.is_empty() {
                let at = usize::from(cut) % flipped.len();
                flipped[at] ^= flip;
            }
            decode_all(&flipped);
            Ok(())
        })
        .expect("every decoder refuses a mutated message without panicking");
}

#[test]
fn the_valid_samples_decode() {
    use contracts::*;
    for (name, value) in samples() {
        let bytes = serde_json::to_vec(&value).expect("JSON");
        let ok = match name {
            "check" => decode::<CheckRequest>(&bytes).is_ok(),
            "reserve" => decode::<ReserveRequest>(&bytes).is_ok(),
            "release" => decode::<ReleaseRequest>(&bytes).is_ok(),
            "restock" => decode::<RestockRequest>(&bytes).is_ok(),
            "stock" => decode::<StockRequest>(&bytes).is_ok(),
            "get" => decode::<GetOrderRequest>(&bytes).is_ok(),
            "history" => decode::<HistoryRequest>(&bytes).is_ok(),
            "create" => decode::<CreateOrder>(&bytes).is_ok(),
            "cancel" => decode::<CancelOrder>(&bytes).is_ok(),
            "created" => serde_json::from_slice::<OrderCreated>(&bytes).is_ok(),
            "cancelled" => serde_json::from_slice::<OrderCancelled>(&bytes).is_ok(),
            "lifecycle" => serde_json::from_slice::<OrderLifecycle>(&bytes).is_ok(),
            other => panic!("{other}"),
        };
        assert!(ok, "the {name} sample is valid: the mutations start from real messages");
    }
}
