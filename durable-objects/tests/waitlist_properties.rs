//! Property tests of the waiting list's rules (`durable-objects/src/waitlist/list.rs`): random
//! sequences of joins, returned places, places taken back, offer rounds, clock jumps (offers
//! lapsing), lapses, withdrawn offers, declines, departures, claims, releases and closing — checked after every step:
//!
//! - **no double offer**: every place that came back is free, offered to exactly one entry,
//!   bought, or released; never two of these at once;
//! - **order**: an offer never goes past a waiting entry ahead of it that the same places would
//!   have served;
//! - **one live entry** per visitor and per e-mail;
//! - **bounds**: offers standing never exceed `max_offers_out`; no offer outlives its time;
//! - **audit**: the history replays to the same offers, and restores to the same list.

use std::collections::{BTreeMap, HashSet};

use durable_objects::waitlist::list::{
    replay, restore, EntryState, JoinRequest, ListSettings, Offer, Pool, Record, WaitingList,
};
use proptest::prelude::*;
use shared_types::ids::{TierId, VisitorId};

const T0: i64 = 1_800_000_000_000;
const VISITORS: u8 = 8;
const SETTINGS: ListSettings =
    ListSettings { enabled: true, claim_seconds: 60, max_offers_out: 3, max_quantity: 3 };

/// A request's pool (seats, or a GA tier) or, up to 4, a pool of places (the seats of an
/// unsharded event, a GA tier's, or the seats of shard 1 or 2 of a sharded one).
fn pool(i: u8) -> Pool {
    match i % 5 {
        0 => Pool::Seats,
        1 => Pool::General(TierId::parse("floor").unwrap()),
        2 => Pool::General(TierId::parse("balcony").unwrap()),
        n => Pool::Shard(u32::from(n) - 2),
    }
}

const POOLS: u8 = 5;

#[derive(Debug, Clone)]
enum Op {
    Join { visitor: u8, mail: u8, pool: Option<u8>, quantity: u32 },
    Return { pool: u8, quantity: u32 },
    Take { pool: u8, quantity: u32 },
    Lapse { visitor: u8 },
    Withdraw { visitor: u8 },
    Offer,
    Wait { seconds: i64 },
    Decline { visitor: u8 },
    Leave { visitor: u8 },
    Claim { visitor: u8 },
    ReleaseUnwanted,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..VISITORS, 0..VISITORS, proptest::option::of(0u8..3), 0u32..5)
            .prop_map(|(visitor, mail, pool, quantity)| Op::Join { visitor, mail, pool, quantity }),
        4 => (0u8..POOLS, 1u32..4).prop_map(|(pool, quantity)| Op::Return { pool, quantity }),
        1 => (0u8..POOLS, 1u32..3).prop_map(|(pool, quantity)| Op::Take { pool, quantity }),
        1 => (0..VISITORS).prop_map(|visitor| Op::Lapse { visitor }),
        1 => (0..VISITORS).prop_map(|visitor| Op::Withdraw { visitor }),
        4 => Just(Op::Offer),
        2 => (1i64..90).prop_map(|seconds| Op::Wait { seconds }),
        1 => (0..VISITORS).prop_map(|visitor| Op::Decline { visitor }),
        1 => (0..VISITORS).prop_map(|visitor| Op::Leave { visitor }),
        2 => (0..VISITORS).prop_map(|visitor| Op::Claim { visitor }),
        1 => Just(Op::ReleaseUnwanted),
        1 => Just(Op::Close),
    ]
}

fn visitor(i: u8) -> VisitorId {
    VisitorId::parse(&format!("v{i}")).unwrap()
}

/// Places per pool that came back, were bought and were released (or taken), from the history.
fn ledger(records: &[Record]) -> (BTreeMap<Pool, i64>, BTreeMap<Pool, i64>, BTreeMap<Pool, i64>) {
    let (mut back, mut bought, mut released) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut offers: BTreeMap<u64, (Pool, u32)> = BTreeMap::new();
    for r in records {
        match r {
            Record::Returned { pool, quantity, .. } => {
                *back.entry(pool.clone()).or_insert(0) += i64::from(*quantity)
            }
            Record::Offered { offer, .. } => {
                offers.insert(offer.number, (offer.pool.clone(), offer.quantity));
            }
            Record::Claimed { number, .. } => {
                let (pool, quantity) = offers[number].clone();
                *bought.entry(pool).or_insert(0) += i64::from(quantity);
            }
            Record::Released { pool, quantity, .. } | Record::Taken { pool, quantity, .. } => {
                *released.entry(pool.clone()).or_insert(0) += i64::from(*quantity)
            }
            _ => {}
        }
    }
    (back, bought, released)
}

fn check(list: &WaitingList, now: i64) {
    // No double offer: what came back = free + offered + bought + released, per pool.
    let (back, bought, released) = ledger(list.records());
    let mut offered: BTreeMap<Pool, i64> = BTreeMap::new();
    for e in list.entries() {
        if let EntryState::Offered { pool, until } = &e.state {
            *offered.entry(pool.clone()).or_insert(0) += i64::from(e.quantity);
            assert!(*until > now, "offer {} outlived its time", e.number);
        }
    }
    for p in (0..POOLS).map(pool) {
        let free = i64::from(list.free().get(&p).copied().unwrap_or(0));
        let sum = free
            + offered.get(&p).copied().unwrap_or(0)
            + bought.get(&p).copied().unwrap_or(0)
            + released.get(&p).copied().unwrap_or(0);
        assert_eq!(back.get(&p).copied().unwrap_or(0), sum, "places of {p:?} conserved");
    }
    // One live entry per visitor and per address.
    let (mut visitors, mut mails) = (HashSet::new(), HashSet::new());
    for e in list.entries().filter(|e| e.state.live()) {
        assert!(visitors.insert(e.visitor.clone()), "two live entries of {}", e.visitor);
        assert!(mails.insert(e.email_key.clone()), "two live entries of {}", e.email_key);
    }
    assert!(list.offers_out() <= SETTINGS.max_offers_out as usize);
    // The running counts are the counts.
    assert_eq!(list.waiting(), list.entries().filter(|e| e.state == EntryState::Waiting).count());
    assert_eq!(
        list.offers_out(),
        list.entries().filter(|e| matches!(e.state, EntryState::Offered { .. })).count()
    );
}

/// An offer never passes a waiting entry ahead of it that the places free of the offer's pool
/// would have served; and once the round is over with room for more offers, the first waiting
/// entry fits no places left free (nor does anyone, unless places are set aside for it).
fn check_order(before: &WaitingList, after: &WaitingList, offers: &[Offer], now: i64) {
    let offered: HashSet<u64> = offers.iter().map(|o| o.number).collect();
    for (i, o) in offers.iter().enumerate() {
        // The pool's places free when this offer was made (the round offers in joining order).
        let taken: u32 = offers[..i].iter().filter(|x| x.pool == o.pool).map(|x| x.quantity).sum();
        let free = before.free().get(&o.pool).copied().unwrap_or(0) - taken;
        for a in before.entries().filter(|a| a.state == EntryState::Waiting && a.number < o.number) {
            let would_fit = o.pool.serves(a.pool.as_ref()) && a.quantity <= free;
            assert!(
                !would_fit || offered.contains(&a.number),
                "offer to {} went past {} ({:?} x{}) with {:?} x{}",
                o.number,
                a.number,
                a.pool,
                a.quantity,
                o.pool,
                o.quantity
            );
        }
    }
    let numbers: Vec<u64> = offers.iter().map(|o| o.number).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "one round offers in joining order: {numbers:?}");
    if after.offers_out() >= SETTINGS.max_offers_out as usize {
        return;
    }
    let fits = |e: &durable_objects::waitlist::list::Entry| {
        after.free().iter().any(|(p, n)| *n >= e.quantity && p.serves(e.pool.as_ref()))
    };
    let waiting: Vec<_> = after.entries().filter(|e| e.state == EntryState::Waiting).collect();
    let claim_ms = i64::from(SETTINGS.claim_seconds) * 1000;
    let set_aside = waiting.first().is_some_and(|h| {
        h.passes >= durable_objects::waitlist::list::MAX_PASSES
            && h.set_aside_from.is_some_and(|from| now < from + claim_ms)
    });
    for (i, e) in waiting.iter().enumerate() {
        assert!(
            (i > 0 && set_aside) || !fits(e),
            "entry {} (x{} of {:?}) fits the places left free {:?} and was not offered them",
            e.number,
            e.quantity,
            e.pool,
            after.free()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn the_lists_rules_hold_whatever_happens(ops in proptest::collection::vec(op(), 1..80)) {
        let mut list = WaitingList::new(SETTINGS);
        let mut now = T0;
        let mut offers_made = 0;
        for op in ops {
            match op {
                Op::Join { visitor: v, mail, pool: p, quantity } => {
                    let request = JoinRequest {
                        visitor: visitor(v),
                        email_key: format!("m{mail}"),
                        pool: p.map(pool),
                        seated_tier: None,
                        quantity,
                    };
                    let _ = list.join(request, now);
                }
                Op::Return { pool: p, quantity } => list.returned(pool(p), quantity, now),
                Op::Take { pool: p, quantity } => {
                    list.taken(pool(p), quantity, now);
                }
                Op::Lapse { visitor: v } => {
                    if let Some(n) = list.entry_of(&visitor(v)).map(|e| e.number) {
                        list.lapse(n, now);
                    }
                }
                Op::Withdraw { visitor: v } => {
                    if let Some(n) = list.entry_of(&visitor(v)).map(|e| e.number) {
                        list.withdraw(n, now);
                    }
                }
                Op::Offer => {
                    let before = list.clone();
                    let offers = list.offer(now);
                    check_order(&before, &list, &offers, now);
                    offers_made += offers.len();
                }
                Op::Wait { seconds } => {
                    now += seconds * 1000;
                    list.expire_due(now);
                }
                Op::Decline { visitor: v } => {
                    if let Some(n) = list.entry_of(&visitor(v)).map(|e| e.number) {
                        list.decline(n, now);
                    }
                }
                Op::Leave { visitor: v } => {
                    list.leave(&visitor(v), now);
                }
                Op::Claim { visitor: v } => {
                    if let Some(n) = list.entry_of(&visitor(v)).map(|e| e.number) {
                        list.claimed(n, now);
                    }
                }
                Op::ReleaseUnwanted => {
                    list.release_unwanted(now);
                }
                Op::Close => {
                    list.close(now);
                }
            }
            check(&list, now);
        }
        prop_assert_eq!(replay(list.records()), Ok(offers_made));
        let restored = restore(list.records().to_vec()).unwrap();
        prop_assert_eq!(&restored, &list);
    }
}
