//! `WaitlistObject`: one per event (named by the event id), the single writer of the event's
//! waiting list. The rules are [`WaitingList`]'s; this shell persists every decision (the list's
//! records, appended in the same write batch as the change), and keeps the inventory in step:
//!
//! - **Parking.** While anyone waits, every inventory shard of the event parks the places that come
//!   back (`PUT /waitlist/parking`); when nobody waits, parking stops and what is parked goes back
//!   on sale.
//! - **Returned places are read, not pushed.** A shard that parked something tells this object to
//!   look (`POST /wake`); a round ([`WaitlistObject::round`]) then reads each shard's parked places
//!   and the state of each standing offer's hold in one answer (`POST /waitlist/status`) and
//!   settles the difference: more parked than the list counts is `Returned`, less is `Taken` (a
//!   late payment took its places back). A lost wake costs time, never places: the object also
//!   looks every [`POLL_MS`] while anyone waits or an offer stands.
//! - **An offer is a hold.** Each offer the rules make is recorded, then placed at the shard as a
//!   hold of the entry's visitor until the offer's end (`POST /waitlist/offers`, under the id
//!   [`offer_hold_id`], so that placing it again after a restart finds it instead of doubling
//!   it). An offer whose hold the shard refuses (the buyer already holds the most tickets allowed)
//!   is declined on the buyer's behalf and its places go to the next entry.
//! - **Ends.** The inventory ends an offer's hold at its time (later if checkout extended it): a
//!   hold expired is a lapsed offer, one sold a claimed offer, one the buyer released a declined
//!   one. Places nobody waiting can use are unparked (`POST /waitlist/unpark`). An offer is
//!   mailable once the inventory holds it (`placed`).
//!
//! One round runs at a time (an async lock), and anything that ends an offer at the inventory
//! (leaving, declining) takes the same lock, so the snapshot a round settles from is never
//! overtaken by a change the round does not know of.
//!
//! Routes (`x-caller` says who): `PUT /settings` (core), `POST /join`, `GET /entry`,
//! `DELETE /entry`, `POST /entry/decline` (visitor), `POST /wake` (an inventory shard),
//! `GET /summary`, `GET /records`, `GET /entries` (with addresses, for the organizer's export),
//! `GET /offers?after=` (what to mail), `POST /close` and `POST /forget` (an erasure) (core).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared_types::ids::{EventId, HoldId, TierId, VisitorId};
use shared_types::inventory::{HoldState, Sharding, GA_SHARD};
use shared_types::waiting_room::WaitingRoomSettings;
use shared_types::ProblemType;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use super::ids::offer_hold_id;
use super::list::{EntryState, JoinRequest, ListSettings, Millis, Offer, Pool, Record, WaitingList};
use crate::alarm::Alarm;
use crate::caller::Caller;
use crate::directory::Layout;
use crate::http;
use crate::inventory::ledger::Parked;
use crate::stub::{send, Call, DIRECTORY_BINDING, INVENTORY_BINDING};

/// How often the list looks at the inventory on its own while anyone waits or an offer stands.
pub const POLL_MS: Millis = 60_000;
/// The longest e-mail address taken (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

/// Body of `PUT /settings`: the event's waiting-room settings (the list's are among them).
#[derive(Debug, Deserialize)]
pub struct SettingsPush {
    pub event: EventId,
    pub settings: WaitingRoomSettings,
}

/// Body of `POST /forget` (an erasure request, from the core).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetBody {
    pub email: String,
}

/// Body of `POST /join`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    pub email: String,
    /// A general-admission tier; `None` with `seats: true`: seats; neither: anything.
    #[serde(default)]
    pub tier: Option<TierId>,
    #[serde(default)]
    pub seats: bool,
    /// The seated tier to buy seats under, if the buyer chose one.
    #[serde(default)]
    pub seated_tier: Option<TierId>,
    pub quantity: u32,
}

/// What a visitor sees of their entry.
#[derive(Debug, Serialize)]
pub struct EntryView {
    pub number: u64,
    #[serde(flatten)]
    pub state: EntryState,
    /// 1 + the entries waiting ahead (while waiting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    pub quantity: u32,
    /// What the entry waits for (`None`: anything); an offer's own `pool` says what it is of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wants: Option<Pool>,
    /// The hold that carries an offer standing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldId>,
}

/// A shard's answer to `POST /waitlist/status`.
#[derive(Debug, Deserialize)]
struct ShardStatus {
    parking: bool,
    parked: Vec<Parked>,
    holds: HashMap<HoldId, Option<HoldState>>,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[derive(Deserialize)]
struct Email {
    email: String,
}

#[derive(Deserialize)]
struct Until {
    until: i64,
}

#[derive(Deserialize)]
struct Address {
    number: i64,
    email: String,
}

/// The most offers one read of `GET /offers` answers.
pub const OFFERS_PER_PAGE: usize = 100;

/// How placing an offer at the inventory went.
enum Placed {
    Held,
    /// The inventory will not hold it (the buyer already holds the most tickets allowed, the
    /// tier's sale ended): declined on their behalf.
    Refused,
    /// Its places had gone (a late payment took them back): the entry waits again (twice at
    /// most: a third time it is declined, so that no offer is remade and withdrawn forever).
    Gone,
    /// Not now (an unexpected refusal): placed again at the next round, or lapsed at its time.
    Later,
}

/// How many times an entry's offer may be withdrawn before it is declined.
pub const MAX_WITHDRAWALS: usize = 2;

/// The most offers one round places at the inventory (the rest, recorded, are placed by the next
/// round: one round stays well within a Worker's subrequests).
pub const PLACEMENTS_PER_ROUND: usize = 50;

/// A standing offer, as a round sees it.
struct Standing {
    number: u64,
    pool: Pool,
    quantity: u32,
    until: Millis,
}

#[durable_object]
pub struct WaitlistObject {
    state: State,
    env: Env,
    /// The event and its list (`None` until the core first sends the settings).
    list: RefCell<Option<(EventId, WaitingList)>>,
    /// How many of the list's records are stored.
    saved: Cell<usize>,
    loaded: Cell<bool>,
    alarm: Alarm,
    /// One round (or one change of an offer at the inventory) at a time.
    gate: Mutex<()>,
    /// The event's shard layout, as last read from its directory (it only grows).
    layout: RefCell<Option<Layout>>,
    /// A round was asked for since the running one began.
    wanted: Cell<bool>,
}

const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS addresses (number INTEGER PRIMARY KEY, email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS placed (number INTEGER PRIMARY KEY, until INTEGER NOT NULL);
";

impl WaitlistObject {
    fn load(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        sql.exec(SCHEMA, None)?;
        let event: Vec<Body> = sql.exec("SELECT body FROM meta WHERE key = 'event'", None)?.to_array()?;
        let list = match event.first() {
            Some(b) => {
                let event: EventId = serde_json::from_str(&b.body)?;
                let rows: Vec<Body> = sql.exec("SELECT body FROM records ORDER BY seq", None)?.to_array()?;
                let records: Vec<Record> =
                    rows.iter().map(|r| serde_json::from_str(&r.body)).collect::<serde_json::Result<_>>()?;
                self.saved.set(records.len());
                let list = super::list::restore(records).map_err(|e| {
                    worker::Error::RustError(format!("stored waiting list is inconsistent: {e}"))
                })?;
                Some((event, list))
            }
            None => None,
        };
        *self.list.borrow_mut() = list;
        self.loaded.set(true);
        Ok(())
    }

    /// Appends the records not stored yet (synchronously: in the write batch of the change).
    fn save(&self) -> Result<()> {
        let guard = self.list.borrow();
        let Some((_, list)) = guard.as_ref() else { return Ok(()) };
        let sql = self.state.storage().sql();
        let records = list.records();
        for (seq, record) in records.iter().enumerate().skip(self.saved.get()) {
            sql.exec(
                "INSERT INTO records (seq, body) VALUES (?, ?)",
                vec![(seq as i64).into(), serde_json::to_string(record)?.into()],
            )?;
            // An address is kept while its entry is live, no longer (it bought, left or lapsed).
            if let Record::Ended { number, .. } | Record::Claimed { number, .. } = record {
                sql.exec("DELETE FROM addresses WHERE number = ?", vec![(*number as i64).into()])?;
            }
        }
        self.saved.set(records.len());
        Ok(())
    }

    /// The key an address is known by in the list's records: a hash of it under this list's own
    /// secret (the records, which the core reads for the audit, carry no address).
    fn email_key(&self, email: &str) -> Result<String> {
        let sql = self.state.storage().sql();
        let rows: Vec<Body> = sql.exec("SELECT body FROM meta WHERE key = 'secret'", None)?.to_array()?;
        let secret = match rows.first() {
            Some(b) => b.body.clone(),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::getrandom(&mut bytes)
                    .map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
                let secret = hex::encode(bytes);
                sql.exec("INSERT INTO meta (key, body) VALUES ('secret', ?)", vec![secret.clone().into()])?;
                secret
            }
        };
        let mut hash = Sha256::new();
        hash.update(secret.as_bytes());
        hash.update(email.trim().to_lowercase().as_bytes());
        Ok(hex::encode(&hash.finalize()[..16]))
    }

    /// When the alarm must next run: the next look while anyone waits or an offer stands (the
    /// inventory wakes the list sooner when places come back or an offer's hold ends or sells).
    fn next_wake(&self) -> Option<Millis> {
        let guard = self.list.borrow();
        let (_, list) = guard.as_ref()?;
        let busy = list.waiting() > 0 || list.offers_out() > 0 || list.free().values().any(|n| *n > 0);
        let now = crate::now_ms();
        // Sooner when places nobody can use are due back on sale.
        let release = list.next_release_check(now).unwrap_or(Millis::MAX);
        busy.then(|| (now + POLL_MS).min(release))
    }

    /// Runs a round now (from the alarm, so the answer to the request that asked does not wait;
    /// asked during a round, another follows it).
    async fn round_soon(&self) -> Result<()> {
        self.wanted.set(true);
        self.alarm.keep(&self.state.storage(), Some(crate::now_ms())).await
    }

    async fn put_settings(&self, push: SettingsPush, path: &str) -> Result<Response> {
        let settings = ListSettings::of(&push.settings);
        if let Err((field, message)) = settings.validate() {
            let problem = shared_types::Problem::new(
                ProblemType::ValidationFailed,
                format!("the waiting-list settings are not valid: {field} {message}"),
            )
            .with_instance(path);
            return http::problem(&problem);
        }
        {
            let mut guard = self.list.borrow_mut();
            match guard.as_mut() {
                Some((event, _)) if *event != push.event => {
                    return http::problem_of(ProblemType::Conflict, "this list is another event's", path)
                }
                Some((_, list)) => list.set_settings(settings, crate::now_ms()),
                None => {
                    let sql = self.state.storage().sql();
                    sql.exec(
                        "INSERT OR REPLACE INTO meta (key, body) VALUES ('event', ?)",
                        vec![serde_json::to_string(&push.event)?.into()],
                    )?;
                    *guard = Some((push.event.clone(), WaitingList::new(settings)));
                }
            }
        }
        self.save()?;
        self.round_soon().await?;
        http::json(200, &serde_json::json!({ "settings": settings }))
    }

    fn join(&self, visitor: &VisitorId, body: JoinBody, path: &str) -> Result<Response> {
        let email = body.email.trim();
        if !plausible_email(email) {
            return http::problem(
                &shared_types::Problem::new(ProblemType::ValidationFailed, "an e-mail address is required")
                    .with_instance(path)
                    .with_extension("reason", "bad-email".into()),
            );
        }
        let pool = match (body.tier, body.seats) {
            (Some(_), true) => {
                return http::problem_of(ProblemType::ValidationFailed, "ask for seats or for a tier", path)
            }
            (Some(t), false) => Some(Pool::General(t)),
            (None, true) => Some(Pool::Seats),
            (None, false) => None,
        };
        let email_key = self.email_key(email)?;
        let request = JoinRequest {
            visitor: visitor.clone(),
            email_key,
            pool,
            seated_tier: body.seated_tier,
            quantity: body.quantity,
        };
        let joined = {
            let mut guard = self.list.borrow_mut();
            let Some((_, list)) = guard.as_mut() else {
                return http::problem_of(ProblemType::NotFound, "this event keeps no waiting list", path);
            };
            list.join(request, crate::now_ms()).map(|e| e.number)
        };
        match joined {
            Ok(number) => {
                self.state.storage().sql().exec(
                    "INSERT OR REPLACE INTO addresses (number, email) VALUES (?, ?)",
                    vec![(number as i64).into(), email.into()],
                )?;
                self.save()?;
                http::json(201, &self.view(number))
            }
            Err(e) => {
                let kind = match e {
                    super::list::JoinError::Quantity { .. } => ProblemType::ValidationFailed,
                    super::list::JoinError::Disabled => ProblemType::NotFound,
                    _ => ProblemType::Conflict,
                };
                http::problem(
                    &shared_types::Problem::new(kind, e.to_string())
                        .with_instance(path)
                        .with_extension("reason", e.reason().into()),
                )
            }
        }
    }

    /// What the visitor sees of entry `number`.
    fn view(&self, number: u64) -> Option<EntryView> {
        let guard = self.list.borrow();
        let (_, list) = guard.as_ref()?;
        let entry = list.entry(number)?;
        let hold = match &entry.state {
            EntryState::Offered { pool, .. } => Some(offer_hold_id(self.shard_of(pool), number)),
            _ => None,
        };
        Some(EntryView {
            number,
            state: entry.state.clone(),
            position: list.position(number),
            quantity: entry.quantity,
            wants: entry.pool.clone(),
            hold,
        })
    }

    /// The shard whose places a pool is: seats of shard `n`, or of the only shard; a GA tier's in
    /// the GA shard of an event sharded by section, else in the only one.
    fn shard_of(&self, pool: &Pool) -> usize {
        match pool {
            Pool::Seats => 0,
            Pool::Shard(i) => *i as usize,
            Pool::General(_) => self
                .layout
                .borrow()
                .as_ref()
                .filter(|l| l.sharding == Sharding::BySection)
                .and_then(|l| l.index_of(GA_SHARD))
                .unwrap_or(0),
        }
    }

    /// The pool a shard's parked places are: seats of an event sharded by section are their
    /// shard's own pool.
    fn pool_of(&self, shard: usize, sharded: bool, parked: &Parked) -> Pool {
        match &parked.tier {
            Some(t) => Pool::General(t.clone()),
            None if sharded => Pool::Shard(shard as u32),
            None => Pool::Seats,
        }
    }

    /// The visitor leaves (or declines their offer): an offer's hold is ended at the inventory
    /// first (its places parked again), then the list records it.
    async fn end_entry(&self, visitor: &VisitorId, decline: bool, path: &str) -> Result<Response> {
        let _gate = self.gate.lock().await;
        let found = {
            let guard = self.list.borrow();
            guard.as_ref().and_then(|(_, l)| l.entry_of(visitor).map(|e| (e.number, e.state.clone())))
        };
        let Some((number, state)) = found else {
            return http::problem_of(ProblemType::NotFound, "not on this waiting list", path);
        };
        if let EntryState::Offered { pool, .. } = &state {
            let layout = self.layout().await?;
            let shard = self.shard_of(pool);
            if let Some(layout) = layout {
                let sold = self.end_offer_hold(&layout, shard, number).await?;
                if sold {
                    // Paid in the meantime: it is theirs.
                    self.apply(|l, now| {
                        l.claimed(number, now);
                    })?;
                    return http::json(200, &self.view(number));
                }
            }
        } else if decline {
            return http::problem_of(ProblemType::Conflict, "no offer stands for you", path);
        }
        self.apply(|l, now| {
            if decline {
                l.decline(number, now);
            } else {
                l.leave(visitor, now);
            }
        })?;
        self.round_soon().await?;
        http::json(200, &self.view(number))
    }

    /// Applies a change to the list and stores its records.
    fn apply(&self, change: impl FnOnce(&mut WaitingList, Millis)) -> Result<()> {
        if let Some((_, list)) = self.list.borrow_mut().as_mut() {
            change(list, crate::now_ms());
        }
        self.save()
    }

    /// The event's layout, read from its directory (and kept for [`Self::shard_of`]).
    async fn layout(&self) -> Result<Option<Layout>> {
        let Some(event) = self.list.borrow().as_ref().map(|(e, _)| e.clone()) else { return Ok(None) };
        let call = Call::by(&Caller::Waitlist);
        let mut resp =
            send(&self.env, DIRECTORY_BINDING, event.as_str(), Method::Get, "/layout", &call, None).await?;
        if resp.status_code() != 200 {
            return Ok(None);
        }
        let layout: Layout = crate::http::answer_json(&mut resp).await?;
        *self.layout.borrow_mut() = Some(layout.clone());
        Ok(Some(layout))
    }

    /// The layout as kept, read once per instance when not yet.
    async fn known_layout(&self) -> Result<()> {
        if self.layout.borrow().is_none() {
            self.layout().await?;
        }
        Ok(())
    }

    /// One call to a shard of the event's inventory, as the list.
    async fn shard_call(
        &self,
        layout: &Layout,
        shard: usize,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Response> {
        let name = layout
            .object_name(shard)
            .ok_or_else(|| worker::Error::RustError(format!("no inventory shard {shard}")))?;
        send(&self.env, INVENTORY_BINDING, &name, method, path, &Call::by(&Caller::Waitlist), body).await
    }

    /// Ends an offer's hold at its shard (its places are parked again). `true` when the hold was
    /// sold instead (the buyer paid just in time).
    async fn end_offer_hold(&self, layout: &Layout, shard: usize, number: u64) -> Result<bool> {
        let id = offer_hold_id(shard, number);
        let mut resp = self.shard_call(layout, shard, Method::Delete, &format!("/holds/{id}"), None).await?;
        match resp.status_code() {
            200 | 404 => Ok(false),
            409 => {
                let problem: serde_json::Value =
                    crate::http::answer_json(&mut resp).await.unwrap_or_default();
                Ok(problem["reason"] == "hold-sold"
                    || problem["detail"].as_str().is_some_and(|d| d.contains("sold")))
            }
            s => {
                Err(worker::Error::RustError(format!("shard {shard} answered {s} to ending offer {number}")))
            }
        }
    }

    /// Places an offer as a hold at its shard. [`Placed::Refused`] when the buyer already holds the
    /// most tickets allowed, [`Placed::Gone`] when the places were not there any more.
    async fn place(&self, layout: &Layout, offer: &Offer) -> Result<Placed> {
        let shard = self.shard_of(&offer.pool);
        let tier = match &offer.pool {
            Pool::General(t) => Some(t.clone()),
            _ => None,
        };
        let body = serde_json::json!({
            "id": offer_hold_id(shard, offer.number),
            "visitor": offer.visitor,
            "tier": tier,
            "quantity": offer.quantity,
            "seated_tier": offer.seated_tier,
            "until": offer.until,
        });
        let mut resp =
            self.shard_call(layout, shard, Method::Post, "/waitlist/offers", Some(body.to_string())).await?;
        match resp.status_code() {
            200 | 201 => Ok(Placed::Held),
            400..=499 => {
                let problem: serde_json::Value =
                    crate::http::answer_json(&mut resp).await.unwrap_or_default();
                crate::log::info(
                    "waiting-list offer not held by the inventory",
                    serde_json::json!({ "entry": offer.number, "shard": shard, "reason": problem["reason"] }),
                );
                Ok(match problem["reason"].as_str() {
                    // Places gone (a late payment took them back meanwhile): the entry waits again.
                    Some("not_enough_available" | "seats_unavailable") => Placed::Gone,
                    // What the inventory will refuse again: declined on the buyer's behalf.
                    Some("limit_exceeded" | "tier_not_on_sale" | "unknown_tier") => Placed::Refused,
                    // Anything else: tried again at the next round (it lapses at its time).
                    _ => Placed::Later,
                })
            }
            s => {
                Err(worker::Error::RustError(format!("shard {shard} answered {s} to offer {}", offer.number)))
            }
        }
    }

    /// When the offer of entry `number` held at the inventory ends, if it was held.
    fn placed_until(&self, number: u64) -> Result<Option<Millis>> {
        let sql = self.state.storage().sql();
        let held: Vec<Until> = sql
            .exec("SELECT until FROM placed WHERE number = ?", vec![(number as i64).into()])?
            .to_array()?;
        Ok(held.first().map(|p| p.until))
    }

    /// One round: settle with the inventory, end what is due, make and place the offers the rules
    /// give, give back what nobody wants, and set parking. Safe to run any number of times.
    async fn round(&self) -> Result<()> {
        let _gate = self.gate.lock().await;
        let Some(layout) = self.layout().await? else { return Ok(()) };
        let sharded = layout.sharding == Sharding::BySection;
        let standing: Vec<Standing> = {
            let guard = self.list.borrow();
            let Some((_, list)) = guard.as_ref() else { return Ok(()) };
            list.entries()
                .filter_map(|e| match &e.state {
                    EntryState::Offered { pool, until } => Some(Standing {
                        number: e.number,
                        pool: pool.clone(),
                        quantity: e.quantity,
                        until: *until,
                    }),
                    _ => None,
                })
                .collect()
        };
        // 1. What each shard has parked and how each offer's hold stands: one answer per shard.
        let mut statuses = Vec::with_capacity(layout.shards.len());
        for shard in 0..layout.shards.len() {
            let holds: Vec<HoldId> = standing
                .iter()
                .filter(|s| self.shard_of(&s.pool) == shard)
                .map(|s| offer_hold_id(shard, s.number))
                .collect();
            let body = serde_json::json!({ "holds": holds }).to_string();
            let mut resp =
                self.shard_call(&layout, shard, Method::Post, "/waitlist/status", Some(body)).await?;
            if resp.status_code() == 404 {
                statuses.push(None); // no inventory there yet
                continue;
            }
            if resp.status_code() != 200 {
                return Err(worker::Error::RustError(format!(
                    "shard {shard} answered {}",
                    resp.status_code()
                )));
            }
            statuses.push(Some(crate::http::answer_json::<ShardStatus>(&mut resp).await?));
        }
        let now = crate::now_ms();
        // 2. Offers whose hold ended at the inventory, and offers not placed yet. The inventory
        // ends an offer's hold at its time (later, if checkout extended it for a buyer paying):
        // the list never ends one by its own clock.
        let mut unplaced = Vec::new();
        let mut placed_now = Vec::new();
        let mut pending: BTreeMap<Pool, u32> = BTreeMap::new();
        // Offers held once whose hold the shard no longer knows (it forgets ended holds after an
        // hour): ended, however they did; the counts below settle their places.
        let mut forgotten = Vec::new();
        for s in &standing {
            let shard_knows = statuses.get(self.shard_of(&s.pool)).is_some_and(Option::is_some);
            if shard_knows && self.placed_until(s.number)? == Some(s.until) {
                forgotten.push(s.number);
            }
        }
        if let Some((_, list)) = self.list.borrow_mut().as_mut() {
            for s in &standing {
                let shard = self.shard_of(&s.pool);
                let id = offer_hold_id(shard, s.number);
                let state =
                    statuses.get(shard).and_then(|st| st.as_ref()).and_then(|st| st.holds.get(&id)).cloned();
                match state.flatten() {
                    Some(HoldState::Sold) => {
                        list.claimed(s.number, now);
                    }
                    Some(HoldState::Expired) => {
                        list.lapse(s.number, now);
                    }
                    Some(HoldState::Released) => {
                        list.decline(s.number, now);
                    }
                    Some(HoldState::Held) => placed_now.push(s.number),
                    None if forgotten.contains(&s.number) => {
                        // Not placed again (that would give the entry a second set of places).
                        if s.until <= now {
                            list.lapse(s.number, now);
                        } else {
                            list.decline(s.number, now);
                        }
                    }
                    None => {
                        // Recorded, not placed yet (the round's cap, or a restart between the
                        // two): its places are still parked.
                        *pending.entry(s.pool.clone()).or_default() += s.quantity;
                        unplaced.push(s.number);
                    }
                }
            }
            // 3. Settle: what the shards have parked against what the list counts as free.
            let mut parked: BTreeMap<Pool, u32> = BTreeMap::new();
            for (shard, status) in statuses.iter().enumerate() {
                for p in status.iter().flat_map(|s| &s.parked) {
                    *parked.entry(self.pool_of(shard, sharded, p)).or_default() += p.quantity;
                }
            }
            let mut pools: Vec<Pool> =
                parked.keys().chain(list.free().keys()).chain(pending.keys()).cloned().collect();
            pools.sort();
            pools.dedup();
            for pool in pools {
                let have = parked.get(&pool).copied().unwrap_or(0);
                let counted =
                    list.free().get(&pool).copied().unwrap_or(0) + pending.get(&pool).copied().unwrap_or(0);
                if have > counted {
                    list.returned(pool, have - counted, now);
                } else if have < counted {
                    list.taken(pool, counted - have, now);
                }
            }
            // An offer never placed whose time has passed lapses rather than being placed late.
            unplaced.retain(|n| {
                let due = list
                    .entry(*n)
                    .is_some_and(|e| matches!(e.state, EntryState::Offered { until, .. } if until <= now));
                if due {
                    list.lapse(*n, now);
                }
                !due
            });
        }
        self.save()?;
        // Held at the inventory: mailable (a restart may have come between placing and marking).
        for number in placed_now {
            let until =
                self.list.borrow().as_ref().and_then(|(_, l)| match l.entry(number).map(|e| &e.state) {
                    Some(EntryState::Offered { until, .. }) => Some(*until),
                    _ => None,
                });
            if let Some(until) = until {
                self.mark_placed(number, until)?;
            }
        }
        // 4. Offers recorded but not placed, then the new ones (at most a round's worth).
        let unplaced: Vec<Offer> = {
            let guard = self.list.borrow();
            let Some((_, list)) = guard.as_ref() else { return Ok(()) };
            unplaced.iter().filter_map(|n| offer_of(list, *n)).collect()
        };
        let mut made = Vec::new();
        self.apply(|l, now| made = l.offer(now))?;
        let to_place: Vec<&Offer> = unplaced.iter().chain(&made).collect();
        if to_place.len() > PLACEMENTS_PER_ROUND {
            self.wanted.set(true);
        }
        for offer in to_place.into_iter().take(PLACEMENTS_PER_ROUND) {
            match self.place(&layout, offer).await? {
                Placed::Held => self.mark_placed(offer.number, offer.until)?,
                Placed::Refused => self.apply(|l, now| {
                    l.decline(offer.number, now);
                })?,
                Placed::Gone => self.apply(|l, now| {
                    let withdrawn = l
                        .records()
                        .iter()
                        .filter(|r| matches!(r, Record::Withdrawn { number, .. } if *number == offer.number))
                        .count();
                    if withdrawn < MAX_WITHDRAWALS {
                        l.withdraw(offer.number, now);
                    } else {
                        l.decline(offer.number, now);
                    }
                })?,
                Placed::Later => {}
            }
        }
        // 5. What nobody waiting wants goes back on sale.
        let mut unwanted = Vec::new();
        self.apply(|l, now| unwanted = l.release_unwanted(now))?;
        for (pool, quantity) in unwanted {
            let shard = self.shard_of(&pool);
            let tier = match &pool {
                Pool::General(t) => Some(t.clone()),
                _ => None,
            };
            let body = serde_json::json!({ "tier": tier, "quantity": quantity }).to_string();
            let resp = self.shard_call(&layout, shard, Method::Post, "/waitlist/unpark", Some(body)).await?;
            if resp.status_code() != 200 {
                // Settled at the next round (the places show as parked again: returned).
                crate::log::error(
                    "waiting list could not unpark places",
                    serde_json::json!({ "shard": shard, "status": resp.status_code() }),
                );
            }
        }
        // 6. Parking while anyone waits, and while offers stand (their places come back to the
        // list if they lapse, and the line stays closed meanwhile).
        let want = self.list.borrow().as_ref().is_some_and(|(_, l)| {
            l.settings().enabled && !l.closed() && (l.waiting() > 0 || l.offers_out() > 0)
        });
        for (shard, status) in statuses.iter().enumerate() {
            if status.as_ref().is_some_and(|s| s.parking != want) {
                let body = serde_json::json!({ "on": want }).to_string();
                let resp =
                    self.shard_call(&layout, shard, Method::Put, "/waitlist/parking", Some(body)).await?;
                if resp.status_code() != 200 {
                    return Err(worker::Error::RustError(format!(
                        "shard {shard} answered {} to parking",
                        resp.status_code()
                    )));
                }
            }
        }
        if !want {
            // Parking off frees what was parked: nobody waits (or the list is closed), so the
            // list gives up every place it counted. (A list turned off with people waiting keeps
            // counting them until the next round settles them as taken.)
            self.apply(|l, now| {
                l.release_unwanted(now);
            })?;
        }
        Ok(())
    }

    /// Records that offer `number` (ending at `until`) is held at the inventory: it may be mailed.
    fn mark_placed(&self, number: u64, until: Millis) -> Result<()> {
        self.state.storage().sql().exec(
            "INSERT OR REPLACE INTO placed (number, until) VALUES (?, ?)",
            vec![(number as i64).into(), until.into()],
        )?;
        Ok(())
    }

    /// The offers recorded after history position `after` that still stand, for the core to mail
    /// (at most [`OFFERS_PER_PAGE`]), and the position to ask from next: an offer that ended
    /// before the core read it is not mailed.
    fn offers_after(&self, after: i64) -> Result<serde_json::Value> {
        let guard = self.list.borrow();
        let Some((event, list)) = guard.as_ref() else {
            return Ok(serde_json::json!({ "offers": [], "next": after }));
        };
        let sql = self.state.storage().sql();
        let start = usize::try_from(after + 1).unwrap_or(0);
        let mut offers = Vec::new();
        let mut next = after;
        // The position before the first standing offer not held yet: the core reads from there
        // again (it is mailed once held), while the offers after it are mailed now (those read
        // twice are dropped by the mail's dedup key).
        let mut unplaced: Option<i64> = None;
        for (seq, record) in list.records().iter().enumerate().skip(start) {
            if offers.len() >= OFFERS_PER_PAGE {
                break;
            }
            next = seq as i64;
            let Record::Offered { offer, .. } = record else { continue };
            let standing = list.entry(offer.number).is_some_and(
                |e| matches!(&e.state, EntryState::Offered { until, .. } if *until == offer.until),
            );
            if !standing {
                continue;
            }
            // Not held at the inventory yet: not mailable yet.
            if self.placed_until(offer.number)? != Some(offer.until) {
                unplaced = unplaced.or(Some(seq as i64 - 1));
                continue;
            }
            let rows: Vec<Email> = sql
                .exec("SELECT email FROM addresses WHERE number = ?", vec![(offer.number as i64).into()])?
                .to_array()?;
            let Some(email) = rows.into_iter().next() else { continue };
            offers.push(serde_json::json!({
                "seq": seq,
                "entry": offer.number,
                "visitor": offer.visitor,
                "email": email.email,
                "hold": offer_hold_id(self.shard_of(&offer.pool), offer.number),
                "pool": offer.pool,
                "quantity": offer.quantity,
                "until": offer.until,
            }));
        }
        let next = unplaced.unwrap_or(next);
        Ok(serde_json::json!({ "event": event, "offers": offers, "next": next }))
    }

    /// An erasure request (`POST /forget`): every live entry of `email` leaves the list as if its
    /// visitor had left (a standing offer's hold ended), and the address is deleted; answers how
    /// many entries had it. The list's records keep only the address's keyed hash.
    async fn forget(&self, email: &str, path: &str) -> Result<u64> {
        let wanted = email.trim().to_lowercase();
        let rows: Vec<Address> =
            self.state.storage().sql().exec("SELECT number, email FROM addresses", None)?.to_array()?;
        let mut forgotten = 0;
        for row in rows.into_iter().filter(|r| r.email.trim().to_lowercase() == wanted) {
            let live = self.list.borrow().as_ref().and_then(|(_, l)| {
                l.entry(row.number as u64)
                    .filter(|e| l.entry_of(&e.visitor).is_some_and(|live| live.number == e.number))
                    .map(|e| e.visitor.clone())
            });
            if let Some(visitor) = live {
                // Its answer is the entry's view, or "not on the list" for one that just ended.
                self.end_entry(&visitor, false, path).await?;
            }
            self.state
                .storage()
                .sql()
                .exec("DELETE FROM addresses WHERE number = ?", vec![row.number.into()])?;
            forgotten += 1;
        }
        Ok(forgotten)
    }

    /// Every entry, oldest first, with its address: the organizer's export.
    fn entries(&self) -> Result<serde_json::Value> {
        let guard = self.list.borrow();
        let Some((_, list)) = guard.as_ref() else { return Ok(serde_json::json!({ "entries": [] })) };
        let sql = self.state.storage().sql();
        let rows: Vec<Address> = sql.exec("SELECT number, email FROM addresses", None)?.to_array()?;
        let addresses: HashMap<i64, String> = rows.into_iter().map(|r| (r.number, r.email)).collect();
        // Positions in one pass (not one scan per entry).
        let mut ahead = 0u64;
        let entries: Vec<serde_json::Value> = list
            .entries()
            .map(|e| {
                let position = (e.state == EntryState::Waiting).then(|| {
                    ahead += 1;
                    ahead
                });
                serde_json::json!({
                    "number": e.number,
                    "joined_at": e.joined_at,
                    "email": addresses.get(&(e.number as i64)),
                    "wants": e.pool.as_ref().map_or("any".to_owned(), pool_name),
                    "quantity": e.quantity,
                    "state": state_name(&e.state),
                    "position": position,
                })
            })
            .collect();
        Ok(serde_json::json!({ "entries": entries }))
    }

    /// Counts for the organizer: per pool asked for, entries by state; offers made, claimed,
    /// lapsed, declined.
    fn summary(&self) -> serde_json::Value {
        let guard = self.list.borrow();
        let Some((event, list)) = guard.as_ref() else { return serde_json::Value::Null };
        let mut by_pool: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
        for e in list.entries() {
            let pool = match &e.pool {
                None => "any".to_owned(),
                Some(Pool::Seats) | Some(Pool::Shard(_)) => "seats".to_owned(),
                Some(Pool::General(t)) => t.to_string(),
            };
            *by_pool.entry(pool).or_default().entry(state_name(&e.state)).or_default() += 1;
        }
        let mut offers = BTreeMap::<&'static str, u64>::new();
        for r in list.records() {
            let key = match r {
                Record::Offered { .. } => "made",
                Record::Claimed { .. } => "claimed",
                Record::Ended { state: EntryState::Lapsed, .. } => "lapsed",
                Record::Ended { state: EntryState::Declined, .. } => "declined",
                // Places gone before the offer could be held: the entry waits again.
                Record::Withdrawn { .. } => "withdrawn",
                _ => continue,
            };
            *offers.entry(key).or_default() += 1;
        }
        serde_json::json!({
            "event": event,
            "settings": list.settings(),
            "closed": list.closed(),
            "waiting": list.waiting(),
            "offers_out": list.offers_out(),
            "free": list.free().iter().map(|(p, n)| (pool_name(p), *n)).collect::<BTreeMap<_, _>>(),
            "by_pool": by_pool,
            "offers": offers,
            "records": list.records().len(),
        })
    }

    async fn route(&self, mut req: Request, path: &str, caller: Caller) -> Result<Response> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        macro_rules! body {
            () => {
                match crate::http::read_json(&mut req, 8 * 1024).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                }
            };
        }
        if matches!(caller, Caller::Visitor(_)) {
            // An offer's hold id names its shard.
            self.known_layout().await?;
        }
        let response = match (req.method(), segments.as_slice(), &caller) {
            (Method::Put, ["settings"], Caller::Core) => {
                let push: SettingsPush = body!();
                self.put_settings(push, path).await?
            }
            (Method::Post, ["join"], Caller::Visitor(v)) => {
                let body: JoinBody = body!();
                let resp = self.join(v, body, path)?;
                let first = self.list.borrow().as_ref().is_some_and(|(_, l)| l.waiting() == 1);
                if first && resp.status_code() == 201 {
                    // The first to wait: parking starts before they are answered, so that nothing
                    // coming back from now on goes past them to public sale.
                    if let Err(e) = self.round().await {
                        crate::log::error(
                            "waiting-list round failed",
                            serde_json::json!({ "error": e.to_string() }),
                        );
                    }
                }
                self.round_soon().await?;
                resp
            }
            (Method::Get, ["entry"], Caller::Visitor(v)) => {
                let number = self.list.borrow().as_ref().and_then(|(_, l)| {
                    // The live entry, or the last one this visitor had.
                    l.entry_of(v).or_else(|| l.last_entry_of(v)).map(|e| e.number)
                });
                match number.and_then(|n| self.view(n)) {
                    Some(view) => http::json(200, &view)?,
                    None => http::problem_of(ProblemType::NotFound, "not on this waiting list", path)?,
                }
            }
            (Method::Delete, ["entry"], Caller::Visitor(v)) => self.end_entry(v, false, path).await?,
            (Method::Post, ["entry", "decline"], Caller::Visitor(v)) => self.end_entry(v, true, path).await?,
            (Method::Post, ["wake"], Caller::Waitlist) => {
                self.round_soon().await?;
                http::json(200, &serde_json::json!({ "awake": true }))?
            }
            (Method::Get, ["summary"], Caller::Core) => match self.summary() {
                serde_json::Value::Null => http::problem_of(ProblemType::NotFound, "no waiting list", path)?,
                summary => http::json(200, &summary)?,
            },
            (Method::Get, ["records"], Caller::Core) => {
                let query: HashMap<String, String> = req.url()?.query_pairs().into_owned().collect();
                let after = query.get("after").and_then(|v| v.parse::<usize>().ok());
                let limit =
                    query.get("limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1000).clamp(1, 5000);
                let start = after.map_or(0, |a| a + 1);
                let guard = self.list.borrow();
                let records = guard.as_ref().map(|(_, l)| l.records()).unwrap_or_default();
                let page: Vec<&Record> = records.iter().skip(start).take(limit).collect();
                let next = (start + page.len() < records.len()).then(|| start + page.len() - 1);
                http::json(200, &serde_json::json!({ "records": page, "from": start, "next_after": next }))?
            }
            (Method::Get, ["entries"], Caller::Core) => http::json(200, &self.entries()?)?,
            (Method::Post, ["forget"], Caller::Core) => {
                let body: ForgetBody = body!();
                let forgotten = self.forget(&body.email, path).await?;
                http::json(200, &serde_json::json!({ "forgotten": forgotten }))?
            }
            (Method::Get, ["offers"], Caller::Core) => {
                let after = req
                    .url()?
                    .query_pairs()
                    .find(|(k, _)| k == "after")
                    .and_then(|(_, v)| v.parse::<i64>().ok())
                    .unwrap_or(-1);
                http::json(200, &self.offers_after(after)?)?
            }
            // A list never set up (the event never had one) is not closed: nothing to change.
            (Method::Post, ["close"], Caller::Core) if self.list.borrow().is_none() => {
                http::problem_of(ProblemType::NotFound, "this event has no waiting list", path)?
            }
            (Method::Post, ["close"], Caller::Core) => {
                // Not in the middle of a round (which might withdraw an offer after the close).
                let _gate = self.gate.lock().await;
                self.apply(|l, now| {
                    l.close(now);
                })?;
                self.round_soon().await?;
                http::json(200, &self.summary())?
            }
            _ => http::problem_of(ProblemType::NotFound, "no such route on the waiting list", path)?,
        };
        Ok(response)
    }
}

/// The standing offer of entry `number`, as the rules made it (from its record).
fn offer_of(list: &WaitingList, number: u64) -> Option<Offer> {
    list.records().iter().rev().find_map(|r| match r {
        Record::Offered { offer, .. } if offer.number == number => Some(offer.clone()),
        _ => None,
    })
}

fn state_name(state: &EntryState) -> &'static str {
    match state {
        EntryState::Waiting => "waiting",
        EntryState::Offered { .. } => "offered",
        EntryState::Claimed => "claimed",
        EntryState::Lapsed => "lapsed",
        EntryState::Declined => "declined",
        EntryState::Left => "left",
    }
}

fn pool_name(pool: &Pool) -> String {
    match pool {
        Pool::Seats => "seats".into(),
        Pool::Shard(i) => format!("seats of shard {i}"),
        Pool::General(t) => t.to_string(),
    }
}

/// An address worth mailing: one `@`, something on each side, a dot in the domain, no spaces or
/// control characters, at most [`MAX_EMAIL`] bytes. (The core checks it again before mailing.)
pub fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    email.len() <= MAX_EMAIL
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

impl DurableObject for WaitlistObject {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            list: RefCell::new(None),
            saved: Cell::new(0),
            loaded: Cell::new(false),
            alarm: Alarm::default(),
            gate: Mutex::new(()),
            layout: RefCell::new(None),
            wanted: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let load = async { self.load() };
        let route = |req, path: String, caller| async move { self.route(req, &path, caller).await };
        http::serve(req, "waiting list", load, route, || self.loaded.set(false)).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.forget();
        self.wanted.set(false);
        self.load()?;
        if let Err(e) = self.round().await {
            crate::log::error("waiting-list round failed", serde_json::json!({ "error": e.to_string() }));
            // Memory may be ahead of storage after a failed write: read it again.
            self.loaded.set(false);
            self.load()?;
            // Try again shortly.
            self.alarm.keep(&self.state.storage(), Some(crate::now_ms() + 5_000)).await?;
            return Response::ok("round failed");
        }
        let next = if self.wanted.get() { Some(crate::now_ms()) } else { self.next_wake() };
        self.alarm.keep(&self.state.storage(), next).await?;
        Response::ok("round")
    }
}
