//! Calling the event's Durable Objects: the directory (shard layout, cached briefly per isolate)
//! and the inventory shards. Answers from objects are relayed with the public path as `instance`.

use std::cell::RefCell;
use std::collections::HashMap;

use durable_objects::directory::Layout;
use durable_objects::inventory::Caller;
pub use durable_objects::stub::Call;
use durable_objects::stub::{self, DIRECTORY_BINDING, INVENTORY_BINDING};
use shared_types::ids::EventId;
use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};
use worker::{Env, Method, Response};

use crate::context::{EventCtx, Result, Stop};

/// How long an isolate trusts a layout it read (layouts only grow, and rarely).
const LAYOUT_TTL_MS: f64 = 5_000.0;

thread_local! {
    static LAYOUTS: RefCell<HashMap<EventId, (f64, Layout)>> = RefCell::new(HashMap::new());
}

/// Calls the inventory shard `name`.
pub async fn inventory(
    env: &Env,
    name: &str,
    method: Method,
    path: &str,
    call: &Call<'_>,
    body: Option<String>,
) -> worker::Result<Response> {
    stub::send(env, INVENTORY_BINDING, name, method, path, call, body).await
}

/// `GET path` of every inventory shard of the event at once, as `caller`: the layout, and the
/// shards' answers in its order. A shard's refusal is relayed as the answer; an event not
/// published here is a 404 saying `unpublished`.
pub async fn every_shard<T: serde::de::DeserializeOwned>(
    ev: &EventCtx<'_>,
    caller: &Caller,
    path: &str,
    unpublished: &str,
) -> Result<(Layout, Vec<T>)> {
    let layout =
        layout(ev.env, &ev.event).await?.ok_or_else(|| ev.problem(ProblemType::NotFound, unpublished))?;
    let call = Call::by(caller);
    let names: Vec<String> = (0..layout.shards.len()).filter_map(|i| layout.object_name(i)).collect();
    let calls = names.iter().map(|name| inventory(ev.env, name, Method::Get, path, &call, None));
    let mut parts = Vec::with_capacity(names.len());
    for answer in futures_util::future::join_all(calls).await {
        let mut resp = answer?;
        if resp.status_code() != 200 {
            return Err(relayed(resp, ev.path).await);
        }
        parts.push(durable_objects::http::answer_json(&mut resp).await?);
    }
    Ok((layout, parts))
}

/// The event's shard layout (cached per isolate), or `None` if it is not published here.
pub async fn layout(env: &Env, event: &EventId) -> Result<Option<Layout>> {
    let now = durable_objects::now_ms() as f64;
    let cached = LAYOUTS
        .with(|c| c.borrow().get(event).filter(|(at, _)| now - at < LAYOUT_TTL_MS).map(|(_, l)| l.clone()));
    if cached.is_some() {
        return Ok(cached);
    }
    let call = Call::by(&Caller::Edge);
    let mut resp =
        stub::send(env, DIRECTORY_BINDING, event.as_str(), Method::Get, "/layout", &call, None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    let layout: Layout = durable_objects::http::answer_json(&mut resp).await?;
    remember_layout(layout.clone());
    Ok(Some(layout))
}

/// Puts a layout this isolate just wrote into its cache.
pub fn remember_layout(layout: Layout) {
    let now = durable_objects::now_ms() as f64;
    LAYOUTS.with(|c| c.borrow_mut().insert(layout.event.clone(), (now, layout)));
}

/// Relays an object's answer, giving problems the public path as their `instance`.
pub async fn relay(mut resp: Response, public_path: &str) -> Result<Response> {
    let is_problem = resp.headers().get("content-type")?.is_some_and(|t| t.starts_with(PROBLEM_CONTENT_TYPE));
    if !is_problem {
        return Ok(resp);
    }
    let status = resp.status_code();
    let retry_after = resp.headers().get("retry-after")?;
    let problem = match durable_objects::http::answer_json::<Problem>(&mut resp).await {
        Ok(p) => p.with_instance(public_path),
        Err(_) => Problem::new(ProblemType::Internal, "an object answered an unreadable error")
            .with_instance(public_path),
    };
    let mut out = durable_objects::http::problem(&problem)?;
    if out.status_code() != status {
        out = out.with_status(status);
    }
    if let Some(wait) = retry_after {
        out.headers_mut().set("retry-after", &wait)?;
    }
    Ok(out)
}

/// An object's refusal, relayed as the answer to stop with.
pub async fn relayed(resp: Response, public_path: &str) -> Stop {
    match relay(resp, public_path).await {
        Ok(resp) => Stop::Answer(resp),
        Err(stop) => stop,
    }
}
