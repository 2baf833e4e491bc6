//! Signed tokens: queue tickets, admission tokens, hold tokens (and later ticket codes).
//!
//! Format: JWS compact serialization with EdDSA (Ed25519), i.e. `header.payload.signature`, each
//! part base64url without padding; the header names the key (`kid`) and the token kind (`typ`).
//! Standard enough for any JOSE library to verify, small enough for a header or a cookie (about
//! 300 bytes). Verification is pure: the caller passes the clock. Every refusal has a precise
//! [`TokenError`]; a token is accepted only when every check passes.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest token accepted; anything longer is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated between the signer and the verifier, in seconds (for `iat` only: expiry is
/// never extended).
pub const CLOCK_SKEW_SECS: i64 = 5;

/// What a token is for; a token of one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenKind {
    /// A place in an event's waiting room.
    #[serde(rename = "queue")]
    Queue,
    /// Permission to hold seats of an event for a while.
    #[serde(rename = "admission")]
    Admission,
    /// Proof of a hold placed by an inventory object, presented at checkout.
    #[serde(rename = "hold")]
    Hold,
    /// A proof-of-work puzzle the edge handed a visitor before joining a waiting room.
    #[serde(rename = "challenge")]
    Challenge,
    /// The buyer's access to one order (signed by the core at checkout).
    #[serde(rename = "order")]
    Order,
    /// A ticket's code (signed by the core, shown as a QR code, checked at the gate).
    #[serde(rename = "ticket")]
    Ticket,
    /// A ticket offered to someone by e-mail: lets its recipient see and accept (or decline) the
    /// offer (signed by the core; `jti` is the transfer id).
    #[serde(rename = "transfer")]
    Transfer,
    /// A waiting list's offer, mailed to its entry: lets them take the hold that carries it (signed
    /// by the edge; `sub` is the entry's visitor, `jti` the hold, `exp` the offer's end).
    #[serde(rename = "offer")]
    Offer,
    /// A buyer's sign-in link, mailed to their address: lets them list their orders and tickets
    /// for a short while (signed by the core; `aud` is `buyer`, `sub` the address in lower case).
    #[serde(rename = "sign_in")]
    SignIn,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Admission => "admission",
            Self::Hold => "hold",
            Self::Challenge => "challenge",
            Self::Order => "order",
            Self::Ticket => "ticket",
            Self::Transfer => "transfer",
            Self::Offer => "offer",
            Self::SignIn => "sign_in",
        }
    }
}

/// What a hold token grants, beyond the common claims (`jti` is the hold id). The core reads it
/// at checkout, offline, with the edge's public keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldGrant {
    pub hold: crate::ids::HoldId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<crate::ids::SeatId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga_tier: Option<crate::ids::TierId>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ga_quantity: u32,
    /// The seated tier the seats are sold under (absent: the event's first seated tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seated_tier: Option<crate::ids::TierId>,
    /// The hold's expiry in milliseconds (the token's `exp` is the same, in seconds, rounded up).
    pub expires_at_ms: i64,
    /// The hold was already extended for payment when this token was signed: the edge extends it
    /// as it forwards the checkout and signs the token again, so the core need not ask for the
    /// extension itself (`expires_at_ms` is then the extended expiry).
    #[serde(default, skip_serializing_if = "is_false")]
    pub extended: bool,
}

/// What a waiting list's offer token grants, beyond the common claims (`jti` is the hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferGrant {
    pub hold: crate::ids::HoldId,
    /// The entry's number on the list.
    pub entry: u64,
    pub quantity: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a ticket code says, beyond the common claims (`sub` is the ticket id, `jti` is
/// `<ticket>.<version>`, `aud` the event). A scanner verifies it offline with the core's public
/// keys; the version tells a re-issued ticket's old code from its current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketGrant {
    /// The seat, or none for a general-admission place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    pub tier: String,
    /// The holder: the first 16 hex digits of the SHA-256 of their lower-cased e-mail (the code
    /// names who holds it without showing the address to whoever scans it).
    pub holder: String,
    pub version: u32,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported algorithm {0:?}: only EdDSA is accepted")]
    UnsupportedAlgorithm(String),
    #[error("token is a {found} token, expected a {expected} token")]
    WrongKind { expected: &'static str, found: String },
    #[error("token signed by unknown key {0:?}")]
    UnknownKey(String),
    #[error("token signature is not valid")]
    BadSignature,
    #[error("token issued by {found:?}, expected {expected:?}")]
    WrongIssuer { expected: String, found: String },
    #[error("token is for {found:?}, not for this event {expected:?}")]
    WrongAudience { expected: String, found: String },
    #[error("token belongs to another visitor")]
    WrongSubject,
    #[error("token expired at {expired_at} (now {now})")]
    Expired { expired_at: i64, now: i64 },
    #[error("token issued in the future ({issued_at}, now {now})")]
    NotYetValid { issued_at: i64, now: i64 },
}

impl TokenError {
    /// A stable machine-readable reason, for problem+json extensions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported-algorithm",
            Self::WrongKind { .. } => "wrong-kind",
            Self::UnknownKey(_) => "unknown-key",
            Self::BadSignature => "bad-signature",
            Self::WrongIssuer { .. } => "wrong-issuer",
            Self::WrongAudience { .. } => "wrong-event",
            Self::WrongSubject => "wrong-visitor",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
        }
    }
}

/// Why a key could not be read from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("expected <kid>:<base64url 32 bytes>, got something else")]
    Format,
    #[error("key id must be 1 to 64 characters of [A-Za-z0-9._-]")]
    KeyId,
    #[error("key material must be 32 bytes of base64url")]
    Material,
    #[error("public key is not a valid Ed25519 point")]
    InvalidPublicKey,
    #[error("key id {0:?} appears twice")]
    DuplicateKeyId(String),
}

/// The claims every token carries, plus the kind-specific ones in `extra`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims<T> {
    /// Who signed it: `edge` or `core`.
    pub iss: String,
    /// The event it is valid for.
    pub aud: String,
    /// The visitor it belongs to.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds (exclusive: at `exp` it is already expired).
    pub exp: i64,
    /// Unique id of this token (for single-use rules and audit).
    pub jti: String,
    #[serde(flatten)]
    pub extra: T,
}

impl<T> Claims<T> {
    /// The same claims with other kind-specific ones (to read a token's general claims first and
    /// its grant after).
    pub fn with_extra<U>(self, extra: U) -> Claims<U> {
        Claims {
            iss: self.iss,
            aud: self.aud,
            sub: self.sub,
            iat: self.iat,
            exp: self.exp,
            jti: self.jti,
            extra,
        }
    }
}

/// A signing key with its id, read from `<kid>:<base64url seed>` (never printed).
#[derive(Clone)]
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
}

impl TokenSigner {
    /// Reads `<kid>:<base64url 32-byte seed>`.
    pub fn parse(config: &str) -> Result<Self, KeyError> {
        let (kid, seed) = split_key(config)?;
        Ok(Self { kid, key: SigningKey::from_bytes(&seed) })
    }

    /// A signer from raw parts (tests and key generation).
    pub fn from_seed(kid: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        validate_kid(kid)?;
        Ok(Self { kid: kid.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// The key id this signer puts in its tokens.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// This key as its configuration string `<kid>:<base64url seed>` — secret: for writing
    /// configuration (key generation, tests), never for a log.
    pub fn secret_config(&self) -> String {
        format!("{}:{}", self.kid, URL_SAFE_NO_PAD.encode(self.key.to_bytes()))
    }

    /// The matching public key, as `<kid>:<base64url>` for a verifier's key list.
    pub fn public_config(&self) -> String {
        format!("{}:{}", self.kid, URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()))
    }

    /// A key ring holding just this signer's public key.
    pub fn verifying_ring(&self) -> KeyRing {
        let mut keys = BTreeMap::new();
        keys.insert(self.kid.clone(), self.key.verifying_key());
        KeyRing { keys }
    }

    /// Signs raw bytes (request signatures share the token keys).
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Signs `claims` as a token of `kind`.
    pub fn sign<T: Serialize>(&self, kind: TokenKind, claims: &Claims<T>) -> String {
        let signing_input = self.signing_input(kind, claims);
        let signature = self.key.sign(signing_input.as_bytes()).to_bytes();
        assemble(signing_input, &signature)
    }

    /// The first two parts of the token of `kind` with `claims` (`header.payload`): what its
    /// signature covers. With [`assemble`], for a signer that computes the Ed25519 signature with
    /// its platform's own implementation (the edge: WebCrypto) rather than [`TokenSigner::sign`].
    pub fn signing_input<T: Serialize>(&self, kind: TokenKind, claims: &Claims<T>) -> String {
        let header = Header { alg: "EdDSA".into(), kid: self.kid.clone(), typ: kind.as_str().into() };
        // Serializing these plain structs cannot fail.
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        format!("{header}.{payload}")
    }

    /// The 32-byte seed — secret: for importing this key into a platform's own Ed25519 (the edge's
    /// WebCrypto), never for a log.
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

/// A token from its [`TokenSigner::signing_input`] and the Ed25519 signature of it.
pub fn assemble(signing_input: String, signature: &[u8; 64]) -> String {
    let mut token = signing_input;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSigner({}, ***)", self.kid)
    }
}

/// The public keys a verifier trusts, by key id. Several at once during a rotation.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: BTreeMap<String, VerifyingKey>,
}

impl KeyRing {
    /// Reads a comma-separated list of `<kid>:<base64url public key>`.
    pub fn parse(config: &str) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        for entry in config.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (kid, bytes) = split_key(entry)?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey)?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(KeyError::DuplicateKeyId(kid));
            }
        }
        Ok(Self { keys })
    }

    /// Adds the keys of `other` (a rotation: old and new trusted together).
    pub fn merge(mut self, other: &KeyRing) -> Self {
        self.keys.extend(other.keys.iter().map(|(k, v)| (k.clone(), *v)));
        self
    }

    /// The trusted keys as `(kid, base64url public key)`, for publishing them.
    pub fn public_keys(&self) -> impl Iterator<Item = (&str, String)> {
        self.keys.iter().map(|(kid, key)| (kid.as_str(), URL_SAFE_NO_PAD.encode(key.as_bytes())))
    }

    /// The key ids trusted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies a raw signature by key `kid`.
    pub(crate) fn verify_bytes(
        &self,
        kid: &str,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), TokenError> {
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        key.verify_strict(message, &Signature::from_bytes(signature)).map_err(|_| TokenError::BadSignature)
    }

    /// The public key `kid` names, if trusted (for a platform's own Ed25519: the edge's WebCrypto).
    pub fn public_key(&self, kid: &str) -> Option<[u8; 32]> {
        self.keys.get(kid).map(VerifyingKey::to_bytes)
    }

    /// True when no key is trusted (every token would be refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// What a verifier expects of a token besides a good signature.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    pub kind: TokenKind,
    pub issuer: &'a str,
    /// The event the request is about.
    pub audience: &'a str,
    /// The visitor making the request, when known (`None` to accept any visitor).
    pub subject: Option<&'a str>,
    /// The verifier's clock, Unix seconds.
    pub now: i64,
}

/// The event a token says it is for, read without checking anything: only to choose what to
/// expect before [`verify`]ing it (which checks the signature over that same claim).
pub fn unverified_audience(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("aud")?.as_str().map(str::to_owned)
}

/// Verifies `token` and returns its claims, or the first reason to refuse it. The signature is
/// checked before the payload is even decoded.
pub fn verify<T: DeserializeOwned>(
    token: &str,
    keys: &KeyRing,
    expect: &Expectation<'_>,
) -> Result<Claims<T>, TokenError> {
    let token = Unverified::parse(token, expect.kind)?;
    let key = keys.keys.get(token.kid()).ok_or_else(|| TokenError::UnknownKey(token.kid().to_owned()))?;
    let signature = token.signature()?;
    key.verify_strict(token.signing_input(), &Signature::from_bytes(&signature))
        .map_err(|_| TokenError::BadSignature)?;
    token.claims_once_verified(expect)
}

/// A token of the expected kind whose header has been read, its signature not yet checked: the
/// steps of [`verify`] apart, for a verifier that checks the Ed25519 signature with its platform's
/// own implementation (the edge: WebCrypto, native code, four times faster than this crate's in
/// wasm). The order of the checks, and so the reason given for a refusal, is [`verify`]'s: parse,
/// then the key ([`TokenError::UnknownKey`]), then [`Unverified::signature`], then the signature,
/// then [`Unverified::claims_once_verified`].
#[derive(Debug)]
pub struct Unverified<'a> {
    kid: String,
    signing_input: &'a str,
    signature_b64: &'a str,
    payload_b64: &'a str,
}

impl<'a> Unverified<'a> {
    /// Splits `token` and checks its header: the algorithm and the kind.
    pub fn parse(token: &'a str, kind: TokenKind) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let header: Header = decode_json(header_b64, HEADER_ERRORS)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm(header.alg));
        }
        if header.typ != kind.as_str() {
            return Err(TokenError::WrongKind { expected: kind.as_str(), found: header.typ });
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self { kid: header.kid, signing_input, signature_b64, payload_b64 })
    }

    /// The key id the header names.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key id the header names and its public key, if `keys` trusts it
    /// ([`TokenError::UnknownKey`] otherwise).
    pub fn key_in(&self, keys: &KeyRing) -> Result<(&str, [u8; 32]), TokenError> {
        match keys.public_key(&self.kid) {
            Some(public) => Ok((&self.kid, public)),
            None => Err(TokenError::UnknownKey(self.kid.clone())),
        }
    }

    /// What the signature covers (`header.payload`).
    pub fn signing_input(&self) -> &'a [u8] {
        self.signing_input.as_bytes()
    }

    /// The signature's 64 bytes.
    pub fn signature(&self) -> Result<[u8; 64], TokenError> {
        URL_SAFE_NO_PAD
            .decode(self.signature_b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(TokenError::Malformed("signature is not 64 bytes of base64url"))
    }

    /// The claims, checked against `expect` (issuer, expiry, issue time, audience, subject). Only
    /// once the signature over [`Unverified::signing_input`] has been verified with the key
    /// [`Unverified::kid`] names: before that, nothing in them can be trusted.
    pub fn claims_once_verified<T: DeserializeOwned>(
        &self,
        expect: &Expectation<'_>,
    ) -> Result<Claims<T>, TokenError> {
        let claims: Claims<T> = decode_json(self.payload_b64, CLAIMS_ERRORS)?;
        if claims.iss != expect.issuer {
            return Err(TokenError::WrongIssuer { expected: expect.issuer.into(), found: claims.iss });
        }
        if expect.now >= claims.exp {
            return Err(TokenError::Expired { expired_at: claims.exp, now: expect.now });
        }
        if claims.iat > expect.now + CLOCK_SKEW_SECS {
            return Err(TokenError::NotYetValid { issued_at: claims.iat, now: expect.now });
        }
        if claims.aud != expect.audience {
            return Err(TokenError::WrongAudience { expected: expect.audience.into(), found: claims.aud });
        }
        if let Some(subject) = expect.subject {
            if claims.sub != subject {
                return Err(TokenError::WrongSubject);
            }
        }
        Ok(claims)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    kid: String,
    typ: String,
}

/// The two ways a token part can be malformed: (not base64url, not the expected JSON).
const HEADER_ERRORS: (&str, &str) = ("header is not base64url", "header is not the expected JSON");
const CLAIMS_ERRORS: (&str, &str) = ("claims are not base64url", "claims are not the expected JSON");

fn decode_json<T: DeserializeOwned>(
    part: &str,
    errors: (&'static str, &'static str),
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(errors.0))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed(errors.1))
}

fn split_key(config: &str) -> Result<(String, [u8; 32]), KeyError> {
    let (kid, material) = config.trim().split_once(':').ok_or(KeyError::Format)?;
    validate_kid(kid)?;
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(material.trim_end_matches('='))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::Material)?;
    Ok((kid.to_owned(), bytes))
}

fn validate_kid(kid: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&kid.len())
        && kid.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::KeyId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct HoldExtra {
        hold: String,
    }

    fn signer(kid: &str, seed: u8) -> TokenSigner {
        TokenSigner::from_seed(kid, [seed; 32]).unwrap()
    }

    fn claims() -> Claims<HoldExtra> {
        Claims {
            iss: "edge".into(),
            aud: "evt_1".into(),
            sub: "vis_1".into(),
            iat: 1_000,
            exp: 1_600,
            jti: "tok_1".into(),
            extra: HoldExtra { hold: "hld_1".into() },
        }
    }

    fn expect(now: i64) -> Expectation<'static> {
        Expectation { kind: TokenKind::Hold, issuer: "edge", audience: "evt_1", subject: Some("vis_1"), now }
    }

    #[test]
    fn the_steps_apart_sign_and_verify_as_the_whole_does() {
        // The edge signs with WebCrypto from `signing_input` and `assemble`, and verifies with
        // `Unverified`'s steps: the same tokens, the same refusals.
        let s = signer("edge-1", 7);
        let token = s.sign(TokenKind::Hold, &claims());
        let input = s.signing_input(TokenKind::Hold, &claims());
        let signature = SigningKey::from_bytes(&s.seed()).sign(input.as_bytes()).to_bytes();
        assert_eq!(assemble(input, &signature), token);

        let ring = s.verifying_ring();
        let steps = |token: &str, now: i64| -> Result<Claims<HoldExtra>, TokenError> {
            let u = Unverified::parse(token, TokenKind::Hold)?;
            let (_, public) = u.key_in(&ring)?;
            let signature = u.signature()?;
            VerifyingKey::from_bytes(&public)
                .unwrap()
                .verify_strict(u.signing_input(), &Signature::from_bytes(&signature))
                .map_err(|_| TokenError::BadSignature)?;
            u.claims_once_verified(&expect(now))
        };
        let other = signer("edge-2", 8).sign(TokenKind::Hold, &claims());
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 3.., "AAA");
        let wrong_kind = s.sign(TokenKind::Admission, &claims());
        for (token, now) in
            [(&token, 1_200), (&token, 1_600), (&other, 1_200), (&forged, 1_200), (&wrong_kind, 1_200)]
        {
            let whole = verify::<HoldExtra>(token, &ring, &expect(now));
            assert_eq!(format!("{:?}", steps(token, now)), format!("{whole:?}"));
        }
        assert!(steps(&token, 1_200).is_ok());
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let s = signer("edge-1", 7);
        let token = s.sign(TokenKind::Hold, &claims());
        assert!(token.len() < 400, "compact: {} bytes", token.len());
        let got: Claims<HoldExtra> = verify(&token, &s.verifying_ring(), &expect(1_200)).unwrap();
        assert_eq!(got, claims());
    }

    #[test]
    fn rotation_accepts_old_and_new_keys_and_config_round_trips() {
        let (old, new) = (signer("edge-1", 1), signer("edge-2", 2));
        let ring = KeyRing::parse(&format!("{}, {}", old.public_config(), new.public_config())).unwrap();
        assert_eq!(ring.kids().collect::<Vec<_>>(), vec!["edge-1", "edge-2"]);
        for s in [&old, &new] {
            let token = s.sign(TokenKind::Hold, &claims());
            assert!(verify::<HoldExtra>(&token, &ring, &expect(1_200)).is_ok());
        }
        let seed = URL_SAFE_NO_PAD.encode([9u8; 32]);
        assert_eq!(TokenSigner::parse(&format!("k9:{seed}")).unwrap().kid(), "k9");
    }

    #[test]
    fn each_refusal_has_its_precise_reason() {
        let s = signer("edge-1", 7);
        let ring = s.verifying_ring();
        let token = s.sign(TokenKind::Hold, &claims());
        let check = |t: &str, e: &Expectation<'_>| verify::<HoldExtra>(t, &ring, e).unwrap_err().reason();

        assert_eq!(check(&token, &expect(1_600)), "expired");
        assert_eq!(check(&token, &expect(900)), "not-yet-valid");
        assert_eq!(check(&token, &Expectation { audience: "evt_2", ..expect(1_200) }), "wrong-event");
        assert_eq!(check(&token, &Expectation { subject: Some("vis_2"), ..expect(1_200) }), "wrong-visitor");
        assert_eq!(check(&token, &Expectation { issuer: "core", ..expect(1_200) }), "wrong-issuer");
        assert_eq!(check(&token, &Expectation { kind: TokenKind::Admission, ..expect(1_200) }), "wrong-kind");

        let stranger = signer("edge-1", 8).sign(TokenKind::Hold, &claims());
        assert_eq!(check(&stranger, &expect(1_200)), "bad-signature");
        let unknown = signer("edge-9", 7).sign(TokenKind::Hold, &claims());
        assert_eq!(check(&unknown, &expect(1_200)), "unknown-key");

        for bad in ["", "a.b", "a.b.c.d", "!!.x.y", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(check(bad, &expect(1_200)), "malformed", "{bad:?}");
        }
    }

    #[test]
    fn tampering_with_any_claim_breaks_the_signature() {
        let s = signer("edge-1", 7);
        let token = s.sign(TokenKind::Hold, &claims());
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = Claims { sub: "vis_2".into(), ..claims() };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let forged = format!("{head}.{forged_payload}.{sig}");
        let e = verify::<HoldExtra>(&forged, &s.verifying_ring(), &expect(1_200)).unwrap_err();
        assert_eq!(e, TokenError::BadSignature);
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let s = signer("edge-1", 7);
        let token = s.sign(TokenKind::Hold, &claims());
        let (_, rest) = token.split_once('.').unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"edge-1","typ":"hold"}"#);
        let e = verify::<HoldExtra>(&format!("{header}.{rest}"), &s.verifying_ring(), &expect(1_200))
            .unwrap_err();
        assert_eq!(e.reason(), "unsupported-algorithm");
    }

    #[test]
    fn bad_key_configuration_is_refused_clearly() {
        assert_eq!(KeyRing::parse("nocolon").unwrap_err(), KeyError::Format);
        assert_eq!(KeyRing::parse("bad kid:AAAA").unwrap_err(), KeyError::KeyId);
        assert_eq!(KeyRing::parse("k:AAAA").unwrap_err(), KeyError::Material);
        let one = signer("k", 1).public_config();
        assert!(matches!(KeyRing::parse(&format!("{one},{one}")), Err(KeyError::DuplicateKeyId(_))));
        assert!(KeyRing::parse("").unwrap().is_empty());
        assert!(!format!("{:?}", signer("k", 1)).contains(&URL_SAFE_NO_PAD.encode([1u8; 32])));
    }
}
