//! The core's public catalog as the shop's pages read it (`GET /api/v1/catalog/...` on the core),
//! kept by each isolate so that a crowd on the front page or on an event's page costs the core
//! little:
//!
//! - an answer is kept [`TTL_MS`] (the core's own `max-age`) and shown without asking again;
//! - the core gets [`CORE_TIMEOUT_MS`] to answer; when it does not, or fails, an answer kept from
//!   the last [`STALE_MS`] stands in, and the failure is remembered [`FAILURE_MS`], so that a
//!   core that is down does not make every page wait for its timeout;
//! - a 404 is an answer too (an event that is not in the catalog), kept like the others;
//! - at most [`MAX_KEPT`] answers and [`MAX_KEPT_BYTES`] in all (the oldest dropped first), each
//!   at most [`MAX_ANSWER`] bytes: an isolate has 128 MB, and searches are the visitor's to vary.
//!
//! Answers are kept as the core's JSON text and parsed by the page that shows them: one parse per
//! view is cheap next to a request, and it keeps this cache free of every page's types.
//!
//! Not yet: concurrent misses of one path in an isolate each ask the core (no shared in-flight
//! request).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use worker::{Fetch, Headers, Method, Request, RequestInit};

use crate::context::Ctx;

/// How long an isolate keeps the core's answer (the core's own `max-age`).
pub const TTL_MS: f64 = 30_000.0;
/// How old a kept answer may be to stand in when the core fails.
const STALE_MS: f64 = 600_000.0;
/// How long a failure to reach the core is remembered (pages meanwhile do without the core).
const FAILURE_MS: f64 = 5_000.0;
/// How long the core gets to answer.
const CORE_TIMEOUT_MS: u64 = 3_000;
/// The largest answer read from the core (24 events with their descriptions fit many times over).
const MAX_ANSWER: usize = 1024 * 1024;
/// Answers one isolate keeps.
const MAX_KEPT: usize = 256;
/// The bytes of all the answers one isolate keeps.
const MAX_KEPT_BYTES: usize = 8 * 1024 * 1024;

/// The catalog's answer to one path.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200, with its JSON text.
    Found(Rc<str>),
    /// 404: nothing of that name in the catalog.
    Missing,
}

struct Kept {
    /// When the answer was fetched.
    at: f64,
    answer: Option<Answer>,
    /// When asking the core last failed, if after `at`.
    failed_at: Option<f64>,
}

impl Kept {
    fn bytes(&self) -> usize {
        match &self.answer {
            Some(Answer::Found(text)) => text.len(),
            _ => 0,
        }
    }
}

thread_local! {
    /// The core's answers by path (with its query), with when they were fetched.
    static KEPT: RefCell<HashMap<String, Kept>> = RefCell::new(HashMap::new());
}

/// The catalog's answer for `path` (`/api/v1/catalog/events?…`): kept, else the core's, else (the
/// core failing) an older kept one; why not, in words.
pub async fn get(cx: &Ctx<'_>, path: &str) -> Result<Answer, String> {
    let now = durable_objects::now_ms() as f64;
    let (kept, failed_recently) = KEPT.with(|k| {
        let k = k.borrow();
        let entry = k.get(path);
        let fresh_or_stale = entry.and_then(|e| Some((e.at, e.answer.clone()?)));
        (fresh_or_stale, entry.and_then(|e| e.failed_at).is_some_and(|f| now - f < FAILURE_MS))
    });
    if let Some((at, answer)) = &kept {
        if now - at < TTL_MS {
            return Ok(answer.clone());
        }
    }
    let fetched = if failed_recently {
        Err("the core failed a moment ago".to_owned())
    } else {
        match crate::health::with_timeout(CORE_TIMEOUT_MS, ask_core(cx, path)).await {
            Some(answer) => answer,
            None => Err(format!("the core did not answer within {CORE_TIMEOUT_MS} ms")),
        }
    };
    match fetched {
        Ok(answer) => {
            keep(path, Kept { at: now, answer: Some(answer.clone()), failed_at: None });
            Ok(answer)
        }
        Err(e) => {
            if !failed_recently {
                remember_failure(path, now);
            }
            // Logged when the core was asked, not for each view while the failure is remembered.
            if !failed_recently {
                durable_objects::log::error(
                    "the catalog could not be read",
                    serde_json::json!({ "error": e, "path": path, "older_answer_shown": kept.is_some() }),
                );
            }
            match kept {
                Some((at, answer)) if now - at < STALE_MS => Ok(answer),
                _ => Err(e),
            }
        }
    }
}

/// Notes that asking the core for `path` failed at `now`.
fn remember_failure(path: &str, now: f64) {
    let known = KEPT.with(|k| k.borrow_mut().get_mut(path).map(|e| e.failed_at = Some(now)).is_some());
    if !known {
        keep(path, Kept { at: now, answer: None, failed_at: Some(now) });
    }
}

/// Keeps `entry` for `path`, dropping answers too old to stand in and, while over a bound, the
/// oldest.
fn keep(path: &str, entry: Kept) {
    let now = entry.at;
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.remove(path);
        k.retain(|_, e| now - e.at < STALE_MS);
        let mut bytes: usize = k.values().map(Kept::bytes).sum();
        while !k.is_empty() && (k.len() >= MAX_KEPT || bytes + entry.bytes() > MAX_KEPT_BYTES) {
            let Some(oldest) = k.iter().min_by(|a, b| a.1.at.total_cmp(&b.1.at)).map(|(p, _)| p.clone())
            else {
                break;
            };
            bytes -= k.remove(&oldest).map_or(0, |e| e.bytes());
        }
        k.insert(path.to_owned(), entry);
    });
}

async fn ask_core(cx: &Ctx<'_>, path: &str) -> Result<Answer, String> {
    let core = crate::settings::CORE_URL.read(cx.env).ok_or("CORE_URL is not configured")?;
    let fail = |e: worker::Error| e.to_string();
    let headers = Headers::new();
    headers.set("accept", "application/json").map_err(fail)?;
    if let Ok(trace) = crate::web::trace_onward() {
        headers.set("traceparent", &trace.to_string()).map_err(fail)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let url = format!("{}{path}", core.trim_end_matches('/'));
    let request = Request::new_with_init(&url, &init).map_err(fail)?;
    let mut resp = Fetch::Request(request).send().await.map_err(fail)?;
    match resp.status_code() {
        200 => {}
        404 => return Ok(Answer::Missing),
        status => return Err(format!("the catalog answered {status}")),
    }
    let body = resp.bytes().await.map_err(fail)?;
    if body.len() > MAX_ANSWER {
        return Err(format!("the catalog's answer is too large ({} bytes)", body.len()));
    }
    let text = String::from_utf8(body).map_err(|_| "the catalog's answer is not UTF-8".to_owned())?;
    Ok(Answer::Found(text.into()))
}
