//! Tokens and ticket codes (`shared_types::token`): any string as a token is refused (nobody can
//! forge a signature); a token we signed verifies to exactly its claims, and any change to its
//! text makes it refused; key configurations parse or are refused, never panic.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shared_types::token::{
    unverified_audience, verify, Claims, Expectation, KeyRing, TicketGrant, TokenKind, TokenSigner,
    MAX_TOKEN_LEN,
};

const KINDS: [TokenKind; 8] = [
    TokenKind::Queue,
    TokenKind::Admission,
    TokenKind::Hold,
    TokenKind::Challenge,
    TokenKind::Order,
    TokenKind::Ticket,
    TokenKind::Transfer,
    TokenKind::Offer,
];

#[derive(Arbitrary, Debug)]
struct Signed {
    kind: u8,
    iss: String,
    aud: String,
    sub: String,
    iat: u32,
    life: u16,
    jti: String,
    seat: Option<String>,
    tier: String,
    holder: String,
    version: u32,
    /// Byte edits (position, value) applied to the token's text.
    edits: Vec<(u16, u8)>,
    /// Seconds after `iat` the token is checked.
    age: u16,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw { token: String, kind: u8, audience: String, now: u32 },
    Signed(Signed),
    Keys { config: String },
}

fn signer() -> TokenSigner {
    TokenSigner::from_seed("fuzz-1", [7; 32]).expect("a valid key id")
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { token, kind, audience, now } => {
            let expect = Expectation {
                kind: KINDS[kind as usize % KINDS.len()],
                issuer: "core",
                audience: &audience,
                subject: None,
                now: i64::from(now),
            };
            let _ = unverified_audience(&token);
            let got = verify::<TicketGrant>(&token, &signer().verifying_ring(), &expect);
            assert!(got.is_err(), "a token nobody signed was accepted: {token:?}");
            let _ = got.unwrap_err().reason();
        }
        Input::Signed(s) => signed(s),
        Input::Keys { config } => {
            let _ = KeyRing::parse(&config);
            if let Ok(signer) = TokenSigner::parse(&config) {
                // What a key writes of itself reads back as the same key.
                let again = TokenSigner::parse(&signer.secret_config()).expect("its own config");
                assert_eq!(again.public_config(), signer.public_config());
                let ring = KeyRing::parse(&signer.public_config()).expect("its own public config");
                assert!(ring.kids().eq([signer.kid()]));
            }
        }
    }
});

fn signed(s: Signed) {
    let kind = KINDS[s.kind as usize % KINDS.len()];
    let iat = i64::from(s.iat);
    let claims = Claims {
        iss: s.iss,
        aud: s.aud,
        sub: s.sub,
        iat,
        exp: iat + 1 + i64::from(s.life),
        jti: s.jti,
        extra: TicketGrant { seat: s.seat, tier: s.tier, holder: s.holder, version: s.version },
    };
    let token = signer().sign(kind, &claims);
    let mut bytes = token.clone().into_bytes();
    for (at, value) in &s.edits {
        let at = *at as usize % bytes.len();
        bytes[at] = *value;
    }
    let Ok(edited) = String::from_utf8(bytes) else { return };
    let now = iat + i64::from(s.age) % (1 + i64::from(s.life));
    let expect =
        Expectation { kind, issuer: &claims.iss, audience: &claims.aud, subject: Some(&claims.sub), now };
    let got = verify::<TicketGrant>(&edited, &signer().verifying_ring(), &expect);
    if token.len() > MAX_TOKEN_LEN {
        // Longer than any verifier reads: refused whatever it says.
        assert!(got.is_err(), "a token longer than {MAX_TOKEN_LEN} bytes was accepted");
    } else if edited == token {
        assert_eq!(got.as_ref(), Ok(&claims), "a token we signed did not verify to its claims");
        assert_eq!(unverified_audience(&token).as_deref(), Some(claims.aud.as_str()));
    } else {
        assert!(got.is_err(), "a changed token was accepted: {token:?} became {edited:?}");
    }
}
