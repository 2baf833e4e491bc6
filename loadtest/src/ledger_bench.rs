//! The hold ledger, natively: how many 2-seat holds one core places per second on a 20,000-seat
//! map, and what the expiry sweep costs per hold. No I/O: this is the ceiling the object's
//! storage and the runtime then take their share of.

use std::time::Instant;

use durable_objects::inventory::{HoldRequest, Ledger};
use serde::Serialize;
use shared_types::ids::{EventId, HoldId, SeatId, VisitorId, ZoneId};
use shared_types::inventory::{Currency, HoldSettings, Inventory, Money, PriceZone, SeatMap, Sharding};

#[derive(Debug, Serialize)]
pub struct LedgerReport {
    pub seats: usize,
    pub holds_per_round: usize,
    pub rounds: usize,
    pub named_2_seat_holds_per_second: f64,
    pub ns_per_named_hold: f64,
    pub best_available_2_seat_holds_per_second: f64,
    pub expiry_sweep_ns_per_hold: f64,
    pub availability_snapshot_us: f64,
}

/// A map of `sections` × `rows` × `per_row` seats.
pub fn seat_map(event: &str, sections: usize, rows: usize, per_row: usize) -> Inventory {
    let eur = Currency::parse("EUR").expect("EUR");
    let zone = ZoneId::parse("std").expect("zone");
    Inventory {
        event: EventId::parse(event).expect("event id"),
        version: 1,
        currency: eur,
        seat_map: SeatMap {
            sections: SeatMap::grid(sections, rows, per_row, |_, _, _| (zone.clone(), vec![])),
            zones: vec![PriceZone {
                id: zone,
                name: "Standard".into(),
                price: Money { amount_minor: 4500, currency: eur },
            }],
            ga_tiers: vec![],
            seated_tiers: vec![],
        },
        settings: HoldSettings { hold_seconds: 600, extension_seconds: 300, max_tickets_per_visitor: 8 },
        sharding: Sharding::None,
    }
}

pub fn run(rounds: usize) -> LedgerReport {
    let inventory = seat_map("bench", 20, 20, 50);
    let seats: Vec<SeatId> = inventory.seat_map.seats().map(|(_, _, s)| s.id.clone()).collect();
    let visitors: Vec<VisitorId> =
        (0..seats.len() / 2).map(|i| VisitorId::parse(&format!("v{i}")).expect("id")).collect();
    let requests: Vec<HoldRequest> = seats
        .chunks(2)
        .map(|pair| HoldRequest::Seats { seats: pair.to_vec(), section: None, tier: None })
        .collect();
    let ids: Vec<HoldId> =
        (0..requests.len()).map(|i| HoldId::parse(&format!("h0-{i:08x}")).expect("id")).collect();
    let now = 1_800_000_000_000i64;

    // Named 2-seat holds until the map is full, `rounds` times on a fresh ledger.
    let mut named_ns = 0u128;
    let mut sweep_ns = 0u128;
    let mut snapshot_ns = 0u128;
    for _ in 0..rounds {
        let mut ledger = Ledger::new(&inventory);
        let start = Instant::now();
        for ((visitor, request), id) in visitors.iter().zip(&requests).zip(&ids) {
            let placed = ledger.place_hold(visitor, None, request, now, id.clone());
            debug_assert!(placed.is_ok());
            std::hint::black_box(&placed);
        }
        named_ns += start.elapsed().as_nanos();
        let start = Instant::now();
        std::hint::black_box(ledger.availability());
        snapshot_ns += start.elapsed().as_nanos();
        let start = Instant::now();
        let expired = ledger.expire_due(now + 600_000);
        sweep_ns += start.elapsed().as_nanos();
        assert_eq!(expired.len(), requests.len());
    }
    // Best-available 2-seat holds (the scan for an adjacent pair) until the map is full.
    let best = HoldRequest::BestAvailable {
        quantity: 2,
        section: None,
        zone: None,
        accessibility: None,
        tier: None,
    };
    let mut ledger = Ledger::new(&inventory);
    let start = Instant::now();
    for (visitor, id) in visitors.iter().zip(&ids) {
        std::hint::black_box(ledger.place_hold(visitor, None, &best, now, id.clone()).is_ok());
    }
    let best_ns = start.elapsed().as_nanos();

    let holds = (requests.len() * rounds) as f64;
    LedgerReport {
        seats: seats.len(),
        holds_per_round: requests.len(),
        rounds,
        named_2_seat_holds_per_second: holds / (named_ns as f64 / 1e9),
        ns_per_named_hold: named_ns as f64 / holds,
        best_available_2_seat_holds_per_second: requests.len() as f64 / (best_ns as f64 / 1e9),
        expiry_sweep_ns_per_hold: sweep_ns as f64 / holds,
        availability_snapshot_us: snapshot_ns as f64 / rounds as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_benchmark_fills_the_map_and_sweeps_it() {
        let report = super::run(1);
        assert_eq!(report.seats, 20_000);
        assert_eq!(report.holds_per_round, 10_000);
        assert!(report.named_2_seat_holds_per_second > 0.0);
    }
}
