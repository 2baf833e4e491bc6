//! The event's waiting list at the edge (docs/waiting-list.md): joining, seeing one's entry,
//! leaving and declining an offer, for apps and the event's page. The list itself lives in the
//! event's `WaitlistObject`; the edge establishes who the visitor is and screens a join exactly as
//! a join of the line (the request's headers, the per-address limit, the event's bot check), except
//! that a sold-out event is what the list is for.

use durable_objects::inventory::Caller;
use durable_objects::stub::{send, Call, WAITLIST_BINDING};
use serde::Deserialize;
use serde_json::{json, Value};
use shared_types::ids::{TierId, VisitorId};
use shared_types::ProblemType;
use worker::{Method, Request, Response};

use crate::context::{EventCtx, Result};
use crate::room::credentials::visitor_cookie;
use crate::room::line::VISITOR_COOKIE_SECS;
use crate::room::screen::{bot_check, screen_request, Failed, JoinBody as BotAnswer};
use crate::room::{refuse, view_or_404};
use crate::{objects, web};

/// A join: who to write to and what they wait for, with the answer to the event's bot check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    email: String,
    #[serde(default)]
    tier: Option<TierId>,
    #[serde(default)]
    seats: bool,
    #[serde(default)]
    seated_tier: Option<TierId>,
    quantity: u32,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    solution: Option<String>,
    #[serde(default, alias = "cf-turnstile-response")]
    turnstile_token: Option<String>,
}

/// One call to the event's list, as `visitor`.
async fn list_call(
    ev: &EventCtx<'_>,
    visitor: &VisitorId,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Response> {
    let caller = Caller::Visitor(visitor.clone());
    Ok(send(ev.env, WAITLIST_BINDING, ev.event.as_str(), method, path, &Call::by(&caller), body).await?)
}

/// The list's answer, with the visitor's cookie (a problem relayed as it is).
async fn answer(ev: &EventCtx<'_>, mut resp: Response, cookies: &[String]) -> Result<Response> {
    if !matches!(resp.status_code(), 200 | 201) {
        return objects::relay(resp, ev.path).await;
    }
    let status = resp.status_code();
    let body: Value = resp.json().await?;
    web::private_json(status, &body, cookies)
}

/// `POST /api/v1/events/{event}/waitlist`: joins the list (201) with the entry and its place.
pub async fn join(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    let view = view_or_404(ev).await?;
    screen_request(ev, &req).await?;
    let raw = crate::body::read(&mut req, crate::body::JOIN, ev.path).await?;
    let join: Join = serde_json::from_slice(&raw)
        .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not a waiting-list join: {e}")))?;
    let answer_to_check = BotAnswer {
        challenge: join.challenge.clone(),
        solution: join.solution.clone(),
        turnstile_token: join.turnstile_token.clone(),
    };
    let visitor = match bot_check(ev, &req, &view, &answer_to_check).await? {
        Ok((visitor, _)) => visitor,
        // Refused whatever the line does with failures: a place on the list is mailed an offer.
        Err(Failed(reason, detail)) => return Err(refuse(ev, ProblemType::BotCheckFailed, reason, detail)),
    };
    let body = json!({
        "email": join.email,
        "tier": join.tier,
        "seats": join.seats,
        "seated_tier": join.seated_tier,
        "quantity": join.quantity,
    });
    let resp = list_call(ev, &visitor, Method::Post, "/join", Some(body.to_string())).await?;
    let cookie = web::set_cookie(&req, "visitor", visitor.as_str(), VISITOR_COOKIE_SECS)?;
    answer(ev, resp, &[cookie]).await
}

/// The visitor of the cookie, or 404 (someone without one is on no list).
fn known_visitor(ev: &EventCtx<'_>, req: &Request) -> Result<VisitorId> {
    visitor_cookie(req)?.ok_or_else(|| ev.problem(ProblemType::NotFound, "not on this waiting list"))
}

/// `GET /api/v1/events/{event}/waitlist`: the visitor's entry (its place while waiting, its offer).
pub async fn entry(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req)?;
    let resp = list_call(ev, &visitor, Method::Get, "/entry", None).await?;
    answer(ev, resp, &[]).await
}

/// `DELETE /api/v1/events/{event}/waitlist`: leaves the list (an offer standing is given up).
pub async fn leave(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req)?;
    let resp = list_call(ev, &visitor, Method::Delete, "/entry", None).await?;
    answer(ev, resp, &[]).await
}

/// `POST /api/v1/events/{event}/waitlist/decline`: says no to the offer (it goes to the next).
pub async fn decline(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req)?;
    let resp = list_call(ev, &visitor, Method::Post, "/entry/decline", None).await?;
    answer(ev, resp, &[]).await
}
