//! The core's internal routes at the edge. Every call must carry the core's signature over method,
//! path, body digest, timestamp and nonce (`shared_types::request_signing`); the edge checks the
//! signature and freshness, the receiving object refuses a nonce it has seen (replay).
//!
//!
//! The routes are [`InternalRoute`] (shared with the core, which builds them): publish or update an
//! inventory (split into shards), one hold and its actions (extend, confirm, reclaim, release,
//! return), the stats (summed over shards), the waiting room's settings and its line, and the end
//! of a buyer's session (closed-loop admission).

use durable_objects::directory::Layout;
use durable_objects::http;
use durable_objects::inventory::{shard_of_hold, Caller};
use serde_json::{json, Value};
use shared_types::ids::{EventId, HoldId};
use shared_types::internal_api::{HoldAction, InternalRoute};
use shared_types::inventory::Inventory;
use shared_types::request_signing::{precheck_request, verify_request, SignedRequest, SIGNATURE_HEADER};
use shared_types::{Problem, ProblemType};
use worker::{Date, Env, Method, Request, Response, Result};

use durable_objects::waiting_room::{
    self as room, call_as, shard_name, EndSession, COORDINATOR_BINDING, SHARD_BINDING,
};
use shared_types::waiting_room::{shard_of_visitor, WaitingRoomSettings};

use crate::holds::invalidate_availability;
use crate::keys::EdgeKeys;
use crate::objects::{self, Call};

/// Verifies the core's signature; on success returns the body and the signed request.
async fn authenticate(
    req: &mut Request,
    keys: &EdgeKeys,
    path: &str,
) -> Result<std::result::Result<(Vec<u8>, SignedRequest), Response>> {
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let header = req.headers().get(SIGNATURE_HEADER)?;
    let method = req.method().to_string();
    let now = Date::now().as_millis() as i64 / 1000;
    let refused = |e: shared_types::request_signing::RequestAuthError| {
        http::problem(
            &Problem::new(ProblemType::Unauthorized, e.to_string())
                .with_instance(path)
                .with_extension("reason", e.reason().into()),
        )
        .map(Err)
    };
    // Refused unread when it cannot be the core's (no signature, one of a key the edge does not
    // trust, or a stale one) or is larger than the route takes.
    if let Err(e) = precheck_request(&keys.core, header.as_deref(), now) {
        return refused(e);
    }
    let inventory = req.method() == Method::Put && path.ends_with("/inventory");
    let limit = if inventory { crate::body::INVENTORY } else { crate::body::INTERNAL };
    let body = match crate::body::read(req, limit, path).await? {
        Ok(body) => body,
        Err(refused) => return Ok(Err(refused)),
    };
    match verify_request(&keys.core, header.as_deref(), &method, &path_and_query, &body, now) {
        Ok(signed) => Ok(Ok((body, signed))),
        Err(e) => refused(e),
    }
}

pub async fn handle(
    mut req: Request,
    env: &Env,
    keys: &EdgeKeys,
    event: &EventId,
    rest: &[&str],
    path: &str,
) -> Result<Response> {
    let (body, signed) = match authenticate(&mut req, keys, path).await? {
        Ok(ok) => ok,
        Err(resp) => return Ok(resp),
    };
    let call = Call { caller: &Caller::Core, nonce: Some(&signed.nonce), shard_index: None };
    let Some(route) = InternalRoute::parse(req.method().as_ref(), rest) else {
        return http::problem_of(ProblemType::NotFound, "no such internal route", path);
    };
    match route {
        InternalRoute::PutInventory => put_inventory(env, event, &body, &signed, path).await,
        InternalRoute::Stats => stats(env, event, path).await,
        InternalRoute::PutWaitingRoom => put_settings(env, event, &body, path).await,
        InternalRoute::WaitingRoom => room_stats(env, event, path).await,
        InternalRoute::EndSession => end_session(env, event, &body, path).await,
        InternalRoute::Hold(hold) => hold_call(env, event, &hold, None, &call, &body, path).await,
        InternalRoute::HoldAction(hold, action) => {
            hold_call(env, event, &hold, Some(action), &call, &body, path).await
        }
    }
}

/// One hold, or an action on it, passed to the inventory object that has it.
async fn hold_call(
    env: &Env,
    event: &EventId,
    hold: &str,
    action: Option<HoldAction>,
    call: &Call<'_>,
    body: &[u8],
    path: &str,
) -> Result<Response> {
    let not_found = || http::problem_of(ProblemType::NotFound, "no such hold", path);
    let (Ok(hold), Some(shard)) = (HoldId::parse(hold), shard_of_hold(hold)) else {
        return not_found();
    };
    let Some(layout) = objects::layout(env, event).await? else { return not_found() };
    let Some(name) = layout.object_name(shard) else { return not_found() };
    let (method, object_path, body) = match action {
        None => (Method::Get, format!("/holds/{hold}"), None),
        Some(HoldAction::Release) => (Method::Delete, format!("/holds/{hold}"), None),
        Some(a) => (
            Method::Post,
            format!("/holds/{hold}/{}", a.as_str()),
            Some(String::from_utf8_lossy(body).into_owned()),
        ),
    };
    let resp = objects::inventory(env, &name, method, &object_path, call, body).await?;
    invalidate_availability(event);
    objects::relay(resp, path).await
}

/// Publishes an inventory: validates it, records the shard layout, and puts each shard's piece
/// into its object (concurrently). A retry of the same version is accepted by every shard that
/// already has it, so the core can simply push again after a partial failure.
async fn put_inventory(
    env: &Env,
    event: &EventId,
    body: &[u8],
    signed: &SignedRequest,
    path: &str,
) -> Result<Response> {
    let inventory: Inventory = match serde_json::from_slice(body) {
        Ok(i) => i,
        Err(e) => {
            return http::problem_of(ProblemType::MalformedRequest, format!("not an inventory: {e}"), path)
        }
    };
    if &inventory.event != event {
        return http::problem_of(ProblemType::ValidationFailed, "the inventory is for another event", path);
    }
    if let Err(errors) = inventory.validate() {
        let problem = Problem::new(ProblemType::ValidationFailed, "the inventory is not valid")
            .with_instance(path)
            .with_extension("errors", serde_json::to_value(&errors)?);
        return http::problem(&problem);
    }
    let shards = inventory.shards();
    let proposed = Layout {
        event: event.clone(),
        sharding: inventory.sharding,
        shards: shards.iter().map(|(name, _)| name.clone()).collect(),
        inventory_version: inventory.version,
    };
    let call = Call { caller: &Caller::Core, nonce: Some(&signed.nonce), shard_index: None };
    let mut resp = objects::directory(
        env,
        event,
        Method::Put,
        "/layout",
        &call,
        Some(serde_json::to_string(&proposed)?),
    )
    .await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, path).await;
    }
    let layout: Layout = resp.json().await?;
    objects::remember_layout(layout.clone());
    // A published event has a waiting room, with the default settings until the core sends some.
    let ensure = serde_json::to_string(&json!({ "event": event }))?;
    let resp =
        room::call(env, COORDINATOR_BINDING, event.as_str(), Method::Post, "/ensure", Some(ensure)).await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, path).await;
    }

    let puts = shards.iter().map(|(name, piece)| {
        let index = layout.index_of(name).unwrap_or(0);
        let object = layout.object_name(index).unwrap_or_default();
        async move {
            let call = Call { caller: &Caller::Core, nonce: Some(&signed.nonce), shard_index: Some(index) };
            let answer = objects::inventory(
                env,
                &object,
                Method::Put,
                "/inventory",
                &call,
                Some(serde_json::to_string(piece)?),
            )
            .await;
            let (status, body) = match answer {
                Ok(mut resp) => (resp.status_code(), resp.json::<Value>().await.unwrap_or(Value::Null)),
                Err(e) => (502, json!({ "detail": e.to_string() })),
            };
            Ok::<_, worker::Error>(json!({ "shard": name, "status": status, "answer": body }))
        }
    });
    let results: Vec<Value> =
        futures_util::future::join_all(puts).await.into_iter().collect::<Result<Vec<_>>>()?;
    invalidate_availability(event);
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != 200).collect();
    if failed.is_empty() {
        return http::json(
            200,
            &json!({ "event": event, "inventory_version": inventory.version, "sharding": inventory.sharding, "shards": results }),
        );
    }
    let status = failed.iter().filter_map(|r| r["status"].as_u64()).max().unwrap_or(502);
    let kind = if status == 409 { ProblemType::Conflict } else { ProblemType::DependencyUnavailable };
    let problem =
        Problem::new(kind, format!("{} of {} shards refused the inventory", failed.len(), results.len()))
            .with_instance(path)
            .with_extension("shards", Value::Array(results.clone()));
    http::problem(&problem)
}

/// Statistics of every shard, with their sums.
async fn stats(env: &Env, event: &EventId, path: &str) -> Result<Response> {
    let Some(layout) = objects::layout(env, event).await? else {
        return http::problem_of(ProblemType::NotFound, "this event is not published at the edge", path);
    };
    let call = Call { caller: &Caller::Core, nonce: None, shard_index: None };
    let names: Vec<String> = (0..layout.shards.len()).filter_map(|i| layout.object_name(i)).collect();
    let answers = futures_util::future::join_all(
        names.iter().map(|n| objects::inventory(env, n, Method::Get, "/stats", &call, None)),
    )
    .await;
    let mut shards = Vec::new();
    let mut totals = json!({ "held": 0, "sold": 0, "available": 0, "capacity": 0 });
    let mut counters = serde_json::Map::new();
    let mut lateness_max = 0i64;
    for (name, answer) in layout.shards.iter().zip(answers) {
        let mut resp = answer?;
        if resp.status_code() != 200 {
            return objects::relay(resp, path).await;
        }
        let shard: Value = resp.json().await?;
        for group in ["sections", "tiers"] {
            for pair in shard[group].as_array().into_iter().flatten() {
                for key in ["held", "sold", "available", "capacity"] {
                    let add = pair[1][key].as_u64().unwrap_or(0);
                    totals[key] = json!(totals[key].as_u64().unwrap_or(0) + add);
                }
            }
        }
        if let Some(stats) = shard["stats"].as_object() {
            for (key, value) in stats {
                if key == "expiry_lateness_max_ms" {
                    lateness_max = lateness_max.max(value.as_i64().unwrap_or(0));
                } else {
                    let sum =
                        counters.get(key).and_then(Value::as_i64).unwrap_or(0) + value.as_i64().unwrap_or(0);
                    counters.insert(key.clone(), json!(sum));
                }
            }
        }
        shards.push(json!({ "shard": name, "stats": shard }));
    }
    counters.insert("expiry_lateness_max_ms".into(), json!(lateness_max));
    http::json(
        200,
        &json!({ "event": event, "sharding": layout.sharding, "totals": totals, "stats": counters, "shards": shards }),
    )
}

/// Waiting-room settings from the core: validated here, applied by the coordinator.
async fn put_settings(env: &Env, event: &EventId, body: &[u8], path: &str) -> Result<Response> {
    let settings: WaitingRoomSettings = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(e) => {
            return http::problem_of(
                ProblemType::MalformedRequest,
                format!("not waiting-room settings: {e}"),
                path,
            )
        }
    };
    if let Err(errors) = settings.validate() {
        return http::problem(
            &Problem::new(ProblemType::ValidationFailed, "the waiting-room settings are not valid")
                .with_instance(path)
                .with_extension("errors", serde_json::to_value(&errors)?),
        );
    }
    let push = serde_json::to_string(&json!({ "event": event, "settings": settings }))?;
    let resp = call_as(
        env,
        COORDINATOR_BINDING,
        event.as_str(),
        Method::Put,
        "/settings",
        Some(push),
        &Caller::Core,
    )
    .await?;
    crate::queue::forget_view(event);
    objects::relay(resp, path).await
}

/// The core says a buyer is done (bought): their session ends now and frees a place under the cap.
async fn end_session(env: &Env, event: &EventId, body: &[u8], path: &str) -> Result<Response> {
    let end: EndSession = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            return http::problem_of(
                ProblemType::MalformedRequest,
                format!("expected {{\"visitor\"}}: {e}"),
                path,
            )
        }
    };
    let Some(view) = crate::queue::view(env, event).await? else {
        return http::problem_of(ProblemType::NotFound, "no such event", path);
    };
    let shard = shard_of_visitor(end.visitor.as_str(), view.settings.queue_shards);
    let resp = call_as(
        env,
        SHARD_BINDING,
        &shard_name(event, shard),
        Method::Post,
        "/sessions/end",
        Some(serde_json::to_string(&end)?),
        &Caller::Core,
    )
    .await?;
    objects::relay(resp, path).await
}

/// The line: the coordinator's view and counters, and each queue shard's (places, storage, memory).
async fn room_stats(env: &Env, event: &EventId, path: &str) -> Result<Response> {
    let mut resp = room::call(env, COORDINATOR_BINDING, event.as_str(), Method::Get, "/stats", None).await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, path).await;
    }
    let mut stats: Value = resp.json().await?;
    let shards = stats["view"]["settings"]["queue_shards"].as_u64().unwrap_or(0) as u16;
    let calls = (0..shards).map(|i| {
        let name = shard_name(event, i);
        async move {
            let mut resp =
                call_as(env, SHARD_BINDING, &name, Method::Get, "/stats", None, &Caller::Core).await?;
            resp.json::<Value>().await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    stats["shards"] = Value::Array(answers.into_iter().map(|a| a.unwrap_or(Value::Null)).collect());
    http::json(200, &stats)
}
