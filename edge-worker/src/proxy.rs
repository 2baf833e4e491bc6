//! The buyer's routes that the core answers, forwarded by the edge:
//!
//! - `POST /api/v1/checkout`              a hold token becomes an order (`Idempotency-Key`)
//! - `POST /api/v1/checkout/quote`        what that order would cost (the price summary)
//! - `GET  /api/v1/orders/{id}`           the order, with the buyer's order token
//! - `POST /api/v1/orders/{id}/cancel`    the buyer cancels
//! - `GET  /api/v1/orders/{id}/tickets[/{ticket}/qr.svg|qr.png]`  the tickets' codes and QR codes
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/reissue`       a new code for a lost one
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/transfer[/cancel]`  offer a ticket by e-mail, or withdraw the offer
//! - `GET  /api/v1/transfers/{id}[/qr.svg|qr.png]`, `POST …/accept|decline|transfer[/cancel]`  the recipient's side
//! - `GET  /api/v1/keys`                  the core's public keys (for scanners)
//!
//! The edge checks what it can offline first (a checkout's hold token is its own signature), so
//! that junk never reaches the core; it forwards only the headers the core needs, plus the
//! caller's address and a `traceparent` that names the request end to end (a trace started here,
//! the edge being the trust boundary: `web::trace_onward`).

use shared_types::token::{unverified_audience, TokenKind};
use shared_types::{Problem, ProblemType};
use worker::{Fetch, Headers, Method, Request, RequestInit, Response};

use crate::context::{Ctx, Result, Stop};
use crate::keys::EdgeKeys;

/// Headers passed on to the core.
const FORWARDED: [&str; 4] = ["authorization", "idempotency-key", "content-type", "accept"];

/// Refuses a checkout whose hold token the edge itself would not accept.
fn check_hold_token(body: &[u8], keys: &EdgeKeys) -> std::result::Result<(), (String, &'static str)> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ("the body is not JSON".to_owned(), "malformed"))?;
    let token = value["hold_token"].as_str().ok_or(("hold_token is required".to_owned(), "missing"))?;
    let event = unverified_audience(token).ok_or(("the hold token is malformed".to_owned(), "malformed"))?;
    keys.verify::<serde_json::Value>(TokenKind::Hold, token, &event, None)
        .map(|_| ())
        .map_err(|e| (e.to_string(), e.reason()))
}

/// Forwards a buyer's request to the core.
pub async fn forward(cx: &Ctx<'_>, mut req: Request) -> Result<Response> {
    let path = cx.path;
    let keys = cx.keys()?;
    let Some(core) = crate::settings::CORE_URL.read(cx.env) else {
        return Err(cx.problem(ProblemType::DependencyUnavailable, "the core is not configured"));
    };
    let method = req.method();
    let body = crate::body::read(&mut req, crate::body::PROXY, path).await?;
    if path == "/api/v1/checkout" || path == "/api/v1/checkout/quote" {
        if let Err((detail, reason)) = check_hold_token(&body, keys) {
            let kind = if reason == "malformed" && detail.contains("JSON") {
                ProblemType::MalformedRequest
            } else {
                ProblemType::Unauthorized
            };
            return Err(cx.refusal(kind, reason, detail));
        }
    }
    let headers = Headers::new();
    for name in FORWARDED {
        if let Some(v) = req.headers().get(name)? {
            headers.set(name, &v)?;
        }
    }
    let trace = crate::web::trace_onward()?;
    headers.set("traceparent", &trace.to_string())?;
    if let Some(ip) = req.headers().get("cf-connecting-ip")? {
        headers.set("x-forwarded-for", &ip)?;
    }
    let url = format!("{}{}", core.trim_end_matches('/'), req.url()?.path());
    let mut init = RequestInit::new();
    init.with_method(method.clone()).with_headers(headers);
    if method != Method::Get && method != Method::Head {
        init.with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    match Fetch::Request(Request::new_with_init(&url, &init)?).send().await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            // One JSON line, with the trace id the core's logs would have carried.
            let trace_id = trace.trace_id_hex();
            durable_objects::log::error(
                "core unreachable",
                serde_json::json!({ "path": path, "trace_id": trace_id, "error": e.to_string() }),
            );
            Err(Stop::problem(
                &Problem::new(
                    ProblemType::DependencyUnavailable,
                    "the core could not be reached; retry with the same Idempotency-Key",
                )
                .with_instance(path)
                .with_extension("trace_id", trace_id.into()),
            ))
        }
    }
}
