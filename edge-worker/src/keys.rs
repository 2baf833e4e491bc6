//! The edge's keys, read from the Worker's environment (wrangler secrets in production,
//! `.local/edge.env` under `wrangler dev`, bindings in tests). Never logged.
//!
//! - `EDGE_SIGNING_KEY` (secret): `<kid>:<base64url seed>`, signs admission and hold tokens.
//! - `EDGE_VERIFYING_KEYS` (optional): earlier edge public keys still trusted during a rotation.
//! - `CORE_VERIFYING_KEYS`: the core's public keys, for its signed requests.

use std::cell::RefCell;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use shared_types::token::{verify, Claims, Expectation, KeyRing, TokenError, TokenKind, TokenSigner};
use worker::Env;

use crate::settings::{CORE_VERIFYING_KEYS, EDGE_SIGNING_KEY, EDGE_VERIFYING_KEYS};

thread_local! {
    /// Parsed keys, with the configuration text they came from. Parsing derives a public key and
    /// decompresses every trusted one (elliptic-curve work, in wasm): done once per isolate, again
    /// only when the configuration changes.
    static PARSED: RefCell<Option<(String, Rc<EdgeKeys>)>> = const { RefCell::new(None) };
}

/// The edge's keys.
pub struct EdgeKeys {
    pub signer: TokenSigner,
    /// Tokens the edge accepts: its current key plus any earlier ones in `EDGE_VERIFYING_KEYS`.
    pub edge: KeyRing,
    pub core: KeyRing,
}

/// Why the keys could not be read: a deployment error, reported to the operator, never the key.
#[derive(Debug, thiserror::Error)]
#[error("{name} is missing or invalid: {problem}")]
pub struct KeyConfigError {
    pub name: &'static str,
    pub problem: String,
}

impl EdgeKeys {
    /// The keys of this deployment (parsed once per isolate).
    pub fn from_env(env: &Env) -> Result<Rc<Self>, KeyConfigError> {
        let missing = |name| KeyConfigError { name, problem: "not set".into() };
        let signing = EDGE_SIGNING_KEY.read(env).ok_or_else(|| missing("EDGE_SIGNING_KEY"))?;
        let earlier = EDGE_VERIFYING_KEYS.read(env).unwrap_or_default();
        let core = CORE_VERIFYING_KEYS.read(env).ok_or_else(|| missing("CORE_VERIFYING_KEYS"))?;
        let config = format!("{signing}\n{earlier}\n{core}");
        let cached =
            PARSED.with(|p| p.borrow().as_ref().filter(|(c, _)| *c == config).map(|(_, k)| k.clone()));
        if let Some(keys) = cached {
            return Ok(keys);
        }
        let keys = Rc::new(Self::parse(&signing, &earlier, &core)?);
        PARSED.with(|p| *p.borrow_mut() = Some((config, keys.clone())));
        Ok(keys)
    }

    fn parse(signing: &str, earlier: &str, core: &str) -> Result<Self, KeyConfigError> {
        let bad = |name, e: shared_types::token::KeyError| KeyConfigError { name, problem: e.to_string() };
        let signer = TokenSigner::parse(signing).map_err(|e| bad("EDGE_SIGNING_KEY", e))?;
        let earlier = KeyRing::parse(earlier).map_err(|e| bad("EDGE_VERIFYING_KEYS", e))?;
        let core = KeyRing::parse(core).map_err(|e| bad("CORE_VERIFYING_KEYS", e))?;
        Ok(Self { edge: signer.verifying_ring().merge(&earlier), signer, core })
    }
}

impl EdgeKeys {
    /// Verifies a token of `kind` the edge issued for the event `audience` (and, when given, the
    /// visitor `subject`), by this deployment's key or an earlier one still trusted.
    pub fn verify<T: DeserializeOwned>(
        &self,
        kind: TokenKind,
        token: &str,
        audience: &str,
        subject: Option<&str>,
    ) -> Result<Claims<T>, TokenError> {
        let expect =
            Expectation { kind, issuer: "edge", audience, subject, now: durable_objects::now_ms() / 1000 };
        verify(token, &self.edge, &expect)
    }
}
