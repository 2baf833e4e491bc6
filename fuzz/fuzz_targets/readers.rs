//! The small readers of what a caller sends: the W3C `traceparent` header (`TraceParent::parse`,
//! read by the edge and the core from every call), the `Idempotency-Key` rule
//! (`IdempotencyKey::parse`, for holds, checkouts and every creating admin route), the pages' form
//! bodies (`form::form_fields`, what the edge reads from a waiting-list join or a bot check), and a
//! proof-of-work solution (`waiting_room::pow_valid`, the answer a visitor chooses to the line's
//! bot check). Each against an oracle written apart from the code: the specification's grammar
//! checked character by character, the key's rule as a character class, the form encoder, and
//! SHA-256 counted bit by bit.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use shared_types::form::{form_body, form_fields};
use shared_types::idempotency::{IdempotencyKey, MAX_LEN};
use shared_types::traceparent::TraceParent;
use shared_types::waiting_room::{pow_solve, pow_valid, MAX_POW_SOLUTION_LEN};

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text as a `traceparent`.
    TraceParent(String),
    /// A `traceparent` made of well-formed parts (so that the fuzzer reaches the checks after the
    /// grammar), then edited.
    TraceParts {
        version: u8,
        trace: [u8; 16],
        parent: [u8; 8],
        flags: u8,
        tail: String,
        edit: Option<(u8, u8)>,
    },
    /// Any text as an `Idempotency-Key`.
    Key(String),
    /// Any bytes as a form body.
    Form(Vec<u8>),
    /// Fields written as a form body, then read.
    Fields(Vec<(String, String)>),
    /// Any solution to any challenge at any difficulty; and a challenge solved at a low one.
    Pow {
        challenge: String,
        solution: String,
        difficulty: u8,
    },
    Solve {
        challenge: String,
        difficulty: u8,
    },
}

/// Leading zero bits of SHA-256 of `challenge.solution`, counted bit by bit.
fn zero_bits(challenge: &str, solution: &str) -> u32 {
    let digest = Sha256::digest(format!("{challenge}.{solution}").as_bytes());
    let bits = digest.iter().flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1));
    bits.take_while(|bit| *bit == 0).count() as u32
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// What W3C Trace Context (level 1, "traceparent header") says a reader accepts, position by
/// position: `vv-tttt…(32)-pppp…(16)-ff`, lower-case hex, version `ff` invalid, version `00`
/// exactly 55 characters, a later version 55 characters or more with a `-` after them, neither id
/// all zeros. Surrounding white space is not the header's (HTTP strips it).
fn accepted(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let b = value.trim().as_bytes();
    if b.len() < 55 {
        return None;
    }
    for (i, c) in b[..55].iter().enumerate() {
        let dash = matches!(i, 2 | 35 | 52);
        if dash != (*c == b'-') || (!dash && !is_lower_hex(*c)) {
            return None;
        }
    }
    let hex = |from: usize, to: usize| -> Vec<u8> {
        (from..to)
            .step_by(2)
            .map(|i| u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap(), 16).unwrap())
            .collect()
    };
    let version = hex(0, 2)[0];
    if version == 0xff || (version == 0 && b.len() != 55) || (version != 0 && b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace: [u8; 16] = hex(3, 35).try_into().unwrap();
    let parent: [u8; 8] = hex(36, 52).try_into().unwrap();
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, hex(53, 55)[0]))
}

fn check_traceparent(value: &str) {
    let got = TraceParent::parse(value);
    assert_eq!(
        got.map(|t| (t.trace_id, t.parent_id, t.flags)),
        accepted(value),
        "traceparent {value:?} read otherwise than the specification says"
    );
    if let Some(t) = got {
        // What is read is written back as version 00, which reads as the same.
        let written = t.to_string();
        assert_eq!(written.len(), 55);
        assert_eq!(TraceParent::parse(&written), Some(t), "{written:?} does not read back");
        assert_eq!(t.trace_id_hex().len(), 32);
        assert_eq!(t.parent_id_hex().len(), 16);
    }
}

fuzz_target!(|input: Input| match input {
    Input::TraceParent(value) => check_traceparent(&value),
    Input::TraceParts { version, trace, parent, flags, tail, edit } => {
        let mut value = format!("{version:02x}-{}-{}-{flags:02x}{tail}", hex(&trace), hex(&parent));
        if let Some((at, byte)) = edit {
            let mut bytes = value.into_bytes();
            let at = at as usize % bytes.len();
            bytes[at] = byte;
            value = String::from_utf8_lossy(&bytes).into_owned();
        }
        check_traceparent(&value);
    }
    Input::Key(key) => {
        let rule = (1..=MAX_LEN).contains(&key.len()) && key.chars().all(|c| ('!'..='~').contains(&c));
        match IdempotencyKey::parse(&key) {
            Ok(k) => {
                assert!(rule, "{key:?} accepted against the rule");
                assert_eq!(k.as_str(), key);
                assert_eq!(k.to_string(), key);
            }
            Err(_) => assert!(!rule, "{key:?} refused though it follows the rule"),
        }
    }
    Input::Form(body) => {
        // Whatever is read, written out again, reads as the same fields.
        let fields = form_fields(&body);
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(form_fields(form_body(&pairs).as_bytes()), fields, "{body:?} does not read back");
    }
    Input::Fields(fields) => {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = form_body(&pairs);
        assert!(body.bytes().all(|b| b.is_ascii_graphic()), "a form body holds {body:?}");
        let last: HashMap<String, String> = fields.into_iter().collect();
        assert_eq!(form_fields(body.as_bytes()), last, "{body:?} read otherwise than written");
    }
    Input::Pow { challenge, solution, difficulty } => {
        let shape = (1..=MAX_POW_SOLUTION_LEN).contains(&solution.len())
            && solution.chars().all(|c| c.is_ascii_alphanumeric());
        assert_eq!(
            pow_valid(&challenge, &solution, difficulty),
            shape && zero_bits(&challenge, &solution) >= u32::from(difficulty),
            "{challenge:?} {solution:?} at {difficulty}"
        );
    }
    Input::Solve { challenge, difficulty } => {
        // What the buyer's page finds is accepted (at most 10 bits: about a thousand hashes).
        let difficulty = difficulty % 11;
        let solution = pow_solve(&challenge, difficulty);
        assert!(pow_valid(&challenge, &solution, difficulty), "{challenge:?} at {difficulty}: {solution:?}");
        assert!(zero_bits(&challenge, &solution) >= u32::from(difficulty));
    }
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
