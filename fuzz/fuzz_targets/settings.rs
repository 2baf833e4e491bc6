//! The settings the core pushes to the edge and organizers write (`shared_types`): an event's
//! inventory (seat map, tiers, hold settings) and its waiting room (with its waiting list). Any
//! bytes are read or refused without a panic. An inventory that passes the rules splits into
//! shards that hold every seat exactly once and never more of a seated tier than it allows, and
//! each shard's ledger starts with every seat on sale available. Waiting-room settings that pass
//! the rules take an organizer's change as the route reads it (a JSON merge patch,
//! `WaitingRoomSettings::patched`: an empty one changes nothing, and what passes reads back as
//! validated), judge any change without a panic (and allow every one while nobody has joined), and
//! draw a pre-queue order that is a permutation for any seed and up to 2,048 places.
#![no_main]

use std::collections::HashSet;

use durable_objects::inventory::ledger::Ledger;
use libfuzzer_sys::fuzz_target;
use shared_types::inventory::Inventory;
use shared_types::waiting_room::{prequeue_rank, prequeue_seq, WaitingRoomSettings};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, json)) = data.split_first() else { return };
    match selector % 2 {
        0 => inventory(json),
        _ => waiting_room(json),
    }
});

fn inventory(json: &[u8]) {
    let Ok(inventory) = serde_json::from_slice::<Inventory>(json) else { return };
    if inventory.validate().is_err() {
        return;
    }
    let all: Vec<_> = inventory.seat_map.seats().map(|(_, _, s)| s.id.clone()).collect();
    let mut seen = HashSet::new();
    let shards = inventory.shards();
    for (name, shard) in &shards {
        assert!(shard.validate().is_ok(), "shard {name} of a valid inventory is invalid");
        for (_, _, seat) in shard.seat_map.seats() {
            assert!(seen.insert(seat.id.clone()), "seat {} is in two shards", seat.id);
        }
        let ledger = Ledger::new(shard);
        ledger.check_consistency().expect("a new ledger is consistent");
        let on_sale = shard.seat_map.seats().filter(|(_, _, s)| !s.off_sale).count();
        let available = ledger.availability().seats.bytes().filter(|b| *b == b'a').count();
        assert_eq!(available, on_sale, "a new shard does not offer every seat on sale");
    }
    assert_eq!(seen.len(), all.len(), "the shards do not hold every seat");
    for (i, tier) in inventory.seat_map.seated_tiers.iter().enumerate() {
        let shared: u64 = shards
            .iter()
            .filter_map(|(_, s)| s.seat_map.seated_tiers.get(i))
            .map(|t| u64::from(t.capacity))
            .sum();
        if shards.len() > 1 {
            assert!(
                shared <= u64::from(tier.capacity),
                "tier {} shared out {shared} of {}",
                tier.id,
                tier.capacity
            );
        }
    }
}

fn waiting_room(json: &[u8]) {
    // The current settings, an organizer's change as the route reads it (a JSON merge patch), and
    // the pre-queue draw's seed: three parts split at NUL.
    let mut parts = json.splitn(3, |b| *b == 0);
    let Ok(current) = serde_json::from_slice::<WaitingRoomSettings>(parts.next().unwrap_or_default()) else {
        return;
    };
    if current.validate().is_err() {
        return;
    }
    // Patching with nothing changes nothing (the settings read back as they were written).
    assert_eq!(
        current.patched(&serde_json::json!({})).ok().as_ref(),
        Some(&current),
        "an empty patch changed the settings"
    );
    let now = current.on_sale_at_ms.unwrap_or(0);
    let _ = current.is_prequeue(now);
    let patch = parts.next().and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok());
    if let Some(Ok(next)) = patch.map(|p| current.patched(&p)) {
        if next.validate().is_ok() {
            for (drawn, joined) in [(false, false), (false, true), (true, true)] {
                // Any change is allowed while nobody has joined the line.
                let judged = current.check_change(&next, now, drawn, joined);
                assert!(joined || judged.is_ok(), "a change refused before anyone joined");
            }
            // What a stored patched document reads back as is what was validated.
            let stored = serde_json::to_vec(&next).unwrap();
            assert_eq!(serde_json::from_slice::<WaitingRoomSettings>(&stored).ok(), Some(next));
        }
    }
    // The pre-queue's draw: each shard's places (1-based) in a random order that is a permutation,
    // for a seed and a count taken from the input.
    let mut seed = [current.version as u8; 32];
    for (s, b) in seed.iter_mut().zip(parts.next().unwrap_or_default()) {
        *s = *b;
    }
    let count = 1 + current.max_active as u64 % 2_048;
    for shard in 0..current.queue_shards.min(4) {
        let mut ranks = HashSet::new();
        for seq in 1..=count {
            let rank = prequeue_rank(&seed, shard, seq, count);
            assert!((1..=count).contains(&rank), "rank {rank} of {count}");
            assert!(ranks.insert(rank), "two places drew rank {rank}");
            assert_eq!(prequeue_seq(&seed, shard, rank, count), seq, "the draw does not invert");
        }
    }
}
