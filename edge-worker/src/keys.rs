//! The edge's keys, read from the Worker's environment (wrangler secrets in production,
//! `.local/edge.env` under `wrangler dev`, bindings in tests). Never logged.
//!
//! - `EDGE_SIGNING_KEY` (secret): `<kid>:<base64url seed>`, signs admission and hold tokens.
//! - `EDGE_VERIFYING_KEYS` (optional): earlier edge public keys still trusted during a rotation.
//! - `CORE_VERIFYING_KEYS`: the core's public keys, for its signed requests.

use shared_types::token::{KeyRing, TokenSigner};
use worker::Env;

/// The edge's keys for one request.
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

fn read(env: &Env, name: &'static str) -> Option<String> {
    env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok()
}

impl EdgeKeys {
    pub fn from_env(env: &Env) -> Result<Self, KeyConfigError> {
        let missing = |name| KeyConfigError { name, problem: "not set".into() };
        let bad = |name, e: shared_types::token::KeyError| KeyConfigError { name, problem: e.to_string() };
        let signer =
            TokenSigner::parse(&read(env, "EDGE_SIGNING_KEY").ok_or_else(|| missing("EDGE_SIGNING_KEY"))?)
                .map_err(|e| bad("EDGE_SIGNING_KEY", e))?;
        let earlier = KeyRing::parse(&read(env, "EDGE_VERIFYING_KEYS").unwrap_or_default())
            .map_err(|e| bad("EDGE_VERIFYING_KEYS", e))?;
        let core =
            KeyRing::parse(&read(env, "CORE_VERIFYING_KEYS").ok_or_else(|| missing("CORE_VERIFYING_KEYS"))?)
                .map_err(|e| bad("CORE_VERIFYING_KEYS", e))?;
        Ok(Self { edge: signer.verifying_ring().merge(&earlier), signer, core })
    }
}
