//! Response helpers shared by the objects and the Worker: JSON bodies and RFC 9457 problems.

use std::future::Future;

use serde::de::DeserializeOwned;
use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Request, Response, ResponseBody, Result};

use crate::caller::{Caller, CALLER_HEADER};

/// A JSON response with the given status.
pub fn json<T: serde::Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// The body of an answer (another object's, the core's, a fetched page's) as text, read by the
/// runtime in one piece. `worker`'s own `Response::text` and `json` read a fetched body through a
/// stream reader, and releasing that reader builds a JavaScript `TypeError` with a stack trace
/// through the wasm frames: part of the 4 % of workerd's CPU such errors took on the hold path,
/// where the inventory's answer is read (docs/benchmarks.md, "Where a hold's CPU goes"). The text
/// is decoded as the runtime's `text()` does (invalid UTF-8 replaced, a byte-order mark dropped)
/// where `worker`'s refused invalid UTF-8: every answer read here is JSON from our own objects,
/// the core or Cloudflare.
pub async fn answer_text(resp: &mut Response) -> Result<String> {
    if let ResponseBody::Stream(stream) = resp.body() {
        let whole = worker::web_sys::Response::new_with_opt_readable_stream(Some(stream))?;
        let text = JsFuture::from(whole.text()?).await?;
        return text.as_string().ok_or_else(|| worker::Error::RustError("the body is not text".into()));
    }
    resp.text().await
}

/// The body of an answer as JSON (see [`answer_text`]).
pub async fn answer_json<T: DeserializeOwned>(resp: &mut Response) -> Result<T> {
    Ok(serde_json::from_str(&answer_text(resp).await?)?)
}

/// How long a client told "too many requests" waits when the limit does not say (the per-address
/// and per-visitor windows are a minute).
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 60;

/// A problem+json response; its status comes from the problem. Every `429` carries `Retry-After`
/// ([`DEFAULT_RETRY_AFTER_SECS`] unless the caller sets a closer one).
pub fn problem(p: &Problem) -> Result<Response> {
    let mut resp = Response::from_json(p)?.with_status(p.status);
    resp.headers_mut().set("content-type", PROBLEM_CONTENT_TYPE)?;
    if p.status == 429 {
        resp.headers_mut().set("retry-after", &DEFAULT_RETRY_AFTER_SECS.to_string())?;
    }
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

/// Reads a JSON body of at most `limit` bytes; the problem to answer when it is too large or
/// cannot be read.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    req: &mut Request,
    limit: usize,
) -> std::result::Result<T, Result<Response>> {
    let path = req.path();
    let bytes = req.bytes().await.map_err(|e| malformed(&path, e))?;
    if bytes.len() > limit {
        return Err(problem_of(
            ProblemType::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
            &path,
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| malformed(&path, e))
}

/// What every object's `fetch` does around its routes: refuse a request without an authenticated
/// caller (401), make sure the object's state is loaded, route, and turn a failure into a 500
/// after which `reset` makes the object read its storage again (memory may be ahead of storage
/// after a failed write). `name` names the object in the log and the answer.
pub async fn serve<L, R>(
    req: Request,
    name: &str,
    load: L,
    route: impl FnOnce(Request, String, Caller) -> R,
    reset: impl FnOnce(),
) -> Result<Response>
where
    L: Future<Output = Result<()>>,
    R: Future<Output = Result<Response>>,
{
    let path = req.path();
    let Some(caller) = req.headers().get(CALLER_HEADER)?.as_deref().and_then(Caller::parse) else {
        return problem_of(ProblemType::Unauthorized, "no authenticated caller", &path);
    };
    let answer = match load.await {
        Ok(()) => route(req, path.clone(), caller).await,
        Err(e) => Err(e),
    };
    answer.or_else(|e| {
        crate::log::error(
            "object request failed",
            serde_json::json!({ "object": name, "path": path, "error": e.to_string() }),
        );
        reset();
        problem_of(ProblemType::Internal, format!("the {name} could not complete this request"), &path)
    })
}
