//! Every HTTP request's bounds, in one place: how large its body may be (per route) and how long it
//! may take. A body over its route's limit is refused `413` before it is read when it says its
//! length, and as soon as it passes the limit when it does not; a request over the time limit is
//! answered `503`. Both are problem+json, and neither changes anything. An address carrying NUL
//! (`%00`) is refused `400` before any route sees it.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};

use crate::error::{problem_response, ApiError};

/// The largest body any route takes: seat maps of the largest venues (a 100,000-seat CSV is about
/// 4 MB). Also the ceiling set on axum's own limit.
pub const MAX_BODY: usize = 16 << 20;
/// A provider's webhook: Stripe's events are a few kilobytes; kept apart from the default so that
/// either can change alone.
pub const WEBHOOK_BODY: usize = 256 << 10;
/// The SMS provider's delivery reports and incoming messages: a form of about 20 short fields.
pub const SMS_BODY: usize = 16 << 10;
/// Everything else: JSON documents an organizer or a buyer sends.
pub const DEFAULT_BODY: usize = 256 << 10;

/// The body limit of a route (its template, as matched).
pub fn body_limit(method: &Method, route: &str) -> usize {
    match (method.as_str(), route) {
        ("POST", "/api/v1/venues") | ("PUT", "/api/v1/venues/{id}/seats") => MAX_BODY,
        ("POST", "/api/v1/webhooks/{provider}") => WEBHOOK_BODY,
        ("POST", "/api/v1/sms/status" | "/api/v1/sms/incoming") => SMS_BODY,
        _ => DEFAULT_BODY,
    }
}

/// How long a request may take by default (`CORE_REQUEST_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn too_large(limit: usize) -> Response {
    problem_response(
        &Problem::new(ProblemType::PayloadTooLarge, format!("the body may be at most {limit} bytes"))
            .with_extension("limit_bytes", limit.into()),
    )
}

/// The middleware: the route's body limit, then the time limit.
pub async fn bound(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    // PostgreSQL's text cannot hold NUL: an address carrying one (`%00`) is refused here rather
    // than failing in the database as a 500 (found by the API fuzzing).
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return ApiError::Malformed("the address may not contain NUL (%00)".into()).into_response();
    }
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let limit = body_limit(req.method(), &route);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let req = req.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    match tokio::time::timeout(timeout, next.run(req)).await {
        // axum's own refusal of a body that passed the limit while streaming is plain text.
        Ok(resp) if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_problem(&resp) => too_large(limit),
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(route, seconds = timeout.as_secs(), "request timed out");
            ApiError::Unavailable(format!("the request took longer than {} s", timeout.as_secs()))
                .into_response()
        }
    }
}

fn is_problem(resp: &Response) -> bool {
    resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_CONTENT_TYPE.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_maps_get_room_and_the_rest_stays_small() {
        assert_eq!(body_limit(&Method::PUT, "/api/v1/venues/{id}/seats"), MAX_BODY);
        assert_eq!(body_limit(&Method::POST, "/api/v1/webhooks/{provider}"), WEBHOOK_BODY);
        assert_eq!(body_limit(&Method::POST, "/api/v1/checkout"), DEFAULT_BODY);
        assert_eq!(body_limit(&Method::POST, "/api/v1/sms/status"), SMS_BODY);
        assert_eq!(body_limit(&Method::GET, ""), DEFAULT_BODY);
    }
}
