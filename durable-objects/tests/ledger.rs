//! The hold ledger's rules, one example each, named after the rule.

mod common;

use common::{hold_id, id, inventory, seat, visitor};
use durable_objects::inventory::ledger::{HoldRequest, Ledger, Releaser, IDEMPOTENCY_RETENTION_MS};
use durable_objects::inventory::{HoldError, HoldState};
use shared_types::inventory::HoldSettings;

const SETTINGS: HoldSettings =
    HoldSettings { hold_seconds: 600, extension_seconds: 300, max_tickets_per_visitor: 6 };
const T0: i64 = 1_800_000_000_000;

fn ledger() -> Ledger {
    Ledger::new(&inventory(2, 4, 10, 20, SETTINGS))
}

fn seats(ids: &[&str]) -> HoldRequest {
    HoldRequest::Seats { seats: ids.iter().map(|s| seat(s)).collect(), section: None, tier: None }
}

#[test]
fn a_named_seat_hold_is_all_or_nothing() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    let before = l.availability();
    let err = l.place_hold(&visitor(2), None, &seats(&["S0-0-3", "S0-0-2"]), T0, hold_id(2)).unwrap_err();
    assert_eq!(err, HoldError::SeatsUnavailable { seats: vec![seat("S0-0-2")] });
    assert_eq!(l.availability(), before, "a refused hold changes nothing, not even the version");
    assert!(l.hold(&hold_id(2)).is_none());
}

#[test]
fn unknown_and_duplicate_seats_and_bad_quantities_are_refused() {
    let mut l = ledger();
    let v = visitor(1);
    assert!(matches!(
        l.place_hold(&v, None, &seats(&["nope"]), T0, hold_id(1)),
        Err(HoldError::UnknownSeat { .. })
    ));
    assert!(matches!(
        l.place_hold(&v, None, &seats(&["S0-0-1", "S0-0-1"]), T0, hold_id(1)),
        Err(HoldError::DuplicateSeat { .. })
    ));
    assert!(matches!(
        l.place_hold(&v, None, &seats(&[]), T0, hold_id(1)),
        Err(HoldError::BadQuantity { .. })
    ));
    let ga0 = HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 0 };
    assert!(matches!(l.place_hold(&v, None, &ga0, T0, hold_id(1)), Err(HoldError::BadQuantity { .. })));
    assert_eq!(l.version(), 0);
}

#[test]
fn best_available_takes_adjacent_seats_nearest_the_middle_of_the_front_row() {
    let mut l = ledger();
    let req = HoldRequest::BestAvailable {
        quantity: 4,
        section: Some(id("S1")),
        zone: None,
        accessibility: None,
        tier: None,
    };
    let placed = l.place_hold(&visitor(1), None, &req, T0, hold_id(1)).unwrap();
    // Row 0 of S1 has seats 0..10: the 4-block nearest the middle is 3..7.
    assert_eq!(placed.hold.seats, ["S1-0-3", "S1-0-4", "S1-0-5", "S1-0-6"].map(seat));
}

#[test]
fn best_available_moves_to_the_next_row_when_no_block_fits_and_scatters_as_a_last_resort() {
    let mut l = Ledger::new(&inventory(1, 2, 4, 0, SETTINGS));
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-1-2"]), T0, hold_id(1)).unwrap();
    let three = HoldRequest::BestAvailable {
        quantity: 3,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    // Row 0 is 0 _ 2 3: no block of 3. Row 1 is 0 1 _ 3: none either. Scattered: first free seats.
    let got = l.place_hold(&visitor(2), None, &three, T0, hold_id(2)).unwrap().hold.seats;
    assert_eq!(got, ["S0-0-0", "S0-0-2", "S0-0-3"].map(seat));
    let two = HoldRequest::BestAvailable {
        quantity: 2,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    let got = l.place_hold(&visitor(3), None, &two, T0, hold_id(3)).unwrap().hold.seats;
    assert_eq!(got, ["S0-1-0", "S0-1-1"].map(seat));
    let err = l.place_hold(&visitor(4), None, &two, T0, hold_id(4)).unwrap_err();
    assert_eq!(err, HoldError::NotEnoughAvailable { requested: 2, available: 1 });
}

#[test]
fn best_available_respects_zone_and_accessibility() {
    let mut l = ledger();
    let req = HoldRequest::BestAvailable {
        quantity: 2,
        section: None,
        zone: Some(id("front")),
        accessibility: Some(shared_types::inventory::Accessibility::Wheelchair),
        tier: None,
    };
    let got = l.place_hold(&visitor(1), None, &req, T0, hold_id(1)).unwrap().hold.seats;
    // Front-zone wheelchair seats are the first of each row, never adjacent: scattered.
    assert_eq!(got, ["S0-0-0", "S0-1-0"].map(seat));
    let bad = HoldRequest::BestAvailable {
        quantity: 1,
        section: Some(id("S9")),
        zone: None,
        accessibility: None,
        tier: None,
    };
    assert!(matches!(
        l.place_hold(&visitor(1), None, &bad, T0, hold_id(2)),
        Err(HoldError::UnknownSection { .. })
    ));
}

#[test]
fn a_ga_tier_never_oversells() {
    let mut l = ledger();
    let ga = |quantity| HoldRequest::GeneralAdmission { tier: id("floor"), quantity };
    for n in 0..3 {
        l.place_hold(&visitor(n), None, &ga(6), T0, hold_id(n.into())).unwrap();
    }
    let err = l.place_hold(&visitor(9), None, &ga(3), T0, hold_id(9)).unwrap_err();
    assert_eq!(err, HoldError::NotEnoughAvailable { requested: 3, available: 2 });
    l.place_hold(&visitor(9), None, &ga(2), T0, hold_id(10)).unwrap();
    let tiers = l.availability().tiers;
    assert_eq!((tiers[0].1.available, tiers[0].1.held), (0, 20));
}

#[test]
fn per_visitor_limits_count_holds_and_purchases_together() {
    let mut l = ledger();
    let v = visitor(1);
    l.place_hold(&v, None, &seats(&["S0-0-1", "S0-0-2", "S0-0-3"]), T0, hold_id(1)).unwrap();
    l.confirm(&hold_id(1), T0 + 1).unwrap();
    l.place_hold(&v, None, &HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 2 }, T0, hold_id(2))
        .unwrap();
    let err = l.place_hold(&v, None, &seats(&["S0-1-1", "S0-1-2"]), T0, hold_id(3)).unwrap_err();
    assert_eq!(err, HoldError::LimitExceeded { limit: 6, current: 5, requested: 2 });
    // Releasing the GA hold frees room under the limit; a refund does too.
    l.release(&hold_id(2), Releaser::Visitor(&v), T0 + 2).unwrap();
    l.place_hold(&v, None, &seats(&["S0-1-1", "S0-1-2"]), T0, hold_id(3)).unwrap();
    assert_eq!(l.tickets_of(&v), 5);
    l.return_sold(&hold_id(1), &[seat("S0-0-1")], 0, T0).unwrap();
    assert_eq!(l.tickets_of(&v), 4);
}

/// A shortened retention (the soak's `HOLD_RECORDS_RETENTION_SECONDS`) never forgets an answer
/// whose hold may still live (a retry then is a replay, not a second hold), nor a hold an answer
/// still names (a retry gets the hold as it is, ended, never a snapshot of a hold that is gone).
#[test]
fn a_shortened_retention_keeps_answers_while_their_hold_may_live_and_holds_while_answers_name_them() {
    use durable_objects::inventory::retention::Retention;
    let mut l = ledger();
    l.set_retention(Retention::configured(Some("300")));
    // SETTINGS: 600 s holds, 300 s extension: answers and ended holds kept 900 s, not the 300 asked.
    assert_eq!((l.answer_retention(), l.ended_hold_retention()), (900_000, 900_000));
    let v = visitor(1);
    let best = HoldRequest::BestAvailable {
        quantity: 1,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    let first = l.place_hold(&v, Some("k1"), &best, T0, hold_id(1)).unwrap();
    l.prune(T0 + 300_001);
    let retry = l.place_hold(&v, Some("k1"), &best, T0 + 300_001, hold_id(2)).unwrap();
    assert!(retry.replayed, "a retry while the hold lives is a replay");
    assert_eq!(retry.hold.id, first.hold.id);
    assert!(l.hold(&hold_id(2)).is_none());
    // Released at once after: a retry just before the answer is forgotten gets the hold, ended.
    l.release(&hold_id(1), Releaser::Core, T0 + 300_002).unwrap();
    assert!(l.prune(T0 + 899_999).is_empty());
    let late = l.place_hold(&v, Some("k1"), &best, T0 + 899_999, hold_id(3)).unwrap();
    assert!(late.replayed);
    assert_eq!(late.hold.state, HoldState::Released, "the hold as it is, not as it was placed");
    // The answer goes first (900 s after it was given), the hold 900 s after it ended.
    assert!(l.prune(T0 + 900_000).is_empty());
    assert_eq!(l.remembered(), 0);
    assert_eq!(l.next_wake(), Some(T0 + 300_002 + 900_000));
    assert_eq!(l.prune(T0 + 1_200_002), vec![hold_id(1)]);
    assert_eq!(l.next_wake(), None);
}

#[test]
fn the_same_idempotency_key_and_body_gets_the_same_answer_and_never_a_second_hold() {
    let mut l = ledger();
    let v = visitor(1);
    let first = l.place_hold(&v, Some("k1"), &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    let again = l.place_hold(&v, Some("k1"), &seats(&["S0-0-1"]), T0 + 5, hold_id(2)).unwrap();
    assert!(again.replayed && !first.replayed);
    assert_eq!(again.hold, first.hold);
    assert!(l.hold(&hold_id(2)).is_none());
    assert_eq!(l.stats().holds_placed, 1);
    // Same key, other body: a clear conflict; another visitor's same key is their own.
    assert_eq!(
        l.place_hold(&v, Some("k1"), &seats(&["S0-0-2"]), T0, hold_id(3)).unwrap_err(),
        HoldError::IdempotencyConflict
    );
    assert!(l.place_hold(&visitor(2), Some("k1"), &seats(&["S0-0-2"]), T0, hold_id(4)).is_ok());
    // A refusal is remembered too: the retry does not succeed behind the first answer's back.
    let refused = l.place_hold(&visitor(3), Some("k2"), &seats(&["S0-0-1"]), T0, hold_id(5)).unwrap_err();
    l.release(&hold_id(1), Releaser::Core, T0 + 6).unwrap();
    assert_eq!(
        l.place_hold(&visitor(3), Some("k2"), &seats(&["S0-0-1"]), T0 + 7, hold_id(6)).unwrap_err(),
        refused
    );
    // After the retention period the key is forgotten.
    l.prune(T0 + IDEMPOTENCY_RETENTION_MS + 1);
    assert!(l.place_hold(&visitor(3), Some("k2"), &seats(&["S0-0-1"]), T0, hold_id(7)).is_ok());
    assert_eq!(
        l.place_hold(&v, Some(""), &seats(&["S0-0-9"]), T0, hold_id(8)).unwrap_err(),
        HoldError::BadIdempotencyKey
    );
}

#[test]
fn holds_expire_at_their_time_and_free_their_seats() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    l.place_hold(&visitor(2), None, &seats(&["S0-0-2"]), T0 + 1000, hold_id(2)).unwrap();
    assert_eq!(l.next_expiry(), Some(T0 + 600_000));
    assert!(l.expire_due(T0 + 599_999).is_empty());
    assert_eq!(l.expire_due(T0 + 600_010), vec![hold_id(1)]);
    assert_eq!(l.hold(&hold_id(1)).unwrap().state, HoldState::Expired);
    assert_eq!(l.next_expiry(), Some(T0 + 601_000));
    assert_eq!(l.stats().expiry_lateness_max_ms, 10);
    assert!(l.place_hold(&visitor(3), None, &seats(&["S0-0-1"]), T0 + 600_020, hold_id(3)).is_ok());
    assert_eq!(l.confirm(&hold_id(1), T0 + 600_030).unwrap_err(), HoldError::HoldExpired);
}

#[test]
fn a_hold_past_its_time_cannot_be_sold_even_before_the_sweep() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    assert_eq!(l.confirm(&hold_id(1), T0 + 600_000).unwrap_err(), HoldError::HoldExpired);
    assert_eq!(l.extend(&hold_id(1), T0 + 600_000).unwrap_err(), HoldError::HoldExpired);
}

#[test]
fn a_hold_extends_once_and_an_extended_hold_can_be_sold() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    assert_eq!(l.extend(&hold_id(1), T0 + 500_000).unwrap().expires_at, T0 + 900_000);
    assert_eq!(l.extend(&hold_id(1), T0 + 500_001).unwrap_err(), HoldError::AlreadyExtended);
    assert_eq!(l.next_expiry(), Some(T0 + 900_000));
    assert!(l.expire_due(T0 + 700_000).is_empty());
    assert_eq!(l.confirm(&hold_id(1), T0 + 800_000).unwrap().state, HoldState::Sold);
    assert_eq!(l.next_expiry(), None);
}

#[test]
fn a_seat_is_sold_once_and_a_duplicate_confirm_changes_nothing() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    l.confirm(&hold_id(1), T0 + 1).unwrap();
    let version = l.version();
    assert_eq!(l.confirm(&hold_id(1), T0 + 2).unwrap().state, HoldState::Sold);
    assert_eq!(l.version(), version);
    assert_eq!(l.stats().holds_sold, 1);
    assert!(matches!(
        l.place_hold(&visitor(2), None, &seats(&["S0-0-1"]), T0, hold_id(2)),
        Err(HoldError::SeatsUnavailable { .. })
    ));
    assert_eq!(l.release(&hold_id(1), Releaser::Core, T0 + 3).unwrap_err(), HoldError::HoldSold);
}

#[test]
fn release_is_idempotent_and_only_for_the_owner() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    assert_eq!(
        l.release(&hold_id(1), Releaser::Visitor(&visitor(2)), T0).unwrap_err(),
        HoldError::NotYourHold
    );
    assert_eq!(
        l.release(&hold_id(1), Releaser::Visitor(&visitor(1)), T0).unwrap().state,
        HoldState::Released
    );
    let version = l.version();
    assert_eq!(l.release(&hold_id(1), Releaser::Core, T0).unwrap().state, HoldState::Released);
    assert_eq!(l.version(), version);
    assert_eq!(l.confirm(&hold_id(1), T0).unwrap_err(), HoldError::HoldReleased);
    assert_eq!(l.release(&hold_id(9), Releaser::Core, T0).unwrap_err(), HoldError::HoldNotFound);
}

#[test]
fn returned_seats_go_back_on_sale_once() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    assert_eq!(l.return_sold(&hold_id(1), &[], 0, T0).unwrap_err(), HoldError::NotSold);
    l.confirm(&hold_id(1), T0).unwrap();
    l.return_sold(&hold_id(1), &[seat("S0-0-2")], 0, T0).unwrap();
    assert!(matches!(
        l.return_sold(&hold_id(1), &[seat("S0-0-2")], 0, T0),
        Err(HoldError::NotReturnable { .. })
    ));
    assert!(l.place_hold(&visitor(2), None, &seats(&["S0-0-2"]), T0, hold_id(2)).is_ok());
    l.return_sold(&hold_id(1), &[], 0, T0).unwrap();
    assert_eq!(l.hold(&hold_id(1)).unwrap().returned_seats, [seat("S0-0-2"), seat("S0-0-1")]);
    assert_eq!(l.tickets_of(&visitor(1)), 0);
}

#[test]
fn the_availability_version_only_grows() {
    let mut l = ledger();
    let mut last = l.version();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    assert!(l.version() > last);
    last = l.version();
    l.extend(&hold_id(1), T0).unwrap();
    l.confirm(&hold_id(1), T0).unwrap();
    assert!(l.version() > last);
    let a = l.availability();
    assert_eq!(a.version, l.version());
    assert_eq!(&a.seats[..3], "asa");
    assert_eq!(a.sections[0].1.sold, 1);
}

#[test]
fn an_inventory_update_keeps_live_holds_and_refuses_to_drop_what_is_held() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    let mut next = inventory(2, 4, 10, 20, SETTINGS);
    next.version = 2;
    next.seat_map.zones[0].price.amount_minor = 5000;
    l.update_inventory(&next, T0).unwrap();
    assert_eq!(l.hold(&hold_id(1)).unwrap().state, HoldState::Held);
    assert_eq!(&l.availability().seats[..2], "ah");
    l.update_inventory(&next, T0).expect("the same push again is accepted");
    let mut older = next.clone();
    older.seat_map.zones[0].price.amount_minor = 1;
    assert!(matches!(l.update_inventory(&older, T0), Err(HoldError::StaleInventory { .. })));
    let mut smaller = inventory(1, 1, 1, 20, SETTINGS);
    smaller.version = 3;
    assert!(matches!(l.update_inventory(&smaller, T0), Err(HoldError::UpdateWouldDisturbHolds { .. })));
}

#[test]
fn a_restored_ledger_is_the_same_ledger() {
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    l.place_hold(
        &visitor(2),
        None,
        &HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 3 },
        T0,
        hold_id(2),
    )
    .unwrap();
    l.place_hold(&visitor(3), None, &seats(&["S0-0-2", "S0-0-3"]), T0, hold_id(3)).unwrap();
    l.confirm(&hold_id(2), T0).unwrap();
    l.confirm(&hold_id(3), T0).unwrap();
    l.return_sold(&hold_id(3), &[seat("S0-0-3")], 0, T0).unwrap();
    l.place_hold(&visitor(4), None, &seats(&["S0-0-4"]), T0, hold_id(4)).unwrap();
    l.release(&hold_id(4), Releaser::Core, T0).unwrap();

    let holds: Vec<_> = (1..=4).filter_map(|n| l.hold(&hold_id(n)).cloned()).collect();
    let back =
        Ledger::restore(&inventory(2, 4, 10, 20, SETTINGS), holds, vec![], l.version(), l.stats().clone())
            .unwrap();
    assert_eq!(back.availability(), l.availability());
    assert_eq!(back.next_expiry(), l.next_expiry());
    for v in 1..=4 {
        assert_eq!(back.tickets_of(&visitor(v)), l.tickets_of(&visitor(v)));
    }
}

#[test]
fn named_seats_in_a_section_must_be_in_that_section() {
    let mut l = ledger();
    let req = |s: &str| HoldRequest::Seats { seats: vec![seat(s)], section: Some(id("S1")), tier: None };
    assert!(matches!(
        l.place_hold(&visitor(1), None, &req("S0-0-1"), T0, hold_id(1)),
        Err(HoldError::UnknownSeat { .. })
    ));
    assert!(l.place_hold(&visitor(1), None, &req("S1-0-1"), T0, hold_id(2)).is_ok());
}

#[test]
fn a_repeated_hold_id_is_refused_as_such_and_overwrites_nothing() {
    let mut l = ledger();
    let first = l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    let err = l.place_hold(&visitor(2), None, &seats(&["S0-0-2"]), T0, hold_id(1)).unwrap_err();
    assert_eq!(err, HoldError::DuplicateHoldId);
    assert_eq!(l.hold(&hold_id(1)), Some(&first.hold));
    assert_eq!(l.stats().holds_placed, 1);
}

/// The inventory with `off` seats taken off sale, as a newer version.
fn with_off_sale(version: u64, off: &[&str]) -> shared_types::inventory::Inventory {
    let mut inv = inventory(2, 4, 10, 20, SETTINGS);
    inv.version = version;
    for section in &mut inv.seat_map.sections {
        for row in &mut section.rows {
            for s in &mut row.seats {
                s.off_sale = off.contains(&s.id.as_str());
            }
        }
    }
    inv
}

#[test]
fn a_seat_taken_off_sale_keeps_its_hold_and_is_never_held_again() {
    let mut l = ledger();
    let held = l.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap();
    // Taking a held and a free seat off sale disturbs nothing.
    l.update_inventory(&with_off_sale(2, &["S0-0-1", "S0-0-2"]), T0).unwrap();
    assert_eq!(l.hold(&hold_id(1)), Some(&held.hold), "the live hold stands");
    let avail = l.availability();
    assert_eq!(&avail.seats[1..3], "hx");
    assert_eq!(avail.sections[0].1.capacity, 39, "an off-sale free seat is not for sale");
    let err = l.place_hold(&visitor(2), None, &seats(&["S0-0-2"]), T0, hold_id(2)).unwrap_err();
    assert!(matches!(err, HoldError::SeatsUnavailable { .. }));
    // The hold is sold and survives a restore (the seat was off sale before the restore).
    l.confirm(&hold_id(1), T0 + 1).unwrap();
    let holds: Vec<_> = [l.hold(&hold_id(1)).unwrap().clone()].into();
    let restored =
        Ledger::restore(&with_off_sale(2, &["S0-0-1", "S0-0-2"]), holds, [], l.version(), l.stats().clone())
            .expect("a hold on a seat taken off sale restores");
    assert_eq!(&restored.availability().seats[1..3], "sx");
    // When a hold on an off-sale seat ends, the seat stays off sale.
    let mut l = ledger();
    l.place_hold(&visitor(1), None, &seats(&["S0-0-5"]), T0, hold_id(3)).unwrap();
    l.update_inventory(&with_off_sale(2, &["S0-0-5"]), T0).unwrap();
    l.release(&hold_id(3), Releaser::Visitor(&visitor(1)), T0 + 2).unwrap();
    assert_eq!(&l.availability().seats[5..6], "x");
    assert!(l.place_hold(&visitor(2), None, &seats(&["S0-0-5"]), T0 + 3, hold_id(4)).is_err());
    // Best-available never picks it; back on sale, it can be held again.
    let best = l
        .place_hold(
            &visitor(2),
            None,
            &HoldRequest::BestAvailable {
                quantity: 6,
                section: Some(id("S0")),
                zone: None,
                accessibility: None,
                tier: None,
            },
            T0 + 4,
            hold_id(5),
        )
        .unwrap();
    assert!(!best.hold.seats.contains(&seat("S0-0-5")));
    l.update_inventory(&with_off_sale(3, &[]), T0).unwrap();
    assert_eq!(&l.availability().seats[5..6], "a");
    assert!(l.place_hold(&visitor(3), None, &seats(&["S0-0-5"]), T0 + 5, hold_id(6)).is_ok());
}

#[test]
fn an_expired_hold_is_reclaimed_only_while_its_seats_are_still_free() {
    let mut l = ledger();
    let expiry = T0 + 600_000;
    l.place_hold(&visitor(1), None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    l.place_hold(&visitor(2), None, &seats(&["S0-0-5"]), T0, hold_id(2)).unwrap();
    // Due but not yet swept: reclaim ends it and sells it in one step.
    let sold = l.reclaim(&hold_id(1), expiry + 1).unwrap();
    assert_eq!(sold.state, HoldState::Sold);
    assert_eq!(l.tickets_of(&visitor(1)), 2);
    assert_eq!(l.reclaim(&hold_id(1), expiry + 2).unwrap().state, HoldState::Sold, "idempotent");
    assert!(matches!(
        l.place_hold(&visitor(3), None, &seats(&["S0-0-1"]), expiry + 3, hold_id(3)),
        Err(HoldError::SeatsUnavailable { .. })
    ));
    // Expired, then one of its seats taken by another buyer: refused, nothing changes.
    l.expire_due(expiry);
    assert_eq!(l.hold(&hold_id(2)).unwrap().state, HoldState::Expired);
    l.place_hold(&visitor(3), None, &seats(&["S0-0-5"]), expiry + 5, hold_id(4)).unwrap();
    let version = l.version();
    assert_eq!(
        l.reclaim(&hold_id(2), expiry + 6).unwrap_err(),
        HoldError::SeatsUnavailable { seats: vec![seat("S0-0-5")] }
    );
    assert_eq!(l.version(), version);
    assert_eq!(l.hold(&hold_id(2)).unwrap().state, HoldState::Expired);
    // A released hold whose seats are free is sold again, and a GA hold within capacity too.
    let ga = HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 2 };
    l.place_hold(&visitor(4), None, &ga, T0, hold_id(5)).unwrap();
    l.release(&hold_id(5), Releaser::Core, T0 + 1).unwrap();
    assert_eq!(l.reclaim(&hold_id(5), T0 + 2).unwrap().state, HoldState::Sold);
    assert_eq!(l.stats().holds_sold, 2);
    assert_eq!(l.reclaim(&hold_id(9), T0).unwrap_err(), HoldError::HoldNotFound);
}

#[test]
fn an_admissions_ticket_limit_caps_holds_with_the_events_own() {
    let mut l = ledger();
    let v = visitor(1);
    // Admitted with 2: three seats are refused, two are held, a third is refused.
    let three = seats(&["S0-0-1", "S0-0-2", "S0-0-3"]);
    assert!(matches!(
        l.place_hold_within(&v, None, &three, T0, hold_id(1), Some(2)),
        Err(HoldError::LimitExceeded { limit: 2, .. })
    ));
    l.place_hold_within(&v, None, &seats(&["S0-0-1", "S0-0-2"]), T0, hold_id(2), Some(2)).unwrap();
    assert!(matches!(
        l.place_hold_within(&v, None, &seats(&["S0-0-3"]), T0, hold_id(3), Some(2)),
        Err(HoldError::LimitExceeded { limit: 2, current: 2, .. })
    ));
    // Admitted with more than the event allows: the event's limit (6) applies.
    let w = visitor(2);
    let seven = seats(&["S0-1-1", "S0-1-2", "S0-1-3", "S0-1-4", "S0-1-5", "S0-1-6", "S0-1-7"]);
    assert!(matches!(
        l.place_hold_within(&w, None, &seven, T0, hold_id(4), Some(50)),
        Err(HoldError::LimitExceeded { limit: 6, .. })
    ));
}

#[test]
fn ten_thousand_refused_holds_under_fresh_keys_leave_the_ledger_bounded_and_the_alarm_armed() {
    use durable_objects::inventory::ledger::MAX_REMEMBERED_PER_VISITOR;
    let mut l = ledger();
    let v = visitor(1);
    let mut evicted = 0;
    for n in 0..10_000u32 {
        let refused = l.place_hold(
            &v,
            Some(&format!("k-{n}")),
            &seats(&["nope"]),
            T0 + i64::from(n),
            hold_id(u64::from(n)),
        );
        assert!(refused.is_err());
        evicted += l.take_evicted().len();
    }
    assert_eq!(l.remembered(), MAX_REMEMBERED_PER_VISITOR, "at most this many answers per visitor");
    assert_eq!(
        evicted,
        10_000 - MAX_REMEMBERED_PER_VISITOR,
        "every forgotten answer is deleted from storage"
    );
    // The newest answers are the ones kept: a retry of the last key gets the same refusal.
    assert!(l.idempotency_record(&v, "k-9999").is_some() && l.idempotency_record(&v, "k-0").is_none());
    // No hold is live, yet the object has something to forget: its alarm stays armed for it...
    assert_eq!(l.next_expiry(), None);
    let wake = l.next_wake().expect("an alarm to forget the answers");
    assert_eq!(wake, T0 + 10_000 - MAX_REMEMBERED_PER_VISITOR as i64 + IDEMPOTENCY_RETENTION_MS);
    // ...and once it has run past the retention, nothing is left and no alarm is needed.
    l.prune(T0 + 10_000 + IDEMPOTENCY_RETENTION_MS);
    assert_eq!((l.remembered(), l.next_wake()), (0, None));
}

/// `inventory(1, 2, 10, 20)` with seated tiers `adult` (capacity 20) and `child` (capacity 3,
/// on sale from T0).
fn tiered() -> shared_types::inventory::Inventory {
    use shared_types::inventory::{Money, SeatedTier, ZonePrice};
    let mut inv = inventory(1, 2, 10, 20, SETTINGS);
    let price = |amount_minor| Money { amount_minor, currency: inv.currency };
    let priced = |name: &str, amount, capacity, starts| SeatedTier {
        id: id(name),
        name: name.into(),
        prices: vec![
            ZonePrice { zone: id("std"), price: price(amount) },
            ZonePrice { zone: id("front"), price: price(amount * 2) },
        ],
        capacity,
        sale_starts_at_ms: starts,
        sale_ends_at_ms: None,
    };
    inv.seat_map.seated_tiers = vec![priced("adult", 4500, 20, None), priced("child", 2000, 3, Some(T0))];
    assert_eq!(inv.validate(), Ok(()));
    inv
}

fn seats_under(ids: &[&str], tier: Option<&str>) -> HoldRequest {
    HoldRequest::Seats { seats: ids.iter().map(|s| seat(s)).collect(), section: None, tier: tier.map(id) }
}

#[test]
fn a_seat_hold_is_sold_under_the_seated_tier_it_names_or_the_first() {
    let mut l = Ledger::new(&tiered());
    let hold = l
        .place_hold(&visitor(1), None, &seats_under(&["S0-0-1"], Some("child")), T0, hold_id(1))
        .unwrap()
        .hold;
    assert_eq!(hold.seated_tier, Some(id("child")));
    let best = HoldRequest::BestAvailable {
        quantity: 2,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    let hold = l.place_hold(&visitor(2), None, &best, T0, hold_id(2)).unwrap().hold;
    assert_eq!(hold.seated_tier, Some(id("adult")), "the first seated tier when none is named");
    let ga = HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 1 };
    assert_eq!(l.place_hold(&visitor(3), None, &ga, T0, hold_id(3)).unwrap().hold.seated_tier, None);
    // A tier the event does not sell seats under (a GA tier's id, or none at all) is refused and
    // changes nothing.
    let version = l.version();
    for tier in ["floor", "nope"] {
        assert_eq!(
            l.place_hold(&visitor(4), None, &seats_under(&["S0-1-9"], Some(tier)), T0, hold_id(4)),
            Err(HoldError::UnknownTier { tier: id(tier) })
        );
    }
    assert_eq!(l.version(), version);
    // An inventory without seated tiers sells seats at their zone's price: a hold names none.
    let mut old = Ledger::new(&inventory(1, 1, 10, 0, SETTINGS));
    assert_eq!(
        old.place_hold(&visitor(1), None, &seats(&["S0-0-1"]), T0, hold_id(1)).unwrap().hold.seated_tier,
        None
    );
    assert!(matches!(
        old.place_hold(&visitor(1), None, &seats_under(&["S0-0-2"], Some("adult")), T0, hold_id(2)),
        Err(HoldError::UnknownTier { .. })
    ));
    // A request that names no tier reads as it did before tiers (stored idempotency fingerprints
    // still match).
    assert_eq!(serde_json::to_string(&seats(&["S0-0-1"])).unwrap(), r#"{"kind":"seats","seats":["S0-0-1"]}"#);
}

#[test]
fn a_seated_tier_sells_no_more_than_its_capacity_and_only_in_its_window() {
    let mut l = Ledger::new(&tiered());
    let child = |ids: &[&str]| seats_under(ids, Some("child"));
    assert_eq!(
        l.place_hold(&visitor(1), None, &child(&["S0-0-1"]), T0 - 1, hold_id(1)),
        Err(HoldError::TierNotOnSale { tier: id("child") })
    );
    l.place_hold(&visitor(1), None, &child(&["S0-0-1", "S0-0-2"]), T0, hold_id(1)).unwrap();
    assert_eq!(
        l.place_hold(&visitor(2), None, &child(&["S0-0-3", "S0-0-4"]), T0, hold_id(2)),
        Err(HoldError::NotEnoughAvailable { requested: 2, available: 1 }),
        "three child seats in all"
    );
    let counts =
        |l: &Ledger| l.availability().seated_tiers.iter().find(|(t, _)| t.as_str() == "child").unwrap().1;
    assert_eq!((counts(&l).available, counts(&l).held), (1, 2));
    // Sold, the seats still count; released or expired, they do not; returned after a refund, not.
    l.confirm(&hold_id(1), T0).unwrap();
    assert_eq!((counts(&l).held, counts(&l).sold), (0, 2));
    l.place_hold(&visitor(2), None, &child(&["S0-0-3"]), T0, hold_id(2)).unwrap();
    assert_eq!(counts(&l).available, 0);
    l.release(&hold_id(2), Releaser::Core, T0).unwrap();
    assert_eq!(counts(&l).available, 1);
    l.return_sold(&hold_id(1), &[seat("S0-0-1")], 0, T0).unwrap();
    assert_eq!(counts(&l).available, 2);
    // A restart counts them again from the stored holds.
    l.place_hold(&visitor(3), None, &child(&["S0-0-5"]), T0, hold_id(3)).unwrap();
    let holds: Vec<_> = [1, 2, 3].iter().map(|&n| l.hold(&hold_id(n)).unwrap().clone()).collect();
    let restored = Ledger::restore(&tiered(), holds, [], l.version(), l.stats().clone()).unwrap();
    assert_eq!(counts(&restored), counts(&l));
    // An update may not drop a tier or shrink it below what is held and sold under it.
    let mut smaller = tiered();
    smaller.version = 2;
    smaller.seat_map.seated_tiers[1].capacity = 1;
    assert!(matches!(l.update_inventory(&smaller, T0), Err(HoldError::UpdateWouldDisturbHolds { .. })));
    smaller.seat_map.seated_tiers.truncate(1);
    assert!(matches!(l.update_inventory(&smaller, T0), Err(HoldError::UpdateWouldDisturbHolds { .. })));
    smaller.seat_map.seated_tiers = tiered().seat_map.seated_tiers;
    smaller.seat_map.seated_tiers[1].capacity = 2;
    l.update_inventory(&smaller, T0).unwrap();
    assert_eq!((counts(&l).capacity, counts(&l).available), (2, 0), "the counts survive an update");
}

#[test]
fn a_hold_that_names_no_tier_takes_the_first_on_sale_with_room() {
    let mut inv = tiered();
    inv.seat_map.seated_tiers.swap(0, 1); // child (3, from T0) first, then adult
    let mut l = Ledger::new(&inv);
    let best = |quantity| HoldRequest::BestAvailable {
        quantity,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    let before = l.place_hold(&visitor(1), None, &best(1), T0 - 1, hold_id(1)).unwrap().hold;
    assert_eq!(before.seated_tier, Some(id("adult")), "child is not on sale yet");
    let four = l.place_hold(&visitor(2), None, &best(4), T0, hold_id(2)).unwrap().hold;
    assert_eq!(four.seated_tier, Some(id("adult")), "child has no room for four");
    let two = l.place_hold(&visitor(3), None, &best(2), T0, hold_id(3)).unwrap().hold;
    assert_eq!(two.seated_tier, Some(id("child")));
}
