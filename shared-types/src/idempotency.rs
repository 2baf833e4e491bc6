//! The one rule for an `Idempotency-Key`, wherever one is taken: a hold at the edge (and its
//! inventory object), a checkout, and every creating route of the admin API.

/// Longest key accepted (a UUID, or a client's own prefix and a UUID, fit with room to spare).
pub const MAX_LEN: usize = 128;

/// What [`IdempotencyKey::parse`] says of a key it refuses.
pub const RULE: &str = "must be 1 to 128 visible ASCII characters";

/// A key that follows the rule: 1 to [`MAX_LEN`] visible ASCII characters (no space, no control).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key, or `Err(RULE)`.
    pub fn parse(key: &str) -> Result<Self, &'static str> {
        if valid(key) {
            Ok(Self(key.to_owned()))
        } else {
            Err(RULE)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `key` follows the rule.
pub fn valid(key: &str) -> bool {
    (1..=MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert_eq!(IdempotencyKey::parse(&"k".repeat(MAX_LEN)).unwrap().as_str().len(), MAX_LEN);
        for bad in ["", " ", "a b", "é", "tab\there"] {
            assert_eq!(IdempotencyKey::parse(bad), Err(RULE), "{bad:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_LEN + 1)).is_err());
    }
}
