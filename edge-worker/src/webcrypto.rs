//! Ed25519 through the runtime's WebCrypto (`crypto.subtle`; in workerd BoringSSL, native code),
//! for the edge's tokens: the same signatures as `ed25519-dalek` computes in wasm, about four times
//! cheaper (on this project's machine in workerd: a signature 14.5 µs against 56 µs, a verification
//! 38.5 µs against 152 µs; docs/benchmarks.md, "Where a hold's CPU goes"). The token format stays
//! `shared_types::token`'s: only the curve arithmetic moves.
//!
//! Keys are imported once per isolate (`keys.rs` keeps them with the parsed configuration). The
//! verification is WebCrypto's Ed25519 (RFC 8032, the scalar `S` checked canonical), which differs
//! from `ed25519-dalek`'s `verify_strict` in two checks it leaves out: a public key of small order
//! (the edge verifies only with its own configured keys, never with one a caller brings) and a
//! signature's `R` of small order (such an `R` verifies only with `S` computed from the secret
//! key, so it forges nothing). No token the wasm path refused is accepted here for another
//! reason: the header, the key id and every claim are checked by the same code
//! (`shared_types::token::Unverified`).

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CryptoKey, SubtleCrypto};
use worker::js_sys::{Array, ArrayBuffer, Object, Reflect, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;

/// PKCS #8 of an Ed25519 private key (RFC 8410) is this prefix and the 32-byte seed.
const PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

fn subtle() -> Result<SubtleCrypto, JsValue> {
    let crypto = Reflect::get(&worker::js_sys::global(), &"crypto".into())?;
    Ok(Reflect::get(&crypto, &"subtle".into())?.unchecked_into())
}

fn ed25519() -> Result<Object, JsValue> {
    let algorithm = Object::new();
    Reflect::set(&algorithm, &"name".into(), &"Ed25519".into())?;
    Ok(algorithm)
}

async fn import(format: &str, data: &Uint8Array, usage: &str) -> Result<CryptoKey, JsValue> {
    let usages = Array::of1(&usage.into());
    let promise = subtle()?.import_key_with_object(format, data, &ed25519()?, false, &usages)?;
    Ok(JsFuture::from(promise).await?.unchecked_into())
}

/// The signing key of `seed` (not extractable: the runtime keeps it). The PKCS #8 copy handed to
/// JavaScript is zeroed once imported; the caller wipes `seed`.
pub async fn signing_key(seed: &[u8; 32]) -> Result<CryptoKey, JsValue> {
    let data = Uint8Array::new_with_length(48);
    data.subarray(0, 16).copy_from(&PKCS8_PREFIX);
    data.subarray(16, 48).copy_from(seed);
    let key = import("pkcs8", &data, "sign").await;
    data.fill(0, 0, 48);
    key
}

/// The verifying key of the 32-byte public key `raw`.
pub async fn verifying_key(raw: &[u8; 32]) -> Result<CryptoKey, JsValue> {
    import("raw", &Uint8Array::from(&raw[..]), "verify").await
}

/// The Ed25519 signature of `message` by `key`.
pub async fn sign(key: &CryptoKey, message: &[u8]) -> Result<[u8; 64], JsValue> {
    let promise = subtle()?.sign_with_object_and_u8_array(&ed25519()?, key, message)?;
    let buffer: ArrayBuffer = JsFuture::from(promise).await?.unchecked_into();
    let mut signature = [0u8; 64];
    let bytes = Uint8Array::new(&buffer);
    if bytes.length() != 64 {
        return Err(JsValue::from_str("an Ed25519 signature is 64 bytes"));
    }
    bytes.copy_to(&mut signature);
    Ok(signature)
}

/// Whether `signature` is `key`'s over `message`.
pub async fn verify(key: &CryptoKey, signature: &[u8; 64], message: &[u8]) -> Result<bool, JsValue> {
    let promise =
        subtle()?.verify_with_object_and_u8_array_and_u8_array(&ed25519()?, key, signature, message)?;
    Ok(JsFuture::from(promise).await?.as_bool() == Some(true))
}
