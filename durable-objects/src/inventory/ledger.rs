//! The hold ledger: the rules of seat state for one inventory (an event, or one shard of it).
//!
//! Pure: no I/O, no clock, no randomness — the caller passes the time and the new hold's id. Every
//! operation either changes nothing and returns an error, or applies completely and reports which
//! holds it touched (so the Durable Object can persist exactly those before it answers). The
//! invariants it keeps: a seat is in at most one live hold and sold at most once; a GA tier never
//! has more held + sold than its capacity; a visitor never holds + owns more than the limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Maps keyed by ids the platform chooses (seat, hold and visitor ids): a fast hasher. Maps keyed
/// by what a buyer chooses (idempotency keys) keep std's DoS-resistant SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use serde::{Deserialize, Serialize};
use shared_types::ids::{EventId, HoldId, SeatId, SectionId, TierId, VisitorId, ZoneId};
pub use shared_types::inventory::HoldState;
use shared_types::inventory::{Accessibility, HoldSettings, Inventory};

use super::retention::Retention;

mod check;
mod parking;
pub use parking::{is_waitlist, Parked, ParkedOffer, PARKED_UNTIL, WAITLIST_VISITOR};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub use super::retention::{ENDED_HOLD_RETENTION_MS, IDEMPOTENCY_RETENTION_MS};
/// Most idempotency answers remembered per visitor: a buyer's retries need a handful; a visitor
/// sending fresh keys (each refused, say) cannot grow the object past this. Past it, the visitor's
/// oldest answer is forgotten first.
pub const MAX_REMEMBERED_PER_VISITOR: usize = 32;
/// Most seats or places one hold may ask for, whatever the event's limit.
pub const MAX_HOLD_QUANTITY: u32 = 50;

/// What a buyer asks to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldRequest {
    /// Exactly these seats, all or nothing. In a sectioned event, `section` says which shard
    /// they are in (every seat must be in it).
    Seats {
        seats: Vec<SeatId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        section: Option<SectionId>,
        /// The seated tier to sell them under (the inventory's first when not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<TierId>,
    },
    /// The best `quantity` available seats, in one section and/or zone when given; adjacent in
    /// one row when possible.
    BestAvailable {
        quantity: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        section: Option<SectionId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone: Option<ZoneId>,
        /// Only seats with this accessibility feature.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accessibility: Option<Accessibility>,
        /// The seated tier to sell them under (the inventory's first when not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tier: Option<TierId>,
    },
    /// `quantity` places of a general-admission tier.
    GeneralAdmission { tier: TierId, quantity: u32 },
}

impl HoldRequest {
    /// A stable fingerprint of the request body, for idempotency.
    pub fn fingerprint(&self) -> u64 {
        fnv1a(&serde_json::to_vec(self).unwrap_or_default())
    }
}

fn inventory_fingerprint(inventory: &Inventory) -> u64 {
    fnv1a(&serde_json::to_vec(inventory).unwrap_or_default())
}

/// FNV-1a: stable across builds and platforms (unlike std's hasher), so stored fingerprints
/// still match after a deploy.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// General-admission places in a hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaPlaces {
    pub tier: TierId,
    pub quantity: u32,
}

/// A hold, as stored and as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub visitor: VisitorId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seats: Vec<SeatId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ga: Option<GaPlaces>,
    /// The seated tier its seats are sold under (none for GA places, or when the inventory has no
    /// seated tiers: the seats then sell at their zone's price).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "tier")]
    pub seated_tier: Option<TierId>,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The one extension for checkout has been used.
    pub extended: bool,
    pub state: HoldState,
    /// When it was sold, released or expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// Seats of a sold hold given back after a refund.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub returned_seats: Vec<SeatId>,
    /// GA places of a sold hold given back after a refund.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub returned_ga: u32,
    /// For places parked for the waiting list: the hold they came back from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_from: Option<HoldId>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Hold {
    /// A new live hold (placed, offered or parked), nothing returned, not extended.
    fn held(
        id: HoldId,
        visitor: VisitorId,
        seats: Vec<SeatId>,
        ga: Option<GaPlaces>,
        seated_tier: Option<TierId>,
        created_at: Millis,
        expires_at: Millis,
    ) -> Self {
        Self {
            id,
            visitor,
            seats,
            ga,
            seated_tier,
            created_at,
            expires_at,
            extended: false,
            state: HoldState::Held,
            ended_at: None,
            returned_seats: Vec::new(),
            returned_ga: 0,
            parked_from: None,
        }
    }

    /// Tickets this hold counts against its visitor's limit right now.
    pub fn tickets(&self) -> u32 {
        match self.state {
            HoldState::Held => self.seats.len() as u32 + self.ga.as_ref().map_or(0, |g| g.quantity),
            HoldState::Sold => {
                (self.seats.len() - self.returned_seats.len()) as u32
                    + self.ga.as_ref().map_or(0, |g| g.quantity - self.returned_ga)
            }
            HoldState::Released | HoldState::Expired => 0,
        }
    }
}

/// Why an operation was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum HoldError {
    #[error("no such seat {seat}")]
    UnknownSeat { seat: SeatId },
    #[error("no such section {section}")]
    UnknownSection { section: SectionId },
    #[error("no such price zone {zone}")]
    UnknownZone { zone: ZoneId },
    #[error("no such tier {tier}")]
    UnknownTier { tier: TierId },
    #[error("the request names no seat, or a quantity outside 1..={max}")]
    BadQuantity { max: u32 },
    #[error("seat {seat} is named twice")]
    DuplicateSeat { seat: SeatId },
    #[error("seats already held or sold: {seats:?}")]
    SeatsUnavailable { seats: Vec<SeatId> },
    #[error("only {available} available, {requested} requested")]
    NotEnoughAvailable { requested: u32, available: u32 },
    #[error("the limit is {limit} tickets per buyer; {current} already held or bought")]
    LimitExceeded { limit: u32, current: u32, requested: u32 },
    #[error("this idempotency key was used with a different request")]
    IdempotencyConflict,
    #[error("a hold with this id already exists; retry the request")]
    DuplicateHoldId,
    #[error("the idempotency key must be 1 to 128 visible ASCII characters")]
    BadIdempotencyKey,
    #[error("no such hold")]
    HoldNotFound,
    #[error("the hold belongs to another visitor")]
    NotYourHold,
    #[error("the hold expired")]
    HoldExpired,
    #[error("the hold was released")]
    HoldReleased,
    #[error("the hold is already sold")]
    HoldSold,
    #[error("the hold was already extended once")]
    AlreadyExtended,
    #[error("the hold is not sold")]
    NotSold,
    #[error("seat {seat} is not part of this sale or was already returned")]
    NotReturnable { seat: SeatId },
    #[error("the inventory is for event {found}, this object serves {expected}")]
    WrongEvent { expected: EventId, found: EventId },
    #[error("inventory version {offered} is not newer than the current {current}")]
    StaleInventory { current: u64, offered: u64 },
    #[error("the update would remove or shrink what is held or sold: {detail}")]
    UpdateWouldDisturbHolds { detail: String },
    #[error("tier {tier} is not on sale at this time")]
    TierNotOnSale { tier: TierId },
}

/// The answer to a successful placement (what the edge turns into a hold token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub hold: Hold,
    /// True when this is the remembered answer to a repeated idempotency key.
    pub replayed: bool,
}

/// Who asks to release a hold: a buyer may only release their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Releaser<'a> {
    Visitor(&'a VisitorId),
    Core,
}

/// Counts for one section, zone or tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub capacity: u32,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
}

/// What buyers may see: which seats and how many places are available. Its `version` grows with
/// every change, so caches can tell which of two snapshots is newer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    pub event: EventId,
    pub version: u64,
    pub inventory_version: u64,
    /// One character per seat, in seat-map order: `a` available, `h` held, `s` sold, `x` off sale.
    pub seats: String,
    pub sections: Vec<(SectionId, Counts)>,
    /// GA tiers.
    pub tiers: Vec<(TierId, Counts)>,
    /// Seated tiers: the seats held and sold under each, and how many more it may sell (no more
    /// than the seats available).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seated_tiers: Vec<(TierId, Counts)>,
    /// Of the places held, those the waiting list keeps while it parks (parked, or offered to an
    /// entry): the line's coordinator counts the event sold out when they are all that is held.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waitlist_held: u32,
}

/// Operational figures for the operator and reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub holds_placed: u64,
    pub holds_released: u64,
    pub holds_expired: u64,
    pub holds_sold: u64,
    pub live_holds: u64,
    /// How late expiries ran compared with the holds' expiry times.
    pub expiry_lateness_max_ms: Millis,
    pub expiry_lateness_total_ms: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeatState {
    Free,
    Held,
    Sold,
    /// Off sale and not held or sold: never placeable.
    Withdrawn,
}

#[derive(Debug, Clone)]
struct SeatEntry {
    id: SeatId,
    section: u32,
    /// Index into `rows`.
    row: u32,
    zone: u32,
    accessibility: Vec<Accessibility>,
    /// Not adjacent to the next seat in its row.
    gap_after: bool,
    state: SeatState,
    /// Taken off sale: never free again.
    off_sale: bool,
}

/// A seated tier's claim on the seats: its capacity and sale window, and how many seats are held
/// and sold under it (returned ones not counted).
#[derive(Debug, Clone)]
struct SeatedEntry {
    id: TierId,
    capacity: u32,
    held: u32,
    sold: u32,
    starts: Option<Millis>,
    ends: Option<Millis>,
}

impl SeatedEntry {
    fn used(&self) -> u32 {
        self.held + self.sold
    }

    fn room(&self) -> u32 {
        self.capacity.saturating_sub(self.used())
    }

    fn on_sale_at(&self, now: Millis) -> bool {
        self.starts.is_none_or(|s| now >= s) && self.ends.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone)]
struct TierEntry {
    id: TierId,
    capacity: u32,
    held: u32,
    sold: u32,
}

/// The remembered answer to one visitor's idempotency key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub visitor: VisitorId,
    pub key: String,
    /// [`HoldRequest::fingerprint`] of the first request under this key.
    pub fingerprint: u64,
    /// The first answer: the hold placed, or why it was refused.
    pub answer: Result<Hold, HoldError>,
    pub at: Millis,
}

/// The ledger of one inventory object.
#[derive(Debug, Clone)]
pub struct Ledger {
    event: EventId,
    inventory_version: u64,
    /// Fingerprint of the current definition: the same version pushed again is accepted as is.
    inventory_fingerprint: u64,
    settings: HoldSettings,
    seats: Vec<SeatEntry>,
    seat_index: FastMap<SeatId, u32>,
    /// Seat index ranges of each row, in seat-map order (rows are where adjacency lives).
    rows: Vec<std::ops::Range<u32>>,
    /// Free seats per row, so that best-available skips rows that cannot fit a block.
    row_free: Vec<u32>,
    sections: Vec<SectionId>,
    zones: Vec<ZoneId>,
    /// The seated tiers, in the inventory's order (a hold that names none takes the first on sale
    /// with room).
    seated: Vec<SeatedEntry>,
    tiers: Vec<TierEntry>,
    holds: FastMap<HoldId, Hold>,
    /// Live holds by expiry, earliest first; the sequence number orders holds that expire in the
    /// same millisecond without comparing their ids.
    expiries: BTreeMap<(Millis, u64), HoldId>,
    /// Where each live hold sits in `expiries`.
    expiry_keys: FastMap<HoldId, (Millis, u64)>,
    next_sequence: u64,
    /// Ended (released or expired) holds by end time, for pruning.
    ended: BTreeSet<(Millis, HoldId)>,
    tickets_by_visitor: FastMap<VisitorId, u32>,
    idempotency: HashMap<(VisitorId, String), IdempotencyRecord>,
    idempotency_by_age: BTreeSet<(Millis, VisitorId, String)>,
    /// Each visitor's remembered keys by age (at most [`MAX_REMEMBERED_PER_VISITOR`]).
    idempotency_by_visitor: HashMap<VisitorId, BTreeSet<(Millis, String)>>,
    /// Answers forgotten to keep that bound, not yet deleted from storage ([`Ledger::take_evicted`]):
    /// the visitor, the key, and the hold the answer placed (whose row keeps it).
    evicted: Vec<(VisitorId, String, Option<HoldId>)>,
    version: u64,
    stats: Stats,
    /// Places that come back are parked for the waiting list (`parking.rs`).
    parking: bool,
    /// The last parked hold's sequence (`wl-<n>`).
    park_seq: u64,
    /// Parked holds made or ended since the object last asked ([`Ledger::take_parked_changes`]):
    /// an operation's answer names the hold it was about, these are the ones it parked besides.
    park_changes: Vec<HoldId>,
    /// How long ended holds and answers are remembered (`retention.rs`).
    retention: Retention,
}

impl Ledger {
    /// A ledger for a validated inventory, with nothing held or sold.
    pub fn new(inventory: &Inventory) -> Self {
        let mut ledger = Self {
            event: inventory.event.clone(),
            inventory_version: 0,
            inventory_fingerprint: 0,
            settings: inventory.settings,
            seats: Vec::new(),
            seat_index: FastMap::default(),
            rows: Vec::new(),
            row_free: Vec::new(),
            sections: Vec::new(),
            zones: Vec::new(),
            seated: Vec::new(),
            tiers: Vec::new(),
            holds: FastMap::default(),
            expiries: BTreeMap::new(),
            expiry_keys: FastMap::default(),
            next_sequence: 0,
            ended: BTreeSet::new(),
            tickets_by_visitor: FastMap::default(),
            idempotency: HashMap::new(),
            idempotency_by_age: BTreeSet::new(),
            idempotency_by_visitor: HashMap::new(),
            evicted: Vec::new(),
            version: 0,
            stats: Stats::default(),
            parking: false,
            park_seq: 0,
            park_changes: Vec::new(),
            retention: Retention::default(),
        };
        ledger.load_inventory(inventory);
        ledger
    }

    /// Rebuilds a ledger from its inventory, stored holds and idempotency answers (after a
    /// restart). Holds that are `Held` but past expiry stay held until the next
    /// [`Ledger::expire_due`], which the object's alarm runs at once.
    pub fn restore(
        inventory: &Inventory,
        holds: impl IntoIterator<Item = Hold>,
        idempotency: impl IntoIterator<Item = IdempotencyRecord>,
        version: u64,
        stats: Stats,
    ) -> Result<Self, HoldError> {
        let mut ledger = Self::new(inventory);
        for hold in holds {
            ledger.apply_hold_effects(&hold, 1)?;
            ledger.index_hold(&hold);
            ledger.holds.insert(hold.id.clone(), hold);
        }
        for record in idempotency {
            ledger.remember(record);
        }
        ledger.version = version;
        let parked = ledger.holds.values().filter(|h| h.parked() && h.state == HoldState::Held).count();
        ledger.stats = Stats { live_holds: (ledger.expiries.len() - parked) as u64, ..stats };
        ledger.restore_park_seq();
        Ok(ledger)
    }

    fn load_inventory(&mut self, inventory: &Inventory) {
        let map = &inventory.seat_map;
        self.zones = map.zones.iter().map(|z| z.id.clone()).collect();
        let old_used: HashMap<TierId, (u32, u32)> =
            self.seated.drain(..).map(|t| (t.id, (t.held, t.sold))).collect();
        self.seated = map
            .seated_tiers
            .iter()
            .map(|t| SeatedEntry {
                id: t.id.clone(),
                capacity: t.capacity,
                held: old_used.get(&t.id).map_or(0, |u| u.0),
                sold: old_used.get(&t.id).map_or(0, |u| u.1),
                starts: t.sale_starts_at_ms,
                ends: t.sale_ends_at_ms,
            })
            .collect();
        self.sections = map.sections.iter().map(|s| s.id.clone()).collect();
        let zone_of: HashMap<&ZoneId, u32> =
            self.zones.iter().enumerate().map(|(i, z)| (z, i as u32)).collect();
        let old_states: HashMap<SeatId, SeatState> =
            self.seats.drain(..).filter(|s| s.state != SeatState::Free).map(|s| (s.id, s.state)).collect();
        self.seat_index.clear();
        self.rows.clear();
        for (si, section) in map.sections.iter().enumerate() {
            for row in &section.rows {
                let start = self.seats.len() as u32;
                for seat in &row.seats {
                    self.seat_index.insert(seat.id.clone(), self.seats.len() as u32);
                    self.seats.push(SeatEntry {
                        id: seat.id.clone(),
                        section: si as u32,
                        row: self.rows.len() as u32,
                        zone: zone_of.get(&seat.zone).copied().unwrap_or(0),
                        accessibility: seat.accessibility.clone(),
                        gap_after: seat.aisle_after,
                        state: match old_states.get(&seat.id) {
                            Some(&state @ (SeatState::Held | SeatState::Sold)) => state,
                            _ if seat.off_sale => SeatState::Withdrawn,
                            _ => SeatState::Free,
                        },
                        off_sale: seat.off_sale,
                    });
                }
                self.rows.push(start..self.seats.len() as u32);
            }
        }
        self.row_free = self.free_per_row();
        let old_tiers: HashMap<TierId, (u32, u32)> =
            self.tiers.drain(..).map(|t| (t.id, (t.held, t.sold))).collect();
        self.tiers = map
            .ga_tiers
            .iter()
            .map(|t| {
                let (held, sold) = old_tiers.get(&t.id).copied().unwrap_or((0, 0));
                TierEntry { id: t.id.clone(), capacity: t.capacity, held, sold }
            })
            .collect();
        self.settings = inventory.settings;
        self.inventory_version = inventory.version;
        self.inventory_fingerprint = inventory_fingerprint(inventory);
    }

    /// Replaces the inventory definition (new prices, seats, settings) without disturbing holds:
    /// refused if it is older, for another event, or would drop a held or sold seat or shrink a
    /// tier below what is held and sold. Live holds keep their expiry.
    ///
    /// Seats and places it adds (new seats, seats back on sale, a GA tier's larger capacity) are
    /// parked for the waiting list when it is parking, in the same step.
    pub fn update_inventory(&mut self, inventory: &Inventory, now: Millis) -> Result<(), HoldError> {
        if inventory.event != self.event {
            return Err(HoldError::WrongEvent {
                expected: self.event.clone(),
                found: inventory.event.clone(),
            });
        }
        if inventory.version == self.inventory_version
            && inventory_fingerprint(inventory) == self.inventory_fingerprint
        {
            return Ok(()); // the same push again (a retry): nothing to do
        }
        if inventory.version <= self.inventory_version {
            return Err(HoldError::StaleInventory {
                current: self.inventory_version,
                offered: inventory.version,
            });
        }
        let new_seats: std::collections::HashSet<&SeatId> =
            inventory.seat_map.seats().map(|(_, _, s)| &s.id).collect();
        let dropped: Vec<&SeatId> = self
            .seats
            .iter()
            .filter(|s| matches!(s.state, SeatState::Held | SeatState::Sold) && !new_seats.contains(&s.id))
            .map(|s| &s.id)
            .collect();
        if !dropped.is_empty() {
            return Err(HoldError::UpdateWouldDisturbHolds {
                detail: format!("seats {dropped:?} are held or sold"),
            });
        }
        for tier in self.seated.iter().filter(|t| t.used() > 0) {
            let capacity =
                inventory.seat_map.seated_tiers.iter().find(|t| t.id == tier.id).map(|t| t.capacity);
            if capacity.is_none_or(|c| c < tier.used()) {
                return Err(HoldError::UpdateWouldDisturbHolds {
                    detail: format!("seated tier {} has {} seats held or sold", tier.id, tier.used()),
                });
            }
        }
        for tier in &self.tiers {
            let in_use = tier.held + tier.sold;
            let capacity = inventory.seat_map.ga_tiers.iter().find(|t| t.id == tier.id).map(|t| t.capacity);
            if in_use > 0 && capacity.is_none_or(|c| c < in_use) {
                return Err(HoldError::UpdateWouldDisturbHolds {
                    detail: format!("tier {} has {in_use} places held or sold", tier.id),
                });
            }
        }
        let before = self.parking().then(|| self.sellable());
        self.load_inventory(inventory);
        self.version += 1;
        if let Some(before) = before {
            self.park_added(before, now);
        }
        Ok(())
    }

    pub fn event(&self) -> &EventId {
        &self.event
    }

    pub fn settings(&self) -> HoldSettings {
        self.settings
    }

    pub fn inventory_version(&self) -> u64 {
        self.inventory_version
    }

    /// The availability version: grows by one with every change buyers can see.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn hold(&self, id: &HoldId) -> Option<&Hold> {
        self.holds.get(id)
    }

    /// Every hold it remembers (live, sold, and ended ones not yet pruned), in no order.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// The earliest expiry among live holds: when the object's alarm must fire next.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiries.first_key_value().map(|((at, _), _)| *at)
    }

    /// Tickets the visitor currently holds or owns.
    pub fn tickets_of(&self, visitor: &VisitorId) -> u32 {
        self.tickets_by_visitor.get(visitor).copied().unwrap_or(0)
    }

    /// Places a hold, all or nothing. With an idempotency key, a repeat of the same request gets
    /// the same answer (success or refusal); a different request under the same key is refused.
    pub fn place_hold(
        &mut self,
        visitor: &VisitorId,
        idempotency_key: Option<&str>,
        request: &HoldRequest,
        now: Millis,
        new_id: HoldId,
    ) -> Result<Placed, HoldError> {
        self.place_hold_within(visitor, idempotency_key, request, now, new_id, None)
    }

    /// [`Ledger::place_hold`] for a buyer whose admission allows at most `admission_cap` tickets
    /// (the waiting room's `max_tickets_per_buyer`, carried in the admission token): the smaller of
    /// it and the event's `max_tickets_per_visitor` applies.
    pub fn place_hold_within(
        &mut self,
        visitor: &VisitorId,
        idempotency_key: Option<&str>,
        request: &HoldRequest,
        now: Millis,
        new_id: HoldId,
        admission_cap: Option<u32>,
    ) -> Result<Placed, HoldError> {
        let limit = admission_cap.map_or(self.settings.max_tickets_per_visitor, |cap| {
            cap.min(self.settings.max_tickets_per_visitor)
        });
        self.place_within_limit(visitor, idempotency_key, request, now, new_id, limit)
    }

    /// A box-office hold (the core's, for a walk-up buyer under a visitor id of its own): the
    /// event's per-buyer limit does not apply (a school's group buys at the counter), the largest
    /// hold does ([`MAX_HOLD_QUANTITY`]).
    pub fn place_box_office_hold(
        &mut self,
        visitor: &VisitorId,
        idempotency_key: Option<&str>,
        request: &HoldRequest,
        now: Millis,
        new_id: HoldId,
    ) -> Result<Placed, HoldError> {
        self.place_within_limit(visitor, idempotency_key, request, now, new_id, MAX_HOLD_QUANTITY)
    }

    fn place_within_limit(
        &mut self,
        visitor: &VisitorId,
        idempotency_key: Option<&str>,
        request: &HoldRequest,
        now: Millis,
        new_id: HoldId,
        limit: u32,
    ) -> Result<Placed, HoldError> {
        if is_waitlist(visitor) {
            return Err(HoldError::NotYourHold);
        }
        let Some(key) = idempotency_key else {
            return self
                .place_new(visitor, request, now, new_id, limit)
                .map(|hold| Placed { hold, replayed: false });
        };
        if !shared_types::idempotency::valid(key) {
            return Err(HoldError::BadIdempotencyKey);
        }
        let fingerprint = request.fingerprint();
        let slot = (visitor.clone(), key.to_owned());
        if let Some(record) = self.idempotency.get(&slot) {
            if record.fingerprint != fingerprint {
                return Err(HoldError::IdempotencyConflict);
            }
            return match &record.answer {
                // The remembered hold, as it is now (it may have been sold or expired since).
                Ok(hold) => {
                    let current = self.holds.get(&hold.id).cloned().unwrap_or_else(|| hold.clone());
                    Ok(Placed { hold: current, replayed: true })
                }
                Err(e) => Err(e.clone()),
            };
        }
        let answer = self.place_new(visitor, request, now, new_id, limit);
        self.remember(IdempotencyRecord {
            visitor: visitor.clone(),
            key: key.to_owned(),
            fingerprint,
            answer: answer.clone(),
            at: now,
        });
        answer.map(|hold| Placed { hold, replayed: false })
    }

    fn place_new(
        &mut self,
        visitor: &VisitorId,
        request: &HoldRequest,
        now: Millis,
        id: HoldId,
        limit: u32,
    ) -> Result<Hold, HoldError> {
        if self.holds.contains_key(&id) {
            // The caller's id generator repeated itself: refuse rather than overwrite a hold.
            return Err(HoldError::DuplicateHoldId);
        }
        let (seats, ga, seated_tier) = match request {
            HoldRequest::Seats { seats, section, tier } => {
                let picked = self.pick_named(seats, section.as_ref())?;
                let tier = self.seated_tier(tier.as_ref(), picked.len() as u32, now)?;
                (picked, None, tier)
            }
            HoldRequest::BestAvailable { quantity, section, zone, accessibility, tier } => {
                let tier = self.seated_tier(tier.as_ref(), *quantity, now)?;
                (self.pick_best(*quantity, section.as_ref(), zone.as_ref(), *accessibility)?, None, tier)
            }
            HoldRequest::GeneralAdmission { tier, quantity } => {
                (Vec::new(), Some(self.pick_ga(tier, *quantity)?), None)
            }
        };
        let requested = seats.len() as u32 + ga.as_ref().map_or(0, |(_, q)| *q);
        let current = self.tickets_of(visitor);
        if current + requested > limit {
            return Err(HoldError::LimitExceeded { limit, current, requested });
        }

        let hold = Hold::held(
            id,
            visitor.clone(),
            seats.iter().map(|&i| self.seats[i as usize].id.clone()).collect(),
            ga.map(|(t, quantity)| GaPlaces { tier: self.tiers[t].id.clone(), quantity }),
            seated_tier.map(|t| self.seated[t].id.clone()),
            now,
            now + Millis::from(self.settings.hold_seconds) * 1000,
        );
        // Claim by index: every seat and place was just checked to be free.
        for &i in &seats {
            self.set_seat_state(i as usize, SeatState::Held);
        }
        if let Some((t, quantity)) = ga {
            self.tiers[t].held += quantity;
        }
        if let Some(t) = seated_tier {
            self.seated[t].held += seats.len() as u32;
        }
        self.add_tickets(visitor, i64::from(requested));
        self.schedule(&hold.id, hold.expires_at);
        self.holds.insert(hold.id.clone(), hold.clone());
        self.stats.holds_placed += 1;
        self.stats.live_holds += 1;
        self.version += 1;
        Ok(hold)
    }

    /// The seated tier (its index) `seats` seats are sold under: the one named, which must be one
    /// of the inventory's, on sale and with room for them; else the first that is. None when the
    /// inventory has no seated tiers (the seats then sell at their zone's price).
    fn seated_tier(
        &self,
        named: Option<&TierId>,
        seats: u32,
        now: Millis,
    ) -> Result<Option<usize>, HoldError> {
        if self.seated.is_empty() {
            return match named {
                None => Ok(None),
                Some(t) => Err(HoldError::UnknownTier { tier: t.clone() }),
            };
        }
        let fits = |t: &SeatedEntry| -> Result<(), HoldError> {
            if !t.on_sale_at(now) {
                return Err(HoldError::TierNotOnSale { tier: t.id.clone() });
            }
            if t.room() < seats {
                return Err(HoldError::NotEnoughAvailable { requested: seats, available: t.room() });
            }
            Ok(())
        };
        match named {
            Some(name) => {
                let i = self
                    .seated
                    .iter()
                    .position(|t| &t.id == name)
                    .ok_or_else(|| HoldError::UnknownTier { tier: name.clone() })?;
                fits(&self.seated[i]).map(|()| Some(i))
            }
            None => match self.seated.iter().position(|t| fits(t).is_ok()) {
                Some(i) => Ok(Some(i)),
                None => {
                    let on_sale = self.seated.iter().filter(|t| t.on_sale_at(now));
                    let available = on_sale.map(SeatedEntry::room).max();
                    match available {
                        Some(available) => Err(HoldError::NotEnoughAvailable { requested: seats, available }),
                        None => Err(HoldError::TierNotOnSale { tier: self.seated[0].id.clone() }),
                    }
                }
            },
        }
    }

    fn pick_named(&self, seats: &[SeatId], section: Option<&SectionId>) -> Result<Vec<u32>, HoldError> {
        if seats.is_empty() || seats.len() > MAX_HOLD_QUANTITY as usize {
            return Err(HoldError::BadQuantity { max: MAX_HOLD_QUANTITY });
        }
        let section = match section {
            Some(s) => Some(self.section_index(s)?),
            None => None,
        };
        let mut picked = Vec::with_capacity(seats.len());
        let mut taken = Vec::new();
        for seat in seats {
            let &i =
                self.seat_index.get(seat).ok_or_else(|| HoldError::UnknownSeat { seat: seat.clone() })?;
            if section.is_some_and(|s| self.seats[i as usize].section != s) {
                return Err(HoldError::UnknownSeat { seat: seat.clone() });
            }
            if picked.contains(&i) {
                return Err(HoldError::DuplicateSeat { seat: seat.clone() });
            }
            if self.seats[i as usize].state != SeatState::Free {
                taken.push(seat.clone());
            }
            picked.push(i);
        }
        if taken.is_empty() {
            Ok(picked)
        } else {
            Err(HoldError::SeatsUnavailable { seats: taken })
        }
    }

    /// Best available: the first row (in seat-map order, front rows first) with a block of
    /// `quantity` adjacent free seats, the block nearest the row's middle; when no row has one,
    /// the first free seats in seat-map order.
    fn pick_best(
        &self,
        quantity: u32,
        section: Option<&SectionId>,
        zone: Option<&ZoneId>,
        accessibility: Option<Accessibility>,
    ) -> Result<Vec<u32>, HoldError> {
        if quantity == 0 || quantity > MAX_HOLD_QUANTITY {
            return Err(HoldError::BadQuantity { max: MAX_HOLD_QUANTITY });
        }
        let section = match section {
            Some(s) => Some(self.section_index(s)?),
            None => None,
        };
        let zone = match zone {
            Some(z) => Some(
                self.zones
                    .iter()
                    .position(|x| x == z)
                    .ok_or_else(|| HoldError::UnknownZone { zone: z.clone() })? as u32,
            ),
            None => None,
        };
        let eligible = |s: &SeatEntry| {
            s.state == SeatState::Free
                && section.is_none_or(|x| s.section == x)
                && zone.is_none_or(|x| s.zone == x)
                && accessibility.is_none_or(|a| s.accessibility.contains(&a))
        };
        let n = quantity as usize;
        for (r, row) in self.rows.iter().enumerate() {
            let (start, end) = (row.start as usize, row.end as usize);
            if (self.row_free[r] as usize) < n {
                continue;
            }
            let middle = (start + end) as f64 / 2.0;
            let mut best: Option<(f64, usize)> = None;
            let mut run_start = start;
            for i in start..end {
                let seat = &self.seats[i];
                if !eligible(seat) {
                    run_start = i + 1;
                    continue;
                }
                if i + 1 - run_start >= n {
                    let block_start = i + 1 - n;
                    let distance = ((block_start + i + 1) as f64 / 2.0 - middle).abs();
                    if best.is_none_or(|(d, _)| distance < d) {
                        best = Some((distance, block_start));
                    }
                }
                if seat.gap_after {
                    run_start = i + 1;
                }
            }
            if let Some((_, block_start)) = best {
                return Ok((block_start..block_start + n).map(|i| i as u32).collect());
            }
        }
        let scattered: Vec<u32> =
            (0..self.seats.len()).filter(|&i| eligible(&self.seats[i])).take(n).map(|i| i as u32).collect();
        if scattered.len() == n {
            Ok(scattered)
        } else {
            Err(HoldError::NotEnoughAvailable { requested: quantity, available: scattered.len() as u32 })
        }
    }

    fn section_index(&self, section: &SectionId) -> Result<u32, HoldError> {
        let i = self.sections.iter().position(|x| x == section);
        i.map(|i| i as u32).ok_or_else(|| HoldError::UnknownSection { section: section.clone() })
    }

    fn pick_ga(&self, tier: &TierId, quantity: u32) -> Result<(usize, u32), HoldError> {
        if quantity == 0 || quantity > MAX_HOLD_QUANTITY {
            return Err(HoldError::BadQuantity { max: MAX_HOLD_QUANTITY });
        }
        let t = self
            .tiers
            .iter()
            .position(|t| &t.id == tier)
            .ok_or_else(|| HoldError::UnknownTier { tier: tier.clone() })?;
        let entry = &self.tiers[t];
        let available = entry.capacity - entry.held - entry.sold;
        if quantity > available {
            return Err(HoldError::NotEnoughAvailable { requested: quantity, available });
        }
        Ok((t, quantity))
    }

    /// Releases a live hold (the buyer's own, or any for the core). Releasing a hold that is
    /// already released or expired succeeds and changes nothing, so retries are safe.
    pub fn release(&mut self, id: &HoldId, by: Releaser<'_>, now: Millis) -> Result<&Hold, HoldError> {
        let hold = self.not_parked(id)?;
        if let Releaser::Visitor(v) = by {
            if &hold.visitor != v || is_waitlist(v) {
                return Err(HoldError::NotYourHold);
            }
        }
        match hold.state {
            HoldState::Released | HoldState::Expired => {}
            HoldState::Sold => return Err(HoldError::HoldSold),
            HoldState::Held => {
                let (seats, ga, parked) = (hold.seats.clone(), hold.ga.clone(), hold.parked());
                self.end_hold(id, HoldState::Released, now);
                self.stats.holds_released += 1;
                if !parked {
                    self.park(seats, ga, id, now);
                }
            }
        }
        self.holds.get(id).ok_or(HoldError::HoldNotFound)
    }

    /// Expires every live hold whose time has come (`expires_at <= now`), returning their ids.
    pub fn expire_due(&mut self, now: Millis) -> Vec<HoldId> {
        let mut expired = Vec::new();
        while let Some(((at, _), id)) = self.expiries.first_key_value().map(|(k, v)| (*k, v.clone())) {
            if at > now {
                break;
            }
            self.end_hold(&id, HoldState::Expired, now);
            if let Some(hold) = self.holds.get(&id).filter(|h| !h.parked()) {
                let (seats, ga) = (hold.seats.clone(), hold.ga.clone());
                self.park(seats, ga, &id, now);
            }
            let lateness = now - at;
            self.stats.holds_expired += 1;
            self.stats.expiry_lateness_max_ms = self.stats.expiry_lateness_max_ms.max(lateness);
            self.stats.expiry_lateness_total_ms += lateness;
            expired.push(id);
        }
        expired
    }

    /// Extends a live hold once, by the event's extension time, for checkout.
    pub fn extend(&mut self, id: &HoldId, now: Millis) -> Result<&Hold, HoldError> {
        self.not_parked(id)?;
        let hold = self.live_hold(id, now)?;
        if hold.extended {
            return Err(HoldError::AlreadyExtended);
        }
        let old = hold.expires_at;
        let new = old + Millis::from(self.settings.extension_seconds) * 1000;
        self.unschedule(id);
        self.schedule(id, new);
        let hold = self.holds.get_mut(id).ok_or(HoldError::HoldNotFound)?;
        hold.expires_at = new;
        hold.extended = true;
        Ok(hold)
    }

    /// Sells a live (possibly extended) hold. Confirming a sold hold again succeeds and changes
    /// nothing (a duplicate webhook); an expired or released hold cannot be sold.
    pub fn confirm(&mut self, id: &HoldId, now: Millis) -> Result<&Hold, HoldError> {
        self.not_parked(id)?;
        if self.holds.get(id).map(|h| h.state) == Some(HoldState::Sold) {
            return self.holds.get(id).ok_or(HoldError::HoldNotFound);
        }
        let hold = self.live_hold(id, now)?.clone();
        self.unschedule(id);
        for seat in &hold.seats {
            if let Some(&i) = self.seat_index.get(seat) {
                self.set_seat_state(i as usize, SeatState::Sold);
            }
        }
        if let Some(ga) = &hold.ga {
            if let Some(t) = self.tiers.iter_mut().find(|t| t.id == ga.tier) {
                t.held -= ga.quantity;
                t.sold += ga.quantity;
            }
        }
        if let Some(t) = self.seated.iter_mut().find(|t| Some(&t.id) == hold.seated_tier.as_ref()) {
            let seats = hold.seats.len() as u32;
            t.held = t.held.saturating_sub(seats);
            t.sold += seats;
        }
        let hold = self.holds.get_mut(id).ok_or(HoldError::HoldNotFound)?;
        hold.state = HoldState::Sold;
        hold.ended_at = Some(now);
        self.stats.holds_sold += 1;
        self.stats.live_holds -= 1;
        self.version += 1;
        Ok(hold)
    }

    /// Sells a hold that expired or was released while its buyer was paying, if everything it held
    /// is still free (a seat taken off sale meanwhile is not): the saga's way to honour a late
    /// payment without a refund. A live hold is simply confirmed; a sold one is answered as is.
    /// When anything was taken by another buyer, it is refused and nothing changes.
    pub fn reclaim(&mut self, id: &HoldId, now: Millis) -> Result<&Hold, HoldError> {
        let hold = self.not_parked(id)?;
        match hold.state {
            HoldState::Sold => return self.holds.get(id).ok_or(HoldError::HoldNotFound),
            HoldState::Held if now < hold.expires_at => return self.confirm(id, now),
            HoldState::Held => {
                // Due but not yet swept: it expires now, as the sweep would have (its places parked
                // for the waiting list when it is parking; taken back just below).
                let (seats, ga) = (hold.seats.clone(), hold.ga.clone());
                self.end_hold(id, HoldState::Expired, now);
                self.stats.holds_expired += 1;
                self.park(seats, ga, id, now);
            }
            HoldState::Released | HoldState::Expired => {}
        }
        // Places parked for the waiting list since: back to this buyer, who paid for them; to the
        // list again if they cannot be sold to them after all.
        let unparked = self.unpark_for_reclaim(id, now);
        if let Err(e) = self.reclaim_ended(id, now) {
            for p in unparked {
                let source = p.parked_from.clone().unwrap_or(p.id.clone());
                self.park_since(p.seats, p.ga, &source, p.created_at, now);
            }
            return Err(e);
        }
        self.holds.get(id).ok_or(HoldError::HoldNotFound)
    }

    /// [`Ledger::reclaim`] of a hold that has ended: sold if everything it held is free.
    fn reclaim_ended(&mut self, id: &HoldId, now: Millis) -> Result<(), HoldError> {
        let mut hold = self.holds.get(id).cloned().ok_or(HoldError::HoldNotFound)?;
        let taken: Vec<SeatId> = hold
            .seats
            .iter()
            .filter(|s| {
                self.seat_index.get(*s).is_none_or(|&i| self.seats[i as usize].state != SeatState::Free)
            })
            .cloned()
            .collect();
        if !taken.is_empty() {
            return Err(HoldError::SeatsUnavailable { seats: taken });
        }
        if let Some(ga) = &hold.ga {
            let tier = self
                .tiers
                .iter()
                .find(|t| t.id == ga.tier)
                .ok_or(HoldError::UnknownTier { tier: ga.tier.clone() })?;
            let available = tier.capacity.saturating_sub(tier.held + tier.sold);
            if available < ga.quantity {
                return Err(HoldError::NotEnoughAvailable { requested: ga.quantity, available });
            }
        }
        // The buyer paid for this tier: its seats may not push it over its capacity either (its
        // sale window no longer matters: the order was made inside it), and a tier dropped since
        // cannot count them.
        if let Some(named) = &hold.seated_tier {
            let tier = self
                .seated
                .iter()
                .find(|t| &t.id == named)
                .ok_or_else(|| HoldError::UnknownTier { tier: named.clone() })?;
            let wanted = hold.seats.len() as u32;
            if tier.room() < wanted {
                return Err(HoldError::NotEnoughAvailable { requested: wanted, available: tier.room() });
            }
        }
        // No longer an ended hold: never pruned.
        self.ended.remove(&(hold.ended_at.unwrap_or(hold.created_at), hold.id.clone()));
        hold.state = HoldState::Sold;
        hold.ended_at = Some(now);
        hold.returned_seats.clear();
        hold.returned_ga = 0;
        self.apply_hold_effects(&hold, 1)?;
        self.stats.holds_sold += 1;
        self.version += 1;
        self.holds.insert(hold.id.clone(), hold);
        Ok(())
    }

    /// Gives sold seats (all remaining when `seats` is empty) and GA places back to sale after
    /// a refund (to the waiting list, parked, while it is parking). Returning something not sold in this hold, or already returned, is refused.
    pub fn return_sold(
        &mut self,
        id: &HoldId,
        seats: &[SeatId],
        ga_quantity: u32,
        now: Millis,
    ) -> Result<&Hold, HoldError> {
        let hold = self.not_parked(id)?;
        if hold.state != HoldState::Sold {
            return Err(HoldError::NotSold);
        }
        let remaining: Vec<&SeatId> =
            hold.seats.iter().filter(|s| !hold.returned_seats.contains(s)).collect();
        let ga_remaining = hold.ga.as_ref().map_or(0, |g| g.quantity - hold.returned_ga);
        let (to_return, ga_back): (Vec<SeatId>, u32) = if seats.is_empty() && ga_quantity == 0 {
            (remaining.into_iter().cloned().collect(), ga_remaining)
        } else {
            for (i, seat) in seats.iter().enumerate() {
                if !remaining.contains(&seat) || seats[..i].contains(seat) {
                    return Err(HoldError::NotReturnable { seat: seat.clone() });
                }
            }
            if ga_quantity > ga_remaining {
                return Err(HoldError::BadQuantity { max: ga_remaining });
            }
            (seats.to_vec(), ga_quantity)
        };
        let visitor = hold.visitor.clone();
        let tier = hold.ga.as_ref().map(|g| g.tier.clone());
        let tier_for_park = tier.clone();
        let seated_tier = hold.seated_tier.clone();
        for seat in &to_return {
            if let Some(&i) = self.seat_index.get(seat) {
                self.set_seat_state(i as usize, SeatState::Free);
            }
        }
        if let Some(tier) = tier.filter(|_| ga_back > 0) {
            if let Some(t) = self.tiers.iter_mut().find(|t| t.id == tier) {
                t.sold -= ga_back;
            }
        }
        if let Some(t) = self.seated.iter_mut().find(|t| Some(&t.id) == seated_tier.as_ref()) {
            t.sold = t.sold.saturating_sub(to_return.len() as u32);
        }
        self.add_tickets(&visitor, -(to_return.len() as i64 + i64::from(ga_back)));
        self.version += 1;
        let parked_ga = tier_for_park.map(|tier| GaPlaces { tier, quantity: ga_back });
        self.park(to_return.clone(), parked_ga, id, now);
        let hold = self.holds.get_mut(id).ok_or(HoldError::HoldNotFound)?;
        hold.returned_seats.extend(to_return);
        hold.returned_ga += ga_back;
        Ok(hold)
    }

    /// Sets how long ended holds and answers are remembered (the default unless the edge's
    /// variable shortens it: `retention.rs`).
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// How long ended holds and answers are remembered (as set).
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// How long an answer is remembered under the event's settings: at least as long as the hold
    /// it placed may live ([`Retention::answers_under`]).
    pub fn answer_retention(&self) -> Millis {
        self.retention.answers_under(&self.settings)
    }

    /// How long an ended hold is remembered under the event's settings: at least as long as its
    /// answer ([`Retention::ended_holds_under`]).
    pub fn ended_hold_retention(&self) -> Millis {
        self.retention.ended_holds_under(&self.settings)
    }

    /// Forgets ended holds and idempotency answers older than their retention; returns the ended
    /// holds forgotten (the object deletes their rows).
    pub fn prune(&mut self, now: Millis) -> Vec<HoldId> {
        let mut forgotten = Vec::new();
        while let Some((at, id)) = self.ended.first().cloned() {
            if at > now - self.ended_hold_retention() {
                break;
            }
            self.ended.remove(&(at, id.clone()));
            self.holds.remove(&id);
            forgotten.push(id);
        }
        while let Some((at, visitor, key)) = self.idempotency_by_age.first().cloned() {
            if at > now - self.answer_retention() {
                break;
            }
            self.forget_answer(at, &visitor, &key);
        }
        forgotten
    }

    /// When something next needs the object's attention, live holds or not: the earliest expiry,
    /// or the moment the oldest ended hold or remembered answer may be forgotten. The object keeps
    /// its alarm here, so memory and storage shrink back even after the last hold ends.
    pub fn next_wake(&self) -> Option<Millis> {
        let ended = self.ended.first().map(|(at, _)| at + self.ended_hold_retention());
        let answer = self.idempotency_by_age.first().map(|(at, ..)| at + self.answer_retention());
        [self.next_expiry(), ended, answer].into_iter().flatten().min()
    }

    /// Remembered idempotency answers (all visitors).
    pub fn remembered(&self) -> usize {
        self.idempotency.len()
    }

    /// The answers forgotten to keep each visitor under [`MAX_REMEMBERED_PER_VISITOR`] since the
    /// last call: the object deletes their rows.
    pub fn take_evicted(&mut self) -> Vec<(VisitorId, String, Option<HoldId>)> {
        std::mem::take(&mut self.evicted)
    }

    fn forget_answer(&mut self, at: Millis, visitor: &VisitorId, key: &str) {
        self.idempotency_by_age.remove(&(at, visitor.clone(), key.to_owned()));
        self.idempotency.remove(&(visitor.clone(), key.to_owned()));
        if let Some(mine) = self.idempotency_by_visitor.get_mut(visitor) {
            mine.remove(&(at, key.to_owned()));
            if mine.is_empty() {
                self.idempotency_by_visitor.remove(visitor);
            }
        }
    }

    /// The remembered answer to a visitor's idempotency key (the object stores it).
    pub fn idempotency_record(&self, visitor: &VisitorId, key: &str) -> Option<&IdempotencyRecord> {
        self.idempotency.get(&(visitor.clone(), key.to_owned()))
    }

    fn remember(&mut self, record: IdempotencyRecord) {
        let visitor = record.visitor.clone();
        // A key remembered again (restored twice) keeps only its newest answer.
        if let Some(old) = self.idempotency.get(&(visitor.clone(), record.key.clone())) {
            if old.at > record.at {
                return;
            }
            let at = old.at;
            self.forget_answer(at, &visitor, &record.key);
        }
        self.idempotency_by_age.insert((record.at, visitor.clone(), record.key.clone()));
        let mine = self.idempotency_by_visitor.entry(visitor.clone()).or_default();
        mine.insert((record.at, record.key.clone()));
        let oldest = (mine.len() > MAX_REMEMBERED_PER_VISITOR).then(|| mine.first().cloned()).flatten();
        self.idempotency.insert((visitor.clone(), record.key.clone()), record);
        if let Some((at, key)) = oldest {
            let hold = self
                .idempotency
                .get(&(visitor.clone(), key.clone()))
                .and_then(|r| r.answer.as_ref().ok().map(|h| h.id.clone()));
            self.forget_answer(at, &visitor, &key);
            self.evicted.push((visitor, key, hold));
        }
    }

    /// What buyers see.
    pub fn availability(&self) -> Availability {
        let mut sections: Vec<(SectionId, Counts)> =
            self.sections.iter().map(|s| (s.clone(), Counts::default())).collect();
        let mut seats = String::with_capacity(self.seats.len());
        for seat in &self.seats {
            let counts = &mut sections[seat.section as usize].1;
            counts.capacity += 1;
            match seat.state {
                SeatState::Free => {
                    counts.available += 1;
                    seats.push('a');
                }
                SeatState::Held => {
                    counts.held += 1;
                    seats.push('h');
                }
                SeatState::Sold => {
                    counts.sold += 1;
                    seats.push('s');
                }
                SeatState::Withdrawn => {
                    counts.capacity -= 1;
                    seats.push('x');
                }
            }
        }
        let tiers = self
            .tiers
            .iter()
            .map(|t| {
                let counts = Counts {
                    capacity: t.capacity,
                    available: t.capacity - t.held - t.sold,
                    held: t.held,
                    sold: t.sold,
                };
                (t.id.clone(), counts)
            })
            .collect();
        let free_seats: u32 = sections.iter().map(|(_, c)| c.available).sum();
        let seated_tiers = self
            .seated
            .iter()
            .map(|t| {
                let counts = Counts {
                    capacity: t.capacity,
                    available: t.room().min(free_seats),
                    held: t.held,
                    sold: t.sold,
                };
                (t.id.clone(), counts)
            })
            .collect();
        Availability {
            event: self.event.clone(),
            version: self.version,
            inventory_version: self.inventory_version,
            seats,
            sections,
            tiers,
            seated_tiers,
            waitlist_held: self.waitlist_held(),
        }
    }

    /// A hold anyone but the ledger may act on: the waiting list's parked holds change only
    /// through parking (`parking.rs`), whoever asks.
    fn not_parked(&self, id: &HoldId) -> Result<&Hold, HoldError> {
        let hold = self.holds.get(id).ok_or(HoldError::HoldNotFound)?;
        if hold.parked() {
            return Err(HoldError::NotYourHold);
        }
        Ok(hold)
    }

    fn live_hold(&self, id: &HoldId, now: Millis) -> Result<&Hold, HoldError> {
        let hold = self.holds.get(id).ok_or(HoldError::HoldNotFound)?;
        match hold.state {
            HoldState::Held if now < hold.expires_at => Ok(hold),
            HoldState::Held | HoldState::Expired => Err(HoldError::HoldExpired),
            HoldState::Released => Err(HoldError::HoldReleased),
            HoldState::Sold => Err(HoldError::HoldSold),
        }
    }

    /// Ends a live hold: frees its seats and places and stops counting them for its visitor.
    fn end_hold(&mut self, id: &HoldId, state: HoldState, now: Millis) {
        // Taken out and put back, rather than cloned: the sweep ends thousands at once.
        let Some(mut hold) = self.holds.remove(id) else { return };
        if hold.state == HoldState::Held {
            let _ = self.apply_hold_effects(&hold, -1);
            self.unschedule(&hold.id);
            self.ended.insert((now, hold.id.clone()));
            hold.state = state;
            hold.ended_at = Some(now);
            if !hold.parked() {
                self.stats.live_holds -= 1;
            }
            self.version += 1;
        }
        self.holds.insert(hold.id.clone(), hold);
    }

    /// Adds (`sign` = 1) or removes (-1) a hold's claim on seats, places and its visitor's count.
    fn apply_hold_effects(&mut self, hold: &Hold, sign: i64) -> Result<(), HoldError> {
        let seat_state = match hold.state {
            HoldState::Held => SeatState::Held,
            HoldState::Sold => SeatState::Sold,
            HoldState::Released | HoldState::Expired => return Ok(()),
        };
        for seat in &hold.seats {
            if hold.returned_seats.contains(seat) {
                continue;
            }
            let &i =
                self.seat_index.get(seat).ok_or_else(|| HoldError::UnknownSeat { seat: seat.clone() })?;
            let next = if sign > 0 {
                // On restore, a hold stands on a seat taken off sale after it was placed.
                if !matches!(self.seats[i as usize].state, SeatState::Free | SeatState::Withdrawn) {
                    return Err(HoldError::SeatsUnavailable { seats: vec![seat.clone()] });
                }
                seat_state
            } else {
                SeatState::Free
            };
            self.set_seat_state(i as usize, next);
        }
        // A seated tier the inventory no longer has (it cannot be dropped while it has seats held or
        // sold: `update_inventory`) leaves the seats as the only claim.
        if let Some(t) = self.seated.iter_mut().find(|t| Some(&t.id) == hold.seated_tier.as_ref()) {
            let seats = hold.seats.iter().filter(|s| !hold.returned_seats.contains(s)).count() as u32;
            let counter = if hold.state == HoldState::Sold { &mut t.sold } else { &mut t.held };
            *counter = if sign > 0 { *counter + seats } else { counter.saturating_sub(seats) };
        }
        if let Some(ga) = &hold.ga {
            let t = self
                .tiers
                .iter_mut()
                .find(|t| t.id == ga.tier)
                .ok_or_else(|| HoldError::UnknownTier { tier: ga.tier.clone() })?;
            let quantity =
                if hold.state == HoldState::Sold { ga.quantity - hold.returned_ga } else { ga.quantity };
            let counter = if hold.state == HoldState::Sold { &mut t.sold } else { &mut t.held };
            if sign > 0 {
                *counter += quantity;
            } else {
                *counter -= quantity;
            }
        }
        self.add_tickets(&hold.visitor, sign * i64::from(hold.tickets()));
        Ok(())
    }

    /// Puts a live hold into the expiry index.
    fn schedule(&mut self, id: &HoldId, at: Millis) {
        self.next_sequence += 1;
        let key = (at, self.next_sequence);
        self.expiries.insert(key, id.clone());
        self.expiry_keys.insert(id.clone(), key);
    }

    /// Takes a hold out of the expiry index.
    fn unschedule(&mut self, id: &HoldId) {
        if let Some(key) = self.expiry_keys.remove(id) {
            self.expiries.remove(&key);
        }
    }

    /// Free seats per row, counted (what `row_free` keeps incrementally).
    fn free_per_row(&self) -> Vec<u32> {
        self.rows
            .iter()
            .map(|r| {
                self.seats[r.start as usize..r.end as usize]
                    .iter()
                    .filter(|s| s.state == SeatState::Free)
                    .count() as u32
            })
            .collect()
    }

    /// Changes one seat's state, keeping the row's free count.
    fn set_seat_state(&mut self, i: usize, state: SeatState) {
        let entry = &mut self.seats[i];
        // A seat taken off sale never becomes free again: its hold's end withdraws it.
        let state = if state == SeatState::Free && entry.off_sale { SeatState::Withdrawn } else { state };
        let (was_free, now_free) = (entry.state == SeatState::Free, state == SeatState::Free);
        entry.state = state;
        let row = entry.row as usize;
        match (was_free, now_free) {
            (true, false) => self.row_free[row] -= 1,
            (false, true) => self.row_free[row] += 1,
            _ => {}
        }
    }

    fn add_tickets(&mut self, visitor: &VisitorId, delta: i64) {
        let count = self.tickets_by_visitor.entry(visitor.clone()).or_insert(0);
        *count = (i64::from(*count) + delta).max(0) as u32;
        if *count == 0 {
            self.tickets_by_visitor.remove(visitor);
        }
    }

    fn index_hold(&mut self, hold: &Hold) {
        match hold.state {
            HoldState::Held => {
                self.schedule(&hold.id, hold.expires_at);
            }
            HoldState::Released | HoldState::Expired => {
                self.ended.insert((hold.ended_at.unwrap_or(hold.created_at), hold.id.clone()));
            }
            HoldState::Sold => {}
        }
    }
}
