//! Check-in (`regional_core::fulfillment::checkin`): a ticket code read at a gate is refused unless
//! we signed it, and one we signed reads as its ticket and version; an offline scanner's batch (the
//! gRPC message's bytes, as a scanner sends them) is decoded and checked without a panic, and a
//! batch that passes comes back in time order, each scan once, within the window.
#![no_main]

use arbitrary::Arbitrary;
use chrono::{TimeZone as _, Utc};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use regional_core::fulfillment::checkin::proto::{OfflineScan, SyncScansRequest};
use regional_core::fulfillment::checkin::{offline_batch, read_code};
use shared_types::token::{Claims, Expectation, TicketGrant, TokenKind, TokenSigner, MAX_TOKEN_LEN};

#[derive(Arbitrary, Debug)]
enum Input {
    Code {
        code: String,
    },
    Signed {
        ticket: Option<u128>,
        sub: String,
        version: u32,
        seat: Option<String>,
    },
    /// Bytes as a scanner sends them.
    Batch(Vec<u8>),
    /// A batch of scans made some seconds before (or after) now, encoded as a scanner would.
    Scans(Vec<(i32, String, String)>),
}

const EVENT: &str = "0b7d6b9e-1f7c-4a51-9a43-5d5c2f0f4b11";
const NOW: i64 = 1_800_000_000;

fn signer() -> TokenSigner {
    TokenSigner::from_seed("core-fuzz", [5; 32]).expect("a valid key id")
}

fn expect() -> Expectation<'static> {
    Expectation { kind: TokenKind::Ticket, issuer: "core", audience: EVENT, subject: None, now: NOW }
}

fuzz_target!(|input: Input| match input {
    Input::Code { code } => {
        assert!(
            read_code(&code, &signer().verifying_ring(), &expect()).is_err(),
            "a forged code was read: {code:?}"
        );
    }
    Input::Signed { ticket, sub, version, seat } => {
        let sub = ticket.map_or(sub, |t| uuid::Uuid::from_u128(t).to_string());
        let claims = Claims {
            iss: "core".into(),
            aud: EVENT.into(),
            sub: sub.clone(),
            iat: NOW - 10,
            exp: NOW + 10,
            jti: format!("{sub}.{version}"),
            extra: TicketGrant { seat, tier: "std".into(), holder: "0123456789abcdef".into(), version },
        };
        let code = signer().sign(TokenKind::Ticket, &claims);
        let got = read_code(&code, &signer().verifying_ring(), &expect());
        match (sub.parse::<uuid::Uuid>(), i32::try_from(version)) {
            // Longer than any token is allowed to be: refused unread, by design (the seat's text
            // can make it so; found by the 10-minute run).
            _ if code.len() > MAX_TOKEN_LEN => assert_eq!(got, Err("malformed")),
            (Ok(t), Ok(v)) => assert_eq!(got, Ok((t, v))),
            _ => assert!(got.is_err(), "a code with no ticket id or an impossible version was read"),
        }
    }
    Input::Scans(scans) => {
        let now = Utc.timestamp_opt(NOW, 0).single().expect("a time");
        let scans = scans
            .into_iter()
            .map(|(offset, gate, code)| OfflineScan {
                code,
                gate,
                scanned_at: (now + chrono::Duration::seconds(i64::from(offset))).to_rfc3339(),
            })
            .collect();
        let request = SyncScansRequest { event_id: EVENT.into(), scans };
        batch(&request.encode_to_vec());
    }
    Input::Batch(bytes) => batch(&bytes),
});

fn batch(bytes: &[u8]) {
    {
        let Ok(request) = SyncScansRequest::decode(bytes) else { return };
        let now = Utc.timestamp_opt(NOW, 0).single().expect("a time");
        let Ok(order) = offline_batch(&request.scans, now) else { return };
        assert_eq!(order.len(), request.scans.len());
        let mut seen = vec![false; order.len()];
        for (i, (at, index)) in order.iter().enumerate() {
            assert!(!std::mem::replace(&mut seen[*index], true), "scan {index} judged twice");
            assert!(i == 0 || order[i - 1].0 <= *at, "scans out of time order");
            assert!(*at <= now + chrono::Duration::minutes(5) && *at >= now - chrono::Duration::days(7));
        }
    }
}
