//! The core's internal routes at the edge. Every call must carry the core's signature over method,
//! path, body digest, timestamp and nonce (`shared_types::request_signing`); the edge checks the
//! signature and freshness, the receiving object refuses a nonce it has seen (replay).
//!
//! The routes are [`InternalRoute`] (shared with the core, which builds them): publish or update an
//! inventory (split into shards), a box-office hold, one hold and its actions (extend, confirm, reclaim, release,
//! return), the stats (summed over shards), the waiting room's settings and its line, and the end
//! of a buyer's session (closed-loop admission).

use durable_objects::directory::Layout;
use durable_objects::http;
use durable_objects::inventory::Caller;
use durable_objects::inventory::HoldRequest;
use durable_objects::stub::{send, DIRECTORY_BINDING, WAITLIST_BINDING};
use durable_objects::waiting_room::{call, shard_name, EndSession, COORDINATOR_BINDING, SHARD_BINDING};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shared_types::ids::VisitorId;
use shared_types::internal_api::{CoreHoldBody, HoldAction, InternalRoute, SaleBody};
use shared_types::inventory::Inventory;
use shared_types::request_signing::{precheck_request, verify_request, SignedRequest, SIGNATURE_HEADER};
use shared_types::traceparent::TraceParent;
use shared_types::waiting_room::{shard_of_visitor, WaitingRoomSettings};
use shared_types::{Problem, ProblemType};
use worker::{Method, Request, Response};

use crate::context::{EventCtx, Result, Stop};
use crate::holds::{hold_object, invalidate_availability};
use crate::objects::{self, Call};

/// Verifies the core's signature; on success returns the body and the signed request.
async fn authenticate(ev: &EventCtx<'_>, req: &mut Request) -> Result<(Vec<u8>, SignedRequest)> {
    let url = req.url()?;
    let path_and_query = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let header = req.headers().get(SIGNATURE_HEADER)?;
    let method = req.method().to_string();
    let now = durable_objects::now_ms() / 1000;
    let keys = ev.keys()?;
    let refused = |e: shared_types::request_signing::RequestAuthError| {
        ev.refusal(ProblemType::Unauthorized, e.reason(), e.to_string())
    };
    // Refused unread when it cannot be the core's (no signature, one of a key the edge does not
    // trust, or a stale one) or is larger than the route takes.
    precheck_request(&keys.core, header.as_deref(), now).map_err(refused)?;
    let inventory = req.method() == Method::Put && ev.path.ends_with("/inventory");
    let limit = if inventory { crate::body::INVENTORY } else { crate::body::INTERNAL };
    let body = crate::body::read(req, limit, ev.path).await?;
    let signed = verify_request(&keys.core, header.as_deref(), &method, &path_and_query, &body, now)
        .map_err(refused)?;
    Ok((body, signed))
}

/// A signed call of the core's to `/internal/v1/events/{event}/{rest}`.
///
/// Each call the core signed is logged once, with its outcome and the trace it belongs to (the
/// core's `traceparent`: its trace id and the core's span that made the call), so that the core's
/// exported trace and the edge's log line can be joined. Calls that fail authentication are not
/// logged one by one (they are counted as refusals).
pub async fn handle(ev: &EventCtx<'_>, mut req: Request, rest: &[&str]) -> Result<Response> {
    let (body, signed) = authenticate(ev, &mut req).await?;
    let trace = req.headers().get("traceparent")?.as_deref().and_then(TraceParent::parse);
    let method = req.method();
    let answer = route_call(ev, &req, rest, &body, &signed).await;
    let status = match &answer {
        Ok(resp) | Err(Stop::Answer(resp)) => resp.status_code(),
        Err(Stop::Fault(_)) => 500,
    };
    durable_objects::log::info(
        "core call",
        serde_json::json!({
            "method": method.to_string(),
            "path": ev.path,
            "status": status,
            "trace_id": trace.map(|t| t.trace_id_hex()),
            "parent_id": trace.map(|t| t.parent_id_hex()),
        }),
    );
    answer
}

async fn route_call(
    ev: &EventCtx<'_>,
    req: &Request,
    rest: &[&str],
    body: &[u8],
    signed: &SignedRequest,
) -> Result<Response> {
    let call = Call { caller: &Caller::Core, nonce: Some(&signed.nonce), shard_index: None };
    let Some(route) = InternalRoute::parse(req.method().as_ref(), rest) else {
        return Err(ev.problem(ProblemType::NotFound, "no such internal route"));
    };
    match route {
        InternalRoute::PutInventory => put_inventory(ev, body, signed).await,
        InternalRoute::Stats => stats(ev).await,
        InternalRoute::Layout => layout(ev).await,
        InternalRoute::PutWaitingRoom => put_settings(ev, body).await,
        InternalRoute::WaitingRoom => room_stats(ev).await,
        InternalRoute::EndSession => end_session(ev, body).await,
        InternalRoute::Waitlist => waitlist_call(ev, Method::Get, "/summary", None).await,
        InternalRoute::WaitlistRecords => {
            let query = req.url()?.query().map(|q| format!("?{q}")).unwrap_or_default();
            waitlist_call(ev, Method::Get, &format!("/records{query}"), None).await
        }
        InternalRoute::WaitlistEntries => waitlist_call(ev, Method::Get, "/entries", None).await,
        InternalRoute::CloseWaitlist => waitlist_call(ev, Method::Post, "/close", None).await,
        InternalRoute::ForgetWaitlistAddress => {
            let forget: ForgetAddress = parse(ev, body, "{\"email\"}")?;
            let body = json!({ "email": forget.email }).to_string();
            waitlist_call(ev, Method::Post, "/forget", Some(body)).await
        }
        InternalRoute::WaitlistOffers => crate::waitlist::offers_to_mail(ev, req).await,
        InternalRoute::PlaceHold => place_hold(ev, &call, body).await,
        InternalRoute::Hold(hold) => hold_call(ev, &hold, None, &call, body).await,
        InternalRoute::HoldAction(hold, action) => hold_call(ev, &hold, Some(action), &call, body).await,
    }
}

/// The body of [`InternalRoute::ForgetWaitlistAddress`] (an erasure request).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetAddress {
    email: String,
}

/// The body of a call of the core's, or a 400 naming what it should have been.
fn parse<T: DeserializeOwned>(ev: &EventCtx<'_>, body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not {what}: {e}")))
}

/// A 422 listing what is wrong with a body.
fn invalid<E: serde::Serialize>(ev: &EventCtx<'_>, detail: &str, errors: &E) -> Result<Stop> {
    Ok(Stop::problem(
        &Problem::new(ProblemType::ValidationFailed, detail)
            .with_instance(ev.path)
            .with_extension("errors", serde_json::to_value(errors)?),
    ))
}

/// A box-office hold (docs/box-office.md): to the shard its request names, as the core's call;
/// the object checks the visitor and the request and answers `{"hold", "replayed"}`.
async fn place_hold(ev: &EventCtx<'_>, call: &Call<'_>, body: &[u8]) -> Result<Response> {
    let placed: CoreHoldBody = parse(ev, body, "a box-office hold ({\"visitor\", \"request\"})")?;
    let request: HoldRequest = serde_json::from_value(placed.request.clone())
        .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not a hold request: {e}")))?;
    let layout = objects::layout(ev.env, &ev.event)
        .await?
        .ok_or_else(|| ev.problem(ProblemType::NotFound, "this event is not on sale"))?;
    let shard = crate::holds::shard_for(&layout, &request)
        .map_err(|detail| ev.problem(ProblemType::ValidationFailed, detail))?;
    let name = layout.object_name(shard).unwrap_or_default();
    let body = serde_json::to_string(&placed)?;
    let resp = objects::inventory(ev.env, &name, Method::Post, "/holds", call, Some(body)).await?;
    invalidate_availability(&ev.event);
    objects::relay(resp, ev.path).await
}

/// One hold, or an action on it, passed to the inventory object that has it.
async fn hold_call(
    ev: &EventCtx<'_>,
    hold: &str,
    action: Option<HoldAction>,
    call: &Call<'_>,
    body: &[u8],
) -> Result<Response> {
    let name = hold_object(ev, hold).await?;
    // A sale's body names the buyer whose session ends with it; the object reads no body there.
    let (sale, body) = match action {
        Some(HoldAction::Confirm | HoldAction::Reclaim) if !body.is_empty() => {
            (parse::<SaleBody>(ev, body, "a sale's body ({\"end_session_of\"})")?, &[][..])
        }
        _ => (SaleBody::default(), body),
    };
    let (method, object_path, body) = match action {
        None => (Method::Get, format!("/holds/{hold}"), None),
        Some(HoldAction::Release) => (Method::Delete, format!("/holds/{hold}"), None),
        Some(a) => (
            Method::Post,
            format!("/holds/{hold}/{}", a.as_str()),
            Some(String::from_utf8_lossy(body).into_owned()),
        ),
    };
    let resp = objects::inventory(ev.env, &name, method, &object_path, call, body).await?;
    invalidate_availability(&ev.event);
    if let (200, Some(visitor)) = (resp.status_code(), &sale.end_session_of) {
        // Sold: the buyer's session ends now (best effort: it also ends when its time is up, and
        // the sale stands whatever this answers).
        let status = end_session_of(ev, visitor).await.map_or(0, |r| r.status_code());
        if status != 200 {
            durable_objects::log::warn(
                "could not end the buyer's session after the sale",
                json!({ "event": ev.event, "hold": hold, "status": status }),
            );
        }
    }
    objects::relay(resp, ev.path).await
}

/// Publishes an inventory: validates it, records the shard layout, and puts each shard's piece
/// into its object (concurrently). A retry of the same version is accepted by every shard that
/// already has it, so the core can simply push again after a partial failure.
async fn put_inventory(ev: &EventCtx<'_>, body: &[u8], signed: &SignedRequest) -> Result<Response> {
    let (env, event, path) = (ev.env, &ev.event, ev.path);
    let inventory: Inventory = parse(ev, body, "an inventory")?;
    if &inventory.event != event {
        return Err(ev.problem(ProblemType::ValidationFailed, "the inventory is for another event"));
    }
    if let Err(errors) = inventory.validate() {
        return Err(invalid(ev, "the inventory is not valid", &errors)?);
    }
    let shards = inventory.shards();
    let proposed = Layout {
        event: event.clone(),
        sharding: inventory.sharding,
        shards: shards.iter().map(|(name, _)| name.clone()).collect(),
        inventory_version: inventory.version,
    };
    let signed_call = Call { caller: &Caller::Core, nonce: Some(&signed.nonce), shard_index: None };
    let proposed = Some(serde_json::to_string(&proposed)?);
    let mut resp =
        send(env, DIRECTORY_BINDING, event.as_str(), Method::Put, "/layout", &signed_call, proposed).await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, path).await;
    }
    let layout: Layout = durable_objects::http::answer_json(&mut resp).await?;
    objects::remember_layout(layout.clone());
    // A published event has a waiting room, with the default settings until the core sends some.
    let ensure = serde_json::to_string(&json!({ "event": event }))?;
    let resp = call(env, COORDINATOR_BINDING, event.as_str(), Method::Post, "/ensure", Some(ensure)).await?;
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
                Ok(mut resp) => (
                    resp.status_code(),
                    durable_objects::http::answer_json::<Value>(&mut resp).await.unwrap_or(Value::Null),
                ),
                Err(e) => (502, json!({ "detail": e.to_string() })),
            };
            Ok::<_, worker::Error>(json!({ "shard": name, "status": status, "answer": body }))
        }
    });
    let results: Vec<Value> =
        futures_util::future::join_all(puts).await.into_iter().collect::<worker::Result<Vec<_>>>()?;
    invalidate_availability(event);
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != 200).collect();
    if failed.is_empty() {
        return Ok(http::json(
            200,
            &json!({ "event": event, "inventory_version": inventory.version, "sharding": inventory.sharding, "shards": results }),
        )?);
    }
    let status = failed.iter().filter_map(|r| r["status"].as_u64()).max().unwrap_or(502);
    let kind = if status == 409 { ProblemType::Conflict } else { ProblemType::DependencyUnavailable };
    let problem =
        Problem::new(kind, format!("{} of {} shards refused the inventory", failed.len(), results.len()))
            .with_instance(path)
            .with_extension("shards", Value::Array(results.clone()));
    Ok(http::problem(&problem)?)
}

/// The event's shard layout (with the inventory version the edge holds), or 404: the core asks,
/// to re-push an event the edge lost.
async fn layout(ev: &EventCtx<'_>) -> Result<Response> {
    let unpublished =
        || ev.refusal(ProblemType::NotFound, "unpublished", "this event is not published at the edge");
    let layout = objects::layout(ev.env, &ev.event).await?.ok_or_else(unpublished)?;
    Ok(http::json(200, &layout)?)
}

/// Statistics of every shard, with their sums.
async fn stats(ev: &EventCtx<'_>) -> Result<Response> {
    let (layout, answers): (_, Vec<Value>) =
        objects::every_shard(ev, &Caller::Core, "/stats", "this event is not published at the edge").await?;
    let mut shards = Vec::new();
    let mut totals = json!({ "held": 0, "sold": 0, "available": 0, "capacity": 0 });
    let mut counters = serde_json::Map::new();
    let mut lateness_max = 0i64;
    for (name, shard) in layout.shards.iter().zip(answers) {
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
    Ok(http::json(
        200,
        &json!({ "event": ev.event, "sharding": layout.sharding, "totals": totals, "stats": counters, "shards": shards }),
    )?)
}

/// Waiting-room settings from the core: validated here, applied by the coordinator.
async fn put_settings(ev: &EventCtx<'_>, body: &[u8]) -> Result<Response> {
    let settings: WaitingRoomSettings = parse(ev, body, "waiting-room settings")?;
    if let Err(errors) = settings.validate() {
        return Err(invalid(ev, "the waiting-room settings are not valid", &errors)?);
    }
    let push = push_body(ev, &settings)?;
    let as_core = Call::by(&Caller::Core);
    let resp =
        send(ev.env, COORDINATOR_BINDING, ev.event.as_str(), Method::Put, "/settings", &as_core, Some(push));
    let resp = resp.await?;
    crate::room::forget_view(&ev.event);
    if resp.status_code() != 200 {
        return objects::relay(resp, ev.path).await;
    }
    // The waiting list's settings ride along (the push is idempotent: the core retries it whole).
    let list = send(
        ev.env,
        WAITLIST_BINDING,
        ev.event.as_str(),
        Method::Put,
        "/settings",
        &as_core,
        Some(push_body(ev, &settings)?),
    );
    let listed = list.await?;
    if listed.status_code() != 200 {
        return objects::relay(listed, ev.path).await;
    }
    objects::relay(resp, ev.path).await
}

fn push_body(ev: &EventCtx<'_>, settings: &WaitingRoomSettings) -> Result<String> {
    Ok(serde_json::to_string(&json!({ "event": ev.event, "settings": settings }))?)
}

/// One call of the core's to the event's waiting list.
async fn waitlist_call(
    ev: &EventCtx<'_>,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Response> {
    let as_core = Call::by(&Caller::Core);
    let resp = send(ev.env, WAITLIST_BINDING, ev.event.as_str(), method, path, &as_core, body).await?;
    objects::relay(resp, ev.path).await
}

/// The core says a buyer is done (bought): their session ends now and frees a place under the cap.
async fn end_session(ev: &EventCtx<'_>, body: &[u8]) -> Result<Response> {
    let end: EndSession = parse(ev, body, "{\"visitor\"}")?;
    end_session_of(ev, &end.visitor).await
}

/// Ends `visitor`'s shopping session (the queue shard that admitted them).
async fn end_session_of(ev: &EventCtx<'_>, visitor: &VisitorId) -> Result<Response> {
    let view = crate::room::view_or_404(ev).await?;
    let shard = shard_name(&ev.event, shard_of_visitor(visitor.as_str(), view.settings.queue_shards));
    let as_core = Call::by(&Caller::Core);
    let body = serde_json::to_string(&EndSession { visitor: visitor.clone() })?;
    let resp =
        send(ev.env, SHARD_BINDING, &shard, Method::Post, "/sessions/end", &as_core, Some(body)).await?;
    objects::relay(resp, ev.path).await
}

/// The line: the coordinator's view and counters, and each queue shard's (places, storage, memory).
async fn room_stats(ev: &EventCtx<'_>) -> Result<Response> {
    let (env, event) = (ev.env, &ev.event);
    let mut resp = call(env, COORDINATOR_BINDING, event.as_str(), Method::Get, "/stats", None).await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, ev.path).await;
    }
    let mut stats: Value = durable_objects::http::answer_json(&mut resp).await?;
    let shards = stats["view"]["settings"]["queue_shards"].as_u64().unwrap_or(0) as u16;
    let calls = (0..shards).map(|i| {
        let name = shard_name(event, i);
        async move {
            let mut resp =
                send(env, SHARD_BINDING, &name, Method::Get, "/stats", &Call::by(&Caller::Core), None)
                    .await?;
            durable_objects::http::answer_json::<Value>(&mut resp).await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    stats["shards"] = Value::Array(answers.into_iter().map(|a| a.unwrap_or(Value::Null)).collect());
    Ok(http::json(200, &stats)?)
}
