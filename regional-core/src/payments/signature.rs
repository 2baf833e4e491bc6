//! Stripe's documented webhook signature scheme, which the test provider speaks too.
//!
//! Header (`Stripe-Signature`, or `Testpay-Signature`): `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`.
//! Each `v1` is HMAC-SHA256, keyed by an endpoint secret, over `"<t>.<raw body>"`. A delivery is
//! accepted when its timestamp is within the tolerance of now (either way) and some `v1` matches
//! some configured secret (several secrets during a rotation). Other schemes (`v0`, ...) are
//! ignored. Comparison is constant-time.
//!
//! The header is bounded before any work ([`MAX_HEADER_BYTES`], at most [`MAX_SIGNATURES`] `v1`
//! entries of exactly 64 hex digits), and the MAC over the body is computed once per secret, not
//! once per entry: an unauthenticated delivery costs at most one MAC per configured secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::{WebhookEvent, WebhookKind};

/// Default tolerance between the signature's timestamp and now (Stripe's libraries use 300 s).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// The longest signature header taken. Stripe sends one `v1` per endpoint secret (two during a
/// rotation) and perhaps a `v0`: about 150 bytes.
pub const MAX_HEADER_BYTES: usize = 1024;
/// The most `v1` entries taken in one header.
pub const MAX_SIGNATURES: usize = 8;

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
    #[error("the payload is not a webhook event: {0}")]
    Payload(String),
}

impl SignatureError {
    /// A stable reason for problem+json and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing-signature",
            Self::Malformed => "malformed-signature",
            Self::Stale => "stale-signature",
            Self::Mismatch => "bad-signature",
            Self::Payload(_) => "bad-payload",
        }
    }
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// One webhook delivery as it arrived: the signature header, the raw body and the time it is
/// checked at (Unix seconds).
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
    pub now: i64,
}

/// Verifies a delivery, then reads the provider's event: its `id`, and from its `type` and body
/// (`classify`) its kind and the payment it is about (`reference`; empty when none).
pub fn read_event(
    delivery: &Delivery<'_>,
    secrets: &[String],
    classify: for<'e> fn(&str, &'e serde_json::Value) -> (WebhookKind, Option<&'e str>),
) -> Result<WebhookEvent, SignatureError> {
    let Delivery { signature: header, body, now } = *delivery;
    verify(header, body, secrets, now, DEFAULT_TOLERANCE_SECS)?;
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| SignatureError::Payload(e.to_string()))?;
    let id = event["id"].as_str().ok_or_else(|| SignatureError::Payload("no id".into()))?;
    let (kind, reference) = classify(event["type"].as_str().unwrap_or(""), &event);
    Ok(WebhookEvent { id: id.to_owned(), kind, reference: reference.unwrap_or("").to_owned() })
}

/// The header value for `body` signed at `timestamp` with `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks a header against the body, the secrets and the clock.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                // An HMAC-SHA256 is 32 bytes: anything else can never match.
                let sig = unhex(v).filter(|s| s.len() == 32).ok_or(SignatureError::Malformed)?;
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(sig);
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    // One MAC per secret, compared (in constant time) with every entry.
    let matches = secrets.iter().any(|secret| {
        let expected = mac(secret, timestamp, body).finalize().into_bytes();
        signatures
            .iter()
            .fold(false, |found, sig| found | bool::from(expected.as_slice().ct_eq(sig.as_slice())))
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_signed_body_verifies_and_any_change_does_not() {
        let header = sign("whsec_a", NOW, b"{\"x\":1}");
        assert_eq!(verify(Some(&header), b"{\"x\":1}", &secrets(&["whsec_a"]), NOW, 300), Ok(()));
        assert_eq!(
            verify(Some(&header), b"{\"x\":2}", &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), b"{\"x\":1}", &secrets(&["whsec_b"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_tolerance_window_is_enforced_both_ways() {
        let header = sign("s", NOW - 301, b"b");
        assert_eq!(verify(Some(&header), b"b", &secrets(&["s"]), NOW, 300), Err(SignatureError::Stale));
        let header = sign("s", NOW + 301, b"b");
        assert_eq!(verify(Some(&header), b"b", &secrets(&["s"]), NOW, 300), Err(SignatureError::Stale));
        let header = sign("s", NOW - 300, b"b");
        assert_eq!(verify(Some(&header), b"b", &secrets(&["s"]), NOW, 300), Ok(()));
    }

    #[test]
    fn during_a_rotation_either_secret_and_either_signature_is_accepted() {
        let old = sign("old", NOW, b"b");
        let new = sign("new", NOW, b"b");
        let both = format!("{old},{}", new.split_once(',').unwrap().1);
        assert_eq!(verify(Some(&both), b"b", &secrets(&["new"]), NOW, 300), Ok(()));
        assert_eq!(verify(Some(&old), b"b", &secrets(&["new", "old"]), NOW, 300), Ok(()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1800000000", "t=1800000000,v1=zz", "garbage"] {
            assert!(verify(Some(bad), b"b", &secrets(&["s"]), NOW, 300).is_err(), "{bad}");
        }
        assert_eq!(verify(None, b"b", &secrets(&["s"]), NOW, 300), Err(SignatureError::Missing));
        // Only v1 counts: a v0 signature alone is not enough.
        let v0 = sign("s", NOW, b"b").replace("v1=", "v0=");
        assert_eq!(verify(Some(&v0), b"b", &secrets(&["s"]), NOW, 300), Err(SignatureError::Malformed));
    }

    #[test]
    fn a_header_is_bounded_before_any_work() {
        let body = vec![b'x'; 2 << 20];
        // 1,000 empty entries and a 2 MB body took 67 s here: each entry cost a MAC of the body.
        let empties = format!("t={NOW}{}", ",v1=".repeat(1000));
        assert_eq!(verify(Some(&empties), &body, &secrets(&["s"]), NOW, 300), Err(SignatureError::Malformed));
        // Entries of the wrong length, too many entries, or an oversized header: refused unread.
        let short = format!("t={NOW},v1=00");
        assert_eq!(verify(Some(&short), &body, &secrets(&["s"]), NOW, 300), Err(SignatureError::Malformed));
        let nine = format!("t={NOW}{}", format!(",v1={}", "0".repeat(64)).repeat(9));
        assert!(nine.len() <= MAX_HEADER_BYTES);
        assert_eq!(verify(Some(&nine), &body, &secrets(&["s"]), NOW, 300), Err(SignatureError::Malformed));
        let long = format!("t={NOW},v1={},v0={}", "0".repeat(64), "0".repeat(MAX_HEADER_BYTES));
        assert_eq!(verify(Some(&long), &body, &secrets(&["s"]), NOW, 300), Err(SignatureError::Malformed));
        // Eight entries, one of them right, with the rotation's two secrets: accepted.
        let good = sign("s", NOW, &body);
        let eight = format!("{good}{}", format!(",v1={}", "0".repeat(64)).repeat(7));
        assert_eq!(verify(Some(&eight), &body, &secrets(&["old", "s"]), NOW, 300), Ok(()));
    }

    #[test]
    fn matches_stripes_documented_computation() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with openssl:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac whsec_test
        let header = sign("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(header, format!("t=1700000000,v1={}", EXPECTED_DIGEST));
    }

    const EXPECTED_DIGEST: &str = "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91";

    #[test]
    fn a_timestamp_at_the_ends_of_the_integers_is_stale_not_a_panic() {
        // `now - t` overflowed for t = i64::MIN (a panic in a debug build, a wrapped difference
        // in a release one).
        let body = b"{}";
        for t in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let header = sign("s3cret", t, body);
            assert_eq!(
                verify(Some(&header), body, &secrets(&["s3cret"]), NOW, 300),
                Err(SignatureError::Stale)
            );
        }
    }
}
