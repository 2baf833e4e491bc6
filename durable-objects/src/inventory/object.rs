//! `InventoryObject`: the single writer of one inventory's seat state (an event, or one section
//! shard of it). A thin shell over [`Ledger`]: parse, apply, persist (synchronously, so that the
//! change is atomic and durable before the answer leaves), re-arm the alarm, answer.
//!
//! It is reachable only through the edge Worker, which authenticates callers and says who they are
//! in the `x-caller` header: `visitor <id>` for a buyer whose admission token it verified, `core`
//! for a request it verified as signed by the core (with the request's nonce in `x-core-nonce`,
//! which the object refuses to see twice), `edge` for the Worker's own public reads. The object
//! enforces what each may do.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use shared_types::ids::{HoldId, SeatId, VisitorId};
use shared_types::inventory::Inventory;
use shared_types::{Problem, ProblemType};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use super::ledger::{HoldError, HoldRequest, Ledger, Millis, ParkedOffer, Releaser};
use super::store::{Store, Writes};
use crate::alarm::Alarm;
use crate::caller::{Caller, NONCE_HEADER, SHARD_INDEX_HEADER};
use crate::http;

/// Body of `POST /holds`, as the edge writes it (`holds::place`) and the object reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaceHoldBody {
    pub request: HoldRequest,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The buyer's admission allows at most this many tickets (`max_tickets` of the admission
    /// token, verified by the edge); the smaller of it and the event's per-visitor limit applies.
    #[serde(default)]
    pub max_tickets: Option<u32>,
}

/// Who places a hold: a buyer through the edge (the hold rate and the buyer's ticket limit
/// apply), or the box office through the core (a sale's limit is the largest hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placer {
    Buyer,
    BoxOffice,
}

/// Body of `POST /holds/{id}/return`.
#[derive(Debug, Default, Deserialize)]
pub struct ReturnBody {
    #[serde(default)]
    pub seats: Vec<SeatId>,
    #[serde(default)]
    pub ga_quantity: u32,
}

/// Body of `POST /waitlist/status`: the offers' holds the list asks about.
#[derive(Debug, Deserialize)]
pub struct StatusBody {
    #[serde(default)]
    pub holds: Vec<HoldId>,
}

/// Body of `PUT /waitlist/parking`.
#[derive(Debug, Deserialize)]
pub struct ParkingBody {
    pub on: bool,
}

/// Body of `POST /waitlist/offers`: parked places become this hold of the entry's visitor.
#[derive(Debug, Deserialize)]
pub struct OfferBody {
    pub id: HoldId,
    #[serde(flatten)]
    pub offer: ParkedOffer,
}

/// Body of `POST /waitlist/unpark`: parked places nobody on the list wants go back on sale.
#[derive(Debug, Deserialize)]
pub struct UnparkBody {
    #[serde(default)]
    pub tier: Option<shared_types::ids::TierId>,
    pub quantity: u32,
}

/// The Durable Object class of an inventory.
#[durable_object]
pub struct InventoryObject {
    state: State,
    env: Env,
    /// The ledger, loaded from storage on first use (`None` until an inventory arrives).
    ledger: RefCell<Option<Ledger>>,
    loaded: std::cell::Cell<bool>,
    /// The alarm this instance last set (`Some(None)`: none), so that a request whose change leaves
    /// the earliest expiry where it was costs no alarm call. Forgotten when the alarm fires.
    alarm: Alarm,
    /// This object's shard index (in hold ids), read on load and set on publish.
    shard: std::cell::Cell<u32>,
    /// Requests this instance took (reset when it is evicted): the load generator's DO cost.
    requests: std::cell::Cell<u64>,
    /// Write statements since the object started (`storage_writes` in its stats).
    writes: Writes,
    /// Hold requests per visitor ([`super::rate`]).
    rate: RefCell<super::rate::HoldRate>,
    /// How long ended holds and answers are remembered (`retention.rs`).
    retention: super::retention::Retention,
    /// Places were parked by this request or alarm: the waiting list is to be told.
    parked_news: std::cell::Cell<bool>,
}

/// A fresh hold id: `h<shard index>-<96 random bits in hex>`, so that the edge can route any
/// later call about the hold to the shard that holds it.
fn new_hold_id(shard: u32) -> Result<HoldId> {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
    HoldId::parse(&format!("h{shard}-{}", hex::encode(bytes)))
        .map_err(|e| worker::Error::RustError(e.to_string()))
}

/// The shard index a hold id names (see [`new_hold_id`]).
pub fn shard_of_hold(id: &str) -> Option<usize> {
    id.strip_prefix('h')?.split_once('-')?.0.parse().ok()
}

/// The problem a refused ledger operation becomes. `reason` (and the error's fields) ride along as
/// extension members so clients can act on them.
pub fn hold_problem(e: &HoldError, instance: &str) -> Problem {
    use HoldError::*;
    let kind = match e {
        UnknownSeat { .. }
        | UnknownSection { .. }
        | UnknownZone { .. }
        | UnknownTier { .. }
        | BadQuantity { .. }
        | DuplicateSeat { .. }
        | BadIdempotencyKey
        | WrongEvent { .. } => ProblemType::ValidationFailed,
        HoldNotFound | NotYourHold => ProblemType::NotFound,
        SeatsUnavailable { .. }
        | NotEnoughAvailable { .. }
        | TierNotOnSale { .. }
        | LimitExceeded { .. }
        | IdempotencyConflict
        | DuplicateHoldId
        | HoldExpired
        | HoldReleased
        | HoldSold
        | AlreadyExtended
        | NotSold
        | NotReturnable { .. }
        | StaleInventory { .. }
        | UpdateWouldDisturbHolds { .. } => ProblemType::Conflict,
    };
    // Another visitor's hold is reported exactly like a missing one: no probing of hold ids.
    let detail = if matches!(e, NotYourHold) { HoldNotFound.to_string() } else { e.to_string() };
    let mut problem = Problem::new(kind, detail).with_instance(instance);
    let shown = if matches!(e, NotYourHold) { &HoldNotFound } else { e };
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(shown) {
        problem.extensions.extend(fields);
    }
    problem
}

impl InventoryObject {
    /// The storage; its tables were created when the ledger was loaded.
    fn store(&self) -> Result<Store> {
        Ok(Store::attach(self.state.storage().sql(), &self.writes))
    }

    /// Loads the ledger once per object lifetime and re-arms the alarm (a crash may have lost it).
    async fn ensure_loaded(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let store = Store::create(self.state.storage().sql(), &self.writes)?;
        let mut ledger = store.load(crate::now_ms(), self.retention)?;
        self.shard.set(store.shard()?);
        // Answers over the per-visitor bound (stored before it existed) go from storage at once.
        for (v, k, hold) in ledger.as_mut().map(Ledger::take_evicted).unwrap_or_default() {
            store.delete_idempotency(&v, &k, hold.as_ref())?;
        }
        let next = ledger.as_ref().and_then(Ledger::next_wake);
        *self.ledger.borrow_mut() = ledger;
        self.loaded.set(true);
        self.alarm.keep(&self.state.storage(), next).await
    }

    /// When the alarm must next run: an expiry, or something to forget ([`Ledger::next_wake`]).
    fn next_wake(&self) -> Option<Millis> {
        self.ledger.borrow().as_ref().and_then(Ledger::next_wake)
    }

    /// Runs a ledger operation that touches one hold, persisting that hold and the ledger's meta
    /// synchronously; answers the hold (or the refusal).
    fn hold_op(
        &self,
        path: &str,
        op: impl FnOnce(&mut Ledger, Millis) -> std::result::Result<HoldId, HoldError>,
    ) -> Result<Response> {
        let mut guard = self.ledger.borrow_mut();
        let Some(ledger) = guard.as_mut() else { return not_on_sale(path) };
        match op(ledger, crate::now_ms()) {
            Ok(id) => {
                // An offer's hold sold, extended or released: the list learns it at once.
                if crate::waitlist::ids::is_offer_hold(&id) {
                    self.parked_news.set(true);
                }
                let store = self.store()?;
                let hold = ledger.hold(&id).cloned();
                if let Some(hold) = &hold {
                    store.save_holds([hold])?;
                }
                self.save_parked(&store, ledger)?;
                store.save_meta(ledger)?;
                http::json(200, &hold)
            }
            Err(e) => http::problem(&hold_problem(&e, path)),
        }
    }

    /// Stores the parked holds the last operation made or ended (in its write batch); the
    /// waiting list is told once the request is done ([`Self::tell_waitlist`]).
    fn save_parked(&self, store: &Store, ledger: &mut Ledger) -> Result<()> {
        let changed = ledger.take_parked_changes();
        if changed.is_empty() {
            return Ok(());
        }
        store.save_holds(changed.iter().filter_map(|id| ledger.hold(id)))?;
        if ledger.parking() {
            self.parked_news.set(true);
        }
        Ok(())
    }

    /// Places were parked: the event's waiting list is asked to look (it reads what is parked from
    /// here, so a lost call costs only time: the list also looks on its own every minute).
    async fn tell_waitlist(&self) {
        if !self.parked_news.replace(false) {
            return;
        }
        let Some(event) = self.ledger.borrow().as_ref().map(|l| l.event().clone()) else { return };
        let env = self.env.clone();
        // Not awaited by the answer: a slow list never slows the inventory.
        self.state.wait_until(async move {
            let call = crate::stub::Call::by(&Caller::Waitlist);
            let path = "/wake";
            let sent = crate::stub::send(
                &env,
                crate::stub::WAITLIST_BINDING,
                event.as_str(),
                Method::Post,
                path,
                &call,
                None,
            );
            if let Err(e) = sent.await {
                crate::log::error(
                    "the waiting list could not be told of parked places",
                    serde_json::json!({ "event": event.as_str(), "error": e.to_string() }),
                );
            }
        });
    }

    /// The waiting list's routes (`docs/waiting-list.md`): what is parked and how the offers'
    /// holds stand, parking on or off, an offer made of parked places, places unparked.
    async fn waitlist_route(&self, mut req: Request, action: &str, path: &str) -> Result<Response> {
        // The body is read before the ledger is borrowed: no borrow lives across an `await`.
        let text = match req.text().await {
            Ok(t) if t.len() <= 256 * 1024 => t,
            Ok(_) => return http::problem_of(ProblemType::PayloadTooLarge, "the body is too large", path),
            Err(e) => return malformed(path, e),
        };
        let mut guard = self.ledger.borrow_mut();
        let Some(ledger) = guard.as_mut() else { return not_on_sale(path) };
        let now = crate::now_ms();
        let store = self.store()?;
        macro_rules! body {
            () => {
                match serde_json::from_str(&text) {
                    Ok(b) => b,
                    Err(e) => return malformed(path, e),
                }
            };
        }
        let mut made = None;
        let answer = match (req.method(), action) {
            (Method::Post, "status") => {
                let body: StatusBody = body!();
                let holds: serde_json::Map<String, serde_json::Value> = body
                    .holds
                    .iter()
                    .take(10_000)
                    .map(|id| {
                        let state = ledger.hold(id).map(|h| h.state);
                        (id.to_string(), serde_json::to_value(state).unwrap_or_default())
                    })
                    .collect();
                return http::json(
                    200,
                    &serde_json::json!({ "parking": ledger.parking(), "parked": ledger.parked(), "holds": holds }),
                );
            }
            (Method::Put, "parking") => {
                let body: ParkingBody = body!();
                ledger.set_parking(body.on, now);
                Ok(serde_json::json!({ "parking": ledger.parking(), "parked": ledger.parked() }))
            }
            (Method::Post, "offers") => {
                let body: OfferBody = body!();
                match ledger.hold(&body.id) {
                    // The same offer again (the list retries after a restart): answered as it is.
                    Some(hold) if hold.visitor == body.offer.visitor => return http::json(200, hold),
                    Some(_) => Err(HoldError::DuplicateHoldId),
                    None => ledger.offer_parked(&body.offer, body.id.clone(), now).map(|(hold, _)| {
                        // The new hold is stored with the parked ones it came from (below).
                        made = Some(hold.id.clone());
                        serde_json::to_value(&hold).unwrap_or_default()
                    }),
                }
            }
            (Method::Post, "unpark") => {
                let body: UnparkBody = body!();
                ledger
                    .unpark(body.tier.as_ref(), body.quantity, now)
                    .map(|_| serde_json::json!({ "parked": ledger.parked() }))
            }
            _ => return http::problem_of(ProblemType::NotFound, "no such waiting-list route", path),
        };
        match answer {
            Ok(value) => {
                let changed = ledger.take_parked_changes();
                // The parked holds changed and an offer's new hold, in this write batch.
                store.save_holds(changed.iter().chain(made.as_ref()).filter_map(|id| ledger.hold(id)))?;
                store.save_meta(ledger)?;
                http::json(200, &value)
            }
            Err(e) => http::problem(&hold_problem(&e, path)),
        }
    }

    async fn route(&self, mut req: Request, path: &str, caller: Caller) -> Result<Response> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method();
        if caller == Caller::Core && method != Method::Get {
            let nonce = req.headers().get(NONCE_HEADER)?;
            if let Err(refusal) = self.store()?.record_nonce(nonce.as_deref(), crate::now_ms()) {
                return http::problem(&refusal.problem().with_instance(path));
            }
        }
        let response = match (method, segments.as_slice(), &caller) {
            (Method::Put, ["inventory"], Caller::Core) => {
                let inventory: Inventory = match req.json().await {
                    Ok(i) => i,
                    Err(e) => return malformed(path, e),
                };
                let shard = req.headers().get(SHARD_INDEX_HEADER)?.and_then(|v| v.parse().ok()).unwrap_or(0);
                self.put_inventory(inventory, shard, path)?
            }
            (Method::Post, ["holds"], Caller::Visitor(visitor)) => {
                let body: PlaceHoldBody = match req.json().await {
                    Ok(b) => b,
                    Err(e) => return malformed(path, e),
                };
                self.place_hold(visitor, body, Placer::Buyer, path)?
            }
            // A box-office hold (docs/box-office.md): the core names the walk-up buyer's visitor.
            (Method::Post, ["holds"], Caller::Core) => {
                let body: shared_types::internal_api::CoreHoldBody = match req.json().await {
                    Ok(b) => b,
                    Err(e) => return malformed(path, e),
                };
                if !body.visitor.as_str().starts_with(shared_types::internal_api::BOX_OFFICE_VISITOR_PREFIX) {
                    return http::problem_of(
                        ProblemType::ValidationFailed,
                        "the core places holds for the box office's visitors only",
                        path,
                    );
                }
                let request: HoldRequest = match serde_json::from_value(body.request) {
                    Ok(r) => r,
                    Err(e) => return malformed(path, e),
                };
                let forwarded =
                    PlaceHoldBody { request, idempotency_key: body.idempotency_key, max_tickets: None };
                self.place_hold(&body.visitor, forwarded, Placer::BoxOffice, path)?
            }
            (Method::Get, ["holds", id], _) => {
                let id = parse_hold_id(id);
                let guard = self.ledger.borrow();
                let Some(ledger) = guard.as_ref() else { return not_on_sale(path) };
                match (id.and_then(|id| ledger.hold(&id)), &caller) {
                    (Some(hold), Caller::Core) => http::json(200, hold)?,
                    (Some(hold), Caller::Visitor(v)) if &hold.visitor == v => http::json(200, hold)?,
                    _ => http::problem(&hold_problem(&HoldError::HoldNotFound, path))?,
                }
            }
            (_, ["waitlist", action], Caller::Waitlist) => {
                let action = (*action).to_owned();
                self.waitlist_route(req, &action, path).await?
            }
            (Method::Delete, ["holds", id], Caller::Visitor(_) | Caller::Core | Caller::Waitlist) => {
                // The list ends its own offers' holds, no other.
                let offer = parse_hold_id(id).is_some_and(|h| crate::waitlist::ids::is_offer_hold(&h));
                let Some(id) = parse_hold_id(id).filter(|_| caller != Caller::Waitlist || offer) else {
                    return http::problem(&hold_problem(&HoldError::HoldNotFound, path));
                };
                self.hold_op(path, |l, now| {
                    let by = match &caller {
                        Caller::Visitor(v) => Releaser::Visitor(v),
                        _ => Releaser::Core,
                    };
                    l.release(&id, by, now).map(|h| h.id.clone())
                })?
            }
            // The buyer's own hold, extended for payment as the edge forwards their checkout.
            (Method::Post, ["holds", id, "extend"], Caller::Visitor(visitor)) => {
                let own = parse_hold_id(id).filter(|id| {
                    self.ledger
                        .borrow()
                        .as_ref()
                        .and_then(|l| l.hold(id))
                        .is_some_and(|h| &h.visitor == visitor)
                });
                let Some(id) = own else {
                    return http::problem(&hold_problem(&HoldError::HoldNotFound, path));
                };
                self.hold_op(path, |l, now| l.extend(&id, now).map(|h| h.id.clone()))?
            }
            (Method::Post, ["holds", id, action], Caller::Core) => {
                let Some(id) = parse_hold_id(id) else {
                    return http::problem(&hold_problem(&HoldError::HoldNotFound, path));
                };
                match *action {
                    "extend" => self.hold_op(path, |l, now| l.extend(&id, now).map(|h| h.id.clone()))?,
                    "confirm" => self.hold_op(path, |l, now| l.confirm(&id, now).map(|h| h.id.clone()))?,
                    "reclaim" => self.hold_op(path, |l, now| l.reclaim(&id, now).map(|h| h.id.clone()))?,
                    "return" => {
                        let body: ReturnBody = match req.text().await {
                            Ok(t) if t.trim().is_empty() => ReturnBody::default(),
                            Ok(t) => match serde_json::from_str(&t) {
                                Ok(b) => b,
                                Err(e) => return malformed(path, e),
                            },
                            Err(e) => return malformed(path, e),
                        };
                        self.hold_op(path, |l, now| {
                            l.return_sold(&id, &body.seats, body.ga_quantity, now).map(|h| h.id.clone())
                        })?
                    }
                    _ => http::problem_of(ProblemType::NotFound, "no such hold action", path)?,
                }
            }
            // The seat map as the core defined it (no state): the edge draws the buyer's map from it.
            (Method::Get, ["layout"], _) => match self.store()?.inventory_json()? {
                Some(json) => {
                    let mut resp = Response::ok(json)?;
                    resp.headers_mut().set("content-type", "application/json")?;
                    resp
                }
                None => return not_on_sale(path),
            },
            (Method::Get, ["availability"], _) => {
                let guard = self.ledger.borrow();
                let Some(ledger) = guard.as_ref() else { return not_on_sale(path) };
                http::json(200, &ledger.availability())?
            }
            (Method::Get, ["stats"], Caller::Core) => {
                let guard = self.ledger.borrow();
                let Some(ledger) = guard.as_ref() else { return not_on_sale(path) };
                let availability = ledger.availability();
                http::json(
                    200,
                    &serde_json::json!({
                        "event": ledger.event(),
                        "inventory_version": ledger.inventory_version(),
                        "version": ledger.version(),
                        "stats": ledger.stats(),
                        "next_expiry": ledger.next_expiry(),
                        "next_wake": ledger.next_wake(),
                        "parking": ledger.parking(),
                        "parked": ledger.parked(),
                        "remembered_answers": ledger.remembered(),
                        "retention_ms": {
                            "ended_holds": ledger.ended_hold_retention(),
                            "answers": ledger.answer_retention(),
                        },
                        "rate_windows": self.rate.borrow().len(),
                        "sections": availability.sections,
                        "tiers": availability.tiers,
                        "seated_tiers": availability.seated_tiers,
                        "storage_bytes": self.store()?.size(),
                        "requests": self.requests.get(),
                        "storage_writes": self.writes.get(),
                        "wasm_memory_bytes": crate::wasm_memory_bytes(),
                    }),
                )?
            }
            (_, ["inventory" | "holds" | "availability" | "stats" | "waitlist", ..], _) => {
                http::problem_of(ProblemType::Forbidden, "not allowed for this caller", path)?
            }
            _ => http::problem_of(ProblemType::NotFound, "no such route on the inventory", path)?,
        };
        // Whatever changed, the alarm follows the earliest expiry.
        self.alarm.keep(&self.state.storage(), self.next_wake()).await?;
        self.tell_waitlist().await;
        Ok(response)
    }

    fn put_inventory(&self, inventory: Inventory, shard: u32, path: &str) -> Result<Response> {
        if let Err(errors) = inventory.validate() {
            let problem = Problem::new(ProblemType::ValidationFailed, "the inventory is not valid")
                .with_instance(path)
                .with_extension("errors", serde_json::to_value(&errors)?);
            return http::problem(&problem);
        }
        let mut guard = self.ledger.borrow_mut();
        let outcome = match guard.as_mut() {
            Some(ledger) => ledger.update_inventory(&inventory, crate::now_ms()),
            None => {
                let mut ledger = Ledger::new(&inventory);
                ledger.set_retention(self.retention);
                *guard = Some(ledger);
                Ok(())
            }
        };
        if let Err(e) = outcome {
            return http::problem(&hold_problem(&e, path));
        }
        let Some(ledger) = guard.as_mut() else { return not_on_sale(path) };
        let store = self.store()?;
        store.save_inventory(&inventory)?;
        self.save_parked(&store, ledger)?;
        store.save_shard(shard)?;
        self.shard.set(shard);
        store.save_meta(ledger)?;
        http::json(
            200,
            &serde_json::json!({
                "event": ledger.event(),
                "inventory_version": ledger.inventory_version(),
                "version": ledger.version(),
            }),
        )
    }

    fn place_hold(
        &self,
        visitor: &VisitorId,
        body: PlaceHoldBody,
        placer: Placer,
        path: &str,
    ) -> Result<Response> {
        let mut guard = self.ledger.borrow_mut();
        let Some(ledger) = guard.as_mut() else { return not_on_sale(path) };
        // The box office's holds are bounded by the core (live holds per clerk), not by this rate.
        let limited = match placer {
            Placer::Buyer => self.rate.borrow_mut().attempt(visitor, crate::now_ms()).err(),
            Placer::BoxOffice => None,
        };
        if let Some(wait_ms) = limited {
            let secs = (wait_ms + 999) / 1000;
            let mut resp = http::problem(
                &Problem::new(ProblemType::RateLimited, "too many hold requests; try again shortly")
                    .with_instance(path)
                    .with_extension("reason", "hold-rate".into())
                    .with_extension("retry_after", secs.into()),
            )?;
            resp.headers_mut().set("retry-after", &secs.to_string())?;
            return Ok(resp);
        }
        let key = body.idempotency_key.as_deref();
        let store = self.store()?;
        let id = new_hold_id(self.shard.get())?;
        // A key seen before is answered as the first time, and nothing is written.
        let new_key = key.is_some_and(|k| ledger.idempotency_record(visitor, k).is_none());
        let answer = match placer {
            Placer::Buyer => {
                ledger.place_hold_within(visitor, key, &body.request, crate::now_ms(), id, body.max_tickets)
            }
            Placer::BoxOffice => {
                ledger.place_box_office_hold(visitor, key, &body.request, crate::now_ms(), id)
            }
        };
        // Persist before answering, in one statement: the hold placed, with the key's answer in
        // its row; or a refusal's answer under its key. The ledger's meta is not written here
        // (the store recovers what it would say from the rows: `Store::load`).
        let record = key.filter(|_| new_key).and_then(|k| ledger.idempotency_record(visitor, k));
        match &answer {
            Ok(placed) if !placed.replayed => store.insert_placed(&placed.hold, ledger.version(), record)?,
            Ok(_) => {}
            Err(_) => {
                if let Some(record) = record {
                    store.save_idempotency(record)?;
                }
            }
        }
        // Over the per-visitor bound: the oldest answers go from storage as from memory (from
        // the table, or from the row of the hold they placed).
        for (v, k, hold) in ledger.take_evicted() {
            store.delete_idempotency(&v, &k, hold.as_ref())?;
        }
        match answer {
            Ok(placed) => http::json(if placed.replayed { 200 } else { 201 }, &placed),
            Err(e) => http::problem(&hold_problem(&e, path)),
        }
    }
}

impl DurableObject for InventoryObject {
    fn new(state: State, env: Env) -> Self {
        let configured = env.var(super::rate::RATE_VAR).ok().map(|v| v.to_string());
        let per_window = super::rate::per_window(configured.as_deref());
        if let Some(value) = &configured {
            // Set only by a test environment: said once per object, and a value out of bounds too.
            crate::log::info(
                "inventory: the hold rate is set by the environment",
                serde_json::json!({ "variable": super::rate::RATE_VAR, "value": value, "holds_per_minute": per_window }),
            );
        }
        let rate = super::rate::HoldRate::new(per_window);
        let configured = env.var(super::retention::VAR).ok().map(|v| v.to_string());
        let retention = super::retention::Retention::configured(configured.as_deref());
        if let Some(value) = &configured {
            // Set only by a run that must reach steady state sooner than the default (the soak):
            // said once per object, and a value out of bounds (the default then) too.
            crate::log::warn(
                "inventory: the retention of ended holds and answers is set by the environment",
                serde_json::json!({
                    "variable": super::retention::VAR,
                    "value": value,
                    "retention_seconds": retention.ms / 1_000,
                }),
            );
        }
        Self {
            state,
            env,
            ledger: RefCell::new(None),
            loaded: std::cell::Cell::new(false),
            alarm: Alarm::default(),
            shard: std::cell::Cell::new(0),
            requests: std::cell::Cell::new(0),
            writes: Writes::default(),
            rate: RefCell::new(rate),
            retention,
            parked_news: std::cell::Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.requests.set(self.requests.get() + 1);
        let route = |req, path: String, caller| async move { self.route(req, &path, caller).await };
        let reset = || {
            self.loaded.set(false);
            self.alarm.forget();
            *self.ledger.borrow_mut() = None;
        };
        http::serve(req, "inventory", self.ensure_loaded(), route, reset).await
    }

    /// Expires every due hold, forgets what is past retention, and re-arms for the next expiry.
    /// Safe to run twice (a retried alarm finds nothing more to do).
    async fn alarm(&self) -> Result<Response> {
        // The alarm that fired is gone: whatever this instance armed before no longer stands.
        self.alarm.forget();
        self.ensure_loaded().await?;
        let now = crate::now_ms();
        let next = {
            let mut guard = self.ledger.borrow_mut();
            let Some(ledger) = guard.as_mut() else { return Response::ok("no inventory") };
            let expired = ledger.expire_due(now);
            let forgotten = ledger.prune(now);
            let store = self.store()?;
            let touched: Vec<_> = expired.iter().filter_map(|id| ledger.hold(id)).collect();
            store.save_holds(touched)?;
            self.save_parked(&store, ledger)?;
            // An offer's hold ran out: the list passes it on at once.
            if expired.iter().any(crate::waitlist::ids::is_offer_hold) {
                self.parked_news.set(true);
            }
            store.delete_holds(&forgotten)?;
            store.delete_idempotency_before(now - ledger.answer_retention())?;
            store.forget_nonces(now)?;
            store.save_meta(ledger)?;
            self.rate.borrow_mut().prune(now);
            ledger.next_wake()
        };
        self.alarm.keep(&self.state.storage(), next).await?;
        self.tell_waitlist().await;
        Response::ok("expired due holds")
    }
}

fn parse_hold_id(id: &str) -> Option<HoldId> {
    HoldId::parse(id).ok()
}

fn not_on_sale(path: &str) -> Result<Response> {
    http::problem_of(ProblemType::NotFound, "this event has no inventory here", path)
}

fn malformed(path: &str, e: impl std::fmt::Display) -> Result<Response> {
    http::malformed(path, e)
}
