//! Property tests of the hold ledger: random sequences of place (named, best-available, GA, with
//! and without repeated idempotency keys), release, extend, confirm, return, clock jumps with and
//! without the expiry sweep, and pruning — checked after every step against a simple model of what
//! must be true. Each invariant in ARCHITECTURE.md that the ledger carries is asserted by name.

mod common;

use std::collections::HashMap;

use common::{hold_id, id, inventory, seat, visitor};
use durable_objects::inventory::ledger::{HoldRequest, Ledger, Releaser};
use durable_objects::inventory::{Hold, HoldError, HoldState, IdempotencyRecord};
use proptest::prelude::*;
use shared_types::ids::{HoldId, SeatId};
use shared_types::inventory::{HoldSettings, Inventory};

const ROWS: usize = 3;
const PER_ROW: usize = 5;
const GA: u32 = 10;
const LIMIT: u32 = 4;
const SETTINGS: HoldSettings =
    HoldSettings { hold_seconds: 60, extension_seconds: 30, max_tickets_per_visitor: LIMIT };
const VISITORS: u32 = 4;
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    Seats {
        visitor: u32,
        seats: Vec<usize>,
        key: Option<u8>,
    },
    Best {
        visitor: u32,
        quantity: u32,
        key: Option<u8>,
    },
    Ga {
        visitor: u32,
        quantity: u32,
        key: Option<u8>,
    },
    Release {
        hold: usize,
        by_owner: bool,
    },
    Extend {
        hold: usize,
    },
    Confirm {
        hold: usize,
    },
    Return {
        hold: usize,
        first_seat_only: bool,
    },
    /// Time passes and the alarm sweeps.
    Sweep {
        ms: i64,
    },
    /// Time passes but the alarm is late.
    Wait {
        ms: i64,
    },
    Prune,
}

fn op() -> impl Strategy<Value = Op> {
    let key = proptest::option::of(0u8..3);
    prop_oneof![
        4 => (0..VISITORS, proptest::collection::vec(0..ROWS * PER_ROW, 0..4), key.clone())
            .prop_map(|(visitor, seats, key)| Op::Seats { visitor, seats, key }),
        2 => (0..VISITORS, 0u32..5, key.clone()).prop_map(|(visitor, quantity, key)| Op::Best { visitor, quantity, key }),
        2 => (0..VISITORS, 0u32..5, key).prop_map(|(visitor, quantity, key)| Op::Ga { visitor, quantity, key }),
        2 => (0usize..64, any::<bool>()).prop_map(|(hold, by_owner)| Op::Release { hold, by_owner }),
        1 => (0usize..64).prop_map(|hold| Op::Extend { hold }),
        3 => (0usize..64).prop_map(|hold| Op::Confirm { hold }),
        1 => (0usize..64, any::<bool>()).prop_map(|(hold, first_seat_only)| Op::Return { hold, first_seat_only }),
        2 => clock_step().prop_map(|ms| Op::Sweep { ms }),
        1 => clock_step().prop_map(|ms| Op::Wait { ms }),
        1 => Just(Op::Prune),
    ]
}

/// Clock jumps, often exactly a hold or extension length so that expiry boundaries are hit.
fn clock_step() -> impl Strategy<Value = i64> {
    prop_oneof![3 => 0i64..50_000, 1 => Just(60_000), 1 => Just(30_000), 1 => Just(1)]
}

fn seat_at(i: usize) -> SeatId {
    seat(&format!("S0-{}-{}", i / PER_ROW, i % PER_ROW))
}

fn inv() -> Inventory {
    inventory(1, ROWS, PER_ROW, GA, SETTINGS)
}

struct World {
    ledger: Ledger,
    now: i64,
    issued: Vec<HoldId>,
    next_id: u64,
    /// (visitor, key) -> (request, answer) as first given.
    keys: HashMap<(u32, u8), (HoldRequest, Result<HoldId, HoldError>)>,
}

impl World {
    fn holds(&self) -> Vec<Hold> {
        self.issued.iter().filter_map(|id| self.ledger.hold(id).cloned()).collect()
    }

    /// The ledger's remembered idempotency answers, as the object would have stored them.
    fn records(&self) -> Vec<IdempotencyRecord> {
        self.keys
            .keys()
            .filter_map(|(v, k)| self.ledger.idempotency_record(&visitor(*v), &format!("key-{k}")).cloned())
            .collect()
    }

    fn pick(&self, n: usize) -> Option<HoldId> {
        (!self.issued.is_empty()).then(|| self.issued[n % self.issued.len()].clone())
    }

    fn place(&mut self, v: u32, key: Option<u8>, request: HoldRequest) -> Result<(), TestCaseError> {
        let before = self.ledger.availability();
        let free = before.seats.matches('a').count() as u32;
        let ga_free = before.tiers[0].1.available;
        let tickets = self.ledger.tickets_of(&visitor(v));
        self.next_id += 1;
        let new_id = hold_id(self.next_id);
        let key_str = key.map(|k| format!("key-{k}"));
        let got = self.ledger.place_hold(&visitor(v), key_str.as_deref(), &request, self.now, new_id.clone());

        // Idempotency: the same key and body get the same answer; another body is a conflict.
        if let Some(k) = key {
            if let Some((first_request, first_answer)) = self.keys.get(&(v, k)) {
                if first_request != &request {
                    prop_assert_eq!(got.unwrap_err(), HoldError::IdempotencyConflict);
                } else {
                    match (first_answer, &got) {
                        (Ok(id), Ok(p)) => {
                            prop_assert!(p.replayed && &p.hold.id == id, "replay gave another hold")
                        }
                        (Err(e), Err(g)) => prop_assert_eq!(e, g),
                        _ => prop_assert!(
                            false,
                            "a replayed key changed its answer: {:?} then {:?}",
                            first_answer,
                            got
                        ),
                    }
                }
                prop_assert!(self.ledger.hold(&new_id).is_none(), "a replayed key created a second hold");
                return Ok(());
            }
            self.keys.insert(
                (v, k),
                (request.clone(), got.as_ref().map(|p| p.hold.id.clone()).map_err(Clone::clone)),
            );
        }

        // Without a replay: success exactly when the model says there is room.
        let expected_ok = match &request {
            HoldRequest::Seats { seats, .. } => {
                let mut distinct = seats.clone();
                distinct.sort();
                distinct.dedup();
                !seats.is_empty()
                    && distinct.len() == seats.len()
                    && seats.iter().all(|s| {
                        let i = (0..ROWS * PER_ROW).find(|&i| &seat_at(i) == s).unwrap_or(usize::MAX);
                        before.seats.as_bytes().get(i) == Some(&b'a')
                    })
                    && tickets + seats.len() as u32 <= LIMIT
            }
            HoldRequest::BestAvailable { quantity, .. } => {
                *quantity > 0 && *quantity <= free && tickets + quantity <= LIMIT
            }
            HoldRequest::GeneralAdmission { quantity, .. } => {
                *quantity > 0 && *quantity <= ga_free && tickets + quantity <= LIMIT
            }
        };
        prop_assert_eq!(got.is_ok(), expected_ok, "place {:?} by v{} gave {:?}", request, v, got);
        match got {
            Ok(p) => {
                prop_assert_eq!(p.hold.expires_at, self.now + 60_000);
                self.issued.push(p.hold.id);
            }
            Err(_) => prop_assert_eq!(self.ledger.availability(), before, "a refused hold changed something"),
        }
        Ok(())
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let version_before = self.ledger.version();
        match op {
            Op::Seats { visitor: v, seats, key } => self.place(
                v,
                key,
                HoldRequest::Seats {
                    seats: seats.into_iter().map(seat_at).collect(),
                    section: None,
                    tier: None,
                },
            )?,
            Op::Best { visitor: v, quantity, key } => self.place(
                v,
                key,
                HoldRequest::BestAvailable {
                    quantity,
                    section: None,
                    zone: None,
                    accessibility: None,
                    tier: None,
                },
            )?,
            Op::Ga { visitor: v, quantity, key } => {
                self.place(v, key, HoldRequest::GeneralAdmission { tier: id("floor"), quantity })?
            }
            Op::Release { hold, by_owner } => {
                if let Some(id) = self.pick(hold) {
                    let Some(before) = self.ledger.hold(&id).cloned() else { return Ok(()) };
                    let stranger = visitor(VISITORS + 1);
                    let by = if by_owner {
                        Releaser::Visitor(&before.visitor)
                    } else {
                        Releaser::Visitor(&stranger)
                    };
                    let got = self.ledger.release(&id, by, self.now).map(|h| h.state);
                    let expected = match (by_owner, before.state) {
                        (false, _) => Err(HoldError::NotYourHold),
                        (true, HoldState::Sold) => Err(HoldError::HoldSold),
                        (true, HoldState::Held) => Ok(HoldState::Released),
                        (true, s) => Ok(s),
                    };
                    prop_assert_eq!(got, expected);
                }
            }
            Op::Extend { hold } => {
                if let Some(id) = self.pick(hold) {
                    let Some(before) = self.ledger.hold(&id).cloned() else { return Ok(()) };
                    let got = self.ledger.extend(&id, self.now).map(|h| h.expires_at);
                    let live = before.state == HoldState::Held && self.now < before.expires_at;
                    match got {
                        Ok(at) => {
                            prop_assert!(live && !before.extended);
                            prop_assert_eq!(at, before.expires_at + 30_000);
                        }
                        Err(e) => prop_assert!(!live || before.extended, "live unextended hold refused: {e}"),
                    }
                }
            }
            Op::Confirm { hold } => {
                if let Some(id) = self.pick(hold) {
                    let Some(before) = self.ledger.hold(&id).cloned() else { return Ok(()) };
                    let got = self.ledger.confirm(&id, self.now).map(|h| h.state);
                    let sellable = before.state == HoldState::Sold
                        || (before.state == HoldState::Held && self.now < before.expires_at);
                    prop_assert_eq!(
                        got.is_ok(),
                        sellable,
                        "confirm of {:?} at {} gave {:?}",
                        before,
                        self.now,
                        got
                    );
                }
            }
            Op::Return { hold, first_seat_only } => {
                if let Some(id) = self.pick(hold) {
                    let Some(before) = self.ledger.hold(&id).cloned() else { return Ok(()) };
                    let seats: Vec<SeatId> =
                        if first_seat_only { before.seats.iter().take(1).cloned().collect() } else { vec![] };
                    let got = self.ledger.return_sold(&id, &seats, 0, self.now);
                    if before.state != HoldState::Sold {
                        prop_assert_eq!(got.unwrap_err(), HoldError::NotSold);
                    } else if first_seat_only
                        && !seats.is_empty()
                        && before.returned_seats.contains(&seats[0])
                    {
                        prop_assert!(got.is_err(), "a seat was returned twice");
                    }
                }
            }
            Op::Sweep { ms } => {
                self.now += ms;
                let expired = self.ledger.expire_due(self.now);
                for id in &expired {
                    prop_assert_eq!(self.ledger.hold(id).map(|h| h.state), Some(HoldState::Expired));
                }
                // Alarm-driven expiry: after the sweep no live hold is past its time.
                for h in self.holds() {
                    prop_assert!(
                        !(h.state == HoldState::Held && h.expires_at <= self.now),
                        "overdue hold {:?}",
                        h
                    );
                }
            }
            Op::Wait { ms } => self.now += ms,
            Op::Prune => {
                self.ledger.prune(self.now);
            }
        }
        prop_assert!(self.ledger.version() >= version_before, "the availability version went back");
        self.check_invariants()
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        self.ledger.check_consistency().map_err(TestCaseError::fail)?;
        let holds = self.holds();
        let availability = self.ledger.availability();
        let mut expected = [b'a'; ROWS * PER_ROW];
        let (mut ga_held, mut ga_sold) = (0u32, 0u32);
        let mut tickets: HashMap<_, u32> = HashMap::new();
        for h in &holds {
            let mark = match h.state {
                HoldState::Held => b'h',
                HoldState::Sold => b's',
                _ => continue,
            };
            for s in h.seats.iter().filter(|s| !h.returned_seats.contains(s)) {
                let i = (0..ROWS * PER_ROW).find(|&i| &seat_at(i) == s).expect("known seat");
                // A seat is never in two live holds, never sold twice.
                prop_assert_eq!(expected[i], b'a', "seat {} is in two live holds", s);
                expected[i] = mark;
            }
            if let Some(ga) = &h.ga {
                if h.state == HoldState::Held {
                    ga_held += ga.quantity;
                } else {
                    ga_sold += ga.quantity - h.returned_ga;
                }
            }
            *tickets.entry(h.visitor.clone()).or_default() += h.tickets();
        }
        prop_assert_eq!(
            availability.seats.as_bytes(),
            &expected[..],
            "availability disagrees with the holds"
        );
        let tier = &availability.tiers[0].1;
        // A GA tier never oversells; its counts add up.
        prop_assert_eq!((tier.held, tier.sold), (ga_held, ga_sold));
        prop_assert!(tier.held + tier.sold <= GA);
        prop_assert_eq!(tier.available + tier.held + tier.sold, GA);
        let section = &availability.sections[0].1;
        prop_assert_eq!(section.available + section.held + section.sold, (ROWS * PER_ROW) as u32);
        // Per-visitor limits hold, and the ledger's count is the holds' count.
        for v in 0..VISITORS {
            let counted = tickets.get(&visitor(v)).copied().unwrap_or(0);
            prop_assert_eq!(self.ledger.tickets_of(&visitor(v)), counted);
            prop_assert!(counted <= LIMIT, "visitor v{} has {} tickets", v, counted);
        }
        // The alarm target is the earliest live expiry.
        let earliest = holds.iter().filter(|h| h.state == HoldState::Held).map(|h| h.expires_at).min();
        prop_assert_eq!(self.ledger.next_expiry(), earliest);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_seat_in_two_live_holds_none_sold_twice_ga_never_oversold_limits_kept(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut world = World { ledger: Ledger::new(&inv()), now: T0, issued: vec![], next_id: 0, keys: HashMap::new() };
        let mut last_snapshot = world.ledger.availability();
        for op in ops {
            world.step(op)?;
            let snapshot = world.ledger.availability();
            // A visible change always comes with a newer version.
            if (snapshot.seats.as_str(), &snapshot.tiers) != (last_snapshot.seats.as_str(), &last_snapshot.tiers) {
                prop_assert!(snapshot.version > last_snapshot.version, "changed without a new version");
            }
            last_snapshot = snapshot;
        }
        // A restart (rebuild from stored holds) gives the same ledger.
        let back = Ledger::restore(&inv(), world.holds(), world.records(), world.ledger.version(), world.ledger.stats().clone())
            .map_err(|e| TestCaseError::fail(format!("restore failed: {e}")))?;
        prop_assert_eq!(back.availability(), world.ledger.availability());
        prop_assert_eq!(back.next_expiry(), world.ledger.next_expiry());
        // ... including its idempotency answers: a retry after the restart gets the first answer.
        let mut back = back;
        for ((v, k), (request, first)) in &world.keys {
            let again = back.place_hold(&visitor(*v), Some(&format!("key-{k}")), request, world.now, hold_id(u64::MAX));
            match (first, again) {
                (Ok(id), Ok(p)) => prop_assert!(p.replayed && &p.hold.id == id),
                (Err(e), Err(g)) => prop_assert_eq!(e, &g),
                (first, again) => prop_assert!(false, "after restart {:?} became {:?}", first, again),
            }
        }
    }
}
