//! What an event sells: its seat map (sections, rows, seats with coordinates, accessibility and
//! price zone), its general-admission tiers, prices in minor units, and the hold settings. The
//! core sends an [`Inventory`] to the event's inventory object; [`Inventory::validate`] is the one
//! place its rules live, and an object never stores an inventory that fails it.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, SeatId, SectionId, TierId, ZoneId};

/// Most seats one inventory object holds; larger venues are sharded by section.
pub const MAX_SEATS_PER_INVENTORY: usize = 100_000;
/// Most places one GA tier has.
pub const MAX_GA_CAPACITY: u32 = 1_000_000;

/// An ISO 4217 currency code (three capital letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(FieldError::new("currency", "must be an ISO 4217 code such as EUR or USD")),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII capitals are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl TryFrom<String> for Currency {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in the currency's minor unit (cents for EUR), never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

/// Accessibility features of a seat, for buyers who need them and for the seat-map page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accessibility {
    Wheelchair,
    Companion,
    EasyAccess,
    HearingLoop,
    LimitedView,
}

/// One seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seat {
    /// Unique within the event (for example `A-12-7`).
    pub id: SeatId,
    /// What the buyer reads on the ticket (`7`).
    pub label: String,
    /// Position for drawing the seat map, in the venue's own units.
    pub x: f32,
    pub y: f32,
    pub zone: ZoneId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accessibility: Vec<Accessibility>,
    /// An aisle (or any gap) follows this seat: it is not adjacent to the next one in the row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aisle_after: bool,
    /// Taken off sale by the organizer: never held again. A hold or sale on it when it was taken off
    /// stands; when that hold ends the seat stays off sale.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub off_sale: bool,
}

/// A row: its seats in physical order, so that neighbours in the list sit side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    pub seats: Vec<Seat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub id: SectionId,
    pub name: String,
    pub rows: Vec<Row>,
}

/// A price zone: every seat in it costs the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceZone {
    pub id: ZoneId,
    pub name: String,
    pub price: Money,
}

/// A general-admission tier: a number of interchangeable places.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaTier {
    pub id: TierId,
    pub name: String,
    pub capacity: u32,
    pub price: Money,
}

/// A seated tier: a kind of ticket for the event's seats (full price, reduced, a VIP package…)
/// with its price in every zone. Every seat can be sold under every seated tier; the buyer chooses
/// one per hold. The inventory object enforces its `capacity` and sale window; the core prices
/// each seat from its own tables (`checkout/quote.rs`), so `prices` here is what pages show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeatedTier {
    pub id: TierId,
    pub name: String,
    /// One price per price zone of the map.
    pub prices: Vec<ZonePrice>,
    /// Most seats held and sold under it at once (in a sectioned event, each section's shard gets
    /// its share: [`Inventory::shards`]). Absent: no cap but the seats.
    #[serde(default = "no_cap")]
    pub capacity: u32,
    /// Holds under it are taken from this instant (ms since the epoch)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_starts_at_ms: Option<i64>,
    /// …and until this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale_ends_at_ms: Option<i64>,
}

/// What a seated tier costs in one zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZonePrice {
    pub zone: ZoneId,
    pub price: Money,
}

fn no_cap() -> u32 {
    u32::MAX
}

impl SeatedTier {
    /// Its price in `zone`.
    pub fn price_in(&self, zone: &ZoneId) -> Option<Money> {
        self.prices.iter().find(|p| &p.zone == zone).map(|p| p.price)
    }

    /// Whether its sale window is open at `now_ms`.
    pub fn on_sale_at(&self, now_ms: i64) -> bool {
        self.sale_starts_at_ms.is_none_or(|s| now_ms >= s) && self.sale_ends_at_ms.is_none_or(|e| now_ms < e)
    }
}

/// `total` split over parts of the given `sizes` in proportion, by largest remainder: the shares
/// add up to `total` exactly (none when every size is 0), and no part gets more than its size
/// unless `total` exceeds their sum.
pub fn shares(total: u32, sizes: &[u32]) -> Vec<u32> {
    let sum: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
    if sum == 0 {
        return vec![0; sizes.len()];
    }
    let exact: Vec<(u64, u64)> = sizes
        .iter()
        .map(|&s| (u64::from(total) * u64::from(s) / sum, u64::from(total) * u64::from(s) % sum))
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|&(q, _)| q as u32).collect();
    let mut left = total - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// The seat map of one event (or of one shard of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeatMap {
    #[serde(default)]
    pub sections: Vec<Section>,
    /// Price zones. A zone's own `price` is the first seated tier's there (what a definition
    /// without `seated_tiers` sells every seat at).
    #[serde(default)]
    pub zones: Vec<PriceZone>,
    #[serde(default)]
    pub ga_tiers: Vec<GaTier>,
    /// The tiers the seats are sold under, in the organizer's order (the first is the default of a
    /// hold that names none). Empty in a definition from before tiers: its seats sell at their
    /// zone's price.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seated_tiers: Vec<SeatedTier>,
}

impl SeatMap {
    /// A grid of `sections` × `rows` × `per_row` seats, for tests and benchmarks: sections `S{s}`,
    /// rows `{r}`, seats `S{s}-{r}-{n}` at `(n, r)`; `zone_of(s, r, n)` gives a seat's zone and
    /// accessibility.
    #[cfg(any(test, feature = "fixtures"))]
    pub fn grid(
        sections: usize,
        rows: usize,
        per_row: usize,
        zone_of: impl Fn(usize, usize, usize) -> (ZoneId, Vec<Accessibility>),
    ) -> Vec<Section> {
        let id = |s: String| SeatId::parse(&s).expect("a grid seat id is valid");
        (0..sections)
            .map(|s| Section {
                id: SectionId::parse(&format!("S{s}")).expect("a grid section id is valid"),
                name: format!("Section {s}"),
                rows: (0..rows)
                    .map(|r| Row {
                        label: format!("{r}"),
                        seats: (0..per_row)
                            .map(|n| {
                                let (zone, accessibility) = zone_of(s, r, n);
                                Seat {
                                    id: id(format!("S{s}-{r}-{n}")),
                                    label: format!("{n}"),
                                    x: n as f32,
                                    y: r as f32,
                                    zone,
                                    accessibility,
                                    aisle_after: false,
                                    off_sale: false,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Every seat, section by section, row by row, in order.
    pub fn seats(&self) -> impl Iterator<Item = (&Section, &Row, &Seat)> {
        self.sections
            .iter()
            .flat_map(|s| s.rows.iter().flat_map(move |r| r.seats.iter().map(move |x| (s, r, x))))
    }

    pub fn seat_count(&self) -> usize {
        self.sections.iter().flat_map(|s| &s.rows).map(|r| r.seats.len()).sum()
    }
}

/// How holds behave for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HoldSettings {
    /// How long a hold lasts before it expires by itself.
    pub hold_seconds: u32,
    /// How much longer the core may extend a hold, once, for checkout.
    pub extension_seconds: u32,
    /// Most tickets one visitor may hold and buy for the event, together.
    pub max_tickets_per_visitor: u32,
}

impl Default for HoldSettings {
    fn default() -> Self {
        Self { hold_seconds: 600, extension_seconds: 600, max_tickets_per_visitor: 8 }
    }
}

impl HoldSettings {
    /// Most tickets per visitor an event may set.
    pub const MAX_TICKETS_PER_VISITOR: u32 = 50;

    /// The bounds of hold settings, each field named under `prefix` (`settings.` at the edge,
    /// `holds.` in the core's admin API): one definition, so the core never accepts what the edge
    /// would refuse. The objects accept short holds (tests, demos).
    pub fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if !(1..=3600).contains(&self.hold_seconds) {
            errors.push(FieldError::new(format!("{prefix}hold_seconds"), "must be between 1 and 3600"));
        }
        if self.extension_seconds > 3600 {
            errors.push(FieldError::new(format!("{prefix}extension_seconds"), "must be at most 3600"));
        }
        if !(1..=Self::MAX_TICKETS_PER_VISITOR).contains(&self.max_tickets_per_visitor) {
            errors.push(FieldError::new(
                format!("{prefix}max_tickets_per_visitor"),
                "must be between 1 and 50",
            ));
        }
        errors
    }
}

/// How an event's inventory is spread over Durable Objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharding {
    /// One object holds everything (up to [`MAX_SEATS_PER_INVENTORY`] seats).
    #[default]
    None,
    /// One object per section, and one for all general-admission tiers: for stadiums, so that
    /// no single object takes every hold of the event.
    BySection,
}

/// The name of the GA shard of a sectioned event.
pub const GA_SHARD: &str = "ga";
/// The name of the only shard of an unsharded event.
pub const MAIN_SHARD: &str = "main";

/// Everything an inventory object needs to sell an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub event: EventId,
    /// The core's version of this definition; an object refuses an older one than it holds.
    pub version: u64,
    pub currency: Currency,
    pub seat_map: SeatMap,
    #[serde(default)]
    pub settings: HoldSettings,
    #[serde(default)]
    pub sharding: Sharding,
}

/// One thing wrong with a request body, naming the field (a JSON path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl Inventory {
    /// Splits the inventory into the pieces its objects hold, in a fixed order (sections in
    /// seat-map order, then GA): `(shard name, inventory of that shard)`. Every piece keeps all
    /// price zones and the settings; a hold always lives in exactly one piece.
    pub fn shards(&self) -> Vec<(String, Inventory)> {
        match self.sharding {
            Sharding::None => vec![(MAIN_SHARD.to_owned(), self.clone())],
            Sharding::BySection => {
                let piece = |sections: Vec<Section>, ga_tiers: Vec<GaTier>, seated_tiers: Vec<SeatedTier>| {
                    Inventory {
                        seat_map: SeatMap {
                            sections,
                            zones: self.seat_map.zones.clone(),
                            ga_tiers,
                            seated_tiers,
                        },
                        ..self.clone()
                    }
                };
                // Each section's object enforces its share of every seated tier's capacity, in
                // proportion to its seats on sale: together they never sell more than the tier
                // allows.
                let sizes: Vec<u32> = self
                    .seat_map
                    .sections
                    .iter()
                    .map(|s| s.rows.iter().flat_map(|r| &r.seats).filter(|x| !x.off_sale).count() as u32)
                    .collect();
                let tier_shares: Vec<Vec<u32>> =
                    self.seat_map.seated_tiers.iter().map(|t| shares(t.capacity, &sizes)).collect();
                let mut shards: Vec<(String, Inventory)> = self
                    .seat_map
                    .sections
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let tiers = self
                            .seat_map
                            .seated_tiers
                            .iter()
                            .zip(&tier_shares)
                            .map(|(t, share)| SeatedTier { capacity: share[i], ..t.clone() })
                            .collect();
                        (s.id.as_str().to_owned(), piece(vec![s.clone()], vec![], tiers))
                    })
                    .collect();
                if !self.seat_map.ga_tiers.is_empty() {
                    shards.push((GA_SHARD.to_owned(), piece(vec![], self.seat_map.ga_tiers.clone(), vec![])));
                }
                shards
            }
        }
    }

    /// Checks every rule of a definition; returns all violations at once, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = self.settings.validate("settings.");
        let map = &self.seat_map;
        let mut err = |field: String, message: &str| errors.push(FieldError::new(field, message));

        let mut zone_ids = HashSet::new();
        for (i, z) in map.zones.iter().enumerate() {
            if !zone_ids.insert(&z.id) {
                err(format!("seat_map.zones[{i}].id"), "duplicate zone id");
            }
            check_name(&z.name, format!("seat_map.zones[{i}].name"), &mut err);
            check_price(&z.price, self.currency, format!("seat_map.zones[{i}].price"), &mut err);
        }
        let mut tier_ids = HashSet::new();
        for (i, t) in map.ga_tiers.iter().enumerate() {
            if !tier_ids.insert(&t.id) {
                err(format!("seat_map.ga_tiers[{i}].id"), "duplicate tier id");
            }
            check_name(&t.name, format!("seat_map.ga_tiers[{i}].name"), &mut err);
            if !(1..=MAX_GA_CAPACITY).contains(&t.capacity) {
                err(format!("seat_map.ga_tiers[{i}].capacity"), "must be between 1 and 1000000");
            }
            check_price(&t.price, self.currency, format!("seat_map.ga_tiers[{i}].price"), &mut err);
        }
        for (i, t) in map.seated_tiers.iter().enumerate() {
            let at = format!("seat_map.seated_tiers[{i}]");
            if !tier_ids.insert(&t.id) {
                err(format!("{at}.id"), "duplicate tier id");
            }
            check_name(&t.name, format!("{at}.name"), &mut err);
            let mut priced = HashSet::new();
            for (j, p) in t.prices.iter().enumerate() {
                if !zone_ids.contains(&p.zone) {
                    err(format!("{at}.prices[{j}].zone"), "no such price zone");
                } else if !priced.insert(&p.zone) {
                    err(format!("{at}.prices[{j}].zone"), "the zone is priced twice");
                }
                check_price(&p.price, self.currency, format!("{at}.prices[{j}].price"), &mut err);
            }
            if priced.len() < zone_ids.len() {
                err(format!("{at}.prices"), "every price zone needs a price");
            }
        }

        let mut section_ids = HashSet::new();
        let mut seat_ids = HashSet::new();
        for (si, section) in map.sections.iter().enumerate() {
            let at = format!("seat_map.sections[{si}]");
            if !section_ids.insert(&section.id) {
                err(format!("{at}.id"), "duplicate section id");
            }
            check_name(&section.name, format!("{at}.name"), &mut err);
            for (ri, row) in section.rows.iter().enumerate() {
                let at = format!("{at}.rows[{ri}]");
                check_name(&row.label, format!("{at}.label"), &mut err);
                if row.seats.is_empty() {
                    err(format!("{at}.seats"), "a row needs at least one seat");
                }
                for (i, seat) in row.seats.iter().enumerate() {
                    let at = format!("{at}.seats[{i}]");
                    if !seat_ids.insert(&seat.id) {
                        err(format!("{at}.id"), "duplicate seat id");
                    }
                    check_name(&seat.label, format!("{at}.label"), &mut err);
                    if !zone_ids.contains(&seat.zone) {
                        err(format!("{at}.zone"), "no such price zone");
                    }
                    if !(seat.x.is_finite() && seat.y.is_finite()) {
                        err(format!("{at}.x"), "coordinates must be finite numbers");
                    }
                }
            }
        }
        let largest_object = match self.sharding {
            Sharding::None => seat_ids.len(),
            Sharding::BySection => {
                if map.sections.iter().any(|s| s.id.as_str() == GA_SHARD) {
                    err("seat_map.sections".into(), "a sectioned event cannot have a section named \"ga\"");
                }
                map.sections
                    .iter()
                    .map(|s| s.rows.iter().map(|r| r.seats.len()).sum::<usize>())
                    .max()
                    .unwrap_or(0)
            }
        };
        if largest_object > MAX_SEATS_PER_INVENTORY {
            err("seat_map.sections".into(), "too many seats for one inventory object: shard by section");
        }
        if seat_ids.is_empty() && map.ga_tiers.is_empty() {
            err("seat_map".into(), "an inventory needs at least one seat or general-admission tier");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn check_name(name: &str, field: String, err: &mut impl FnMut(String, &str)) {
    if name.trim().is_empty() || name.chars().count() > 100 {
        err(field, "must be 1 to 100 characters");
    }
}

fn check_price(price: &Money, currency: Currency, field: String, err: &mut impl FnMut(String, &str)) {
    if price.currency != currency {
        err(format!("{field}.currency"), "must be the event's currency");
    }
    if price.amount_minor < 0 {
        err(format!("{field}.amount_minor"), "must not be negative");
    }
}

/// Where a hold is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Holding its seats until `expires_at`.
    Held,
    /// Sold: its seats are taken for good (unless returned after a refund).
    Sold,
    /// Given back before expiry by the buyer or the core.
    Released,
    /// Reached its expiry without being sold.
    Expired,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small valid inventory: `sections` × `rows` × `seats` in one zone, plus one GA tier.
    pub fn sample(sections: usize, rows: usize, seats: usize) -> Inventory {
        let eur = Currency::parse("EUR").unwrap();
        let zone = ZoneId::parse("std").unwrap();
        Inventory {
            event: EventId::parse("evt_1").unwrap(),
            version: 1,
            currency: eur,
            seat_map: SeatMap {
                sections: SeatMap::grid(sections, rows, seats, |_, _, _| (zone.clone(), vec![])),
                zones: vec![PriceZone {
                    id: zone.clone(),
                    name: "Standard".into(),
                    price: Money { amount_minor: 4500, currency: eur },
                }],
                ga_tiers: vec![GaTier {
                    id: TierId::parse("floor").unwrap(),
                    name: "Floor".into(),
                    capacity: 100,
                    price: Money { amount_minor: 3000, currency: eur },
                }],
                seated_tiers: vec![],
            },
            settings: HoldSettings::default(),
            sharding: Sharding::None,
        }
    }

    #[test]
    fn sharding_by_section_gives_each_section_and_the_ga_pool_its_own_piece() {
        let mut inv = sample(3, 2, 5);
        assert_eq!(inv.shards().len(), 1);
        inv.sharding = Sharding::BySection;
        let shards = inv.shards();
        let names: Vec<&str> = shards.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["S0", "S1", "S2", "ga"]);
        let seats: usize = shards.iter().map(|(_, s)| s.seat_map.seat_count()).sum();
        assert_eq!(seats, inv.seat_map.seat_count());
        for (_, piece) in &shards {
            assert_eq!(piece.validate(), Ok(()));
        }
        assert!(shards[3].1.seat_map.sections.is_empty() && shards[3].1.seat_map.ga_tiers.len() == 1);
    }

    #[test]
    fn a_sample_inventory_is_valid_and_round_trips() {
        let inv = sample(2, 3, 4);
        assert_eq!(inv.validate(), Ok(()));
        assert_eq!(inv.seat_map.seat_count(), 24);
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
    }

    #[test]
    fn every_violation_is_reported_with_its_field() {
        let mut inv = sample(1, 1, 2);
        let dup = inv.seat_map.sections[0].rows[0].seats[0].id.clone();
        inv.seat_map.sections[0].rows[0].seats[1].id = dup;
        inv.seat_map.sections[0].rows[0].seats[1].zone = ZoneId::parse("vip").unwrap();
        inv.seat_map.ga_tiers[0].capacity = 0;
        inv.seat_map.zones[0].price.currency = Currency::parse("USD").unwrap();
        inv.settings.hold_seconds = 0;
        let fields: Vec<String> = inv.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        for want in [
            "settings.hold_seconds",
            "seat_map.zones[0].price.currency",
            "seat_map.ga_tiers[0].capacity",
            "seat_map.sections[0].rows[0].seats[1].id",
            "seat_map.sections[0].rows[0].seats[1].zone",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} missing from {fields:?}");
        }
    }

    #[test]
    fn seated_tiers_price_every_zone_once_in_the_events_currency() {
        let mut inv = sample(1, 1, 2);
        let eur = inv.currency;
        let std = ZoneId::parse("std").unwrap();
        let price = |amount_minor| Money { amount_minor, currency: eur };
        inv.seat_map.seated_tiers = vec![
            SeatedTier {
                id: TierId::parse("adult").unwrap(),
                name: "Adult".into(),
                prices: vec![ZonePrice { zone: std.clone(), price: price(4500) }],
                capacity: 10,
                sale_starts_at_ms: None,
                sale_ends_at_ms: None,
            },
            SeatedTier {
                id: TierId::parse("child").unwrap(),
                name: "Child".into(),
                prices: vec![ZonePrice { zone: std.clone(), price: price(2000) }],
                capacity: 3,
                sale_starts_at_ms: Some(1000),
                sale_ends_at_ms: Some(2000),
            },
        ];
        assert_eq!(inv.validate(), Ok(()));
        assert_eq!(inv.seat_map.seated_tiers[1].price_in(&std), Some(price(2000)));
        let mut bad = inv.clone();
        bad.seat_map.seated_tiers[0].prices.clear();
        bad.seat_map.seated_tiers[1].id = TierId::parse("floor").unwrap();
        bad.seat_map.seated_tiers[1].prices.push(ZonePrice { zone: std.clone(), price: price(1) });
        bad.seat_map.seated_tiers[1].prices.push(ZonePrice {
            zone: ZoneId::parse("vip").unwrap(),
            price: Money { amount_minor: 1, currency: Currency::parse("USD").unwrap() },
        });
        let fields: Vec<String> = bad.validate().unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "seat_map.seated_tiers[0].prices",
                "seat_map.seated_tiers[1].id",
                "seat_map.seated_tiers[1].prices[1].zone",
                "seat_map.seated_tiers[1].prices[2].zone",
                "seat_map.seated_tiers[1].prices[2].price.currency",
            ]
        );
        assert!(!inv.seat_map.seated_tiers[1].on_sale_at(999));
        assert!(inv.seat_map.seated_tiers[1].on_sale_at(1000));
        assert!(!inv.seat_map.seated_tiers[1].on_sale_at(2000));
        // Every section's shard carries the tiers, each with its share of their capacity; the GA
        // shard has no seats to sell under them.
        let mut big = sample(3, 1, 4);
        big.seat_map.seated_tiers = inv.seat_map.seated_tiers.clone();
        big.sharding = Sharding::BySection;
        let shards = big.shards();
        let capacities: Vec<Vec<u32>> = shards
            .iter()
            .map(|(_, s)| s.seat_map.seated_tiers.iter().map(|t| t.capacity).collect())
            .collect();
        assert_eq!(capacities, [vec![4, 1], vec![3, 1], vec![3, 1], vec![]]);
        // Seats off sale take no share.
        for seat in big.seat_map.sections[2].rows.iter_mut().flat_map(|r| &mut r.seats) {
            seat.off_sale = true;
        }
        let capacities: Vec<Vec<u32>> = big
            .shards()
            .iter()
            .map(|(_, s)| s.seat_map.seated_tiers.iter().map(|t| t.capacity).collect())
            .collect();
        assert_eq!(capacities, [vec![5, 2], vec![5, 1], vec![0, 0], vec![]]);
        // A tier stored without a capacity has none but the seats.
        let json = r#"{"id":"t","name":"T","prices":[]}"#;
        assert_eq!(serde_json::from_str::<SeatedTier>(json).unwrap().capacity, u32::MAX);
        // A definition without tiers reads and writes as before.
        let old = sample(1, 1, 1);
        assert!(!serde_json::to_string(&old).unwrap().contains("seated_tiers"));
    }

    #[test]
    fn shares_add_up_and_follow_the_sizes() {
        assert_eq!(shares(10, &[4, 4, 4]), [4, 3, 3]);
        assert_eq!(shares(3, &[4, 4, 4]), [1, 1, 1]);
        assert_eq!(shares(5, &[1, 0, 9]), [1, 0, 4]);
        assert_eq!(shares(7, &[0, 0]), [0, 0]);
        assert_eq!(
            shares(u32::MAX, &[u32::MAX, u32::MAX]).iter().map(|&s| u64::from(s)).sum::<u64>(),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn an_empty_inventory_is_refused() {
        let mut inv = sample(0, 0, 0);
        inv.seat_map.ga_tiers.clear();
        assert_eq!(inv.validate().unwrap_err()[0].field, "seat_map");
    }

    #[test]
    fn currencies_are_iso_codes() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Money>(r#"{"amount_minor":1,"currency":"usd"}"#).is_err());
    }
}
