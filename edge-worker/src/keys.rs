//! The edge's keys, read from the Worker's environment (wrangler secrets in production,
//! `.local/edge.env` under `wrangler dev`, bindings in tests). Never logged.
//!
//! - `EDGE_SIGNING_KEY` (secret): `<kid>:<base64url seed>`, signs admission and hold tokens.
//! - `EDGE_VERIFYING_KEYS` (optional): earlier edge public keys still trusted during a rotation.
//! - `CORE_VERIFYING_KEYS`: the core's public keys, for its signed requests.

use std::cell::RefCell;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use shared_types::token::{
    assemble, verify, Claims, Expectation, KeyRing, TokenError, TokenKind, TokenSigner, Unverified,
};
use wasm_bindgen::JsValue;
use web_sys::CryptoKey;
use worker::Env;
use zeroize::Zeroizing;

use crate::settings::{CORE_VERIFYING_KEYS, EDGE_SIGNING_KEY, EDGE_VERIFYING_KEYS};

thread_local! {
    /// Parsed keys, with the configuration text they came from. Parsing derives a public key and
    /// decompresses every trusted one (elliptic-curve work, in wasm): done once per isolate, again
    /// only when the configuration changes.
    static PARSED: RefCell<Option<(String, Rc<EdgeKeys>)>> = const { RefCell::new(None) };
}

/// The edge's keys.
pub struct EdgeKeys {
    signer: TokenSigner,
    /// Tokens the edge accepts: its current key plus any earlier ones in `EDGE_VERIFYING_KEYS`.
    edge: KeyRing,
    pub core: KeyRing,
    /// The same keys imported into WebCrypto, on first use (`webcrypto.rs`).
    imported: RefCell<Imported>,
}

#[derive(Default)]
struct Imported {
    signing: Option<CryptoKey>,
    verifying: Vec<(String, CryptoKey)>,
    /// An import failed: this runtime has no Ed25519 in WebCrypto, and the keys are used in wasm
    /// from then on (said once in the log, not tried again on every request).
    unsupported: bool,
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
        Ok(Self { edge: signer.verifying_ring().merge(&earlier), signer, core, imported: Default::default() })
    }
}

impl EdgeKeys {
    /// Verifies a token of `kind` the edge issued for the event `audience` (and, when given, the
    /// visitor `subject`), by this deployment's key or an earlier one still trusted. The signature
    /// is checked by WebCrypto (`webcrypto.rs`); the rest, and every reason for a refusal, is
    /// `shared_types::token::verify`'s.
    pub async fn verify<T: DeserializeOwned>(
        &self,
        kind: TokenKind,
        token: &str,
        audience: &str,
        subject: Option<&str>,
    ) -> Result<Claims<T>, TokenError> {
        let expect =
            Expectation { kind, issuer: "edge", audience, subject, now: durable_objects::now_ms() / 1000 };
        let unverified = Unverified::parse(token, kind)?;
        let (kid, public) = unverified.key_in(&self.edge)?;
        let signature = unverified.signature()?;
        let Some(key) = self.verifying_key(kid, &public).await else {
            // No WebCrypto Ed25519 here: the same check in wasm.
            return verify(token, &self.edge, &expect);
        };
        match crate::webcrypto::verify(&key, &signature, unverified.signing_input()).await {
            Ok(true) => unverified.claims_once_verified(&expect),
            Ok(false) => Err(TokenError::BadSignature),
            Err(_) => verify(token, &self.edge, &expect),
        }
    }

    /// Signs `claims` as a token of `kind` with this deployment's key (by WebCrypto when the
    /// runtime has Ed25519, as workerd does; in wasm otherwise).
    pub async fn sign<T: Serialize>(&self, kind: TokenKind, claims: &Claims<T>) -> String {
        let input = self.signer.signing_input(kind, claims);
        if let Some(key) = self.signing_key().await {
            if let Ok(signature) = crate::webcrypto::sign(&key, input.as_bytes()).await {
                return assemble(input, &signature);
            }
        }
        self.signer.sign(kind, claims)
    }

    async fn signing_key(&self) -> Option<CryptoKey> {
        {
            let imported = self.imported.borrow();
            if imported.unsupported || imported.signing.is_some() {
                return imported.signing.clone();
            }
        }
        let seed = Zeroizing::new(self.signer.seed());
        let key = self.imported_or_unsupported(crate::webcrypto::signing_key(&seed).await)?;
        Some(self.imported.borrow_mut().signing.get_or_insert(key).clone())
    }

    async fn verifying_key(&self, kid: &str, public: &[u8; 32]) -> Option<CryptoKey> {
        let find = |imported: &Imported| {
            imported.verifying.iter().find(|(k, _)| k == kid).map(|(_, key)| key.clone())
        };
        {
            let imported = self.imported.borrow();
            if imported.unsupported {
                return None;
            }
            if let Some(key) = find(&imported) {
                return Some(key);
            }
        }
        let key = self.imported_or_unsupported(crate::webcrypto::verifying_key(public).await)?;
        // Another request of this isolate may have imported it meanwhile.
        let mut imported = self.imported.borrow_mut();
        if let Some(key) = find(&imported) {
            return Some(key);
        }
        imported.verifying.push((kid.to_owned(), key.clone()));
        Some(key)
    }

    /// The key imported, or `None` once (and from then on) when the runtime cannot import it.
    fn imported_or_unsupported(
        &self,
        imported: std::result::Result<CryptoKey, JsValue>,
    ) -> Option<CryptoKey> {
        match imported {
            Ok(key) => Some(key),
            Err(e) => {
                let mut state = self.imported.borrow_mut();
                if !state.unsupported {
                    state.unsupported = true;
                    durable_objects::log::warn(
                        "Ed25519 keys cannot be imported into WebCrypto: the edge signs and verifies in wasm",
                        serde_json::json!({ "error": format!("{e:?}") }),
                    );
                }
                None
            }
        }
    }
}
