//! The messages' JSON schema (`docs/schemas/events.v1.json`), compiled in, and a check of a
//! payload against it by a JSON Schema implementation (the `jsonschema` crate: draft 2020-12,
//! with the formats the schema uses — `uuid`, `date-time` — asserted, not just annotated). Tests
//! run it over every outbox row they make, so that the documentation and the code cannot drift
//! apart. Not used on the serving path (no CPU per order): only tests call [`check`].

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::{Draft, Validator};
use serde_json::Value;

/// The schema document.
pub const SCHEMA_V1: &str = include_str!("../../../docs/schemas/events.v1.json");

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_V1).expect("docs/schemas/events.v1.json is JSON"))
}

/// The message types the schema defines.
pub fn types() -> Vec<&'static str> {
    schema()["$defs"].as_object().map(|d| d.keys().map(String::as_str).collect()).unwrap_or_default()
}

fn compile(document: &Value) -> Validator {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(document)
        .unwrap_or_else(|e| panic!("docs/schemas/events.v1.json is not a valid schema: {e}"))
}

/// The whole document (a message must match exactly one of its types), and one validator per
/// type (the document with that type's definition as its root), for errors that name the field.
fn validators() -> &'static (Validator, HashMap<&'static str, Validator>) {
    static VALIDATORS: OnceLock<(Validator, HashMap<&'static str, Validator>)> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let per_type = types()
            .into_iter()
            .map(|kind| {
                let mut document = schema().clone();
                if let Some(root) = document.as_object_mut() {
                    root.remove("oneOf");
                    root.insert("$ref".into(), Value::String(format!("#/$defs/{kind}")));
                }
                (kind, compile(&document))
            })
            .collect();
        (compile(schema()), per_type)
    })
}

/// Checks a message payload against the schema of its `type`, and against the document as a whole.
pub fn check(payload: &Value) -> Result<(), String> {
    let kind = payload["type"].as_str().ok_or("the message has no type")?;
    let (whole, per_type) = validators();
    let validator = per_type.get(kind).ok_or_else(|| format!("{kind} is not in the schema"))?;
    let errors: Vec<String> =
        validator.iter_errors(payload).map(|e| format!("{kind}{}: {e}", e.instance_path())).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if !whole.is_valid(payload) {
        return Err(format!("{kind} matches its definition but not exactly one of the document's"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_defines_every_topic_and_checks_types_and_formats() {
        assert!(types().len() >= 14);
        let id = "0b7e7d8a-3c1e-4f5e-9a51-6c2f4e8b9d10";
        let ok = json!({ "type": "ticket.reissued", "schema_version": 1, "at": "2026-01-01T00:00:00Z",
                         "ticket_id": id, "order_id": id, "event_id": id, "version": 2 });
        assert_eq!(check(&ok), Ok(()));
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("version");
        assert!(
            check(&missing).unwrap_err().contains("\"version\" is a required property"),
            "{:?}",
            check(&missing)
        );
        let mut wrong = ok.clone();
        wrong["version"] = json!("2");
        assert!(check(&wrong).unwrap_err().contains("/version"), "{:?}", check(&wrong));
        let mut old = ok.clone();
        old["schema_version"] = json!(2);
        assert!(check(&old).is_err());
        assert!(check(&json!({ "type": "order.unknown" })).is_err());
        // Formats are asserted: an id that is not a UUID, a time that is not RFC 3339.
        let mut not_uuid = ok.clone();
        not_uuid["order_id"] = json!("o-1");
        assert!(check(&not_uuid).unwrap_err().contains("/order_id"), "{:?}", check(&not_uuid));
        let mut not_time = ok;
        not_time["at"] = json!("yesterday");
        assert!(check(&not_time).unwrap_err().contains("/at"), "{:?}", check(&not_time));
    }
}
