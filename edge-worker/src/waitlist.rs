//! The event's waiting list at the edge (docs/waiting-list.md): joining, seeing one's entry,
//! leaving and declining an offer, for apps and the event's page; the offers the core mails, with
//! their signed links, and taking an offer from its link. The list itself lives in the
//! event's `WaitlistObject`; the edge establishes who the visitor is and screens a join exactly as
//! a join of the line (the request's headers, the per-address limit, the event's bot check), except
//! that a sold-out event is what the list is for.

use durable_objects::http;
use durable_objects::inventory::{Caller, Hold, HoldState};
use durable_objects::stub::{send, Call, WAITLIST_BINDING};
use serde::Deserialize;
use serde_json::{json, Value};
use shared_types::ids::{HoldId, TierId, VisitorId};
use shared_types::internal_api::{WaitlistOffer, WaitlistOffers};
use shared_types::token::{Claims, OfferGrant, TokenKind};
use shared_types::waiting_room::{AdmissionGrant, WAITLIST_SHARD};
use shared_types::ProblemType;
use worker::{Method, Request, Response};

use crate::context::{EventCtx, Result};
use crate::room::credentials::{admission_cookie, visitor_cookie};
use crate::room::line::VISITOR_COOKIE_SECS;
use crate::room::screen::{bot_check, insane_headers, screen_request, Failed, JoinBody as BotAnswer};
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
    let body: Value = durable_objects::http::answer_json(&mut resp).await?;
    web::private_json(status, &body, cookies)
}

/// A join as sent: JSON from apps, or the event page's form (`wants`: `any`, `seats` or
/// `tier:<id>`; `quantity`; `email`; the bot check's fields).
fn read_join(ev: &EventCtx<'_>, raw: &[u8], form: bool) -> Result<Join> {
    let malformed =
        |e: String| ev.problem(ProblemType::MalformedRequest, format!("not a waiting-list join: {e}"));
    if !form {
        return shared_types::json::from_slice(raw).map_err(|e| malformed(e.to_string()));
    }
    let mut f = web::form_fields(raw);
    let wants = f.remove("wants").unwrap_or_default();
    let (tier, seats) = match wants.as_str() {
        "" | "any" => (None, false),
        "seats" => (None, true),
        other => {
            let id = other.strip_prefix("tier:").unwrap_or(other);
            (Some(TierId::parse(id).map_err(|e| malformed(e.to_string()))?), false)
        }
    };
    let turnstile = f.remove("cf-turnstile-response").or_else(|| f.remove("turnstile_token"));
    Ok(Join {
        email: f.remove("email").unwrap_or_default(),
        tier,
        seats,
        seated_tier: None,
        quantity: f.remove("quantity").and_then(|q| q.trim().parse().ok()).unwrap_or(0),
        challenge: f.remove("challenge"),
        solution: f.remove("solution"),
        turnstile_token: turnstile,
    })
}

/// Joins the list (the API's route and the page's form): the entry, and the `visitor` cookie.
pub async fn enter(ev: &EventCtx<'_>, req: &mut Request) -> Result<(Value, String)> {
    let view = view_or_404(ev).await?;
    screen_request(ev, req).await?;
    let form = web::is_form(req)?;
    let raw = crate::body::read(req, crate::body::JOIN, ev.path).await?;
    let join = read_join(ev, &raw, form)?;
    let answer_to_check = BotAnswer {
        challenge: join.challenge.clone(),
        solution: join.solution.clone(),
        turnstile_token: join.turnstile_token.clone(),
    };
    let visitor = match bot_check(ev, req, &view, &answer_to_check).await? {
        Ok((visitor, _)) => visitor,
        // Refused whatever the line does with failures: a place on the list is mailed an offer.
        Err(Failed(reason, detail)) => return Err(refuse(ev, ProblemType::BotCheckFailed, reason, detail)),
    };
    sold_out(ev, &join).await?;
    let body = json!({
        "email": join.email,
        "tier": join.tier,
        "seats": join.seats,
        "seated_tier": join.seated_tier,
        "quantity": join.quantity,
    });
    let mut resp = list_call(ev, &visitor, Method::Post, "/join", Some(body.to_string())).await?;
    if resp.status_code() != 201 {
        return Err(objects::relayed(resp, ev.path).await);
    }
    let entry: Value = durable_objects::http::answer_json(&mut resp).await?;
    Ok((entry, web::set_cookie(req, "visitor", visitor.as_str(), VISITOR_COOKIE_SECS)?))
}

/// `POST /api/v1/events/{event}/waitlist`: joins the list (201) with the entry and its place.
pub async fn join(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    let (entry, cookie) = enter(ev, &mut req).await?;
    web::private_json(201, &entry, &[cookie])
}

/// The visitor's entry, if they have one (for the event's page). A request with odd headers (a
/// script, not a browser) is shown the page without it: it does not reach the list's one object.
/// No per-address rate here: a page refreshed behind a shared address must still show the entry
/// (and its offer's link).
pub async fn entry_of(ev: &EventCtx<'_>, req: &Request) -> Result<Option<Value>> {
    let Some(visitor) = visitor_cookie(req)? else { return Ok(None) };
    if insane_headers(req)?.is_some() {
        return Ok(None);
    }
    let mut resp = list_call(ev, &visitor, Method::Get, "/entry", None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    Ok(Some(durable_objects::http::answer_json(&mut resp).await?))
}

/// A join is for what is sold out: the tier asked for (which must be one of the event's), the
/// seats (of the seated tier asked for), or everything. Otherwise `409 not-sold-out`: what is
/// for sale is bought through the line, never by waiting on the list.
async fn sold_out(ev: &EventCtx<'_>, join: &Join) -> Result<()> {
    let snapshot = crate::holds::snapshot(ev).await?;
    let a: Value = serde_json::from_str(&snapshot.counts)?;
    let counts = |group: &str| -> Vec<(String, u64)> {
        a[group]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p[0].as_str().unwrap_or_default().to_owned(), p[1]["available"].as_u64().unwrap_or(0)))
            .collect()
    };
    let (sections, tiers, seated) = (counts("sections"), counts("tiers"), counts("seated_tiers"));
    let unknown = |what: &str| {
        ev.refusal(ProblemType::ValidationFailed, "unknown-tier", format!("this event has no {what}"))
    };
    let seats_left: u64 = sections.iter().map(|(_, n)| n).sum();
    let left = match (&join.tier, join.seats) {
        (Some(t), _) => tiers.iter().find(|(id, _)| id == t.as_str()).ok_or_else(|| unknown("such tier"))?.1,
        (None, true) => match &join.seated_tier {
            Some(t) => {
                let tier = seated
                    .iter()
                    .find(|(id, _)| id == t.as_str())
                    .ok_or_else(|| unknown("such seated tier"))?;
                tier.1.min(seats_left)
            }
            None if sections.is_empty() => return Err(unknown("seats")),
            None => seats_left,
        },
        (None, false) => seats_left + tiers.iter().map(|(_, n)| n).sum::<u64>(),
    };
    if left > 0 {
        return Err(ev.refusal(
            ProblemType::Conflict,
            "not-sold-out",
            format!("{left} places are for sale: buy them through the line rather than waiting for returns"),
        ));
    }
    Ok(())
}

/// The visitor of the cookie, or 404 (someone without one is on no list); refused with odd
/// headers (`bad-headers`, as joins are), since each of these reaches the event's one list object.
/// Not the per-address rate joins spend: leaving or declining must work behind a shared address.
async fn known_visitor(ev: &EventCtx<'_>, req: &Request) -> Result<VisitorId> {
    let visitor =
        visitor_cookie(req)?.ok_or_else(|| ev.problem(ProblemType::NotFound, "not on this waiting list"))?;
    if let Some(why) = insane_headers(req)? {
        return Err(ev.refusal(ProblemType::BotCheckFailed, "bad-headers", why));
    }
    Ok(visitor)
}

/// `GET /api/v1/events/{event}/waitlist`: the visitor's entry (its place while waiting, its offer).
pub async fn entry(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req).await?;
    let resp = list_call(ev, &visitor, Method::Get, "/entry", None).await?;
    answer(ev, resp, &[]).await
}

/// `DELETE /api/v1/events/{event}/waitlist`: leaves the list (an offer standing is given up).
pub async fn leave(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req).await?;
    let resp = list_call(ev, &visitor, Method::Delete, "/entry", None).await?;
    answer(ev, resp, &[]).await
}

/// `POST /api/v1/events/{event}/waitlist/decline`: says no to the offer (it goes to the next).
pub async fn decline(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let visitor = known_visitor(ev, req).await?;
    let resp = list_call(ev, &visitor, Method::Post, "/entry/decline", None).await?;
    answer(ev, resp, &[]).await
}

/// `GET /internal/v1/events/{event}/waitlist/offers?after=`: the offers to mail, each with the
/// token its link carries (signed here: only the edge signs what opens a hold).
pub async fn offers_to_mail(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let after = req
        .url()?
        .query_pairs()
        .find(|(k, _)| k == "after")
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .unwrap_or(-1);
    let as_core = Call::by(&Caller::Core);
    let path = format!("/offers?after={after}");
    let mut resp =
        send(ev.env, WAITLIST_BINDING, ev.event.as_str(), Method::Get, &path, &as_core, None).await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, ev.path).await;
    }
    let read: Value = durable_objects::http::answer_json(&mut resp).await?;
    let now = durable_objects::now_ms();
    let keys = ev.keys()?;
    let mut offers = Vec::new();
    for o in read["offers"].as_array().into_iter().flatten() {
        let (Some(visitor), Some(hold), Some(entry), Some(until)) =
            (o["visitor"].as_str(), o["hold"].as_str(), o["entry"].as_u64(), o["until"].as_i64())
        else {
            continue;
        };
        let (Ok(hold), quantity) = (HoldId::parse(hold), o["quantity"].as_u64().unwrap_or(0) as u32) else {
            continue;
        };
        let claims = Claims {
            iss: "edge".into(),
            aud: ev.event.to_string(),
            sub: visitor.to_owned(),
            iat: now / 1000,
            exp: (until + 999) / 1000,
            jti: hold.to_string(),
            extra: OfferGrant { hold, entry, quantity },
        };
        offers.push(WaitlistOffer {
            seq: o["seq"].as_i64().unwrap_or(0),
            entry,
            email: o["email"].as_str().unwrap_or_default().to_owned(),
            quantity,
            until,
            token: keys.sign(TokenKind::Offer, &claims).await,
        });
    }
    let next = read["next"].as_i64().unwrap_or(after);
    Ok(http::json(200, &WaitlistOffers { offers, next })?)
}

/// The body of `POST /api/v1/events/{event}/waitlist/offer`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    token: String,
}

/// `POST /api/v1/events/{event}/waitlist/offer`: the mail's link, taken. The offer token opens a
/// shopping session that lasts as long as the offer (no line: the list was the line) and the hold
/// that carries the offer, with its hold token for checkout. Answers the hold, both tokens and
/// where to go; sets the `visitor` and admission cookies. Taking it again answers the same.
pub async fn take_offer(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    let raw = crate::body::read(&mut req, crate::body::JOIN, ev.path).await?;
    let exchange: Exchange = serde_json::from_slice(&raw)
        .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not an offer: {e}")))?;
    let refused = |reason: &str, detail: String| ev.refusal(ProblemType::Unauthorized, reason, detail);
    let claims = ev
        .keys()?
        .verify::<OfferGrant>(TokenKind::Offer, &exchange.token, ev.event.as_str(), None)
        .await
        .map_err(|e| refused(e.reason(), format!("this offer link is not valid: {e}")))?;
    let visitor = VisitorId::parse(&claims.sub)
        .map_err(|_| refused("malformed", "the offer names no valid visitor".into()))?;
    let hold_id = claims.extra.hold.to_string();
    let name = crate::holds::hold_object(ev, &hold_id).await?;
    let caller = Caller::Visitor(visitor.clone());
    let mut resp = objects::inventory(
        ev.env,
        &name,
        Method::Get,
        &format!("/holds/{hold_id}"),
        &Call::by(&caller),
        None,
    )
    .await?;
    if resp.status_code() != 200 {
        return objects::relay(resp, ev.path).await;
    }
    let hold: Hold = durable_objects::http::answer_json(&mut resp).await?;
    let now = durable_objects::now_ms();
    if hold.state != HoldState::Held || hold.expires_at <= now {
        return Err(ev.refusal(
            ProblemType::Conflict,
            "offer-ended",
            "this offer has ended: it was taken, declined or its time ran out",
        ));
    }
    let admission = Claims {
        iss: "edge".into(),
        aud: ev.event.to_string(),
        sub: visitor.to_string(),
        iat: now / 1000,
        exp: (hold.expires_at + 999) / 1000,
        jti: format!("w{}-{}", claims.extra.entry, hold.expires_at),
        extra: AdmissionGrant {
            shard: WAITLIST_SHARD,
            seq: claims.extra.entry,
            pre: false,
            max_tickets: claims.extra.quantity,
        },
    };
    let admission_token = ev.keys()?.sign(TokenKind::Admission, &admission).await;
    let hold_token = crate::holds::hold_token(ev, &visitor, &hold, false).await?;
    let max_age = (hold.expires_at - now) / 1000 + 1;
    let cookies = [
        web::set_cookie(&req, "visitor", visitor.as_str(), VISITOR_COOKIE_SECS)?,
        web::set_cookie(&req, &admission_cookie(ev), &admission_token, max_age)?,
    ];
    let answer = json!({
        "hold": hold,
        "hold_token": hold_token,
        "admission_token": admission_token,
        "expires_at_ms": hold.expires_at,
        "now_ms": now,
        "next": format!("/events/{}/buy", ev.event),
    });
    web::private_json(200, &answer, &cookies)
}
