//! The waiting room at the edge: anti-bot checks, joining, polling, the single exchange of an
//! admitted place for an admission token, and leaving. The line itself lives in the queue's
//! Durable Objects (`durable_objects::waiting_room`); this is the edge's side of it.
//!
//! - `mod.rs`          the coordinator's view of the line (cached) and the refusal counts
//! - `screen.rs`       what every join passes first: sane headers, a rate per address, the bot check
//! - `credentials.rs`  the visitor's cookie, queue ticket and admission token, each verified once
//! - `line.rs`         a challenge, a join, a poller's standing (and the exchange), leaving
//! - `api.rs`          the JSON routes for apps:
//!   - `POST   /api/v1/events/{event}/challenge`  a proof-of-work challenge (and a visitor id)
//!   - `POST   /api/v1/events/{event}/queue`      join
//!   - `GET    /api/v1/events/{event}/queue`      status; when admitted, the admission token
//!   - `DELETE /api/v1/events/{event}/queue`      leave
//!
//! Polls cost no Durable Object request: the coordinator's view is cached per isolate for a
//! second and the ticket carries the place. Only joins, exchanges and leaves reach a shard.

pub mod api;
pub mod credentials;
pub mod line;
pub mod screen;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use durable_objects::waiting_room::{call, COORDINATOR_BINDING};
use shared_types::ids::EventId;
use shared_types::waiting_room::RoomView;
use shared_types::{Problem, ProblemType};
use worker::{Env, Method, Response};

use crate::context::{EventCtx, Result, Stop};

/// How long an isolate answers polls from a view before asking the coordinator again.
const VIEW_TTL_MS: f64 = 1_000.0;
/// How often an isolate sends its refusal counts to the coordinator (at most).
const REFUSAL_FLUSH_MS: f64 = 5_000.0;

/// Refusal counts not yet sent, with when this isolate last sent some.
type Refusals = (f64, BTreeMap<String, u64>);

thread_local! {
    static VIEWS: RefCell<HashMap<EventId, (f64, Rc<RoomView>)>> = RefCell::new(HashMap::new());
    static REFUSALS: RefCell<HashMap<EventId, Refusals>> = RefCell::new(HashMap::new());
}

/// The event's line as the coordinator last published it (cached per isolate for a second), or
/// `None` when the event has no waiting room (not published).
pub async fn view(env: &Env, event: &EventId) -> Result<Option<Rc<RoomView>>> {
    let now = durable_objects::now_ms() as f64;
    let cached = VIEWS.with(|v| {
        v.borrow().get(event).filter(|(at, _)| now - at < VIEW_TTL_MS).map(|(_, view)| view.clone())
    });
    if cached.is_some() {
        return Ok(cached);
    }
    let mut resp = call(env, COORDINATOR_BINDING, event.as_str(), Method::Get, "/view", None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    let view = Rc::new(durable_objects::http::answer_json::<RoomView>(&mut resp).await?);
    VIEWS.with(|v| v.borrow_mut().insert(event.clone(), (now, view.clone())));
    Ok(Some(view))
}

/// The event's view, or a 404 for an event without a line.
pub async fn view_or_404(ev: &EventCtx<'_>) -> Result<Rc<RoomView>> {
    view(ev.env, &ev.event).await?.ok_or_else(|| ev.problem(ProblemType::NotFound, "no such event"))
}

/// Forgets the cached view (after this isolate changed the settings).
pub fn forget_view(event: &EventId) {
    VIEWS.with(|v| v.borrow_mut().remove(event));
}

/// A refusal: counted under `reason` (sent to the coordinator now and then), answered as a problem.
pub fn refuse(ev: &EventCtx<'_>, kind: ProblemType, reason: &str, detail: impl Into<String>) -> Stop {
    count_refusal(ev, reason);
    ev.refusal(kind, reason, detail)
}

/// A shard's refusal (a problem answer): counted under its reason and relayed with the public path.
async fn shard_refused(ev: &EventCtx<'_>, mut resp: Response) -> Stop {
    let problem = shard_problem(&mut resp).await;
    count_refusal(ev, problem_reason(&problem));
    Stop::problem(&problem.with_instance(ev.path))
}

/// The problem a shard answered (or one saying it was unreadable).
async fn shard_problem(resp: &mut Response) -> Problem {
    resp.json()
        .await
        .unwrap_or_else(|_| Problem::new(ProblemType::Internal, "the queue answered an unreadable error"))
}

fn problem_reason(problem: &Problem) -> &str {
    problem.extensions.get("reason").and_then(|r| r.as_str()).unwrap_or("refused")
}

/// Counts a refusal under `reason`; every few seconds the counts go to the coordinator (after the
/// answer, so no request waits for it).
pub fn count_refusal(ev: &EventCtx<'_>, reason: &str) {
    let now = durable_objects::now_ms() as f64;
    let flush = REFUSALS.with(|r| {
        let mut r = r.borrow_mut();
        let (last, counts) = r.entry(ev.event.clone()).or_insert((0.0, BTreeMap::new()));
        *counts.entry(reason.to_owned()).or_default() += 1;
        if now - *last >= REFUSAL_FLUSH_MS {
            *last = now;
            Some(std::mem::take(counts))
        } else {
            None
        }
    });
    if let Some(counts) = flush {
        let env = ev.env.clone();
        let event = ev.event.clone();
        ev.worker.wait_until(async move {
            let body = serde_json::to_string(&counts).unwrap_or_default();
            let sent = call(&env, COORDINATOR_BINDING, event.as_str(), Method::Post, "/refusals", Some(body));
            if let Err(e) = sent.await {
                durable_objects::log::error(
                    "refusal counts not delivered",
                    serde_json::json!({ "error": e.to_string() }),
                );
            }
        });
    }
}
