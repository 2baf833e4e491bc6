//! The buyer's hold routes. The edge authenticates the buyer by their admission token, picks the
//! inventory shard, lets the object decide, and turns a placed hold into a signed hold token.
//!
//! - `POST   /api/v1/events/{event}/holds`         (admission token; `Idempotency-Key`)
//! - `DELETE /api/v1/events/{event}/holds/{hold}`  (admission token; only one's own)
//! - `GET    /api/v1/events/{event}/availability`  (public; served from a one-second isolate cache;
//!   `?counts` leaves out the per-seat string)

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use durable_objects::directory::Layout;
use durable_objects::http;
use durable_objects::inventory::object::PlaceHoldBody;
use durable_objects::inventory::{shard_of_hold, Availability, Caller, Hold, HoldRequest, Placed};
use serde::Serialize;
use shared_types::ids::{EventId, HoldId, VisitorId};
use shared_types::inventory::{Sharding, GA_SHARD, MAIN_SHARD};
use shared_types::token::{Claims, HoldGrant, TokenKind};
use shared_types::ProblemType;
use worker::{Method, Request, Response};

use crate::context::{EventCtx, Result};
use crate::objects::{self, Call};
use crate::room::credentials::{admitted, Admitted};

/// How long an isolate serves an availability snapshot before asking the objects again.
const AVAILABILITY_TTL_MS: f64 = 1_000.0;

thread_local! {
    /// Each event's snapshot, with when it was taken: in full, and without `seats` (`?counts`).
    static AVAILABILITY: RefCell<HashMap<EventId, (f64, Snapshot)>> = RefCell::new(HashMap::new());
    /// Events whose snapshot a request of this isolate is renewing, since when.
    static RENEWING: RefCell<HashMap<EventId, f64>> = RefCell::new(HashMap::new());
}

/// The answer to a placed hold.
#[derive(Serialize)]
struct HoldAnswer {
    hold: durable_objects::inventory::Hold,
    hold_token: String,
    replayed: bool,
}

/// Which shard of the layout a hold request goes to.
pub(crate) fn shard_for(layout: &Layout, request: &HoldRequest) -> std::result::Result<usize, String> {
    let name = match (layout.sharding, request) {
        (Sharding::None, _) => MAIN_SHARD,
        (Sharding::BySection, HoldRequest::GeneralAdmission { .. }) => GA_SHARD,
        (Sharding::BySection, HoldRequest::Seats { section: Some(s), .. })
        | (Sharding::BySection, HoldRequest::BestAvailable { section: Some(s), .. }) => s.as_str(),
        (Sharding::BySection, _) => return Err("this event is sold by section: name the section".into()),
    };
    layout.index_of(name).ok_or_else(|| format!("no section {name} in this event"))
}

/// `POST /holds`: a hold, and its signed hold token.
pub async fn place(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    let Admitted { visitor, max_tickets, by_offer } = admitted(ev, &req).await?;
    if by_offer {
        // An offer's admission buys that offer (its hold, placed by the list), nothing else: the
        // list was its line, and nothing else was.
        return Err(ev.refusal(
            ProblemType::Forbidden,
            "offer-only",
            "this admission came with a waiting list's offer: it buys the places offered, no others",
        ));
    }
    let idempotency_key = req.headers().get("idempotency-key")?;
    let body = crate::body::read(&mut req, crate::body::HOLD, ev.path).await?;
    let request: HoldRequest = shared_types::json::from_slice(&body)
        .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not a hold request: {e}")))?;
    let layout = objects::layout(ev.env, &ev.event)
        .await?
        .ok_or_else(|| ev.problem(ProblemType::NotFound, "this event is not on sale"))?;
    let shard =
        shard_for(&layout, &request).map_err(|detail| ev.problem(ProblemType::ValidationFailed, detail))?;
    let name = layout.object_name(shard).unwrap_or_default();
    let forwarded = PlaceHoldBody { request, idempotency_key, max_tickets: Some(max_tickets) };
    let caller = Caller::Visitor(visitor.clone());
    let call = Call::by(&caller);
    let body = serde_json::to_string(&forwarded)?;
    let mut resp = objects::inventory(ev.env, &name, Method::Post, "/holds", &call, Some(body)).await?;
    if !matches!(resp.status_code(), 200 | 201) {
        return objects::relay(resp, ev.path).await;
    }
    let status = resp.status_code();
    let placed: Placed = durable_objects::http::answer_json(&mut resp).await?;
    let hold = placed.hold;
    let hold_token = hold_token(ev, &visitor, &hold, false).await?;
    invalidate_availability(&ev.event);
    Ok(http::json(status, &HoldAnswer { hold, hold_token, replayed: placed.replayed })?)
}

/// The hold token of `visitor`'s `hold`: what checkout takes (the core verifies it offline).
/// `extended` only for the token the edge hands the core with a checkout whose hold it has just
/// extended (`proxy.rs`), never for one a buyer gets: the core trusts it to mean the hold was live
/// and extended when signed, and a buyer could keep such a token past the hold's release.
pub async fn hold_token(
    ev: &EventCtx<'_>,
    visitor: &VisitorId,
    hold: &Hold,
    extended: bool,
) -> Result<String> {
    let claims = Claims {
        iss: "edge".to_owned(),
        aud: ev.event.to_string(),
        sub: visitor.to_string(),
        iat: durable_objects::now_ms() / 1000,
        exp: (hold.expires_at + 999) / 1000,
        jti: hold.id.to_string(),
        extra: HoldGrant {
            hold: hold.id.clone(),
            seats: hold.seats.clone(),
            ga_tier: hold.ga.as_ref().map(|g| g.tier.clone()),
            ga_quantity: hold.ga.as_ref().map_or(0, |g| g.quantity),
            seated_tier: hold.seated_tier.clone(),
            expires_at_ms: hold.expires_at,
            extended,
        },
    };
    Ok(ev.keys()?.sign(TokenKind::Hold, &claims).await)
}

/// `DELETE /holds/{hold}`: the buyer lets their own hold go.
pub async fn release(ev: &EventCtx<'_>, req: Request, hold: &str) -> Result<Response> {
    let visitor = admitted(ev, &req).await?.visitor;
    let name = hold_object(ev, hold).await?;
    let caller = Caller::Visitor(visitor);
    let path = format!("/holds/{hold}");
    let resp = objects::inventory(ev.env, &name, Method::Delete, &path, &Call::by(&caller), None).await?;
    invalidate_availability(&ev.event);
    objects::relay(resp, ev.path).await
}

/// The name of the inventory object that has `hold` (its id names its shard); 404 for no such hold.
pub async fn hold_object(ev: &EventCtx<'_>, hold: &str) -> Result<String> {
    let not_found = || ev.problem(ProblemType::NotFound, "no such hold");
    let (Ok(_), Some(shard)) = (HoldId::parse(hold), shard_of_hold(hold)) else { return Err(not_found()) };
    let layout = objects::layout(ev.env, &ev.event).await?.ok_or_else(not_found)?;
    layout.object_name(shard).ok_or_else(not_found)
}

/// An availability snapshot as JSON: in full, and its counts alone (no `seats` string, which is a
/// character per seat: pages that show counts need not download a stadium's).
#[derive(Clone)]
pub struct Snapshot {
    pub full: Rc<str>,
    pub counts: Rc<str>,
}

/// How long requests go on being answered the older snapshot while one renews it (past that, a
/// renewal that hangs is taken over).
const RENEWAL_GRACE_MS: f64 = 2_000.0;

/// Availability of the whole event, merged across shards (seats in seat-map order, sections and
/// tiers in layout order, version = sum of the shards' versions, so it only grows), as JSON: kept
/// by the isolate [`AVAILABILITY_TTL_MS`], so that viewers cost the objects nothing more. When it
/// is due, one request renews it while the others are answered the one it replaces (a crowd
/// polling every second would otherwise renew it many times over at each expiry: measured in
/// docs/benchmarks.md).
pub async fn snapshot(ev: &EventCtx<'_>) -> Result<Snapshot> {
    let event = &ev.event;
    let now = durable_objects::now_ms() as f64;
    let kept = AVAILABILITY.with(|c| c.borrow().get(event).cloned());
    if let Some((at, body)) = &kept {
        let renewing =
            RENEWING.with(|r| r.borrow().get(event).is_some_and(|since| now - since < RENEWAL_GRACE_MS));
        if now - at < AVAILABILITY_TTL_MS || renewing {
            return Ok(body.clone());
        }
    }
    RENEWING.with(|r| r.borrow_mut().insert(event.clone(), now));
    let parts = objects::every_shard(ev, &Caller::Edge, "/availability", "this event is not on sale").await;
    RENEWING.with(|r| r.borrow_mut().remove(event));
    let (_, parts): (_, Vec<Availability>) = parts?;
    let mut merged: Option<Availability> = None;
    for part in parts {
        merged = Some(match merged {
            None => part,
            Some(mut m) => {
                m.version += part.version;
                m.seats.push_str(&part.seats);
                m.sections.extend(part.sections);
                m.tiers.extend(part.tiers);
                m.waitlist_held += part.waitlist_held;
                // Each section's shard sells its share of every seated tier: add them up.
                for (tier, counts) in part.seated_tiers {
                    match m.seated_tiers.iter_mut().find(|(t, _)| *t == tier) {
                        Some((_, sum)) => {
                            sum.capacity += counts.capacity;
                            sum.available += counts.available;
                            sum.held += counts.held;
                            sum.sold += counts.sold;
                        }
                        None => m.seated_tiers.push((tier, counts)),
                    }
                }
                m
            }
        });
    }
    let full: Rc<str> = serde_json::to_string(&merged)?.into();
    let counts: Rc<str> = match merged {
        Some(mut m) => {
            m.seats.clear();
            serde_json::to_string(&m)?.into()
        }
        None => "null".into(),
    };
    let snapshot = Snapshot { full, counts };
    AVAILABILITY.with(|c| c.borrow_mut().insert(event.clone(), (now, snapshot.clone())));
    Ok(snapshot)
}

/// `GET /availability`: [`snapshot`] (`?counts`: without `seats`), which browsers may keep a
/// second as well.
pub async fn availability(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let snapshot = snapshot(ev).await?;
    let counts_only = req.url()?.query_pairs().any(|(k, _)| k == "counts");
    let body = if counts_only { snapshot.counts } else { snapshot.full };
    let mut resp = Response::ok(body.to_string())?;
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
            tier: None,
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
