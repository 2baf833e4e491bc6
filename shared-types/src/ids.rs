//! Identifiers that parse instead of validate: a value of these types is always well-formed
//! (1 to 64 characters of `[A-Za-z0-9_-]`), so it is safe in URLs, SQL parameters, logs and keys.
//! They are immutable and shared (`Arc<str>`): the hold path copies ids into holds, indexes and
//! answers, and a copy must cost a reference count, not an allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a string is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
pub struct IdError {
    pub what: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses an identifier, refusing anything empty, longer than 64 or outside `[A-Za-z0-9_-]`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                if is_valid_id(s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError { what: $what })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                if is_valid_id(&s) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(IdError { what: $what })
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An event (the unit a waiting room and an inventory belong to).
    EventId,
    "event id"
);
id_type!(
    /// A visitor: one buyer's browser or app, as the edge identifies it.
    VisitorId,
    "visitor id"
);
id_type!(
    /// A section of a venue's seat map.
    SectionId,
    "section id"
);
id_type!(
    /// A seat, unique within its event.
    SeatId,
    "seat id"
);
id_type!(
    /// A price zone of a seat map.
    ZoneId,
    "zone id"
);
id_type!(
    /// A general-admission tier.
    TierId,
    "tier id"
);
id_type!(
    /// A hold placed by an inventory object.
    HoldId,
    "hold id"
);

fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_safe_strings() {
        assert!(EventId::parse("evt_2026-final").is_ok());
        for bad in ["", "a b", "a/b", "é", "x'; DROP TABLE", &"a".repeat(65)] {
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_deserialize_through_the_same_check() {
        assert_eq!(serde_json::from_str::<SeatId>("\"A-1-1\"").unwrap().as_str(), "A-1-1");
        assert!(serde_json::from_str::<SeatId>("\"A 1\"").is_err());
        assert_eq!(serde_json::to_string(&SeatId::parse("A-1").unwrap()).unwrap(), "\"A-1\"");
    }
}
