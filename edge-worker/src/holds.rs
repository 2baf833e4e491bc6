//! The buyer's hold routes. The edge authenticates the buyer by their admission token, picks the
//! inventory shard, lets the object decide, and turns a placed hold into a signed hold token.
//!
//! - `POST   /api/v1/events/{event}/holds`         (admission token; `Idempotency-Key`)
//! - `DELETE /api/v1/events/{event}/holds/{hold}`  (admission token; only one's own)
//! - `GET    /api/v1/events/{event}/availability`  (public; served from a one-second isolate cache)

use std::cell::RefCell;
use std::collections::HashMap;

use durable_objects::directory::Layout;
use durable_objects::http;
use durable_objects::inventory::{shard_of_hold, Availability, Caller, HoldRequest, Placed};
use serde::Serialize;
use shared_types::ids::{EventId, HoldId, VisitorId};
use shared_types::inventory::{Sharding, GA_SHARD, MAIN_SHARD};
use shared_types::token::{verify, Claims, Expectation, HoldGrant, TokenKind};
use shared_types::waiting_room::AdmissionGrant;
use shared_types::{Problem, ProblemType};
use worker::{Env, Method, Request, Response, Result};

use crate::keys::EdgeKeys;
use crate::objects::{self, Call};

/// How long an isolate serves an availability snapshot before asking the objects again.
const AVAILABILITY_TTL_MS: f64 = 1_000.0;

thread_local! {
    static AVAILABILITY: RefCell<HashMap<EventId, (f64, String)>> = RefCell::new(HashMap::new());
}

/// The answer to a placed hold.
#[derive(Serialize)]
struct HoldAnswer {
    hold: durable_objects::inventory::Hold,
    hold_token: String,
    replayed: bool,
}

fn unauthorized(detail: String, reason: &str, path: &str) -> Result<Response> {
    http::problem(
        &Problem::new(ProblemType::Unauthorized, detail)
            .with_instance(path)
            .with_extension("reason", reason.into()),
    )
}

/// The admission token from `Authorization: Bearer` or the event's `admission_{event}` cookie
/// (which the waiting room sets).
fn admission_token(req: &Request, event: &EventId) -> Result<Option<String>> {
    if let Some(auth) = req.headers().get("authorization")? {
        return Ok(auth.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    }
    crate::queue::cookie(req, &format!("admission_{event}"))
}

/// A buyer an admission token lets in: who, and how many tickets their admission allows.
struct Admitted {
    visitor: VisitorId,
    max_tickets: u32,
}

/// The buyer an admission token for `event` names, or the problem to answer.
async fn authenticate(
    req: &Request,
    env: &Env,
    keys: &EdgeKeys,
    event: &EventId,
    path: &str,
) -> Result<std::result::Result<Admitted, Response>> {
    let Some(token) = admission_token(req, event)? else {
        return unauthorized("an admission token is required".into(), "missing", path).map(Err);
    };
    let expect = Expectation {
        kind: TokenKind::Admission,
        issuer: "edge",
        audience: event.as_str(),
        subject: None,
        now: durable_objects::now_ms() / 1000,
    };
    // Signature, expiry and event first; then the grant's own claims.
    let claims: Claims<serde_json::Map<String, serde_json::Value>> = match verify(&token, &keys.edge, &expect)
    {
        Ok(c) => c,
        Err(e) => return unauthorized(e.to_string(), e.reason(), path).map(Err),
    };
    let Ok(grant) = serde_json::from_value::<AdmissionGrant>(serde_json::Value::Object(claims.extra.clone()))
    else {
        return unauthorized("the token does not name a waiting-room session".into(), "malformed", path)
            .map(Err);
    };
    let claims = Claims {
        iss: claims.iss,
        aud: claims.aud,
        sub: claims.sub,
        iat: claims.iat,
        exp: claims.exp,
        jti: claims.jti,
        extra: grant,
    };
    let Ok(visitor) = VisitorId::parse(&claims.sub) else {
        return unauthorized("the token's visitor is not valid".into(), "malformed", path).map(Err);
    };
    // The token is good only while the shopping session it was issued for is open.
    if !crate::queue::session_open(env, event, &visitor, &claims).await? {
        return unauthorized("this shopping session has ended".into(), "session-ended", path).map(Err);
    }
    Ok(Ok(Admitted { visitor, max_tickets: claims.extra.max_tickets }))
}

/// Which shard of the layout a hold request goes to.
fn shard_for(layout: &Layout, request: &HoldRequest) -> std::result::Result<usize, String> {
    let name = match (layout.sharding, request) {
        (Sharding::None, _) => MAIN_SHARD,
        (Sharding::BySection, HoldRequest::GeneralAdmission { .. }) => GA_SHARD,
        (Sharding::BySection, HoldRequest::Seats { section: Some(s), .. })
        | (Sharding::BySection, HoldRequest::BestAvailable { section: Some(s), .. }) => s.as_str(),
        (Sharding::BySection, _) => return Err("this event is sold by section: name the section".into()),
    };
    layout.index_of(name).ok_or_else(|| format!("no section {name} in this event"))
}

async fn read_body(req: &mut Request, path: &str) -> Result<std::result::Result<Vec<u8>, Response>> {
    crate::body::read(req, crate::body::HOLD, path).await
}

pub async fn place(
    mut req: Request,
    env: &Env,
    keys: &EdgeKeys,
    event: &EventId,
    path: &str,
) -> Result<Response> {
    let Admitted { visitor, max_tickets } = match authenticate(&req, env, keys, event, path).await? {
        Ok(v) => v,
        Err(resp) => return Ok(resp),
    };
    let idempotency_key = req.headers().get("idempotency-key")?;
    let body = match read_body(&mut req, path).await? {
        Ok(b) => b,
        Err(resp) => return Ok(resp),
    };
    let request: HoldRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return http::problem_of(ProblemType::MalformedRequest, format!("not a hold request: {e}"), path)
        }
    };
    let Some(layout) = objects::layout(env, event).await? else {
        return http::problem_of(ProblemType::NotFound, "this event is not on sale", path);
    };
    let shard = match shard_for(&layout, &request) {
        Ok(i) => i,
        Err(detail) => return http::problem_of(ProblemType::ValidationFailed, detail, path),
    };
    let name = layout.object_name(shard).unwrap_or_default();
    let forwarded = serde_json::json!({ "request": request, "idempotency_key": idempotency_key, "max_tickets": max_tickets });
    let caller = Caller::Visitor(visitor.clone());
    let call = Call { caller: &caller, nonce: None, shard_index: None };
    let mut resp =
        objects::inventory(env, &name, Method::Post, "/holds", &call, Some(forwarded.to_string())).await?;
    if !matches!(resp.status_code(), 200 | 201) {
        return objects::relay(resp, path).await;
    }
    let status = resp.status_code();
    let placed: Placed = resp.json().await?;
    let hold = placed.hold;
    let claims = Claims {
        iss: "edge".to_owned(),
        aud: event.to_string(),
        sub: visitor.to_string(),
        iat: durable_objects::now_ms() / 1000,
        exp: (hold.expires_at + 999) / 1000,
        jti: hold.id.to_string(),
        extra: HoldGrant {
            hold: hold.id.clone(),
            seats: hold.seats.clone(),
            ga_tier: hold.ga.as_ref().map(|g| g.tier.clone()),
            ga_quantity: hold.ga.as_ref().map_or(0, |g| g.quantity),
            expires_at_ms: hold.expires_at,
        },
    };
    let hold_token = keys.signer.sign(TokenKind::Hold, &claims);
    invalidate_availability(event);
    http::json(status, &HoldAnswer { hold, hold_token, replayed: placed.replayed })
}

pub async fn release(
    req: Request,
    env: &Env,
    keys: &EdgeKeys,
    event: &EventId,
    hold: &str,
    path: &str,
) -> Result<Response> {
    let visitor = match authenticate(&req, env, keys, event, path).await? {
        Ok(admitted) => admitted.visitor,
        Err(resp) => return Ok(resp),
    };
    let not_found = || http::problem_of(ProblemType::NotFound, "no such hold", path);
    let (Ok(hold), Some(shard)) = (HoldId::parse(hold), shard_of_hold(hold)) else { return not_found() };
    let Some(layout) = objects::layout(env, event).await? else { return not_found() };
    let Some(name) = layout.object_name(shard) else { return not_found() };
    let caller = Caller::Visitor(visitor);
    let call = Call { caller: &caller, nonce: None, shard_index: None };
    let resp = objects::inventory(env, &name, Method::Delete, &format!("/holds/{hold}"), &call, None).await?;
    invalidate_availability(event);
    objects::relay(resp, path).await
}

/// Availability of the whole event, merged across shards (seats in seat-map order, sections and
/// tiers in layout order, version = sum of the shards' versions, so it only grows).
pub async fn availability(env: &Env, event: &EventId, path: &str) -> Result<Response> {
    let now = durable_objects::now_ms() as f64;
    let cached = AVAILABILITY.with(|c| {
        c.borrow().get(event).filter(|(at, _)| now - at < AVAILABILITY_TTL_MS).map(|(_, b)| b.clone())
    });
    let body = match cached {
        Some(body) => body,
        None => {
            let Some(layout) = objects::layout(env, event).await? else {
                return http::problem_of(ProblemType::NotFound, "this event is not on sale", path);
            };
            let call = Call { caller: &Caller::Edge, nonce: None, shard_index: None };
            let names: Vec<String> = (0..layout.shards.len()).filter_map(|i| layout.object_name(i)).collect();
            let answers = futures_util::future::join_all(
                names
                    .iter()
                    .map(|name| objects::inventory(env, name, Method::Get, "/availability", &call, None)),
            )
            .await;
            let mut merged: Option<Availability> = None;
            for answer in answers {
                let mut resp = answer?;
                if resp.status_code() != 200 {
                    return objects::relay(resp, path).await;
                }
                let part: Availability = resp.json().await?;
                merged = Some(match merged {
                    None => part,
                    Some(mut m) => {
                        m.version += part.version;
                        m.seats.push_str(&part.seats);
                        m.sections.extend(part.sections);
                        m.tiers.extend(part.tiers);
                        m
                    }
                });
            }
            let body = serde_json::to_string(&merged)?;
            AVAILABILITY.with(|c| c.borrow_mut().insert(event.clone(), (now, body.clone())));
            body
        }
    };
    let mut resp = Response::ok(body)?;
    resp.headers_mut().set("content-type", "application/json")?;
    resp.headers_mut().set("cache-control", "public, max-age=1")?;
    Ok(resp)
}

/// A change made through this isolate is visible to it at once (others see it within the TTL).
pub fn invalidate_availability(event: &EventId) {
    AVAILABILITY.with(|c| c.borrow_mut().remove(event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::ids::{SeatId, SectionId, TierId};

    fn layout(sharding: Sharding, shards: &[&str]) -> Layout {
        Layout {
            event: EventId::parse("evt").unwrap(),
            sharding,
            shards: shards.iter().map(|s| s.to_string()).collect(),
            inventory_version: 1,
        }
    }

    #[test]
    fn an_unsharded_event_sends_everything_to_its_one_object() {
        let l = layout(Sharding::None, &["main"]);
        let ga = HoldRequest::GeneralAdmission { tier: TierId::parse("floor").unwrap(), quantity: 1 };
        assert_eq!(shard_for(&l, &ga), Ok(0));
    }

    #[test]
    fn a_sectioned_event_routes_by_section_and_ga_to_the_ga_shard() {
        let l = layout(Sharding::BySection, &["A", "B", "ga"]);
        let seats = |section: Option<&str>| HoldRequest::Seats {
            seats: vec![SeatId::parse("B-1-1").unwrap()],
            section: section.map(|s| SectionId::parse(s).unwrap()),
        };
        assert_eq!(shard_for(&l, &seats(Some("B"))), Ok(1));
        assert!(shard_for(&l, &seats(None)).is_err());
        assert!(shard_for(&l, &seats(Some("Z"))).is_err());
        let ga = HoldRequest::GeneralAdmission { tier: TierId::parse("floor").unwrap(), quantity: 1 };
        assert_eq!(shard_for(&l, &ga), Ok(2));
    }

    #[test]
    fn hold_ids_name_their_shard() {
        assert_eq!(shard_of_hold("h7-0123abcd"), Some(7));
        assert_eq!(shard_of_hold("h0-ff"), Some(0));
        for bad in ["x7-00", "h-00", "hx-00", "h7", ""] {
            assert_eq!(shard_of_hold(bad), None, "{bad}");
        }
    }
}
