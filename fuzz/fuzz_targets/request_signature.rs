//! The core's signed requests to the edge (`shared_types::request_signing`): any header is refused
//! unless we signed it; a request we signed verifies, and what verifies is exactly what was signed
//! (method, path, body, time, nonce), whatever was changed on the way.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shared_types::request_signing::{precheck_request, sign_request, verify_request};
use shared_types::token::TokenSigner;

#[derive(Arbitrary, Debug)]
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    ts: i64,
    nonce: String,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        header: Option<String>,
        request: Request,
        now: u32,
    },
    Signed {
        request: Request,
        edits: Vec<(u16, u8)>,
        method_edit: Option<String>,
        path_edit: Option<String>,
        body_edit: Option<Vec<u8>>,
        skew: i8,
    },
}

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-fuzz", [9; 32]).expect("a valid key id")
}

fuzz_target!(|input: Input| {
    let ring = signer().verifying_ring();
    match input {
        Input::Raw { header, request: r, now } => {
            let now = i64::from(now);
            let _ = precheck_request(&ring, header.as_deref(), now);
            let got = verify_request(&ring, header.as_deref(), &r.method, &r.path, &r.body, now);
            assert!(got.is_err(), "an unsigned request was accepted: {header:?}");
        }
        Input::Signed { request: r, edits, method_edit, path_edit, body_edit, skew } => {
            let ts = r.ts;
            let header = sign_request(&signer(), &r.method, &r.path, &r.body, ts, &r.nonce);
            let mut bytes = header.clone().into_bytes();
            for (at, value) in &edits {
                let at = *at as usize % bytes.len();
                bytes[at] = *value;
            }
            let Ok(edited) = String::from_utf8(bytes) else { return };
            let method = method_edit.unwrap_or_else(|| r.method.clone());
            let path = path_edit.unwrap_or_else(|| r.path.clone());
            let body = body_edit.unwrap_or_else(|| r.body.clone());
            let now = ts.saturating_add(i64::from(skew));
            let checked = precheck_request(&ring, Some(&edited), now);
            match verify_request(&ring, Some(&edited), &method, &path, &body, now) {
                Ok(got) => {
                    // What verified is what was signed.
                    assert_eq!(
                        (got.signed_at, got.nonce.as_str(), got.kid.as_str()),
                        (ts, r.nonce.as_str(), "core-fuzz")
                    );
                    assert_eq!((path.as_str(), body.as_slice()), (r.path.as_str(), r.body.as_slice()));
                    // The method is signed as upper case: any other spelling of another method fails.
                    assert_eq!(
                        method.to_ascii_uppercase(),
                        r.method.to_ascii_uppercase(),
                        "another method verified"
                    );
                    assert!(checked.is_ok(), "verified but its precheck refused it: {checked:?}");
                }
                Err(e) => {
                    let _ = e.reason();
                    // Unchanged and fresh, it must verify, when its nonce is one the header allows.
                    let fresh = now.abs_diff(ts) <= 60;
                    let nonce_ok = (16..=64).contains(&r.nonce.len())
                        && r.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    assert!(
                        !(edited == header
                            && method == r.method
                            && path == r.path
                            && body == r.body
                            && nonce_ok
                            && fresh),
                        "a request we signed was refused: {e:?}"
                    );
                }
            }
        }
    }
});
