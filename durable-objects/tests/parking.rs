//! Places parked for the waiting list (`inventory/ledger/parking.rs`), one example per rule: what
//! comes back (expiry, release, refund) is parked in the same step, never free for a moment; an
//! offer turns parked places into the entry's hold, whose lapse parks them again; unwanted places
//! go back on sale; a late payment gets its own places back; buyers cannot act as the list.

#![allow(clippy::too_many_arguments)] // the test helper `offer` spells out an offer

mod common;

use common::{hold_id, id, inventory, seat, visitor};
use durable_objects::inventory::ledger::{
    HoldRequest, Ledger, Parked, ParkedOffer, Releaser, WAITLIST_VISITOR,
};
use durable_objects::inventory::{HoldError, HoldState};
use shared_types::ids::{TierId, VisitorId};
use shared_types::inventory::HoldSettings;

const SETTINGS: HoldSettings =
    HoldSettings { hold_seconds: 600, extension_seconds: 300, max_tickets_per_visitor: 6 };
const T0: i64 = 1_800_000_000_000;

fn ledger() -> Ledger {
    let mut l = Ledger::new(&inventory(1, 2, 5, 10, SETTINGS));
    l.set_parking(true, T0);
    l
}

fn seats(ids: &[&str]) -> HoldRequest {
    HoldRequest::Seats { seats: ids.iter().map(|s| seat(s)).collect(), section: None, tier: None }
}

/// Offers `quantity` parked places of a pool (seats when `tier` is `None`) to `visitor` until `until`.
fn offer(
    l: &mut Ledger,
    visitor: &VisitorId,
    tier: Option<&TierId>,
    quantity: u32,
    seated_tier: Option<&TierId>,
    until: i64,
    id: shared_types::ids::HoldId,
    now: i64,
) -> Result<(durable_objects::inventory::Hold, Vec<shared_types::ids::HoldId>), HoldError> {
    let request = ParkedOffer {
        visitor: visitor.clone(),
        tier: tier.cloned(),
        quantity,
        seated_tier: seated_tier.cloned(),
        until,
    };
    l.offer_parked(&request, id, now)
}

fn floor() -> TierId {
    id("floor")
}

fn parked(l: &Ledger) -> Vec<(Option<String>, u32)> {
    l.parked().into_iter().map(|Parked { tier, quantity }| (tier.map(|t| t.to_string()), quantity)).collect()
}

#[test]
fn places_that_come_back_are_parked_never_free() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.place_hold(
        &visitor(2),
        None,
        &HoldRequest::GeneralAdmission { tier: floor(), quantity: 3 },
        T0,
        hold_id(2),
    )
    .unwrap();
    l.place_hold(&visitor(3), None, &seats(&["S0-0-3"]), T0, hold_id(3)).unwrap();
    l.confirm(&hold_id(3), T0 + 1).unwrap();
    l.take_parked_changes();
    // Expiry, a release, and a refund's returned seat: each parked in the same step.
    l.expire_due(T0 + 600_000);
    assert_eq!(parked(&l), [(None, 2), (Some("floor".into()), 3)]);
    assert_eq!(l.take_parked_changes().len(), 2, "one parked hold per hold that came back");
    let a = l.availability();
    assert_eq!(&a.seats[..4], "ahhs", "parked seats (S0-0-1, S0-0-2) are held, not available");
    assert_eq!(a.tiers[0].1.available, 7);
    // Nobody can take them meanwhile.
    let err = l.place_hold(&visitor(4), None, &seats(&["S0-0-1"]), T0 + 600_001, hold_id(4)).unwrap_err();
    assert_eq!(err, HoldError::SeatsUnavailable { seats: vec![seat("S0-0-1")] });
    l.return_sold(&hold_id(3), &[], 0, T0 + 600_002).unwrap();
    assert_eq!(parked(&l), [(None, 3), (Some("floor".into()), 3)]);
}

#[test]
fn an_offer_becomes_the_entrys_hold_and_its_lapse_parks_the_places_again() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2", "S0-0-3"]), T0, hold_id(1)).unwrap();
    l.release(&hold_id(1), Releaser::Visitor(&visitor(1)), T0 + 1).unwrap();
    assert_eq!(parked(&l), [(None, 3)]);
    // Two seats for the first entry, for its claim window; the third stays parked.
    let until = T0 + 900_000;
    let (hold, changed) = offer(&mut l, &visitor(7), None, 2, None, until, hold_id(10), T0 + 2).unwrap();
    assert_eq!((hold.seats.len(), hold.expires_at, hold.state), (2, until, HoldState::Held));
    assert!(changed.contains(&hold_id(10)));
    assert_eq!(parked(&l), [(None, 1)]);
    assert_eq!(l.tickets_of(&visitor(7)), 2);
    // Too many asked: nothing changes.
    let before = l.availability();
    assert!(matches!(
        offer(&mut l, &visitor(8), None, 2, None, until, hold_id(11), T0 + 3),
        Err(HoldError::NotEnoughAvailable { requested: 2, available: 1 })
    ));
    assert_eq!(l.availability(), before);
    // The offer lapses: its seats are parked again, for the next entry.
    l.expire_due(until);
    assert_eq!(parked(&l), [(None, 3)]);
    // GA places likewise.
    l.place_hold(
        &visitor(2),
        None,
        &HoldRequest::GeneralAdmission { tier: floor(), quantity: 4 },
        T0,
        hold_id(20),
    )
    .unwrap();
    l.release(&hold_id(20), Releaser::Core, T0 + 4).unwrap();
    let (ga, _) = offer(&mut l, &visitor(9), Some(&floor()), 3, None, until, hold_id(21), T0 + 5).unwrap();
    assert_eq!(ga.ga.map(|g| g.quantity), Some(3));
    assert_eq!(parked(&l), [(None, 3), (Some("floor".into()), 1)]);
    // The entry buys: sold like any hold.
    l.confirm(&hold_id(21), T0 + 6).unwrap();
    assert_eq!(l.availability().tiers[0].1.sold, 3);
}

#[test]
fn an_offer_of_seats_takes_them_side_by_side_where_it_can() {
    let mut l = ledger();
    // Seats come back one by one, oldest first: S0-0-0, S0-1-2, S0-0-4, S0-0-3.
    park_one_by_one(&mut l, &["S0-0-0", "S0-1-2", "S0-0-4", "S0-0-3"], 1);
    assert_eq!(parked(&l), [(None, 4)]);
    let until = T0 + 900_000;
    // Two seats: the two adjacent ones (S0-0-3, S0-0-4), not the two parked longest.
    let (pair, _) = offer(&mut l, &visitor(7), None, 2, None, until, hold_id(10), T0 + 10).unwrap();
    assert_eq!(pair.seats, [seat("S0-0-3"), seat("S0-0-4")]);
    // One seat: the one parked longest.
    let (one, _) = offer(&mut l, &visitor(8), None, 1, None, until, hold_id(11), T0 + 11).unwrap();
    assert_eq!(one.seats, [seat("S0-0-0")]);
    // Two more come back, none adjacent to what is parked: two seats are the ones parked longest.
    l.place_hold(&visitor(9), None, &seats(&["S0-1-0"]), T0, hold_id(12)).unwrap();
    l.release(&hold_id(12), Releaser::Core, T0 + 12).unwrap();
    let (apart, _) = offer(&mut l, &visitor(10), None, 2, None, until, hold_id(13), T0 + 13).unwrap();
    assert_eq!(apart.seats, [seat("S0-1-0"), seat("S0-1-2")]);
    assert_eq!(parked(&l), []);
}

/// Parks `ids`' seats, one hold each, in that order (the first parked longest).
fn park_one_by_one(l: &mut Ledger, ids: &[&str], first: u32) {
    for (k, s) in ids.iter().enumerate() {
        let n = first + k as u32;
        l.place_hold(&visitor(n), None, &seats(&[s]), T0, hold_id(n.into())).unwrap();
        l.release(&hold_id(n.into()), Releaser::Core, T0 + i64::from(n)).unwrap();
    }
}

#[test]
fn side_by_side_stops_at_an_aisle_and_keeps_the_rest_of_a_run_together() {
    let mut inv = inventory(1, 2, 5, 10, SETTINGS);
    // An aisle after S0-0-1: S0-0-1 and S0-0-2 are not side by side.
    inv.seat_map.sections[0].rows[0].seats[1].aisle_after = true;
    let mut l = Ledger::new(&inv);
    l.set_parking(true, T0);
    park_one_by_one(&mut l, &["S0-0-1", "S0-0-2", "S0-0-3"], 1);
    let until = T0 + 900_000;
    let (pair, _) = offer(&mut l, &visitor(7), None, 2, None, until, hold_id(10), T0 + 10).unwrap();
    assert_eq!(pair.seats, [seat("S0-0-2"), seat("S0-0-3")], "not across the aisle");
    // A run of four parked in the order 1, 2, 0, 3: the pair with the seat parked longest, at an
    // end of the run (0 and 1, not 1 and 2), so that the other two stay side by side.
    park_one_by_one(&mut l, &["S0-1-1", "S0-1-2", "S0-1-0", "S0-1-3"], 20);
    let (pair, _) = offer(&mut l, &visitor(8), None, 2, None, until, hold_id(30), T0 + 30).unwrap();
    assert_eq!(pair.seats, [seat("S0-1-0"), seat("S0-1-1")]);
    let (rest, _) = offer(&mut l, &visitor(9), None, 2, None, until, hold_id(31), T0 + 31).unwrap();
    assert_eq!(rest.seats, [seat("S0-1-2"), seat("S0-1-3")]);
}

#[test]
fn seats_parked_again_keep_their_age() {
    let mut l = ledger();
    // One hold of three seats apart comes back, then a single seat.
    l.place_hold(&visitor(1), None, &seats(&["S0-0-0", "S0-0-2", "S0-0-4"]), T0, hold_id(1)).unwrap();
    l.release(&hold_id(1), Releaser::Core, T0 + 1).unwrap();
    park_one_by_one(&mut l, &["S0-1-0"], 2);
    let until = T0 + 900_000;
    let (first, _) = offer(&mut l, &visitor(7), None, 1, None, until, hold_id(10), T0 + 10).unwrap();
    assert_eq!(first.seats, [seat("S0-0-0")]);
    // The rest of that hold was parked again: still older than S0-1-0.
    let (second, _) = offer(&mut l, &visitor(8), None, 1, None, until, hold_id(11), T0 + 11).unwrap();
    assert_eq!(second.seats, [seat("S0-0-2")]);
    // Places nobody wants go back on sale oldest first, not as the best block.
    park_one_by_one(&mut l, &["S0-1-1"], 12);
    l.unpark(None, 2, T0 + 20).unwrap();
    assert_eq!(parked(&l), [(None, 1)]);
    let a = l.availability();
    assert_eq!((&a.seats[4..5], &a.seats[5..7]), ("a", "ah"), "S0-0-4 and S0-1-0 freed, S0-1-1 still parked");
}

#[test]
fn unwanted_places_go_back_on_sale_and_parking_off_frees_everything() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.place_hold(
        &visitor(2),
        None,
        &HoldRequest::GeneralAdmission { tier: floor(), quantity: 2 },
        T0,
        hold_id(2),
    )
    .unwrap();
    l.expire_due(T0 + 600_000);
    l.unpark(None, 1, T0 + 600_001).unwrap();
    assert_eq!(parked(&l), [(None, 1), (Some("floor".into()), 2)]);
    assert_eq!(l.availability().seats.matches('a').count(), 9);
    l.set_parking(false, T0 + 600_002);
    assert!(l.parked().is_empty());
    assert_eq!(l.availability().seats.matches('a').count(), 10);
    assert_eq!(l.availability().tiers[0].1.available, 10);
    // Parking off: what comes back is free at once.
    l.place_hold(&visitor(3), None, &seats(&["S0-0-1"]), T0 + 600_003, hold_id(3)).unwrap();
    l.release(&hold_id(3), Releaser::Core, T0 + 600_004).unwrap();
    assert!(l.parked().is_empty());
}

#[test]
fn a_late_payment_gets_its_own_parked_places_back() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.expire_due(T0 + 600_000);
    assert_eq!(parked(&l), [(None, 2)]);
    // The buyer's payment arrives late: the seats are still parked, so they are theirs.
    assert_eq!(l.reclaim(&hold_id(1), T0 + 600_001).unwrap().state, HoldState::Sold);
    assert!(l.parked().is_empty());
    // Another hold expires and one of its seats is offered on: the late payment cannot have it,
    // and what it could not have stays with the list.
    l.place_hold(&visitor(2), None, &seats(&["S0-0-3", "S0-0-4"]), T0, hold_id(2)).unwrap();
    l.expire_due(T0 + 600_000);
    offer(&mut l, &visitor(7), None, 1, None, T0 + 1_500_000, hold_id(10), T0 + 600_002).unwrap();
    assert!(matches!(l.reclaim(&hold_id(2), T0 + 600_003), Err(HoldError::SeatsUnavailable { .. })));
    assert_eq!(parked(&l), [(None, 1)]);
}

#[test]
fn buyers_cannot_act_as_the_list_and_a_restart_keeps_the_parked_places() {
    let mut l = ledger();
    let list = VisitorId::parse(WAITLIST_VISITOR).unwrap();
    assert_eq!(
        l.place_hold(&list, None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap_err(),
        HoldError::NotYourHold
    );
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(2)).unwrap();
    l.expire_due(T0 + 600_000);
    let parked_id = l.take_parked_changes().pop().unwrap();
    assert_eq!(l.release(&parked_id, Releaser::Visitor(&list), T0 + 1).unwrap_err(), HoldError::NotYourHold);
    assert_eq!(
        l.release(&parked_id, Releaser::Visitor(&visitor(1)), T0 + 1).unwrap_err(),
        HoldError::NotYourHold
    );
    assert_eq!(l.release(&parked_id, Releaser::Core, T0 + 1).unwrap_err(), HoldError::NotYourHold);
    assert_eq!(l.confirm(&parked_id, T0 + 1).unwrap_err(), HoldError::NotYourHold);
    assert!(matches!(
        offer(&mut l, &list, None, 1, None, T0 + 1, hold_id(3), T0 + 1),
        Err(HoldError::NotYourHold)
    ));
    // A restart from the stored holds: the parked seat is still parked, and new parked holds get
    // new ids.
    let holds: Vec<_> = [hold_id(2), parked_id.clone()].iter().map(|h| l.hold(h).unwrap().clone()).collect();
    let mut restored =
        Ledger::restore(&inventory(1, 2, 5, 10, SETTINGS), holds, [], l.version(), l.stats().clone())
            .unwrap();
    restored.set_parking(true, T0);
    assert_eq!(parked(&restored), [(None, 1)]);
    restored.place_hold(&visitor(2), None, &seats(&["S0-0-2"]), T0, hold_id(4)).unwrap();
    restored.expire_due(T0 + 600_000);
    let fresh = restored.take_parked_changes();
    assert!(fresh.iter().all(|h| *h != parked_id), "{fresh:?}");
    assert_eq!(parked(&restored), [(None, 2)]);
}

#[test]
fn a_seat_taken_off_sale_while_parked_is_never_offered_and_offers_keep_the_buyers_limit() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.expire_due(T0 + 600_000);
    let mut inv = inventory(1, 2, 5, 10, SETTINGS);
    inv.version = 2;
    inv.seat_map.sections[0].rows[0].seats[1].off_sale = true; // S0-0-1
    l.update_inventory(&inv, T0 + 600_001).unwrap();
    assert_eq!(parked(&l), [(None, 1)], "the withdrawn seat is not offered");
    assert!(matches!(
        offer(&mut l, &visitor(7), None, 2, None, T0 + 900_000, hold_id(10), T0 + 600_001),
        Err(HoldError::NotEnoughAvailable { requested: 2, available: 1 })
    ));
    let (hold, _) =
        offer(&mut l, &visitor(7), None, 1, None, T0 + 900_000, hold_id(10), T0 + 600_001).unwrap();
    assert_eq!(hold.seats, [seat("S0-0-2")]);
    assert_eq!(&l.availability().seats[..3], "axh");
    // A buyer who already has their limit is not offered more.
    l.place_hold(
        &visitor(8),
        None,
        &HoldRequest::GeneralAdmission { tier: floor(), quantity: 6 },
        T0,
        hold_id(20),
    )
    .unwrap();
    l.place_hold(
        &visitor(2),
        None,
        &HoldRequest::GeneralAdmission { tier: floor(), quantity: 2 },
        T0,
        hold_id(21),
    )
    .unwrap();
    l.release(&hold_id(21), Releaser::Core, T0 + 1).unwrap();
    assert!(matches!(
        offer(&mut l, &visitor(8), Some(&floor()), 1, None, T0 + 900_000, hold_id(22), T0 + 2),
        Err(HoldError::LimitExceeded { limit: 6, current: 6, requested: 1 })
    ));
    // Parked holds are not buyers' holds in the statistics.
    assert_eq!(l.stats().live_holds, 2, "the offer and the six floor places");
}

mod properties {
    //! Random sequences with parking: holds, releases, expiry, sales, refunds, offers, unparking,
    //! late payments and parking switched off, checked after every step: a seat is in at most one
    //! live or sold hold; while parking is on, nothing that comes back becomes free (the free count
    //! grows only by unparking or switching parking off); and the stored holds restore to the same
    //! ledger.
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Seats { visitor: u32, first: usize, n: usize },
        Ga { visitor: u32, quantity: u32 },
        Release { hold: usize },
        Sweep { ms: i64 },
        Confirm { hold: usize },
        Return { hold: usize },
        Reclaim { hold: usize },
        Offer { visitor: u32, ga: bool, quantity: u32 },
        Unpark { ga: bool, quantity: u32 },
        ParkingOff,
        ParkingOn,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..4, 0usize..10, 1usize..3).prop_map(|(visitor, first, n)| Op::Seats { visitor, first, n }),
            2 => (0u32..4, 1u32..4).prop_map(|(visitor, quantity)| Op::Ga { visitor, quantity }),
            2 => (0usize..32).prop_map(|hold| Op::Release { hold }),
            3 => prop_oneof![Just(600_000i64), 1i64..400_000].prop_map(|ms| Op::Sweep { ms }),
            2 => (0usize..32).prop_map(|hold| Op::Confirm { hold }),
            1 => (0usize..32).prop_map(|hold| Op::Return { hold }),
            1 => (0usize..32).prop_map(|hold| Op::Reclaim { hold }),
            3 => (4u32..7, any::<bool>(), 1u32..3).prop_map(|(visitor, ga, quantity)| Op::Offer { visitor, ga, quantity }),
            1 => (any::<bool>(), 1u32..3).prop_map(|(ga, quantity)| Op::Unpark { ga, quantity }),
            1 => Just(Op::ParkingOff),
            1 => Just(Op::ParkingOn),
        ]
    }

    fn free(l: &Ledger) -> usize {
        let a = l.availability();
        a.seats.matches('a').count() + a.tiers.iter().map(|t| t.1.available as usize).sum::<usize>()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn parked_places_are_never_free_nor_twice_held(ops in proptest::collection::vec(op(), 1..60)) {
            let mut l = ledger();
            let mut now = T0;
            let mut ids: Vec<shared_types::ids::HoldId> = Vec::new();
            let mut next = 0u64;
            for op in ops {
                let free_before = free(&l);
                let frees = matches!(op, Op::Unpark { .. } | Op::ParkingOff);
                let pick = |i: usize, ids: &[shared_types::ids::HoldId]| ids.get(i % ids.len().max(1)).cloned();
                match op {
                    Op::Seats { visitor: v, first, n } => {
                        next += 1;
                        let names: Vec<String> = (first..first + n).map(|i| format!("S0-{}-{}", i / 5 % 2, i % 5)).collect();
                        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                        if l.place_hold(&visitor(v), None, &seats(&refs), now, hold_id(next)).is_ok() {
                            ids.push(hold_id(next));
                        }
                    }
                    Op::Ga { visitor: v, quantity } => {
                        next += 1;
                        let r = HoldRequest::GeneralAdmission { tier: floor(), quantity };
                        if l.place_hold(&visitor(v), None, &r, now, hold_id(next)).is_ok() {
                            ids.push(hold_id(next));
                        }
                    }
                    Op::Release { hold } => {
                        if let Some(id) = pick(hold, &ids) {
                            let _ = l.release(&id, Releaser::Core, now);
                        }
                    }
                    Op::Sweep { ms } => {
                        now += ms;
                        l.expire_due(now);
                    }
                    Op::Confirm { hold } => {
                        if let Some(id) = pick(hold, &ids) {
                            let _ = l.confirm(&id, now);
                        }
                    }
                    Op::Return { hold } => {
                        if let Some(id) = pick(hold, &ids) {
                            let _ = l.return_sold(&id, &[], 0, now);
                        }
                    }
                    Op::Reclaim { hold } => {
                        if let Some(id) = pick(hold, &ids) {
                            let _ = l.reclaim(&id, now);
                        }
                    }
                    Op::Offer { visitor: v, ga, quantity } => {
                        next += 1;
                        let tier = floor();
                        let offered = offer(&mut l, &visitor(v), ga.then_some(&tier), quantity, None, now + 900_000, hold_id(next), now);
                        if offered.is_ok() {
                            ids.push(hold_id(next));
                        }
                    }
                    Op::Unpark { ga, quantity } => {
                        let tier = floor();
                        let _ = l.unpark(ga.then_some(&tier), quantity, now);
                    }
                    Op::ParkingOff => {
                        l.set_parking(false, now);
                    }
                    Op::ParkingOn => {
                        l.set_parking(true, now);
                    }
                }
                ids.extend(l.take_parked_changes());
                ids.sort();
                ids.dedup();
                // A seat in at most one live or sold hold.
                let mut owner: HashMap<String, String> = HashMap::new();
                for id in &ids {
                    let Some(h) = l.hold(id) else { continue };
                    if matches!(h.state, HoldState::Held | HoldState::Sold) {
                        for s in h.seats.iter().filter(|s| !h.returned_seats.contains(s)) {
                            let other = owner.insert(s.to_string(), h.id.to_string());
                            prop_assert!(other.is_none(), "{} in {} and {:?}", s, h.id, other);
                        }
                    }
                }
                // While parking, what comes back is never free: only unparking (or switching
                // parking off) frees places; a sale (a reclaim) may take some.
                if l.parking() && !frees {
                    prop_assert!(free(&l) <= free_before, "places became free while parking");
                }
                // The stored holds restore to the same ledger.
                let holds: Vec<_> = ids.iter().filter_map(|id| l.hold(id).cloned()).collect();
                let restored = Ledger::restore(&inventory(1, 2, 5, 10, SETTINGS), holds, [], l.version(), l.stats().clone());
                let mut restored = restored.map_err(|e| TestCaseError::fail(format!("restore: {e}")))?;
                // The store keeps the parking flag beside the holds, and sets it again on load.
                if l.parking() {
                    restored.set_parking(true, now);
                }
                prop_assert_eq!(restored.availability(), l.availability());
                prop_assert_eq!(restored.parked(), l.parked());
                prop_assert_eq!(restored.stats().live_holds, l.stats().live_holds, "buyers' live holds counted alike");
            }
        }
    }
}

#[test]
fn seats_and_places_the_organizer_adds_are_parked_while_the_list_waits() {
    let mut l = ledger();
    let mut inv = inventory(1, 2, 5, 10, SETTINGS);
    // One more seat in the second row, a seat back on sale, and the floor grows by four.
    inv.version = 2;
    inv.seat_map.sections[0].rows[0].seats[0].off_sale = true; // S0-0-0
    l.update_inventory(&inv, T0).unwrap();
    assert!(parked(&l).is_empty(), "a seat taken off sale parks nothing");
    let mut more = inventory(1, 2, 6, 14, SETTINGS);
    more.version = 3;
    l.update_inventory(&more, T0 + 1).unwrap();
    let added: Vec<String> = ["S0-0-0", "S0-0-5", "S0-1-5"].iter().map(|s| s.to_string()).collect();
    assert_eq!(parked(&l), [(None, 3), (Some("floor".into()), 4)], "{added:?} and four floor places");
    assert_eq!(l.take_parked_changes().len(), 2);
    // Nobody but the list can take them.
    assert!(l.place_hold(&visitor(1), None, &seats(&["S0-1-5"]), T0 + 2, hold_id(1)).is_err());
    // Without parking, what is added is simply for sale.
    let mut open = Ledger::new(&inventory(1, 2, 5, 10, SETTINGS));
    open.update_inventory(&more, T0).unwrap();
    assert!(parked(&open).is_empty());
    open.place_hold(&visitor(1), None, &seats(&["S0-1-5"]), T0 + 2, hold_id(1)).unwrap();
}

#[test]
fn places_the_list_keeps_are_counted_apart_so_that_they_do_not_reopen_the_line() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.place_hold(&visitor(2), None, &seats(&["S0-0-3"]), T0, hold_id(2)).unwrap();
    l.expire_due(T0 + 600_000); // both parked
    assert_eq!(l.availability().waitlist_held, 3);
    let offer_id = shared_types::ids::HoldId::parse("h0-w1").unwrap();
    offer(&mut l, &visitor(7), None, 1, None, T0 + 900_000, offer_id, T0 + 600_001).unwrap();
    // One offered, two parked: all three the list's; a buyer's hold is not.
    l.place_hold(&visitor(3), None, &seats(&["S0-0-4"]), T0 + 600_002, hold_id(3)).unwrap();
    let a = l.availability();
    assert_eq!((a.waitlist_held, a.sections[0].1.held), (3, 4));
    // Parking off: nothing is the list's any more (an offer's places go back on sale when it ends).
    l.set_parking(false, T0 + 600_003);
    assert_eq!(l.availability().waitlist_held, 0);
}
