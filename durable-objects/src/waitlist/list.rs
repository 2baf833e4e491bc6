//! The rules of an event's waiting list, as a pure state machine (no storage, no clock, no I/O):
//! who may join, who is offered the places that come back, in which order, and what happens when an
//! offer is claimed, declined, left or lapses. The object that keeps the list (docs/waiting-list.md)
//! persists what [`WaitingList`] decides; every decision is also a [`Record`], and [`replay`]
//! recomputes the whole history from the records, which is how the order is audited after the fact.
//!
//! The rules, each enforced here and checked by `durable-objects/tests/waitlist_properties.rs`:
//!
//! - **One live entry per visitor and per e-mail.** A visitor (or an address) waiting or holding an
//!   offer cannot join again; after leaving, declining, lapsing or buying they may, at the back.
//! - **Order.** Places that come back go to waiting entries in the order they joined.
//! - **Fit.** An entry is offered its whole request or nothing: places of the pool it asked for (a
//!   general-admission tier, or seats), or of any pool when it asked for any. A request that does
//!   not fit is passed over, keeping its place — the **partial-fit rule**: once the first waiting
//!   entry has been passed over [`MAX_PASSES`] times, places of the one pool it could use that has
//!   the most free are set aside for it (offered to no one behind it) for one claim window, so a
//!   large group is not starved by a stream of single returned seats; after that window it keeps
//!   its place, first fit, and is never set aside for again (a request that cannot be served
//!   cannot keep places off sale).
//! - **Unwanted places go back on sale.** Places no waiting request fits are kept one claim window
//!   from when their pool last had none free (more may come back and make a request fit), or while
//!   set aside for the head; then they go back on public sale.
//! - **No double offer.** An entry holds at most one offer; the places offered never exceed the
//!   places that came back and were not offered yet.
//! - **Bounded.** At most `max_offers_out` offers stand at once; an offer lasts `claim_seconds`
//!   and then lapses, its places going back to be offered to the next entry.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use shared_types::ids::{TierId, VisitorId};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// How many times the first waiting entry may be passed over before places are set aside for it.
pub const MAX_PASSES: u32 = 3;
/// The most entries a list ever takes (its history is kept whole, and restored on every start of
/// its object: this bounds its storage and memory).
pub const MAX_ENTRIES: usize = 50_000;
/// How many times one visitor, or one address, may join the same list.
pub const MAX_JOINS: u32 = 3;

/// Where returned places belong: the event's seats, one general-admission tier's places, or (in
/// an event sharded by section) the seats of one inventory shard: an offer is one hold, and a
/// hold lives in one inventory object, so seats of two shards cannot serve one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "of", rename_all = "snake_case")]
pub enum Pool {
    /// As a request: seats, wherever they are. As places: the seats of an unsharded event.
    Seats,
    General(TierId),
    /// The seats of inventory shard `n` (only as places; a request for seats says `Seats`).
    Shard(u32),
}

impl Pool {
    /// Whether places of `self` serve a request for `want` (`None`: anything).
    pub fn serves(&self, want: Option<&Pool>) -> bool {
        match want {
            None => true,
            Some(Pool::Seats) => matches!(self, Pool::Seats | Pool::Shard(_)),
            Some(w) => w == self,
        }
    }
}

/// The organizer's settings of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSettings {
    /// Whether the event keeps a waiting list at all.
    pub enabled: bool,
    /// How long an offer stands for its buyer to pay.
    pub claim_seconds: u32,
    /// How many offers may stand at once.
    pub max_offers_out: u32,
    /// The most places one entry may ask for (the event's limit per buyer).
    pub max_quantity: u32,
}

impl Default for ListSettings {
    fn default() -> Self {
        Self { enabled: false, claim_seconds: 15 * 60, max_offers_out: 50, max_quantity: 8 }
    }
}

impl ListSettings {
    /// The list's settings from the event's waiting-room settings (which the core validated).
    pub fn of(room: &shared_types::waiting_room::WaitingRoomSettings) -> Self {
        Self {
            enabled: room.waitlist.enabled,
            claim_seconds: room.waitlist.claim_seconds,
            max_offers_out: room.waitlist.max_offers_out,
            max_quantity: room.max_tickets_per_buyer,
        }
    }

    /// The settings' own rules (an organizer's error names the field).
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(60..=48 * 3600).contains(&self.claim_seconds) {
            return Err(("claim_seconds", "must be 60 to 172800 (one minute to two days)"));
        }
        if !(1..=10_000).contains(&self.max_offers_out) {
            return Err(("max_offers_out", "must be 1 to 10000"));
        }
        if !(1..=1_000).contains(&self.max_quantity) {
            return Err(("max_quantity", "must be 1 to 1000"));
        }
        Ok(())
    }
}

/// Where an entry stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EntryState {
    Waiting,
    /// Places are held for it until `until`.
    Offered {
        pool: Pool,
        until: Millis,
    },
    /// It bought the places offered.
    Claimed,
    /// It let the offer lapse.
    Lapsed,
    /// It said no to the offer.
    Declined,
    /// It left the list (or the list was closed while it waited).
    Left,
}

impl EntryState {
    /// Waiting or holding an offer.
    pub fn live(&self) -> bool {
        matches!(self, Self::Waiting | Self::Offered { .. })
    }
}

/// One person on the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in joining order (1, 2, …; never reused).
    pub number: u64,
    pub visitor: VisitorId,
    /// The e-mail address as a key (the object stores a keyed hash, never the address itself in
    /// this rule's index).
    pub email_key: String,
    /// The pool it waits for; `None`: any.
    pub pool: Option<Pool>,
    /// The seated tier its seats are to be sold under (a seats request), if it chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seated_tier: Option<TierId>,
    pub quantity: u32,
    pub joined_at: Millis,
    pub state: EntryState,
    /// How many times places went to someone behind it.
    #[serde(default)]
    pub passes: u32,
    /// When it was passed over for the [`MAX_PASSES`]th time: places are set aside for it, as the
    /// head of the list, for one claim window from then (derived from the offers, never joined
    /// with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_aside_from: Option<Millis>,
}

/// What a visitor asks for when joining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub visitor: VisitorId,
    pub email_key: String,
    pub pool: Option<Pool>,
    #[serde(default)]
    pub seated_tier: Option<TierId>,
    pub quantity: u32,
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("this event keeps no waiting list")]
    Disabled,
    #[error("the waiting list is closed")]
    Closed,
    #[error("ask for 1 to {max} tickets")]
    Quantity { max: u32 },
    #[error("already on the list (number {number})")]
    AlreadyOnList { number: u64 },
    #[error("the waiting list is full")]
    Full,
    #[error("joined this list too often")]
    TooManyJoins,
}

impl JoinError {
    /// A stable reason for problem+json.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Disabled => "waitlist-disabled",
            Self::Closed => "waitlist-closed",
            Self::Quantity { .. } => "bad-quantity",
            Self::AlreadyOnList { .. } => "already-on-list",
            Self::Full => "waitlist-full",
            Self::TooManyJoins => "too-many-joins",
        }
    }
}

/// An offer to make: hold `quantity` places of `pool` for entry `number` until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub number: u64,
    pub visitor: VisitorId,
    pub pool: Pool,
    pub seated_tier: Option<TierId>,
    pub quantity: u32,
    pub until: Millis,
}

/// One decision of the list, in the order it was taken: the list's history. Replaying the records
/// from an empty list gives the same list ([`replay`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Joined {
        entry: Entry,
    },
    /// Places came back to the list (an expired hold, a cancellation, a refund, added seats).
    Returned {
        pool: Pool,
        quantity: u32,
        at: Millis,
    },
    Offered {
        offer: Offer,
        at: Millis,
    },
    /// The places of an offer were not taken (declined, lapsed, or its entry left): back to the list.
    Ended {
        number: u64,
        state: EntryState,
        at: Millis,
    },
    Claimed {
        number: u64,
        at: Millis,
    },
    /// An offer the inventory could not hold (its places had gone meanwhile): the entry waits
    /// again where it was, and its places count as free until the inventory says otherwise.
    Withdrawn {
        number: u64,
        at: Millis,
    },
    /// Places that left the list without being offered: a late payment took back the places its
    /// buyer had paid for, or seats were taken off sale while parked (the inventory says so).
    Taken {
        pool: Pool,
        quantity: u32,
        at: Millis,
    },
    /// Places the list gave up (back on public sale): the list was closed, or nobody waits for them.
    Released {
        pool: Pool,
        quantity: u32,
        at: Millis,
    },
    Closed {
        at: Millis,
    },
    /// The organizer changed the settings (offers after it follow the new ones).
    Settings {
        settings: ListSettings,
        at: Millis,
    },
}

/// An event's waiting list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingList {
    settings: ListSettings,
    closed: bool,
    entries: BTreeMap<u64, Entry>,
    next_number: u64,
    /// Places that came back and are not offered yet, per pool.
    free: BTreeMap<Pool, u32>,
    /// Since when each pool has had places free (without a moment at none): places nobody waiting
    /// can use yet wait one claim window for more to come back, then go back on sale.
    free_since: BTreeMap<Pool, Millis>,
    /// Live entries by visitor and by e-mail key.
    by_visitor: HashMap<VisitorId, u64>,
    /// Each visitor's latest entry, live or not (what their page shows).
    last_by_visitor: HashMap<VisitorId, u64>,
    by_email: HashMap<String, u64>,
    records: Vec<Record>,
    /// Entries waiting and offers standing, kept as they change (a join must not scan the list).
    waiting_count: usize,
    offered_count: usize,
    /// Joins per visitor and per address, ever.
    joins: HashMap<String, u32>,
}

impl WaitingList {
    /// A new list; its history begins with its settings.
    pub fn new(settings: ListSettings) -> Self {
        Self {
            settings,
            next_number: 1,
            records: vec![Record::Settings { settings, at: 0 }],
            ..Self::default()
        }
    }

    pub fn settings(&self) -> ListSettings {
        self.settings
    }

    /// New settings (the organizer's); they apply to the offers made from now on.
    pub fn set_settings(&mut self, settings: ListSettings, now: Millis) {
        if settings != self.settings {
            self.settings = settings;
            self.records.push(Record::Settings { settings, at: now });
        }
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn entry(&self, number: u64) -> Option<&Entry> {
        self.entries.get(&number)
    }

    /// The visitor's live entry.
    pub fn entry_of(&self, visitor: &VisitorId) -> Option<&Entry> {
        self.by_visitor.get(visitor).and_then(|n| self.entries.get(n))
    }

    /// The visitor's latest entry, live or ended.
    pub fn last_entry_of(&self, visitor: &VisitorId) -> Option<&Entry> {
        self.last_by_visitor.get(visitor).and_then(|n| self.entries.get(n))
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Places that came back and are not offered yet.
    pub fn free(&self) -> &BTreeMap<Pool, u32> {
        &self.free
    }

    /// The history, oldest first.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Entries waiting (not offered yet).
    pub fn waiting(&self) -> usize {
        self.waiting_count
    }

    /// Offers standing.
    pub fn offers_out(&self) -> usize {
        self.offered_count
    }

    /// A waiting entry's place: 1 + the waiting entries ahead of it.
    pub fn position(&self, number: u64) -> Option<u64> {
        let entry = self.entries.get(&number)?;
        (entry.state == EntryState::Waiting).then(|| {
            1 + self.entries.range(..number).filter(|(_, e)| e.state == EntryState::Waiting).count() as u64
        })
    }

    /// Adds a visitor at the back of the list.
    pub fn join(&mut self, request: JoinRequest, now: Millis) -> Result<&Entry, JoinError> {
        if !self.settings.enabled {
            return Err(JoinError::Disabled);
        }
        if self.closed {
            return Err(JoinError::Closed);
        }
        if !(1..=self.settings.max_quantity).contains(&request.quantity) {
            return Err(JoinError::Quantity { max: self.settings.max_quantity });
        }
        let existing =
            self.by_visitor.get(&request.visitor).or_else(|| self.by_email.get(&request.email_key));
        if let Some(&number) = existing {
            return Err(JoinError::AlreadyOnList { number });
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(JoinError::Full);
        }
        let joins = |key: &str| self.joins.get(key).copied().unwrap_or(0);
        if joins(&visitor_key(&request.visitor)) >= MAX_JOINS || joins(&request.email_key) >= MAX_JOINS {
            return Err(JoinError::TooManyJoins);
        }
        let entry = Entry {
            number: self.next_number,
            visitor: request.visitor,
            email_key: request.email_key,
            pool: request.pool,
            seated_tier: request.seated_tier,
            quantity: request.quantity,
            joined_at: now,
            state: EntryState::Waiting,
            passes: 0,
            set_aside_from: None,
        };
        self.records.push(Record::Joined { entry: entry.clone() });
        Ok(self.insert(entry))
    }

    fn insert(&mut self, entry: Entry) -> &Entry {
        let number = entry.number;
        self.next_number = self.next_number.max(number + 1);
        if entry.state == EntryState::Waiting && !self.entries.contains_key(&number) {
            self.waiting_count += 1;
        }
        if !self.entries.contains_key(&number) {
            *self.joins.entry(visitor_key(&entry.visitor)).or_default() += 1;
            *self.joins.entry(entry.email_key.clone()).or_default() += 1;
        }
        self.by_visitor.insert(entry.visitor.clone(), number);
        self.by_email.insert(entry.email_key.clone(), number);
        let last = self.last_by_visitor.entry(entry.visitor.clone()).or_insert(number);
        *last = (*last).max(number);
        self.entries.entry(number).or_insert(entry)
    }

    /// Places came back to the list (its object holds them for the list from now on).
    pub fn returned(&mut self, pool: Pool, quantity: u32, now: Millis) {
        if quantity == 0 {
            return;
        }
        self.add_free(&pool, quantity, now);
        self.records.push(Record::Returned { pool, quantity, at: now });
    }

    /// Places the list counted as free are gone (see [`Record::Taken`]); at most those free.
    pub fn taken(&mut self, pool: Pool, quantity: u32, now: Millis) -> u32 {
        let quantity = quantity.min(self.free.get(&pool).copied().unwrap_or(0));
        if quantity > 0 {
            self.take_free(&pool, quantity);
            self.records.push(Record::Taken { pool, quantity, at: now });
        }
        quantity
    }

    /// Places of `pool` become free on the list.
    fn add_free(&mut self, pool: &Pool, quantity: u32, now: Millis) {
        let n = self.free.entry(pool.clone()).or_default();
        if *n == 0 && quantity > 0 {
            self.free_since.insert(pool.clone(), now);
        }
        *n += quantity;
    }

    /// Places of `pool` leave the free ones (offered, taken, released); at most those free.
    fn take_free(&mut self, pool: &Pool, quantity: u32) {
        let n = self.free.entry(pool.clone()).or_default();
        *n = n.saturating_sub(quantity);
        if *n == 0 {
            self.free_since.remove(pool);
        }
    }

    fn claim_ms(&self) -> Millis {
        i64::from(self.settings.claim_seconds) * 1000
    }

    /// Whether places are set aside for `entry` at `now` (as the head of the list: see
    /// [`Entry::set_aside_from`]). Bounded: one claim window, then never again for this entry
    /// (it keeps its place, first fit).
    fn set_aside_for(&self, entry: &Entry, now: Millis) -> bool {
        entry.passes >= MAX_PASSES && entry.set_aside_from.is_some_and(|from| now < from + self.claim_ms())
    }

    /// The offers to make now, in order, by the rules above; each is recorded and its places
    /// taken from the free ones. The object holds the places for each entry and tells them.
    pub fn offer(&mut self, now: Millis) -> Vec<Offer> {
        let mut made = Vec::new();
        if self.closed || !self.settings.enabled {
            return made;
        }
        let room = (self.settings.max_offers_out as usize).saturating_sub(self.offers_out());
        // The pool set aside for the first waiting entry, once it has been passed over too often:
        // the one it asked for, or (asking for any) the one with the most places free.
        let mut reserved: Option<Pool> = None;
        let mut passed: Vec<u64> = Vec::new();
        let numbers: Vec<u64> =
            self.entries.values().filter(|e| e.state == EntryState::Waiting).map(|e| e.number).collect();
        for number in numbers {
            if made.len() >= room || self.free.values().all(|n| *n == 0) {
                break;
            }
            let entry = &self.entries[&number];
            let fits = self.fitting_pool(entry.pool.as_ref(), entry.quantity, reserved.as_ref());
            let Some(pool) = fits else {
                if reserved.is_none() && passed.is_empty() && self.set_aside_for(entry, now) {
                    // The head has waited long enough: places of the one pool it could use that
                    // has the most free (a GA tier it asked for; for seats, one shard's) do not
                    // go past it, for one claim window.
                    let most = self
                        .free
                        .iter()
                        .filter(|(p, _)| p.serves(entry.pool.as_ref()))
                        .max_by_key(|(p, n)| (**n, std::cmp::Reverse((*p).clone())));
                    reserved = most.map(|(p, _)| p.clone());
                }
                passed.push(number);
                continue;
            };
            let offer = Offer {
                number,
                visitor: entry.visitor.clone(),
                pool: pool.clone(),
                seated_tier: entry.seated_tier.clone(),
                quantity: entry.quantity,
                until: now + i64::from(self.settings.claim_seconds) * 1000,
            };
            self.apply_offer(&offer);
            self.records.push(Record::Offered { offer: offer.clone(), at: now });
            made.push(offer);
        }
        made
    }

    /// The pool whose free places can serve `quantity` for an entry wanting `want`, skipping pools
    /// set aside for the head of the list.
    fn fitting_pool(&self, want: Option<&Pool>, quantity: u32, reserved: Option<&Pool>) -> Option<Pool> {
        let blocked = |pool: &Pool| reserved == Some(pool);
        self.free
            .iter()
            .filter(|(pool, n)| **n >= quantity && pool.serves(want) && !blocked(pool))
            .map(|(pool, _)| pool.clone())
            .next()
    }

    /// Takes an offer's places and marks its entry; everyone still waiting ahead of it was passed
    /// over once more (the same whether the offer is made or restored from the history).
    fn apply_offer(&mut self, offer: &Offer) {
        self.take_free(&offer.pool, offer.quantity);
        // When the offer was made (its end less the claim window it was given).
        let at = offer.until - self.claim_ms();
        let mut head = true;
        for (_, ahead) in self.entries.range_mut(..offer.number) {
            if ahead.state != EntryState::Waiting {
                continue;
            }
            if offer.pool.serves(ahead.pool.as_ref()) {
                ahead.passes += 1;
                // The window opens at a pass of the head (the first waiting entry) that has been
                // passed over often enough: an entry passed over behind someone else gets its
                // window once it leads the list.
                if head && ahead.passes >= MAX_PASSES && ahead.set_aside_from.is_none() {
                    ahead.set_aside_from = Some(at);
                }
            }
            head = false;
        }
        if let Some(e) = self.entries.get_mut(&offer.number) {
            if e.state == EntryState::Waiting {
                self.waiting_count -= 1;
                self.offered_count += 1;
            }
            e.state = EntryState::Offered { pool: offer.pool.clone(), until: offer.until };
        }
    }

    /// The offers whose time is up by `now`: their entries lapse and their places come back.
    pub fn expire_due(&mut self, now: Millis) -> Vec<u64> {
        let due: Vec<u64> = self
            .entries
            .values()
            .filter(|e| matches!(e.state, EntryState::Offered { until, .. } if until <= now))
            .map(|e| e.number)
            .collect();
        for number in &due {
            self.end(*number, EntryState::Lapsed, now);
        }
        due
    }

    /// One offer lapses (its hold ended at the inventory, by time): recorded no earlier than its
    /// time. `false` when it held no offer.
    pub fn lapse(&mut self, number: u64, now: Millis) -> bool {
        let Some(EntryState::Offered { until, .. }) = self.entries.get(&number).map(|e| e.state.clone())
        else {
            return false;
        };
        self.end(number, EntryState::Lapsed, now.max(until));
        true
    }

    /// The inventory could not hold an offer's places (they had gone): the entry waits again, where
    /// it was, and the places count as free until the inventory's count says otherwise. `false`
    /// when it held no offer.
    pub fn withdraw(&mut self, number: u64, now: Millis) -> bool {
        if self.closed {
            // Nobody waits on a closed list: the entry leaves (its places come back as free).
            let offered =
                self.entries.get(&number).is_some_and(|e| matches!(e.state, EntryState::Offered { .. }));
            if offered {
                self.end(number, EntryState::Left, now);
            }
            return offered;
        }
        let Some(entry) = self.entries.get_mut(&number) else { return false };
        let EntryState::Offered { pool, .. } = entry.state.clone() else { return false };
        entry.state = EntryState::Waiting;
        let quantity = entry.quantity;
        self.add_free(&pool, quantity, now);
        self.offered_count -= 1;
        self.waiting_count += 1;
        self.records.push(Record::Withdrawn { number, at: now });
        true
    }

    /// The earliest time an offer lapses (for the object's alarm).
    pub fn next_expiry(&self) -> Option<Millis> {
        self.entries
            .values()
            .filter_map(|e| match e.state {
                EntryState::Offered { until, .. } => Some(until),
                _ => None,
            })
            .min()
    }

    /// The buyer said no to their offer: its places come back. `false` when it held none.
    pub fn decline(&mut self, number: u64, now: Millis) -> bool {
        let offered =
            self.entries.get(&number).is_some_and(|e| matches!(e.state, EntryState::Offered { .. }));
        if offered {
            self.end(number, EntryState::Declined, now);
        }
        offered
    }

    /// The visitor leaves the list; an offer they held comes back. Their entry's number, if any.
    pub fn leave(&mut self, visitor: &VisitorId, now: Millis) -> Option<u64> {
        let number = *self.by_visitor.get(visitor)?;
        self.end(number, EntryState::Left, now);
        Some(number)
    }

    /// The offer was paid for: the entry is done. `false` when it held no offer.
    pub fn claimed(&mut self, number: u64, now: Millis) -> bool {
        let Some(entry) = self.entries.get_mut(&number) else { return false };
        if !matches!(entry.state, EntryState::Offered { .. }) {
            return false;
        }
        entry.state = EntryState::Claimed;
        self.offered_count -= 1;
        let (visitor, email) = (entry.visitor.clone(), entry.email_key.clone());
        self.forget(&visitor, &email, number);
        self.records.push(Record::Claimed { number, at: now });
        true
    }

    fn end(&mut self, number: u64, to: EntryState, now: Millis) {
        let Some(entry) = self.entries.get_mut(&number) else { return };
        if !entry.state.live() {
            return;
        }
        let was = std::mem::replace(&mut entry.state, to.clone());
        let (visitor, email, quantity) = (entry.visitor.clone(), entry.email_key.clone(), entry.quantity);
        match was {
            EntryState::Offered { pool, .. } => {
                self.add_free(&pool, quantity, now);
                self.offered_count -= 1;
            }
            _ => self.waiting_count -= 1,
        }
        self.forget(&visitor, &email, number);
        self.records.push(Record::Ended { number, state: to, at: now });
    }

    fn forget(&mut self, visitor: &VisitorId, email: &str, number: u64) {
        if self.by_visitor.get(visitor) == Some(&number) {
            self.by_visitor.remove(visitor);
        }
        if self.by_email.get(email) == Some(&number) {
            self.by_email.remove(email);
        }
    }

    /// Places nobody waiting can use: given back to public sale. A pool's places are kept while a
    /// waiting entry it serves asks for no more than are free (it is offered them as soon as an
    /// offer may stand), while places are set aside for the head of the list, or for one claim
    /// window from when the pool last had none free (more may come back and make a request fit);
    /// after that, places no request fits go on sale, so that no request the list cannot serve
    /// keeps them off sale. The object releases them; what it released is recorded.
    pub fn release_unwanted(&mut self, now: Millis) -> Vec<(Pool, u32)> {
        let head = self.entries.values().find(|e| e.state == EntryState::Waiting);
        let set_aside = head.is_some_and(|h| self.set_aside_for(h, now));
        let wanted = |pool: &Pool, free: u32| {
            let grace = self.free_since.get(pool).is_some_and(|since| now < since + self.claim_ms());
            self.entries.values().any(|e| {
                e.state == EntryState::Waiting
                    && pool.serves(e.pool.as_ref())
                    && (e.quantity <= free
                        || grace
                        || (set_aside && Some(e.number) == head.map(|h| h.number)))
            })
        };
        let unwanted: Vec<(Pool, u32)> = self
            .free
            .iter()
            .filter(|(p, n)| **n > 0 && (self.closed || !wanted(p, **n)))
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        for (pool, quantity) in &unwanted {
            self.take_free(pool, *quantity);
            self.records.push(Record::Released { pool: pool.clone(), quantity: *quantity, at: now });
        }
        unwanted
    }

    /// The next time after `now` a grace window of [`WaitingList::release_unwanted`] ends (for the
    /// object's alarm). Windows already over are left out: places kept past theirs (someone fits
    /// them but no more offers may stand, or a set-aside holds them) wait for a change or the
    /// object's regular look, never for an alarm due at once.
    pub fn next_release_check(&self, now: Millis) -> Option<Millis> {
        self.free_since.values().map(|since| since + self.claim_ms()).filter(|at| *at > now).min()
    }

    /// The organizer closes the list: nobody joins, nobody else is offered anything; those waiting
    /// leave it (their entries end as left). Offers standing stand until claimed or lapsed.
    pub fn close(&mut self, now: Millis) -> Vec<u64> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        self.records.push(Record::Closed { at: now });
        let waiting: Vec<u64> =
            self.entries.values().filter(|e| e.state == EntryState::Waiting).map(|e| e.number).collect();
        for number in &waiting {
            self.end(*number, EntryState::Left, now);
        }
        waiting
    }

    /// Applies one record as it was taken (replay and restore): no rule is checked again.
    fn apply(&mut self, record: &Record) -> Result<(), String> {
        match record {
            Record::Joined { entry } => {
                self.insert(entry.clone());
            }
            Record::Returned { pool, quantity, at } => self.add_free(pool, *quantity, *at),
            Record::Offered { offer, .. } => {
                let free = self.free.get(&offer.pool).copied().unwrap_or(0);
                if free < offer.quantity {
                    return Err(format!(
                        "offer to {} of {} places when {free} were free",
                        offer.number, offer.quantity
                    ));
                }
                self.apply_offer(offer)
            }
            Record::Ended { number, state, at } => self.end(*number, state.clone(), *at),
            Record::Claimed { number, at } => {
                self.claimed(*number, *at);
            }
            Record::Withdrawn { number, at } => {
                self.withdraw(*number, *at);
            }
            Record::Released { pool, quantity, .. } | Record::Taken { pool, quantity, .. } => {
                self.take_free(pool, *quantity)
            }
            Record::Closed { .. } => self.closed = true,
            Record::Settings { settings, .. } => self.settings = *settings,
        }
        Ok(())
    }
}

/// The key a visitor's joins are counted under (apart from addresses' keys).
fn visitor_key(visitor: &VisitorId) -> String {
    format!("visitor:{visitor}")
}

/// Rebuilds a list from its history (a restart of its object), without checking the decisions.
pub fn restore(records: Vec<Record>) -> Result<WaitingList, String> {
    let mut list = WaitingList { next_number: 1, ..WaitingList::default() };
    for record in &records {
        list.apply(record)?;
    }
    // `apply` of an ending or a claim writes its own record: the history is the one given.
    list.records = records;
    Ok(list)
}

/// The audit: replays a list's history from nothing and checks every decision in it against the
/// rules at that moment — each join is one the rules take and numbers as recorded; each run of
/// offers is exactly the one the rules make (same entries, order, pools, quantities, times); an
/// offer lapses only at its time, and is declined, claimed or left only while it stands; places
/// go back on sale only when nobody waiting wants them. `Ok` with the number of offers checked.
/// (It does not find an offer the object failed to make at all: that the object makes its offers
/// after every change is the object's rule, tested with it.)
pub fn replay(records: &[Record]) -> Result<usize, String> {
    let mut list = WaitingList { next_number: 1, ..WaitingList::default() };
    let mut checked = 0;
    let mut i = 0;
    while i < records.len() {
        match &records[i] {
            Record::Offered { at, .. } => {
                // A run of offers at one time is one decision: the rules must give exactly that
                // run (two rounds may follow each other with nothing recorded between them).
                let mut run = Vec::new();
                while let Some(Record::Offered { offer, .. }) =
                    records.get(i).filter(|r| matches!(r, Record::Offered { at: a, .. } if a == at))
                {
                    run.push(offer.clone());
                    i += 1;
                }
                let expected = list.offer(*at);
                if expected != run {
                    return Err(format!("at {at}: offered {run:?}, the rules give {expected:?}"));
                }
                checked += run.len();
                continue;
            }
            Record::Released { at, .. } => {
                let mut run = Vec::new();
                while let Some(Record::Released { pool, quantity, .. }) =
                    records.get(i).filter(|r| matches!(r, Record::Released { at: a, .. } if a == at))
                {
                    run.push((pool.clone(), *quantity));
                    i += 1;
                }
                let expected = list.release_unwanted(*at);
                if expected != run {
                    return Err(format!("at {at}: released {run:?}, the rules release {expected:?}"));
                }
                continue;
            }
            Record::Joined { entry } => {
                let request = JoinRequest {
                    visitor: entry.visitor.clone(),
                    email_key: entry.email_key.clone(),
                    pool: entry.pool.clone(),
                    seated_tier: entry.seated_tier.clone(),
                    quantity: entry.quantity,
                };
                let joined =
                    list.join(request, entry.joined_at).map_err(|e| format!("join {}: {e}", entry.number))?;
                if joined != entry {
                    return Err(format!("join recorded as {entry:?}, the rules make {joined:?}"));
                }
            }
            Record::Ended { number, state, at } => {
                let now = list.entry(*number).map(|e| e.state.clone());
                let allowed = match (state, &now) {
                    (EntryState::Lapsed, Some(EntryState::Offered { until, .. })) => until <= at,
                    (EntryState::Declined, Some(EntryState::Offered { .. })) => true,
                    (EntryState::Left, Some(s)) => s.live(),
                    _ => false,
                };
                if !allowed {
                    return Err(format!("entry {number} ended {state:?} at {at} while {now:?}"));
                }
                list.apply(&records[i])?;
            }
            Record::Claimed { number, .. } | Record::Withdrawn { number, .. } => {
                if !matches!(list.entry(*number).map(|e| &e.state), Some(EntryState::Offered { .. })) {
                    return Err(format!("entry {number} claimed or withdrawn without an offer standing"));
                }
                list.apply(&records[i])?;
            }
            record => list.apply(record)?,
        }
        i += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_800_000_000_000;

    fn settings() -> ListSettings {
        ListSettings { enabled: true, claim_seconds: 600, max_offers_out: 10, max_quantity: 4 }
    }

    fn tier(id: &str) -> Pool {
        Pool::General(TierId::parse(id).unwrap())
    }

    fn join(list: &mut WaitingList, who: &str, pool: Option<Pool>, quantity: u32) -> u64 {
        let request = JoinRequest {
            visitor: VisitorId::parse(who).unwrap(),
            email_key: format!("{who}@mail"),
            pool,
            seated_tier: None,
            quantity,
        };
        list.join(request, T).unwrap().number
    }

    #[test]
    fn returned_places_go_to_the_first_entry_they_fit_in_joining_order() {
        let mut list = WaitingList::new(settings());
        let a = join(&mut list, "a", Some(Pool::Seats), 2);
        let b = join(&mut list, "b", Some(tier("floor")), 1);
        let c = join(&mut list, "c", None, 1);
        assert_eq!((list.position(a), list.position(b), list.position(c)), (Some(1), Some(2), Some(3)));
        // One seat: too few for a (two), b wants the floor, c takes anything.
        list.returned(Pool::Seats, 1, T);
        let offers = list.offer(T);
        assert_eq!(offers.iter().map(|o| o.number).collect::<Vec<_>>(), [c]);
        assert_eq!(list.entry(a).unwrap().passes, 1, "a was passed over");
        assert_eq!(list.entry(b).unwrap().passes, 0, "b waits for the floor: a seat passes nobody");
        // Two floor places: b (one); one left that a cannot use; two seats then: a.
        list.returned(tier("floor"), 2, T);
        assert_eq!(list.offer(T).iter().map(|o| o.number).collect::<Vec<_>>(), [b]);
        list.returned(Pool::Seats, 2, T);
        let offers = list.offer(T);
        assert_eq!(offers.len(), 1);
        assert_eq!((offers[0].number, offers[0].quantity, offers[0].until), (a, 2, T + 600_000));
        assert_eq!(replay(list.records()), Ok(3));
    }

    #[test]
    fn one_live_entry_per_visitor_and_per_address() {
        let mut list = WaitingList::new(settings());
        let a = join(&mut list, "a", None, 1);
        let again = JoinRequest {
            visitor: VisitorId::parse("a").unwrap(),
            email_key: "other@mail".into(),
            pool: None,
            seated_tier: None,
            quantity: 1,
        };
        assert_eq!(list.join(again.clone(), T).unwrap_err(), JoinError::AlreadyOnList { number: a });
        let same_mail =
            JoinRequest { visitor: VisitorId::parse("z").unwrap(), email_key: "a@mail".into(), ..again };
        assert_eq!(list.join(same_mail, T).unwrap_err(), JoinError::AlreadyOnList { number: a });
        let too_many = JoinRequest {
            visitor: VisitorId::parse("y").unwrap(),
            email_key: "y@mail".into(),
            pool: None,
            seated_tier: None,
            quantity: 5,
        };
        assert_eq!(list.join(too_many, T).unwrap_err(), JoinError::Quantity { max: 4 });
        // After leaving, at the back.
        assert_eq!(list.leave(&VisitorId::parse("a").unwrap(), T), Some(a));
        let back = join(&mut list, "a", None, 1);
        assert!(back > a);
        assert_eq!(list.position(back), Some(1));
    }

    #[test]
    fn an_offer_that_lapses_or_is_declined_passes_its_places_on() {
        let mut list = WaitingList::new(settings());
        let a = join(&mut list, "a", None, 1);
        let b = join(&mut list, "b", None, 1);
        let c = join(&mut list, "c", None, 1);
        list.returned(Pool::Seats, 1, T);
        assert_eq!(list.offer(T)[0].number, a);
        assert_eq!(list.next_expiry(), Some(T + 600_000));
        assert!(list.expire_due(T + 599_999).is_empty());
        assert_eq!(list.expire_due(T + 600_000), [a]);
        assert_eq!(list.entry(a).unwrap().state, EntryState::Lapsed);
        assert_eq!(list.offer(T + 600_000)[0].number, b);
        assert!(list.decline(b, T + 600_001));
        assert!(!list.decline(b, T + 600_001), "once");
        assert_eq!(list.offer(T + 600_001)[0].number, c);
        assert!(list.claimed(c, T + 600_002));
        assert!(list.offer(T + 600_002).is_empty());
        assert_eq!(replay(list.records()), Ok(3));
    }

    #[test]
    fn a_large_request_passed_over_often_enough_gets_places_set_aside() {
        let mut list = WaitingList::new(settings());
        let group = join(&mut list, "group", Some(Pool::Seats), 3);
        let singles: Vec<u64> =
            (0..6).map(|i| join(&mut list, &format!("s{i}"), Some(Pool::Seats), 1)).collect();
        for (i, _) in singles.iter().enumerate().take(MAX_PASSES as usize) {
            list.returned(Pool::Seats, 1, T);
            assert_eq!(list.offer(T)[0].number, singles[i], "a single seat goes past the group");
        }
        assert_eq!(list.entry(group).unwrap().passes, MAX_PASSES);
        // From now on seats wait for the group (floor places would still go to others).
        list.returned(Pool::Seats, 1, T);
        assert!(list.offer(T).is_empty());
        list.returned(Pool::Seats, 1, T);
        assert!(list.offer(T).is_empty());
        list.returned(Pool::Seats, 1, T);
        let offers = list.offer(T);
        assert_eq!((offers[0].number, offers[0].quantity), (group, 3));
        assert_eq!(replay(list.records()), Ok(MAX_PASSES as usize + 1));
    }

    #[test]
    fn a_set_aside_lasts_one_claim_window_and_holds_one_shard() {
        let mut list = WaitingList::new(settings());
        let group = join(&mut list, "group", Some(Pool::Seats), 3);
        let singles: Vec<u64> =
            (0..6).map(|i| join(&mut list, &format!("s{i}"), Some(Pool::Seats), 1)).collect();
        for single in singles.iter().take(MAX_PASSES as usize) {
            list.returned(Pool::Shard(0), 1, T);
            assert_eq!(list.offer(T)[0].number, *single);
        }
        assert_eq!(list.entry(group).unwrap().set_aside_from, Some(T));
        // Two shards' seats come back: the one with the most free is set aside for the group, the
        // other still serves the singles behind it.
        list.returned(Pool::Shard(0), 2, T + 1);
        list.returned(Pool::Shard(1), 1, T + 1);
        let offers = list.offer(T + 1);
        assert_eq!(offers.len(), 1);
        assert_eq!((offers[0].number, &offers[0].pool), (singles[3], &Pool::Shard(1)));
        assert_eq!(list.release_unwanted(T + 2), [], "set aside, not unwanted");
        // One claim window later the set-aside is over: the singles get the two seats.
        let later = T + 600_000;
        let offers = list.offer(later);
        assert_eq!(offers.iter().map(|o| o.number).collect::<Vec<_>>(), [singles[4], singles[5]]);
        assert_eq!(replay(list.records()), Ok(MAX_PASSES as usize + 3));
    }

    #[test]
    fn a_set_aside_opens_only_once_its_entry_leads_the_list() {
        let mut list = WaitingList::new(settings());
        let first = join(&mut list, "floor", Some(tier("floor")), 1);
        let group = join(&mut list, "group", Some(Pool::Seats), 3);
        let singles: Vec<u64> =
            (0..6).map(|i| join(&mut list, &format!("s{i}"), Some(Pool::Seats), 1)).collect();
        for single in singles.iter().take(MAX_PASSES as usize) {
            list.returned(Pool::Seats, 1, T);
            assert_eq!(list.offer(T)[0].number, *single);
        }
        assert_eq!(list.entry(group).unwrap().set_aside_from, None, "passed over behind someone");
        list.returned(tier("floor"), 1, T + 1);
        assert_eq!(list.offer(T + 1)[0].number, first);
        // Long after, the group leads: its next pass opens its window, then seats wait for it.
        let later = T + 3_600_000;
        list.returned(Pool::Seats, 1, later);
        assert_eq!(list.offer(later)[0].number, singles[3]);
        assert_eq!(list.entry(group).unwrap().set_aside_from, Some(later));
        list.returned(Pool::Seats, 2, later + 1);
        assert!(list.offer(later + 1).is_empty(), "set aside for the group");
        assert_eq!(replay(list.records()), Ok(MAX_PASSES as usize + 2));
    }

    #[test]
    fn places_no_request_fits_go_back_on_sale_after_one_claim_window() {
        let mut list = WaitingList::new(settings());
        join(&mut list, "pair", Some(Pool::Seats), 2);
        list.returned(Pool::Seats, 1, T);
        assert!(list.offer(T).is_empty());
        assert_eq!(list.release_unwanted(T + 1), [], "a second seat may come back");
        assert_eq!(list.next_release_check(T + 1), Some(T + 600_000));
        assert_eq!(list.next_release_check(T + 600_000), None, "a window over is no alarm");
        assert_eq!(list.release_unwanted(T + 600_000), [(Pool::Seats, 1)], "none did: back on sale");
        // A seat that comes back with one parked makes a pair: offered at once.
        list.returned(Pool::Seats, 1, T + 700_000);
        list.returned(Pool::Seats, 1, T + 700_001);
        assert_eq!(list.offer(T + 700_001)[0].quantity, 2);
        assert_eq!(replay(list.records()), Ok(1));
    }

    #[test]
    fn offers_out_are_bounded_and_unwanted_places_go_back_on_sale() {
        let mut list = WaitingList::new(ListSettings { max_offers_out: 2, ..settings() });
        for who in ["a", "b", "c"] {
            join(&mut list, who, Some(tier("floor")), 1);
        }
        list.returned(tier("floor"), 3, T);
        list.returned(Pool::Seats, 2, T);
        assert_eq!(list.offer(T).len(), 2);
        assert_eq!(list.free()[&tier("floor")], 1, "the third waits for a free slot");
        assert_eq!(list.release_unwanted(T), [(Pool::Seats, 2)], "nobody waits for seats");
        let closed = list.close(T);
        assert_eq!(closed.len(), 1);
        assert_eq!(list.release_unwanted(T), [(tier("floor"), 1)]);
        assert!(list.offer(T).is_empty());
        assert_eq!(
            list.join(
                JoinRequest {
                    visitor: VisitorId::parse("d").unwrap(),
                    email_key: "d".into(),
                    pool: None,
                    seated_tier: None,
                    quantity: 1
                },
                T
            )
            .unwrap_err(),
            JoinError::Closed
        );
    }

    #[test]
    fn a_list_restores_from_its_history_and_a_forged_offer_fails_the_audit() {
        let mut list = WaitingList::new(settings());
        let a = join(&mut list, "a", None, 1);
        let b = join(&mut list, "b", None, 1);
        list.returned(Pool::Seats, 1, T);
        list.offer(T);
        list.expire_due(T + 600_000);
        let restored = restore(list.records().to_vec()).unwrap();
        assert_eq!(restored, list);
        // Someone edits the history to offer the seat to b first.
        let mut forged = list.records().to_vec();
        for r in forged.iter_mut() {
            if let Record::Offered { offer, .. } = r {
                if offer.number == a {
                    offer.number = b;
                    offer.visitor = VisitorId::parse("b").unwrap();
                }
            }
        }
        assert!(replay(&forged).is_err());
        // Or ends the first offer early (before its time), or sends wanted places back on sale.
        let mut early = list.records().to_vec();
        for r in early.iter_mut() {
            if let Record::Ended { at, .. } = r {
                *at -= 1;
            }
        }
        assert!(replay(&early).unwrap_err().contains("ended Lapsed"));
        let mut released = list.records().to_vec();
        released.push(Record::Released { pool: Pool::Seats, quantity: 1, at: T + 600_001 });
        assert!(replay(&released).unwrap_err().contains("released"));
    }

    #[test]
    fn a_history_with_changed_settings_replays_under_each_in_turn() {
        let mut list = WaitingList::new(settings());
        join(&mut list, "a", None, 1);
        join(&mut list, "b", None, 1);
        list.returned(Pool::Seats, 1, T);
        list.offer(T);
        list.set_settings(ListSettings { claim_seconds: 120, ..settings() }, T + 1);
        list.returned(Pool::Seats, 1, T + 2);
        let offers = list.offer(T + 2);
        assert_eq!(offers[0].until, T + 2 + 120_000, "the new claim window");
        assert_eq!(replay(list.records()), Ok(2));
        assert_eq!(restore(list.records().to_vec()).unwrap(), list);
    }
}
