//! The hold ledger driven by random operation sequences on a random small inventory: places
//! (named seats, best available, GA, under seated tiers, with and without idempotency keys),
//! releases, extensions, confirmations, reclaims, refunds, clock jumps with and without the alarm,
//! pruning, the waiting list's parking and offers, inventory updates, and restarts. After every
//! step the ledger's self-check (`Ledger::check_consistency`: no seat in two live holds, no tier
//! oversold, every count what its holds make it), a version that never goes back and moves with
//! every visible change, and retried keys answered as the first time; a restart rebuilds the same
//! ledger.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use durable_objects::inventory::ledger::{HoldRequest, Ledger, ParkedOffer, Releaser};
use durable_objects::inventory::{Hold, HoldError, IdempotencyRecord};
use durable_objects::waitlist::ids::offer_hold_id;
use libfuzzer_sys::fuzz_target;
use shared_types::ids::{EventId, HoldId, SeatId, TierId, VisitorId, ZoneId};
use shared_types::inventory::{
    Accessibility, Currency, GaTier, HoldSettings, Inventory, Money, PriceZone, SeatMap, SeatedTier,
    ZonePrice,
};

#[derive(Arbitrary, Debug)]
struct Shape {
    sections: u8,
    rows: u8,
    per_row: u8,
    ga: Vec<u8>,
    seated: Vec<Option<u8>>,
    off_sale: Vec<u8>,
    aisles: Vec<u8>,
    limit: u8,
    hold_seconds: u8,
    extension_seconds: u8,
}

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Seats {
        visitor: u8,
        seats: Vec<u8>,
        tier: Option<u8>,
        key: Option<u8>,
    },
    Best {
        visitor: u8,
        quantity: u8,
        section: Option<u8>,
        zone: bool,
        wheelchair: bool,
        tier: Option<u8>,
        key: Option<u8>,
    },
    Ga {
        visitor: u8,
        tier: u8,
        quantity: u8,
        key: Option<u8>,
    },
    Release {
        hold: u8,
        by_owner: bool,
    },
    Extend {
        hold: u8,
    },
    Confirm {
        hold: u8,
    },
    Reclaim {
        hold: u8,
    },
    Return {
        hold: u8,
        seats: u8,
        ga: u8,
    },
    Sweep {
        ms: u32,
    },
    Wait {
        ms: u32,
    },
    Prune,
    Parking(bool),
    Offer {
        visitor: u8,
        tier: Option<u8>,
        quantity: u8,
        seated: Option<u8>,
    },
    Unpark {
        tier: Option<u8>,
        quantity: u8,
    },
    Update {
        off_sale: Vec<u8>,
        ga_capacity: Vec<u8>,
        limit: u8,
    },
    Restart,
}

#[derive(Arbitrary, Debug)]
struct Input {
    shape: Shape,
    ops: Vec<Op>,
}

const T0: i64 = 1_800_000_000_000;

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_owned()).expect("a valid id")
}

fn visitor(n: u8) -> VisitorId {
    id(&format!("v{}", n % 5))
}

fn inventory(shape: &Shape) -> Inventory {
    let eur = Currency::parse("EUR").expect("EUR");
    let price = |amount_minor| Money { amount_minor, currency: eur };
    let (sections, rows, per_row) =
        (1 + shape.sections as usize % 2, 1 + shape.rows as usize % 3, 1 + shape.per_row as usize % 6);
    let mut map_sections = SeatMap::grid(sections, rows, per_row, |_, _, n| {
        let front = n == 0;
        (
            id::<ZoneId>(if front { "front" } else { "std" }),
            if front { vec![Accessibility::Wheelchair] } else { vec![] },
        )
    });
    let total = sections * rows * per_row;
    let mut seats: Vec<_> =
        map_sections.iter_mut().flat_map(|s| s.rows.iter_mut().flat_map(|r| r.seats.iter_mut())).collect();
    for i in &shape.aisles {
        seats[*i as usize % total].aisle_after = true;
    }
    for i in &shape.off_sale {
        seats[*i as usize % total].off_sale = true;
    }
    Inventory {
        event: id::<EventId>("evt"),
        version: 1,
        currency: eur,
        seat_map: SeatMap {
            sections: map_sections,
            zones: vec![
                PriceZone { id: id("std"), name: "Standard".into(), price: price(4500) },
                PriceZone { id: id("front"), name: "Front".into(), price: price(9000) },
            ],
            ga_tiers: shape
                .ga
                .iter()
                .take(2)
                .enumerate()
                .map(|(i, c)| GaTier {
                    id: id(&format!("ga{i}")),
                    name: format!("GA {i}"),
                    capacity: 1 + u32::from(*c % 11),
                    price: price(3000),
                })
                .collect(),
            seated_tiers: shape
                .seated
                .iter()
                .take(2)
                .enumerate()
                .map(|(i, c)| SeatedTier {
                    id: id(&format!("st{i}")),
                    name: format!("Seated {i}"),
                    prices: ["std", "front"]
                        .iter()
                        .map(|z| ZonePrice { zone: id(z), price: price(5000) })
                        .collect(),
                    capacity: c.map_or(u32::MAX, |c| u32::from(c % 10)),
                    sale_starts_at_ms: None,
                    sale_ends_at_ms: None,
                })
                .collect(),
        },
        settings: HoldSettings {
            hold_seconds: 1 + u32::from(shape.hold_seconds % 120),
            extension_seconds: u32::from(shape.extension_seconds % 120),
            max_tickets_per_visitor: 1 + u32::from(shape.limit % 6),
        },
        sharding: Default::default(),
    }
}

struct World {
    inventory: Inventory,
    ledger: Ledger,
    now: i64,
    next_id: u64,
    /// (visitor, key) -> (request, first answer).
    keys: HashMap<(VisitorId, String), (HoldRequest, Result<HoldId, HoldError>)>,
}

impl World {
    fn pick(&self, n: u8) -> Option<Hold> {
        let mut holds: Vec<&Hold> = self.ledger.holds().collect();
        holds.sort_by(|a, b| a.id.cmp(&b.id));
        (!holds.is_empty()).then(|| holds[n as usize % holds.len()].clone())
    }

    fn tier(&self, n: Option<u8>) -> Option<TierId> {
        let tiers = &self.inventory.seat_map.seated_tiers;
        n.filter(|_| !tiers.is_empty()).map(|n| tiers[n as usize % tiers.len()].id.clone())
    }

    fn ga_tier(&self, n: u8) -> TierId {
        let tiers = &self.inventory.seat_map.ga_tiers;
        if tiers.is_empty() {
            id("nope")
        } else {
            tiers[n as usize % tiers.len()].id.clone()
        }
    }

    fn place(&mut self, v: u8, key: Option<u8>, request: HoldRequest) {
        let v = visitor(v);
        let key = key.map(|k| format!("key-{}", k % 3));
        let remembered = key.as_ref().and_then(|k| self.ledger.idempotency_record(&v, k)).is_some();
        self.next_id += 1;
        let new_id: HoldId = id(&format!("h{}", self.next_id));
        let got = self.ledger.place_hold(&v, key.as_deref(), &request, self.now, new_id.clone());
        if let Some(p) = got.as_ref().ok().filter(|p| !p.replayed) {
            assert!(p.hold.tickets() > 0, "an empty hold was placed: {:?}", p.hold);
            let off_sale: Vec<&SeatId> = self
                .inventory
                .seat_map
                .seats()
                .filter(|(_, _, s)| s.off_sale)
                .map(|(_, _, s)| &s.id)
                .collect();
            assert!(
                !p.hold.seats.iter().any(|s| off_sale.contains(&s)),
                "a new hold took a seat off sale: {:?}",
                p.hold
            );
        }
        let Some(key) = key else { return };
        let answer = got.as_ref().map(|p| p.hold.id.clone()).map_err(Clone::clone);
        match self.keys.get(&(v.clone(), key.clone())) {
            Some((first_request, first)) if remembered => {
                if first_request != &request {
                    assert_eq!(
                        got.map(|p| p.hold.id),
                        Err(HoldError::IdempotencyConflict),
                        "another body under a key"
                    );
                } else {
                    assert_eq!(&answer, first, "a retried key changed its answer");
                    assert!(self.ledger.hold(&new_id).is_none(), "a retried key placed a second hold");
                }
            }
            _ => {
                self.keys.insert((v, key), (request, answer));
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Seats { visitor, seats, tier, key } => {
                let all: Vec<SeatId> =
                    self.inventory.seat_map.seats().map(|(_, _, s)| s.id.clone()).collect();
                let seats = seats.iter().take(8).map(|i| all[*i as usize % all.len()].clone()).collect();
                let request = HoldRequest::Seats { seats, section: None, tier: self.tier(tier) };
                self.place(visitor, key, request);
            }
            Op::Best { visitor, quantity, section, zone, wheelchair, tier, key } => {
                let sections = &self.inventory.seat_map.sections;
                let request = HoldRequest::BestAvailable {
                    quantity: u32::from(quantity % 8),
                    section: section.map(|s| sections[s as usize % sections.len()].id.clone()),
                    zone: zone.then(|| id("front")),
                    accessibility: wheelchair.then_some(Accessibility::Wheelchair),
                    tier: self.tier(tier),
                };
                self.place(visitor, key, request);
            }
            Op::Ga { visitor, tier, quantity, key } => {
                let request = HoldRequest::GeneralAdmission {
                    tier: self.ga_tier(tier),
                    quantity: u32::from(quantity % 8),
                };
                self.place(visitor, key, request);
            }
            Op::Release { hold, by_owner } => {
                if let Some(h) = self.pick(hold) {
                    let stranger: VisitorId = id("stranger");
                    let by =
                        if by_owner { Releaser::Visitor(&h.visitor) } else { Releaser::Visitor(&stranger) };
                    let got = self.ledger.release(&h.id, by, self.now).map(|h| h.state);
                    if !by_owner {
                        assert!(got.is_err(), "a stranger released {h:?}");
                    }
                }
            }
            Op::Extend { hold } => {
                if let Some(h) = self.pick(hold) {
                    let _ = self.ledger.extend(&h.id, self.now);
                }
            }
            Op::Confirm { hold } => {
                if let Some(h) = self.pick(hold) {
                    let _ = self.ledger.confirm(&h.id, self.now);
                }
            }
            Op::Reclaim { hold } => {
                if let Some(h) = self.pick(hold) {
                    let _ = self.ledger.reclaim(&h.id, self.now);
                }
            }
            Op::Return { hold, seats, ga } => {
                if let Some(h) = self.pick(hold) {
                    let seats: Vec<SeatId> = h
                        .seats
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| seats & (1 << (i % 8)) != 0)
                        .map(|(_, s)| s.clone())
                        .collect();
                    let _ = self.ledger.return_sold(&h.id, &seats, u32::from(ga % 8), self.now);
                }
            }
            Op::Sweep { ms } => {
                self.now += i64::from(ms);
                self.ledger.expire_due(self.now);
                // After the alarm no live hold is past its time.
                assert!(self.ledger.next_expiry().is_none_or(|at| at > self.now), "a live hold is overdue");
            }
            Op::Wait { ms } => self.now += i64::from(ms),
            Op::Prune => {
                self.ledger.prune(self.now);
            }
            Op::Parking(on) => {
                self.ledger.set_parking(on, self.now);
            }
            Op::Offer { visitor: v, tier, quantity, seated } => {
                let offer = ParkedOffer {
                    visitor: visitor(v),
                    tier: tier.map(|t| self.ga_tier(t)),
                    quantity: u32::from(quantity % 6),
                    seated_tier: self.tier(seated),
                    until: self.now + 60_000,
                };
                self.next_id += 1;
                let _ = self.ledger.offer_parked(&offer, offer_hold_id(0, self.next_id), self.now);
            }
            Op::Unpark { tier, quantity } => {
                let tier = tier.map(|t| self.ga_tier(t));
                let _ = self.ledger.unpark(tier.as_ref(), u32::from(quantity % 6), self.now);
            }
            Op::Update { off_sale, ga_capacity, limit } => {
                let mut next = self.inventory.clone();
                next.version += 1;
                let total = next.seat_map.seats().count();
                let mut i = 0;
                for section in &mut next.seat_map.sections {
                    for row in &mut section.rows {
                        for seat in &mut row.seats {
                            seat.off_sale = off_sale.iter().any(|o| *o as usize % total == i);
                            i += 1;
                        }
                    }
                }
                for (t, c) in next.seat_map.ga_tiers.iter_mut().zip(&ga_capacity) {
                    t.capacity = 1 + u32::from(*c % 11);
                }
                next.settings.max_tickets_per_visitor = 1 + u32::from(limit % 6);
                if self.ledger.update_inventory(&next, self.now).is_ok() {
                    self.inventory = next;
                }
            }
            Op::Restart => {
                let records: Vec<IdempotencyRecord> = self
                    .keys
                    .keys()
                    .filter_map(|(v, k)| self.ledger.idempotency_record(v, k).cloned())
                    .collect();
                let holds: Vec<Hold> = self.ledger.holds().cloned().collect();
                let mut back = Ledger::restore(
                    &self.inventory,
                    holds,
                    records,
                    self.ledger.version(),
                    self.ledger.stats().clone(),
                )
                .unwrap_or_else(|e| panic!("a restart failed: {e}"));
                back.set_parking(self.ledger.parking(), self.now);
                assert_eq!(
                    back.availability(),
                    self.ledger.availability(),
                    "a restart changed what is available"
                );
                assert_eq!(back.next_expiry(), self.ledger.next_expiry());
                self.ledger = back;
            }
        }
        self.ledger.take_parked_changes();
    }
}

fuzz_target!(|input: Input| {
    let inventory = inventory(&input.shape);
    if inventory.validate().is_err() {
        return;
    }
    let mut world =
        World { ledger: Ledger::new(&inventory), inventory, now: T0, next_id: 0, keys: HashMap::new() };
    let mut last = world.ledger.availability();
    for op in input.ops.into_iter().take(64) {
        world.step(op.clone());
        if let Err(e) = world.ledger.check_consistency() {
            panic!("after {op:?}: {e}");
        }
        let now = world.ledger.availability();
        assert!(now.version >= last.version, "the availability version went back");
        if (now.seats.as_str(), &now.tiers, &now.seated_tiers)
            != (last.seats.as_str(), &last.tiers, &last.seated_tiers)
        {
            assert!(now.version > last.version, "availability changed without a new version after {op:?}");
        }
        last = now;
    }
});
