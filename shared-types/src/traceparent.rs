//! The W3C Trace Context `traceparent` header (<https://www.w3.org/TR/trace-context/>), as the
//! edge writes it on every call to the core (a trace it starts) and reads it from the core's calls
//! (to log the trace and the core's span): one trace id names a request end to end.
//!
//! Hand-written rather than the `opentelemetry` crate at the edge: the header is 55 characters of
//! fixed format, and the crate would add its context machinery to the Worker's wasm for it. The
//! core uses the `opentelemetry` crate's propagator (same format, tested against this one).

use std::fmt;

/// One `traceparent`: version `00`, a trace id, the sender's span id, the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Lower-case hex only (the specification's form); anything else is not this header.
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TraceParent {
    /// Reads a header value; `None` for anything the specification says to ignore (a bad length
    /// or character, an all-zero id, version `ff`). A later version is read by its first four
    /// fields, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let version = value.get(..2)?;
        let v = hex_bytes::<1>(version)?[0];
        if v == 0xff || (v == 0 && value.len() != 55) || value.len() < 55 {
            return None;
        }
        if v != 0 && value.len() > 55 && value.as_bytes()[55] != b'-' {
            return None;
        }
        let fields: Vec<&str> = value[..55].split('-').collect();
        let [_, trace, parent, flags] = fields.as_slice() else { return None };
        let trace_id = hex_bytes::<16>(trace)?;
        let parent_id = hex_bytes::<8>(parent)?;
        let flags = hex_bytes::<1>(flags)?[0];
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// A new trace (sampled), from 24 random bytes: 16 for the trace id, 8 for the span id.
    pub fn new_root(random: [u8; 24]) -> Self {
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        trace_id.copy_from_slice(&random[..16]);
        parent_id.copy_from_slice(&random[16..]);
        // An all-zero id is invalid; 24 random bytes all zero would be a broken source anyway.
        trace_id[15] |= u8::from(trace_id == [0; 16]);
        parent_id[7] |= u8::from(parent_id == [0; 8]);
        Self { trace_id, parent_id, flags: 0x01 }
    }

    /// The trace id as 32 hex digits (what logs carry).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The parent span id as 16 hex digits.
    pub fn parent_id_hex(&self) -> String {
        hex::encode(self.parent_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.parent_id), self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let t = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id_hex(), "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn what_the_specification_says_to_ignore_is_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n{\"level\":\"error\"}",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version is read by its first four fields.
        let later = format!("01{}-what-comes-next", &EXAMPLE[2..]);
        assert_eq!(TraceParent::parse(&later).unwrap().trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn a_new_trace_is_sampled_and_never_has_an_all_zero_id() {
        let root = TraceParent::new_root([0; 24]);
        assert_eq!(root.flags, 1);
        assert!(TraceParent::parse(&root.to_string()).is_some(), "never an invalid all-zero id");
    }
}
