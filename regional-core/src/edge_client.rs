//! The core's client of the edge's internal API (signed requests, docs/api.md "core → edge").

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use shared_types::ids::VisitorId;
use shared_types::internal_api::{
    HoldAction, HoldAnswer, InternalRoute, SaleBody, BOX_OFFICE_VISITOR_PREFIX,
};
use shared_types::request_signing::{sign_request, SIGNATURE_HEADER};
use shared_types::token::TokenSigner;
use tracing::Instrument as _;

/// The edge's internal API, as the core calls it.
#[derive(Clone)]
pub struct EdgeClient {
    pub base: String,
    pub signer: TokenSigner,
    pub http: reqwest::Client,
}

/// Why a call to the edge did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// No answer, or a 5xx: try again later.
    #[error("edge unreachable: {0}")]
    Unreachable(String),
    /// The edge refused (4xx) with a problem's `reason` (the ledger's refusal, e.g. `hold_expired`).
    #[error("edge refused ({status} {reason}): {detail}")]
    Refused { status: u16, reason: String, detail: String },
}

impl EdgeClient {
    pub fn new(base: &str, signer: TokenSigner) -> Self {
        // Idle connections are dropped after 4 s, before a server's own keep-alive timeout is likely
        // to end them (Node's default is 5 s): a request sent on a connection the server is closing
        // at that moment fails as "error sending request". (Three such failures in a row, despite
        // the retry below, were seen once in CI's API fuzzing against wrangler dev; their cause is
        // not known, and the error now names what caused it.)
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(4))
            .user_agent(concat!("ticketing-core/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_owned(), signer, http }
    }

    /// A signed call of `route` for `event`; a refusal keeps the edge's status and `reason` so that
    /// callers can act on it.
    pub async fn send(&self, event: &str, route: &InternalRoute, body: Vec<u8>) -> Result<Value, EdgeError> {
        let method = reqwest::Method::from_bytes(route.method().as_bytes()).unwrap_or(reqwest::Method::GET);
        let answer = self.send_to(method, &route.path(event), body).await;
        count(call_label(route), &answer);
        answer
    }

    /// A signed `GET` of an internal path (with its query) that [`InternalRoute::path`] began.
    pub async fn get(&self, path_and_query: &str) -> Result<Value, EdgeError> {
        let answer = self.send_to(reqwest::Method::GET, path_and_query, Vec::new()).await;
        count("get", &answer);
        answer
    }

    /// A hold as the edge has it now.
    pub async fn hold(&self, event: &str, hold: &str) -> Result<HoldAnswer, EdgeError> {
        let answer = self.send(event, &InternalRoute::Hold(hold.to_owned()), Vec::new()).await?;
        serde_json::from_value(answer)
            .map_err(|e| EdgeError::Unreachable(format!("the edge's hold is not one: {e}")))
    }

    /// `action` on a hold: the hold as it is after it.
    pub async fn hold_action(&self, event: &str, hold: &str, action: HoldAction) -> Result<Value, EdgeError> {
        let body = if action == HoldAction::Return { b"{}".to_vec() } else { Vec::new() };
        self.send(event, &InternalRoute::HoldAction(hold.to_owned(), action), body).await
    }

    /// Sells a hold (`confirm`, or `reclaim` for one that ended), ending `buyer`'s shopping session
    /// in the same call (closed-loop admission): one call of the edge per sale, not two.
    pub async fn sell(
        &self,
        event: &str,
        hold: &str,
        action: HoldAction,
        buyer: &str,
    ) -> Result<Value, EdgeError> {
        // A box-office sale has no shopping session to end.
        let buyer =
            VisitorId::parse(buyer).ok().filter(|v| !v.as_str().starts_with(BOX_OFFICE_VISITOR_PREFIX));
        let sale = SaleBody { end_session_of: buyer };
        let body = serde_json::to_vec(&sale).unwrap_or_default();
        self.send(event, &InternalRoute::HoldAction(hold.to_owned(), action), body).await
    }

    async fn send_to(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Result<Value, EdgeError> {
        // A client span of its own (a child of the request or task that calls), named to the edge
        // by its traceparent.
        let span = tracing::info_span!(
            "edge call",
            otel.name = %format_args!("edge {method}"),
            otel.kind = "client",
            method = %method,
            path = %path,
        );
        let traceparent = crate::telemetry::traceparent(&span);
        self.send_traced(method, path, body, &traceparent).instrument(span).await
    }

    async fn send_traced(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        traceparent: &str,
    ) -> Result<Value, EdgeError> {
        // A request that never left (a pooled connection the edge had closed, a refused connect)
        // is sent once more with a fresh nonce: every internal route is idempotent.
        let mut attempt = 0;
        let resp = loop {
            let mut nonce = [0u8; 16];
            getrandom::getrandom(&mut nonce).map_err(|e| EdgeError::Unreachable(e.to_string()))?;
            let now = chrono::Utc::now().timestamp();
            let signature =
                sign_request(&self.signer, method.as_str(), path, &body, now, &URL_SAFE_NO_PAD.encode(nonce));
            let sent = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .header(SIGNATURE_HEADER, signature)
                .header("traceparent", traceparent)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(resp) => break resp,
                Err(e) if attempt == 0 && !e.is_timeout() => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(EdgeError::Unreachable(with_causes(&e.without_url()))),
            }
        };
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(answer)
        } else if status.is_server_error() {
            Err(EdgeError::Unreachable(format!(
                "edge answered {status}: {}",
                answer.get("detail").and_then(Value::as_str).unwrap_or("")
            )))
        } else {
            Err(EdgeError::Refused {
                status: status.as_u16(),
                reason: answer.get("reason").and_then(Value::as_str).unwrap_or("").to_owned(),
                detail: answer.get("detail").and_then(Value::as_str).unwrap_or("").to_owned(),
            })
        }
    }
}

/// `e` with what caused it ("error sending request: client error (Connect): tcp connect error:
/// Connection refused"): reqwest's own message alone does not say whether the edge refused, reset
/// or timed out.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.ends_with(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

/// Signed calls to the edge's internal API since start, by call (`extend`, `confirm`,
/// `end_session`…, a fixed set) and outcome (`ok`, `refused`, `unreachable`): what each order costs
/// the edge besides the buyer's own requests (`ticketing_edge_calls_total` in `/metrics`).
pub static CALLS: std::sync::LazyLock<Family<crate::figures::Labels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// A call's label in `ticketing_edge_calls` (a fixed set, whatever the ids).
fn call_label(route: &InternalRoute) -> &'static str {
    match route {
        InternalRoute::PutInventory => "put_inventory",
        InternalRoute::Stats => "stats",
        InternalRoute::Layout => "layout",
        InternalRoute::PutWaitingRoom => "put_waiting_room",
        InternalRoute::WaitingRoom => "waiting_room",
        InternalRoute::EndSession => "end_session",
        InternalRoute::Waitlist => "waitlist",
        InternalRoute::WaitlistRecords => "waitlist_records",
        InternalRoute::WaitlistEntries => "waitlist_entries",
        InternalRoute::WaitlistOffers => "waitlist_offers",
        InternalRoute::CloseWaitlist => "close_waitlist",
        InternalRoute::ForgetWaitlistAddress => "forget_waitlist_address",
        InternalRoute::PlaceHold => "place_hold",
        InternalRoute::Hold(_) => "hold",
        InternalRoute::HoldAction(_, action) => action.as_str(),
    }
}

fn count(call: &'static str, answer: &Result<Value, EdgeError>) {
    let outcome = match answer {
        Ok(_) => "ok",
        Err(EdgeError::Refused { .. }) => "refused",
        Err(EdgeError::Unreachable(_)) => "unreachable",
    };
    CALLS.get_or_create(&vec![("call", call.to_owned()), ("outcome", outcome.to_owned())]).inc();
}

impl EdgeError {
    /// The refusal's reason (empty for an unreachable edge).
    pub fn reason(&self) -> &str {
        match self {
            Self::Unreachable(_) => "",
            Self::Refused { reason, .. } => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_edge_that_refuses_the_connection_is_named_so() {
        // A port nobody listens on: bound then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let signer = shared_types::token::TokenSigner::from_seed("core-test", [4; 32]).unwrap();
        let edge = EdgeClient::new(&format!("http://127.0.0.1:{port}"), signer);
        let Err(EdgeError::Unreachable(why)) = edge.get("/internal/events/x/stats").await else {
            panic!("an edge not listening is unreachable")
        };
        assert!(why.to_lowercase().contains("connection refused"), "{why}");
        assert_eq!(why.matches("error sending request").count(), 1, "{why}");
    }
}
