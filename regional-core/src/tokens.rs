//! The tokens the core signs for buyers (EdDSA, the core's key): order tokens, transfer tokens and
//! ticket codes, and the check of a core token a buyer presents. Formats: docs/tokens.md.

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared_types::token::{
    unverified_audience, verify, Claims, Expectation, KeyRing, TicketGrant, TokenKind, TokenSigner,
};
use uuid::Uuid;

use crate::error::{ApiError, Result};
use crate::models::ticket::TicketRow;

/// The holder as a code names them.
pub fn holder_of(email: &str) -> String {
    hex::encode(&Sha256::digest(email.trim().to_lowercase().as_bytes())[..8])
}

/// A ticket's code: what its QR code carries.
pub fn ticket_code(signer: &TokenSigner, t: &TicketRow) -> String {
    let claims = Claims {
        iss: "core".to_owned(),
        aud: t.event_id.to_string(),
        sub: t.id.to_string(),
        iat: t.created_at.timestamp(),
        exp: (t.ends_at + chrono::Duration::days(1)).timestamp(),
        jti: format!("{}.{}", t.id, t.version),
        extra: TicketGrant {
            seat: t.seat_id.clone(),
            tier: t.tier_id.to_string(),
            holder: holder_of(&t.holder_email),
            version: t.version.max(1) as u32,
        },
    };
    signer.sign(TokenKind::Ticket, &claims)
}

/// How long a buyer's order token lets them see their order.
const ORDER_TOKEN_DAYS: i64 = 400;

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// The buyer's order token.
pub fn order_token(signer: &TokenSigner, order: Uuid, event: Uuid, visitor: &str) -> String {
    let now = now_secs();
    let claims = Claims {
        iss: "core".to_owned(),
        aud: event.to_string(),
        sub: visitor.to_owned(),
        iat: now,
        exp: now + ORDER_TOKEN_DAYS * 86_400,
        jti: order.to_string(),
        extra: json!({}),
    };
    signer.sign(TokenKind::Order, &claims)
}

/// The id a core-signed token of `kind` in `Authorization: Bearer` opens (its `jti`, which must be
/// `id`): order tokens open orders, transfer tokens open transfers.
pub fn authorize_token(trusted: &KeyRing, headers: &HeaderMap, kind: TokenKind, id: &str) -> Result<Uuid> {
    let (a, what) = match kind {
        TokenKind::Transfer => ("a", "transfer"),
        _ => ("an", "order"),
    };
    let token = bearer(headers).ok_or_else(|| ApiError::Token {
        reason: "missing",
        detail: format!("{a} {what} token is required (Authorization: Bearer)"),
    })?;
    let refused =
        |e: shared_types::token::TokenError| ApiError::Token { reason: e.reason(), detail: e.to_string() };
    let audience = unverified_audience(token).ok_or_else(|| ApiError::Token {
        reason: "malformed",
        detail: format!("the {what} token is malformed"),
    })?;
    let expect = Expectation { kind, issuer: "core", audience: &audience, subject: None, now: now_secs() };
    let claims: Claims<Value> = verify(token, trusted, &expect).map_err(refused)?;
    if claims.jti != id {
        return Err(ApiError::NotFound);
    }
    id.parse().map_err(|_| ApiError::NotFound)
}

/// How long a sign-in link works (minutes): long enough to open the mail, short enough that a
/// forwarded or leaked mail is soon useless.
pub const SIGN_IN_MINUTES: i64 = 30;

/// A buyer's sign-in token for `address` (lower case): lists their orders and tickets for
/// [`SIGN_IN_MINUTES`].
pub fn sign_in_token(signer: &TokenSigner, address: &str) -> String {
    let now = now_secs();
    let claims = Claims {
        iss: "core".to_owned(),
        aud: "buyer".to_owned(),
        sub: address.to_owned(),
        iat: now,
        exp: now + SIGN_IN_MINUTES * 60,
        jti: Uuid::new_v4().to_string(),
        extra: json!({}),
    };
    signer.sign(TokenKind::SignIn, &claims)
}

/// The address a sign-in token in `Authorization: Bearer` was mailed to, and when it expires
/// (seconds since the epoch).
pub fn signed_in(trusted: &KeyRing, headers: &HeaderMap) -> Result<(String, i64)> {
    let token = bearer(headers).ok_or_else(|| ApiError::Token {
        reason: "missing",
        detail: "a sign-in token is required (Authorization: Bearer)".into(),
    })?;
    let expect = Expectation {
        kind: TokenKind::SignIn,
        issuer: "core",
        audience: "buyer",
        subject: None,
        now: now_secs(),
    };
    let claims: Claims<Value> = verify(token, trusted, &expect)
        .map_err(|e| ApiError::Token { reason: e.reason(), detail: e.to_string() })?;
    Ok((claims.sub, claims.exp))
}

/// The token in `Authorization: Bearer`, when there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The recipient's token for transfer `id` (what the offer mail links to). Once accepted it is how
/// the recipient reaches their ticket, so it lives until the event is over (and a week past the
/// offer at least, so that a recipient sees what became of an offer they did not take).
pub fn transfer_token(
    signer: &TokenSigner,
    id: Uuid,
    event: Uuid,
    to_email: &str,
    expires_at: DateTime<Utc>,
    event_ends_at: DateTime<Utc>,
) -> String {
    let now = now_secs();
    let claims = Claims {
        iss: "core".to_owned(),
        aud: event.to_string(),
        sub: holder_of(to_email),
        iat: now,
        exp: (expires_at + chrono::Duration::days(7))
            .max(event_ends_at + chrono::Duration::days(1))
            .timestamp(),
        jti: id.to_string(),
        extra: json!({}),
    };
    signer.sign(TokenKind::Transfer, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipients_link_lives_until_the_event_is_over() {
        let signer = TokenSigner::from_seed("core-test", [4; 32]).unwrap();
        let (id, event) = (Uuid::new_v4(), Uuid::new_v4());
        let offer_ends = Utc::now() + chrono::Duration::days(3);
        let event_ends = Utc::now() + chrono::Duration::days(120);
        let token = transfer_token(&signer, id, event, "friend@example.test", offer_ends, event_ends);
        // Checked as the core checks it, on the day before the event ends.
        let audience = event.to_string();
        let expect = shared_types::token::Expectation {
            kind: TokenKind::Transfer,
            issuer: "core",
            audience: &audience,
            subject: None,
            now: (event_ends - chrono::Duration::days(1)).timestamp(),
        };
        let claims: Claims<serde_json::Value> =
            shared_types::token::verify(&token, &signer.verifying_ring(), &expect).expect("still valid");
        assert!(claims.exp >= event_ends.timestamp());
        // An event soon over: the link still outlives the offer by a week.
        let soon = transfer_token(&signer, id, event, "friend@example.test", offer_ends, Utc::now());
        let expect = shared_types::token::Expectation {
            now: (offer_ends + chrono::Duration::days(6)).timestamp(),
            ..expect
        };
        assert!(shared_types::token::verify::<serde_json::Value>(&soon, &signer.verifying_ring(), &expect)
            .is_ok());
    }
}
