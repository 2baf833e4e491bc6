//! The edge as the load generator calls it: signed internal calls (as the core makes them), the
//! visitor cookie, request nonces.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use shared_types::internal_api::InternalRoute;
use shared_types::request_signing::{sign_request, SIGNATURE_HEADER};
use shared_types::token::TokenSigner;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// How long a run keeps an idle connection: below workerd's 5 s `pipelineTimeout`, after which it
/// closes a kept-alive connection; a request sent on it at that moment would fail unread
/// (`IncompleteMessage`) and count as a failed request.
pub const IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_secs(3);

/// The HTTP client of a run: the load generator's User-Agent, `timeout_secs` per request, at most
/// `idle_per_host` idle connections kept per host, each at most [`IDLE_CONNECTION`].
pub fn http_client(timeout_secs: u64, idle_per_host: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_idle_timeout(IDLE_CONNECTION)
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .user_agent(crate::USER_AGENT)
        .pool_max_idle_per_host(idle_per_host)
        .build()
        .map_err(|e| e.to_string())
}

/// The core's signer, from the `CORE_SIGNING_KEY` it was given.
pub fn core_signer(config: &str) -> Result<TokenSigner, String> {
    TokenSigner::parse(config).map_err(|e| format!("CORE_SIGNING_KEY: {e}"))
}

pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::getrandom(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A call to the edge's internal API signed with the core's key: its status and JSON body.
pub async fn core_call(
    client: &reqwest::Client,
    signer: &TokenSigner,
    base: &str,
    event: &str,
    route: &InternalRoute,
    body: Vec<u8>,
) -> Result<(u16, Value), String> {
    core_request(client, signer, base, route.method(), &route.path(event), body).await
}

/// A signed call to the edge's internal API by method and path (with its query, which is signed
/// too): its status and JSON body.
pub async fn core_request(
    client: &reqwest::Client,
    signer: &TokenSigner,
    base: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Value), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let signature = sign_request(signer, method.as_str(), path, &body, unix_now(), &nonce());
    let resp = client
        .request(method, format!("{base}{path}"))
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The `visitor=…` cookie the edge set on a challenge's answer (to send back with the join).
pub fn visitor_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("visitor="))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}
