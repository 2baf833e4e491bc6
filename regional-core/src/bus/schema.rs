//! The messages' JSON schema (`docs/schemas/events.v1.json`), compiled in, and a check of a
//! payload against it: its type is one the schema defines, its required fields are there and
//! every field it defines has the declared JSON type. Tests run it over every outbox row they make,
//! so that the documentation and the code cannot drift apart.

use std::sync::OnceLock;

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

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_value(path: &str, v: &Value, def: &Value) -> Result<(), String> {
    let allowed: Vec<&str> = match &def["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    let actual = json_type(v);
    if !(allowed.contains(&actual) || (actual == "integer" && allowed.contains(&"number"))) {
        return Err(format!("{path} is {actual}, the schema says {allowed:?}"));
    }
    if let Some(c) = def.get("const") {
        if c != v {
            return Err(format!("{path} is {v}, the schema says {c}"));
        }
    }
    if let (Value::Array(items), Some(item)) = (v, def.get("items")) {
        for (i, x) in items.iter().enumerate() {
            check_value(&format!("{path}[{i}]"), x, item)?;
        }
    }
    if let Value::Object(map) = v {
        for field in def["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                return Err(format!("{path}.{field} is required"));
            }
        }
        for (field, sub) in def["properties"].as_object().into_iter().flatten() {
            if let Some(x) = map.get(field) {
                check_value(&format!("{path}.{field}"), x, sub)?;
            }
        }
    }
    Ok(())
}

/// Checks a message payload against the schema of its `type`.
pub fn check(payload: &Value) -> Result<(), String> {
    let kind = payload["type"].as_str().ok_or("the message has no type")?;
    let def = schema()["$defs"].get(kind).ok_or_else(|| format!("{kind} is not in the schema"))?;
    check_value(kind, payload, def)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_defines_every_topic_and_checks_types() {
        assert!(types().len() >= 14);
        let ok = json!({ "type": "ticket.reissued", "schema_version": 1, "at": "2026-01-01T00:00:00Z",
                         "ticket_id": "t", "order_id": "o", "event_id": "e", "version": 2 });
        assert_eq!(check(&ok), Ok(()));
        let mut missing = ok.clone();
        missing.as_object_mut().unwrap().remove("version");
        assert!(check(&missing).unwrap_err().contains("version is required"));
        let mut wrong = ok.clone();
        wrong["version"] = json!("2");
        assert!(check(&wrong).unwrap_err().contains("is string"));
        let mut old = ok;
        old["schema_version"] = json!(2);
        assert!(check(&old).is_err());
        assert!(check(&json!({ "type": "order.unknown" })).is_err());
    }
}
