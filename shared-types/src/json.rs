//! Reading a JSON body as the documents describe it. JSON Schema, which the OpenAPI documents speak,
//! counts a number with a zero fraction (`2.0`) an integer; serde alone refuses it where an integer
//! is wanted. [`from_slice`] reads it as the integer it equals (found by the API fuzzing of both
//! documents, tests/tests/api_fuzz.rs), and nothing else changes: a body that parses as sent is
//! read once, and a key given twice stays refused.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The largest body read a second time ([`from_slice`]): the second reading builds the whole
/// document in memory (tens of bytes for each value), which for a 16 MiB import would be hundreds
/// of megabytes for one request. Larger bodies keep serde's reading: `2.0` there is refused.
pub const REREAD_MAX_BYTES: usize = 256 << 10;

/// `body` as a `T`, a number with a zero fraction read as an integer where one is wanted (bodies
/// up to [`REREAD_MAX_BYTES`]). The error is the first reading's.
pub fn from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body).or_else(|first| {
        // Only a number where an integer is wanted is read again: reading into a `Value` keeps the
        // last of two equal keys, which serde refuses as sent and must stay refused.
        if body.len() > REREAD_MAX_BYTES || !first.to_string().starts_with("invalid type: floating point") {
            return Err(first);
        }
        let Ok(Unique(mut value)) = serde_json::from_slice(body) else { return Err(first) };
        integral_floats_to_integers(&mut value);
        T::deserialize(value).map_err(|_| first)
    })
}

/// A JSON value read like `Value`, except that an object with a key given twice is refused (as serde
/// refuses it for a struct) rather than keeping the last.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Unique;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Unique, E> {
                Ok(Unique(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Unique, E> {
                Ok(Unique(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Unique, E> {
                Ok(Unique(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Unique, E> {
                Ok(Unique(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Unique, E> {
                Ok(Unique(v.into()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Unique, E> {
                Ok(Unique(v.into()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Unique, E> {
                Ok(Unique(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Unique, A::Error> {
                let mut items = Vec::new();
                while let Some(Unique(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Unique(Value::Array(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Unique, A::Error> {
                let mut fields = serde_json::Map::new();
                while let Some((k, Unique(v))) = map.next_entry::<String, Unique>()? {
                    if fields.insert(k.clone(), v).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate field `{k}`")));
                    }
                }
                Ok(Unique(Value::Object(fields)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Whether any string or key of the JSON `body` holds NUL (`\u0000`), read without keeping the
/// document: memory bounded by the nesting depth, whatever the body's size. `None` when the body
/// is not JSON.
pub fn holds_nul(body: &[u8]) -> Option<bool> {
    serde_json::from_slice::<NulScan>(body).ok().map(|scan| scan.0)
}

/// A JSON value seen only for NUL in its strings and keys.
struct NulScan(bool);

impl<'de> Deserialize<'de> for NulScan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NulScan;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<NulScan, E> {
                Ok(NulScan(false))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<NulScan, E> {
                Ok(NulScan(false))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<NulScan, E> {
                Ok(NulScan(false))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<NulScan, E> {
                Ok(NulScan(false))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<NulScan, E> {
                Ok(NulScan(v.contains('\0')))
            }
            fn visit_unit<E>(self) -> std::result::Result<NulScan, E> {
                Ok(NulScan(false))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<NulScan, A::Error> {
                let mut nul = false;
                while let Some(NulScan(found)) = seq.next_element()? {
                    nul |= found;
                }
                Ok(NulScan(nul))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<NulScan, A::Error> {
                let mut nul = false;
                while let Some((NulScan(key), NulScan(value))) = map.next_entry()? {
                    nul |= key || value;
                }
                Ok(NulScan(nul))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// JSON merge patch (RFC 7396): members of `patch` replace those of `target`, objects merge
/// member by member, and `null` removes one. Eight lines; no crate needed.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let (Some(fields), Value::Object(changes)) = (target.as_object_mut(), patch) else {
        *target = patch.clone();
        return;
    };
    for (k, v) in changes {
        if v.is_null() {
            fields.remove(k);
        } else {
            merge_patch(fields.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Join {
        quantity: u32,
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The RFC's own example (section 3), and a patch that is not an object replacing the whole.
        let mut doc = serde_json::json!({ "title": "Goodbye!", "author": { "givenName": "John", "familyName": "Doe" },
                                          "tags": ["example", "sample"], "content": "This will be unchanged" });
        let patch = serde_json::json!({ "title": "Hello!", "phoneNumber": "+01-123-456-7890",
                                        "author": { "familyName": null }, "tags": ["example"] });
        merge_patch(&mut doc, &patch);
        assert_eq!(
            doc,
            serde_json::json!({ "title": "Hello!", "author": { "givenName": "John" }, "tags": ["example"],
                                "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890" })
        );
        merge_patch(&mut doc, &serde_json::json!(["a"]));
        assert_eq!(doc, serde_json::json!(["a"]));
    }

    #[test]
    fn a_zero_fraction_reads_as_an_integer_and_nothing_else_changes() {
        // Found by the API fuzzing of the edge: a waiting-list join with `"quantity": 2.0` was 400.
        assert_eq!(from_slice::<Join>(br#"{"quantity": 2.0}"#).unwrap(), Join { quantity: 2 });
        for refused in
            [r#"{"quantity": 2.5}"#, r#"{"quantity": 1.0, "quantity": 9}"#, r#"{"quantity": 1e40}"#]
        {
            assert!(from_slice::<Join>(refused.as_bytes()).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_large_body_is_not_read_a_second_time() {
        // Found by review: the second reading held a 16 MiB import whole in memory (hundreds of
        // megabytes), for a body refused anyway.
        #[derive(Debug, serde::Deserialize)]
        struct Import {
            #[allow(dead_code)]
            quantity: u32,
            #[allow(dead_code)]
            rows: Vec<u8>,
        }
        let rows = vec!["0"; REREAD_MAX_BYTES / 2].join(",");
        let small = r#"{"quantity": 2.0, "rows": [0]}"#;
        let large = format!(r#"{{"quantity": 2.0, "rows": [{rows}]}}"#);
        assert!(large.len() > REREAD_MAX_BYTES);
        assert!(from_slice::<Import>(small.as_bytes()).is_ok());
        let refused = from_slice::<Import>(large.as_bytes()).unwrap_err();
        assert!(refused.to_string().starts_with("invalid type: floating point"), "{refused}");
    }

    #[test]
    fn nul_is_found_in_strings_and_keys_at_any_depth() {
        for (body, nul) in [
            (r#"["A-1", "x\u0000"]"#, true),
            (r#"{"a\u0000": 1}"#, true),
            (r#"{"a": [{"b": {"c": "\u0000"}}]}"#, true),
            (r#"["\\u0000", {"k": 1.5, "n": null, "t": true}]"#, false),
        ] {
            assert_eq!(holds_nul(body.as_bytes()), Some(nul), "{body}");
        }
        assert_eq!(holds_nul(b"{"), None);
    }
}
