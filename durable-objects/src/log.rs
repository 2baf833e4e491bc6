//! The edge's logs: one JSON object per line, `{"level", "message", …fields}`, which Workers Logs
//! (`[observability]` in wrangler.toml) index field by field, like the core's `LOG_FORMAT=json`.
//! Every log line of the Worker and its Durable Objects goes through [`error`], [`warn`] or [`info`]; never
//! log a secret or a token (log its key id or a hash instead).

use serde_json::{Map, Value};

/// The JSON line for a message and its fields (an object; anything else is kept under `fields`).
pub fn line(level: &str, message: &str, fields: Value) -> String {
    let mut out = Map::new();
    out.insert("level".into(), level.into());
    out.insert("message".into(), message.into());
    match fields {
        Value::Object(map) => {
            for (k, v) in map {
                if k != "level" && k != "message" {
                    out.insert(k, v);
                }
            }
        }
        Value::Null => {}
        other => {
            out.insert("fields".into(), other);
        }
    }
    Value::Object(out).to_string()
}

/// Logs an error (the Worker's `console.error`).
pub fn error(message: &str, fields: Value) {
    worker::console_error!("{}", line("error", message, fields));
}

/// Logs something an operator should look at, not an error (the Worker's `console.warn`).
pub fn warn(message: &str, fields: Value) {
    worker::console_warn!("{}", line("warn", message, fields));
}

/// Logs an event worth knowing (the Worker's `console.log`).
pub fn info(message: &str, fields: Value) {
    worker::console_log!("{}", line("info", message, fields));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_is_one_json_object_with_level_message_and_fields() {
        let l = line("error", "core unreachable", json!({ "path": "/x", "error": "timed out\nagain" }));
        assert!(!l.contains('\n'), "one line: {l}");
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(
            v,
            json!({ "level": "error", "message": "core unreachable", "path": "/x", "error": "timed out\nagain" })
        );
        // Fields cannot disguise the level or the message.
        let v: Value =
            serde_json::from_str(&line("info", "m", json!({ "level": "error", "message": "x" }))).unwrap();
        assert_eq!(v, json!({ "level": "info", "message": "m" }));
        let v: Value = serde_json::from_str(&line("info", "m", json!(["a"]))).unwrap();
        assert_eq!(v["fields"], json!(["a"]));
    }
}
