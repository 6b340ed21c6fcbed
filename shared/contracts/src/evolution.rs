//! Contract evolution: which changes to a message's JSON Schema break a consumer built against
//! the published one. The rule (README, *Contract evolution*): a message may gain optional
//! fields; it may not lose a field, make a field required that was not, or change a field's
//! type. A change that must do one of those is a new message: a new subject, or a version header.
//!
//! `shared/contracts/published/` holds the schemas as last published; a test compares the
//! current ones against them (`SWITCHYARD_PUBLISH_SCHEMAS=1 cargo test -p contracts` publishes
//! the current ones, which is a release decision, not a way to silence the test).

use serde_json::Value;

/// What in `current` breaks a consumer of `published`, one line each (empty: compatible).
pub fn breaking_changes(published: &Value, current: &Value) -> Vec<String> {
    let mut found = Vec::new();
    compare("", published, current, published, current, &mut found, 0);
    found
}

/// Follows a local `$ref` (`#/$defs/X`) within its document.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => root.get("$defs").and_then(|defs| defs.get(name)).unwrap_or(schema),
        None => schema,
    }
}

fn types(schema: &Value) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

fn required(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn compare(
    path: &str,
    published: &Value,
    current: &Value,
    published_root: &Value,
    current_root: &Value,
    found: &mut Vec<String>,
    depth: usize,
) {
    if depth > 16 {
        return;
    }
    let (published, current) = (resolve(published, published_root), resolve(current, current_root));
    let at = if path.is_empty() { "the message".to_string() } else { format!("`{path}`") };
    let (was, is) = (types(published), types(current));
    if !was.is_empty() && !is.is_empty() && !was.iter().all(|t| is.contains(t)) {
        found.push(format!("{at} changed type from {was:?} to {is:?}"));
    }
    let old_required = required(published);
    for name in required(current) {
        if !old_required.contains(&name) {
            found.push(format!("{at}: field `{name}` is newly required"));
        }
    }
    if let (Some(old), Some(new)) = (
        published.get("properties").and_then(Value::as_object),
        current.get("properties").and_then(Value::as_object),
    ) {
        for (name, old_field) in old {
            let field_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
            match new.get(name) {
                Some(new_field) => {
                    compare(&field_path, old_field, new_field, published_root, current_root, found, depth + 1)
                }
                None => found.push(format!("field `{field_path}` was removed")),
            }
        }
    }
    if let (Some(old), Some(new)) = (published.get("items"), current.get("items")) {
        compare(&format!("{path}[]"), old, new, published_root, current_root, found, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn published() -> Value {
        json!({
            "type": "object",
            "required": ["order_id", "items"],
            "properties": {
                "order_id": { "type": "string" },
                "email": { "type": ["string", "null"] },
                "items": { "type": "array", "items": { "$ref": "#/$defs/Item" } }
            },
            "$defs": { "Item": { "type": "object", "required": ["sku"], "properties": { "sku": { "type": "string" }, "quantity": { "type": "integer" } } } }
        })
    }

    #[test]
    fn an_optional_field_more_is_compatible() {
        let mut current = published();
        current["properties"]["note"] = json!({ "type": "string" });
        assert_eq!(breaking_changes(&published(), &current), Vec::<String>::new());
    }

    #[test]
    fn a_removed_field_a_newly_required_one_and_a_changed_type_break_a_consumer() {
        let mut current = published();
        current["properties"].as_object_mut().unwrap().remove("email");
        current["required"] = json!(["order_id", "items", "note"]);
        current["properties"]["note"] = json!({ "type": "string" });
        current["$defs"]["Item"]["properties"]["quantity"] = json!({ "type": "string" });
        current["$defs"]["Item"]["required"] = json!(["sku", "quantity"]);
        let breaks = breaking_changes(&published(), &current);
        assert!(breaks.iter().any(|b| b.contains("`email` was removed")), "{breaks:?}");
        assert!(breaks.iter().any(|b| b.contains("`note` is newly required")), "{breaks:?}");
        assert!(
            breaks.iter().any(|b| b.contains("items[].quantity") && b.contains("changed type")),
            "{breaks:?}"
        );
        assert!(breaks.iter().any(|b| b.contains("`quantity` is newly required")), "{breaks:?}");
    }
}
