//! Every request body the edge reads, bounded before it is read: a declared `Content-Length` over
//! the route's limit is refused at once (`413 payload-too-large`), and a body that declares none is
//! read a chunk at a time and refused as soon as it passes the limit (a small body with a declared
//! length within the limit is read in one piece). No route reads more than its limit plus one
//! chunk, whoever sends it (the core's internal routes check the signature only after
//! the body is read, so this bound is what stops an unauthenticated flood).

use futures_util::StreamExt as _;
use shared_types::{Problem, ProblemType};
use worker::Request;

use crate::context::{Result, Stop};

/// A hold request (seats named by id, at most a few dozen).
pub const HOLD: usize = 16 * 1024;
/// A buyer's request forwarded to the core (checkout, transfers).
pub const PROXY: usize = 16 * 1024;
/// The join form or JSON (a challenge and its solution, or a Turnstile token).
pub const JOIN: usize = 8 * 1024;
/// The core's calls, but for an inventory.
pub const INTERNAL: usize = 64 * 1024;
/// An inventory pushed by the core (a stadium's seat map is a few megabytes).
pub const INVENTORY: usize = 32 * 1024 * 1024;

/// Bodies up to this size with a declared length are read in one piece; larger ones (an inventory)
/// a chunk at a time, so that a body is never held twice (once in JavaScript, once in wasm) whole.
const WHOLE: usize = 64 * 1024;

fn too_large(limit: usize, path: &str) -> Stop {
    Stop::problem(
        &Problem::new(ProblemType::PayloadTooLarge, format!("the body may be at most {limit} bytes"))
            .with_instance(path)
            .with_extension("limit_bytes", limit.into()),
    )
}

/// The body of `req`, at most `limit` bytes; a `413` answer otherwise.
pub async fn read(req: &mut Request, limit: usize, path: &str) -> Result<Vec<u8>> {
    let declared = req.headers().get("content-length")?.and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit, path));
    }
    if declared == Some(0) {
        return Ok(Vec::new());
    }
    if declared.is_some_and(|n| n <= WHOLE as u64) {
        // A small body with a declared length (every buyer's request) is read whole
        // (`arrayBuffer()`): reading it through a stream reader costs a JavaScript `TypeError` with
        // a stack trace through the wasm frames on every request (releasing the reader's lock
        // builds one), part of the 4 % of workerd's CPU on the hold path that such errors took
        // (docs/benchmarks.md, "Where a hold's CPU goes"). The runtime delivers at most the
        // declared length; the check below holds even if it did not.
        let body = req.bytes().await?;
        if body.len() > limit {
            return Err(too_large(limit, path));
        }
        return Ok(body);
    }
    // No body at all (a GET, or a POST without one): nothing to read.
    let Ok(mut chunks) = req.stream() else { return Ok(Vec::new()) };
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit, path));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
