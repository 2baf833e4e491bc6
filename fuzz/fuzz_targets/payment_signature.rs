//! Payment webhooks (`regional_core::payments::signature`, Stripe's scheme): any header is refused
//! unless it carries the MAC of this body with one of the secrets; a delivery we signed is read as
//! the event it carries; what is read is always a verified body.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regional_core::payments::signature::{read_event, sign, verify, Delivery};
use regional_core::payments::stripe::classify;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        header: Option<String>,
        body: Vec<u8>,
        now: i64,
    },
    Signed {
        body: Vec<u8>,
        at: i64,
        secret: u8,
        extra: String,
        edits: Vec<(u16, u8)>,
        skew: i16,
        /// Another body sent under the signature.
        body_edit: Option<Vec<u8>>,
    },
}

fn secrets() -> Vec<String> {
    vec!["whsec_old".into(), "whsec_new".into()]
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { header, body, now } => {
            let delivery = Delivery { signature: header.as_deref(), body: &body, now };
            let got = read_event(&delivery, &secrets(), classify);
            assert!(got.is_err(), "an unsigned webhook was accepted: {header:?}");
            let _ = got.unwrap_err().reason();
        }
        Input::Signed { body, at, secret, extra, edits, skew, body_edit } => {
            let secret = &secrets()[secret as usize % 2];
            // Stripe may add entries of other schemes (v0) to the header.
            let extra: String = extra.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
            let header = format!("{},v0={extra}", sign(secret, at, &body));
            let mut bytes = header.clone().into_bytes();
            for (i, value) in &edits {
                let i = *i as usize % bytes.len();
                bytes[i] = *value;
            }
            let Ok(edited) = String::from_utf8(bytes) else { return };
            let now = at.saturating_add(i64::from(skew));
            let fresh = now.abs_diff(at) <= 300;
            let got = verify(Some(&edited), &body, &secrets(), now, 300);
            if edited == header && fresh {
                assert_eq!(got, Ok(()), "a delivery we signed was refused: {header:?}");
            }
            if got.is_ok() {
                let _ = read_event(
                    &Delivery { signature: Some(&edited), body: &body, now },
                    &secrets(),
                    classify,
                );
            }
            // Nobody without the secret can sign another body.
            if let Some(other) = body_edit.filter(|b| *b != body) {
                let forged = verify(Some(&edited), &other, &secrets(), now, 300);
                assert!(forged.is_err(), "another body passed as signed");
            }
        }
    }
});
