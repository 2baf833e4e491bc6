//! The ledger's self-check: everything it keeps incrementally for speed (seat states, free seats
//! per row, tier counts, tickets per visitor, the expiry and ended indexes) recomputed from its
//! holds, and the rules no operation may break (no seat in two live holds, no tier past its
//! capacity). The fuzzer (`fuzz/fuzz_targets/ledger.rs`) and the property tests call it after every
//! step; it costs O(holds + seats), so the object itself never does.

use std::collections::BTreeSet;

use super::{HoldState, Ledger, SeatState};

impl Ledger {
    /// `Ok` when the ledger's derived state is exactly what its holds make it; otherwise what
    /// differs, first found first.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut fresh = self.clone();
        for seat in &mut fresh.seats {
            seat.state = if seat.off_sale { SeatState::Withdrawn } else { SeatState::Free };
        }
        fresh.row_free = fresh.free_per_row();
        for t in &mut fresh.tiers {
            (t.held, t.sold) = (0, 0);
        }
        for t in &mut fresh.seated {
            (t.held, t.sold) = (0, 0);
        }
        fresh.tickets_by_visitor.clear();
        let mut holds: Vec<_> = self.holds.values().collect();
        holds.sort_by(|a, b| a.id.cmp(&b.id));
        for hold in holds {
            if hold.returned_ga > hold.ga.as_ref().map_or(0, |g| g.quantity) {
                return Err(format!("hold {} returned more GA places than it had", hold.id));
            }
            // A seat already held or sold by another hold is refused here: two live holds on a seat.
            fresh.apply_hold_effects(hold, 1).map_err(|e| format!("hold {}: {e}", hold.id))?;
        }
        for (i, (a, b)) in self.seats.iter().zip(&fresh.seats).enumerate() {
            if a.state != b.state {
                return Err(format!("seat {} ({i}) is {:?}, its holds make it {:?}", a.id, a.state, b.state));
            }
        }
        if self.row_free != self.free_per_row() {
            return Err(format!("free seats per row {:?}, counted {:?}", self.row_free, self.free_per_row()));
        }
        for (a, b) in self.tiers.iter().zip(&fresh.tiers) {
            if (a.held, a.sold) != (b.held, b.sold) {
                return Err(format!(
                    "GA tier {} counts {:?}, its holds {:?}",
                    a.id,
                    (a.held, a.sold),
                    (b.held, b.sold)
                ));
            }
            if a.held + a.sold > a.capacity {
                return Err(format!(
                    "GA tier {} has {} held and {} sold of {}",
                    a.id, a.held, a.sold, a.capacity
                ));
            }
        }
        for (a, b) in self.seated.iter().zip(&fresh.seated) {
            if (a.held, a.sold) != (b.held, b.sold) {
                return Err(format!(
                    "seated tier {} counts {:?}, its holds {:?}",
                    a.id,
                    (a.held, a.sold),
                    (b.held, b.sold)
                ));
            }
            if a.used() > a.capacity {
                return Err(format!("seated tier {} has {} held and sold of {}", a.id, a.used(), a.capacity));
            }
        }
        let counted = |m: &super::FastMap<shared_types::ids::VisitorId, u32>| {
            let mut v: Vec<_> = m.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect();
            v.sort();
            v
        };
        if counted(&self.tickets_by_visitor) != counted(&fresh.tickets_by_visitor) {
            return Err("tickets per visitor differ from the holds".into());
        }
        let live: BTreeSet<_> = self
            .holds
            .values()
            .filter(|h| h.state == HoldState::Held)
            .map(|h| (h.expires_at, h.id.clone()))
            .collect();
        let scheduled: BTreeSet<_> = self.expiries.iter().map(|((at, _), id)| (*at, id.clone())).collect();
        if live != scheduled || self.expiries.len() != self.expiry_keys.len() {
            return Err(format!("the expiry index {scheduled:?} is not the live holds {live:?}"));
        }
        for (id, key) in &self.expiry_keys {
            if self.expiries.get(key) != Some(id) {
                return Err(format!("hold {id}'s expiry key points elsewhere"));
            }
        }
        let ended: BTreeSet<_> = self
            .holds
            .values()
            .filter(|h| matches!(h.state, HoldState::Released | HoldState::Expired))
            .map(|h| (h.ended_at.unwrap_or(i64::MIN), h.id.clone()))
            .collect();
        if ended != self.ended {
            return Err(format!("the ended index {:?} is not the ended holds {ended:?}", self.ended));
        }
        Ok(())
    }
}
