//! Middleware of every answer: the request id, and `nosniff`.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The id of one request: the caller's `x-request-id` (or the trace id of its W3C `traceparent`,
/// as the edge sends it) when well-formed, else a new one. It is in every log line of the request
/// (the span) and in the answer's `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn incoming_id(req: &Request) -> Option<String> {
    let headers = req.headers();
    let ok = |s: &str| {
        (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|s| ok(s)) {
        return Some(id.to_owned());
    }
    // traceparent: version-traceid-parentid-flags; the trace id names the whole chain.
    let trace = headers.get("traceparent").and_then(|v| v.to_str().ok())?;
    shared_types::traceparent::TraceParent::parse(trace).map(|t| t.trace_id_hex())
}

pub(crate) async fn request_id(mut req: Request, next: Next) -> Response {
    let id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", value);
    }
    // No answer is ever sniffed into another type.
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// `X-Content-Type-Options: nosniff` (the metrics listener; the API's answers get it in [`request_id`]).
pub(crate) async fn nosniff(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}
