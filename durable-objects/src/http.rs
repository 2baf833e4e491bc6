//! Response helpers shared by the objects and the Worker: JSON bodies and RFC 9457 problems.

use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
use worker::{Response, Result};

/// A JSON response with the given status.
pub fn json<T: serde::Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// A problem+json response; its status comes from the problem.
pub fn problem(p: &Problem) -> Result<Response> {
    let mut resp = Response::from_json(p)?.with_status(p.status);
    resp.headers_mut().set("content-type", PROBLEM_CONTENT_TYPE)?;
    Ok(resp)
}

/// Shorthand for a problem of `kind` about `instance` (usually the request path).
pub fn problem_of(kind: ProblemType, detail: impl Into<String>, instance: &str) -> Result<Response> {
    problem(&Problem::new(kind, detail).with_instance(instance))
}

/// A `malformed-request` problem for a body that could not be read.
pub fn malformed(instance: &str, e: impl std::fmt::Display) -> Result<Response> {
    problem_of(ProblemType::MalformedRequest, format!("the body could not be read: {e}"), instance)
}
