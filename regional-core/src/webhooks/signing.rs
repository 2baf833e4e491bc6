//! The Standard Webhooks signature (https://www.standardwebhooks.com, "Signature scheme"):
//! `webhook-signature: v1,<base64 of HMAC-SHA256(secret, "<webhook-id>.<webhook-timestamp>.<body>")>`,
//! one per secret, space-separated (two during a secret's rotation). A secret is shown to the
//! organizer as `whsec_<base64 of its bytes>`, the form every Standard Webhooks library takes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing secret's length: 256 bits.
const SECRET_BYTES: usize = 32;

/// A fresh secret's bytes.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source");
    bytes
}

/// The secret as the organizer is shown it (once): `whsec_<base64>`.
pub fn display(secret: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(secret))
}

/// One signature, `v1,<base64>`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per secret (the current one first).
pub fn header(secrets: &[Vec<u8>], id: &str, timestamp: i64, body: &str) -> String {
    secrets.iter().map(|s| sign(s, id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example (standard-webhooks/spec, "Signature scheme").
    #[test]
    fn the_specifications_example_signs_as_it_says() {
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_rotation_signs_with_both_secrets() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        let h = header(&[a.clone(), b.clone()], "msg_1", 1, "{}");
        assert_eq!(h, format!("{} {}", sign(&a, "msg_1", 1, "{}"), sign(&b, "msg_1", 1, "{}")));
        assert!(display(&a).starts_with("whsec_") && STANDARD.decode(&display(&a)[6..]).unwrap() == a);
    }
}
