//! Places parked for the event's waiting list (docs/waiting-list.md). While parking is on, places
//! that come back — a hold that expires or is released, a refund's returned seats — do not become
//! free for a moment: in the same step they go into a hold of the list's own ([`WAITLIST_VISITOR`],
//! never expiring), so no buyer can take them before the list offers them. An offer turns parked
//! places into a hold for the entry's visitor for the claim window; places nobody on the list wants
//! are unparked (free again). Parked holds are ordinary holds: stored, restored and counted as held.

use shared_types::ids::{HoldId, SeatId, TierId, VisitorId};
use shared_types::inventory::HoldState;

use super::{GaPlaces, Hold, HoldError, Ledger, Millis, SeatState};

/// The visitor id the list's parked holds belong to. Buyers cannot be it: the edge makes visitor
/// ids as `v` and 32 hex digits, and the ledger refuses holds and releases by it from buyers.
pub const WAITLIST_VISITOR: &str = "_waitlist";
/// A parked hold's expiry: never, in practice (the year 2100), yet a time the alarm API takes (workerd
/// refuses alarms after 2189, as wrangler dev showed: an object that armed one failed every request).
pub const PARKED_UNTIL: Millis = 4_102_444_800_000;

/// What an inventory has for sale at one moment ([`Ledger::sellable`]).
pub(super) struct Sellable {
    seats: std::collections::HashSet<SeatId>,
    ga: Vec<(TierId, u32)>,
}

/// Parked places of one pool: seats (`tier: None`) or a general-admission tier's places.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Parked {
    pub tier: Option<TierId>,
    pub quantity: u32,
}

/// Parked places offered to a waiting-list entry: `quantity` places of a pool (seats when `tier`
/// is `None`) become a hold of `visitor`'s until `until`, its seats sold under `seated_tier` when
/// that one has room, else the first seated tier that has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParkedOffer {
    pub visitor: VisitorId,
    pub tier: Option<TierId>,
    pub quantity: u32,
    pub seated_tier: Option<TierId>,
    pub until: Millis,
}

impl Hold {
    /// A hold of the waiting list's (parked places).
    pub fn parked(&self) -> bool {
        self.visitor.as_str() == WAITLIST_VISITOR
    }
}

/// Whether `visitor` is the waiting list (whose holds only the ledger itself places and ends).
pub fn is_waitlist(visitor: &VisitorId) -> bool {
    visitor.as_str() == WAITLIST_VISITOR
}

fn waitlist() -> VisitorId {
    VisitorId::parse(WAITLIST_VISITOR).expect("a valid id")
}

impl Ledger {
    /// Whether places that come back are parked for the waiting list.
    pub fn parking(&self) -> bool {
        self.parking
    }

    /// The parked holds made or ended since the last call, for the object to store with the
    /// operation that caused them.
    pub fn take_parked_changes(&mut self) -> Vec<HoldId> {
        std::mem::take(&mut self.park_changes)
    }

    /// Turns parking on (the list has people waiting) or off; turning it off frees every parked
    /// place. The holds changed.
    pub fn set_parking(&mut self, on: bool, now: Millis) -> Vec<HoldId> {
        self.parking = on;
        if on {
            return Vec::new();
        }
        let parked: Vec<HoldId> = self.live_parked().map(|h| h.id.clone()).collect();
        for id in &parked {
            self.end_hold(id, HoldState::Released, now);
        }
        self.park_changes.extend(parked.iter().cloned());
        parked
    }

    fn live_parked(&self) -> impl Iterator<Item = &Hold> {
        let mut parked: Vec<&Hold> =
            self.holds.values().filter(|h| h.parked() && h.state == HoldState::Held).collect();
        // Oldest first (ids are `wl-<sequence>`, compared by their sequence).
        parked.sort_by_key(|h| (h.created_at, sequence_of(&h.id)));
        parked.into_iter()
    }

    /// The places the waiting list keeps while it parks: parked, or held for an entry's offer (a
    /// scan of the holds, only while parking: when it is off, an offer's places go back on sale
    /// when it ends, like any hold's).
    pub(super) fn waitlist_held(&self) -> u32 {
        if !self.parking {
            return 0;
        }
        self.holds
            .values()
            .filter(|h| {
                h.state == HoldState::Held && (h.parked() || crate::waitlist::ids::is_offer_hold(&h.id))
            })
            // Every seat, as `availability` counts them held (one taken off sale too).
            .map(|h| h.seats.len() as u32 + h.ga.as_ref().map_or(0, |g| g.quantity))
            .sum()
    }

    /// The parked places, per pool (seats first, then each GA tier in the inventory's order).
    pub fn parked(&self) -> Vec<Parked> {
        let mut seats = 0;
        let mut ga: Vec<(TierId, u32)> = self.tiers.iter().map(|t| (t.id.clone(), 0)).collect();
        for hold in self.live_parked() {
            seats += hold.seats.iter().filter(|s| self.on_sale(s)).count() as u32;
            if let Some(g) = &hold.ga {
                if let Some(slot) = ga.iter_mut().find(|(t, _)| *t == g.tier) {
                    slot.1 += g.quantity;
                }
            }
        }
        std::iter::once(Parked { tier: None, quantity: seats })
            .chain(ga.into_iter().map(|(t, q)| Parked { tier: Some(t), quantity: q }))
            .filter(|p| p.quantity > 0)
            .collect()
    }

    /// A seat still for sale (a parked seat taken off sale since is not offered: it ends withdrawn).
    fn on_sale(&self, seat: &SeatId) -> bool {
        self.seat_index.get(seat).is_some_and(|&i| !self.seats[i as usize].off_sale)
    }

    /// Parks places that just came back (free at this moment) when parking is on; `source` is the
    /// hold they came from. The parked hold's id, if any was made.
    pub(super) fn park(
        &mut self,
        seats: Vec<SeatId>,
        ga: Option<GaPlaces>,
        source: &HoldId,
        now: Millis,
    ) -> Option<HoldId> {
        self.park_since(seats, ga, source, now, now)
    }

    /// [`Ledger::park`] for places parked before, since `since`: parked again (the rest of a
    /// parked hold an offer took part of), they keep their age.
    pub(super) fn park_since(
        &mut self,
        seats: Vec<SeatId>,
        ga: Option<GaPlaces>,
        source: &HoldId,
        since: Millis,
        now: Millis,
    ) -> Option<HoldId> {
        let seats: Vec<SeatId> = seats
            .into_iter()
            .filter(|s| {
                self.seat_index.get(s).is_some_and(|&i| self.seats[i as usize].state == SeatState::Free)
            })
            .collect();
        let ga = ga.filter(|g| g.quantity > 0);
        if !self.parking || (seats.is_empty() && ga.is_none()) {
            return None;
        }
        // A fresh id: never one a stored hold has (after a restart the sequence restarts from
        // the highest held, and pruned ids are never needed again).
        let id = loop {
            self.park_seq += 1;
            let id = HoldId::parse(&format!("wl-{}", self.park_seq)).expect("a valid id");
            if !self.holds.contains_key(&id) {
                break id;
            }
        };
        let hold = Hold {
            parked_from: Some(source.clone()),
            ..Hold::held(id, waitlist(), seats, ga, None, since.min(now), PARKED_UNTIL)
        };
        // The places were just checked free (seats) or just given back (GA): this cannot fail.
        let _ = self.apply_hold_effects(&hold, 1);
        // Scheduled like any hold (so that a restore rebuilds it the same), never due in practice;
        // not a buyer's hold: `live_holds` does not count it.
        self.schedule(&hold.id, hold.expires_at);
        self.version += 1;
        let id = hold.id.clone();
        self.holds.insert(id.clone(), hold);
        self.park_changes.push(id.clone());
        Some(id)
    }

    /// What is for sale now: the free seats on sale, and each GA tier's free places.
    pub(super) fn sellable(&self) -> Sellable {
        let seats = self.seats.iter().filter(|s| s.state == SeatState::Free).map(|s| s.id.clone()).collect();
        let ga =
            self.tiers.iter().map(|t| (t.id.clone(), t.capacity.saturating_sub(t.held + t.sold))).collect();
        Sellable { seats, ga }
    }

    /// After an inventory update while parking: what is for sale now and was not `before` (seats
    /// added or back on sale, a GA tier's places added) is parked for the waiting list.
    pub(super) fn park_added(&mut self, before: Sellable, now: Millis) {
        let after = self.sellable();
        let seats: Vec<SeatId> = after.seats.into_iter().filter(|s| !before.seats.contains(s)).collect();
        let source = HoldId::parse("added").expect("a valid id");
        self.park(seats, None, &source, now);
        for (tier, free) in after.ga {
            let was = before.ga.iter().find(|(t, _)| *t == tier).map_or(0, |(_, n)| *n);
            if free > was {
                self.park(Vec::new(), Some(GaPlaces { tier, quantity: free - was }), &source, now);
            }
        }
    }

    /// Which `quantity` parked seats an offer takes: side by side when the parked seats allow it
    /// (a block of adjacent seats in one row, no aisle between them: the block holding the
    /// longest-parked seat; among those, one at an end of its run of parked seats, so that the
    /// rest stays together; then the one whose newest seat was parked first), else the seats
    /// parked longest. One seat, or not `together`: the seats parked longest. Seats off sale are
    /// never chosen.
    fn choose_parked_seats(&self, quantity: u32, together: bool) -> Vec<SeatId> {
        let n = quantity as usize;
        // Parked seats on sale, oldest first, with their age rank (0: parked longest).
        let parked: Vec<SeatId> =
            self.live_parked().flat_map(|h| h.seats.iter()).filter(|s| self.on_sale(s)).cloned().collect();
        let rank: std::collections::HashMap<u32, usize> =
            parked.iter().enumerate().filter_map(|(r, s)| self.seat_index.get(s).map(|&i| (i, r))).collect();
        let mut best: Option<((usize, u8, usize), u32)> = None;
        if n > 1 && together {
            // Each run of adjacent parked seats (`start..end`), then each block of `n` in it.
            let mut runs = Vec::new();
            for row in &self.rows {
                let mut run_start = row.start;
                for i in row.start..row.end {
                    if !rank.contains_key(&i) {
                        if run_start < i {
                            runs.push(run_start..i);
                        }
                        run_start = i + 1;
                        continue;
                    }
                    if self.seats[i as usize].gap_after || i + 1 == row.end {
                        runs.push(run_start..i + 1);
                        run_start = i + 1;
                    }
                }
            }
            for run in runs.into_iter().filter(|r| r.len() >= n) {
                for start in run.start..=run.end - n as u32 {
                    let ranks = (start..start + n as u32).map(|j| rank[&j]);
                    let splits = u8::from(start != run.start) + u8::from(start + n as u32 != run.end);
                    let key = (ranks.clone().min().unwrap_or(0), splits, ranks.max().unwrap_or(0));
                    if best.is_none_or(|(k, _)| key < k) {
                        best = Some((key, start));
                    }
                }
            }
        }
        match best {
            Some((_, start)) => {
                (start..start + n as u32).map(|i| self.seats[i as usize].id.clone()).collect()
            }
            None => parked.into_iter().take(n).collect(),
        }
    }

    /// Takes `quantity` parked places of a pool (seats when `tier` is `None`: for an offer
    /// (`together`), side by side where they can be, [`Ledger::choose_parked_seats`]; else, and
    /// places of a GA tier, oldest first): the parked holds they came from end, and what those
    /// held beyond it is parked again, as old as it was. The places taken are free when this
    /// returns; the holds changed are added to `changed`.
    fn unpark_places(
        &mut self,
        tier: Option<&TierId>,
        quantity: u32,
        together: bool,
        now: Millis,
        changed: &mut Vec<HoldId>,
    ) -> Result<(Vec<SeatId>, u32), HoldError> {
        let available = self.parked().iter().find(|p| p.tier.as_ref() == tier).map_or(0, |p| p.quantity);
        if quantity == 0 || quantity > available {
            return Err(HoldError::NotEnoughAvailable { requested: quantity, available });
        }
        let chosen: std::collections::HashSet<SeatId> = match tier {
            None => self.choose_parked_seats(quantity, together).into_iter().collect(),
            Some(_) => Default::default(),
        };
        let sources: Vec<Hold> = self
            .live_parked()
            .filter(|h| match tier {
                None => h.seats.iter().any(|s| chosen.contains(s)),
                Some(t) => h.ga.as_ref().is_some_and(|g| &g.tier == t),
            })
            .cloned()
            .collect();
        let (mut seats, mut places) = (Vec::new(), 0u32);
        for source in sources {
            let wanted = quantity - seats.len() as u32 - places;
            if wanted == 0 {
                break;
            }
            self.end_hold(&source.id, HoldState::Released, now);
            self.park_changes.push(source.id.clone());
            changed.push(source.id.clone());
            let (keep_seats, keep_ga) = match tier {
                None => {
                    // Seats taken off sale while parked end withdrawn: never offered, never kept.
                    let (taken, kept): (Vec<SeatId>, Vec<SeatId>) = source
                        .seats
                        .iter()
                        .filter(|s| self.on_sale(s))
                        .cloned()
                        .partition(|s| chosen.contains(s));
                    seats.extend(taken);
                    (kept, source.ga.clone())
                }
                Some(_) => {
                    let g = source.ga.clone().expect("filtered on its GA places");
                    let n = wanted.min(g.quantity);
                    places += n;
                    (source.seats.clone(), Some(GaPlaces { quantity: g.quantity - n, ..g }))
                }
            };
            let from = source.parked_from.clone().unwrap_or(source.id.clone());
            if let Some(id) = self.park_since(keep_seats, keep_ga, &from, source.created_at, now) {
                changed.push(id);
            }
        }
        seats.sort_by_key(|s| self.seat_index.get(s).copied());
        Ok((seats, places))
    }

    /// Frees `quantity` parked places of a pool (nobody on the list wants them). The holds changed.
    pub fn unpark(
        &mut self,
        tier: Option<&TierId>,
        quantity: u32,
        now: Millis,
    ) -> Result<Vec<HoldId>, HoldError> {
        let mut changed = Vec::new();
        self.unpark_places(tier, quantity, false, now, &mut changed)?;
        Ok(changed)
    }

    /// Offers parked places to a waiting-list entry ([`ParkedOffer`]) as a hold under the id `id`.
    /// All or nothing. The new hold and every hold changed.
    pub fn offer_parked(
        &mut self,
        offer: &ParkedOffer,
        id: HoldId,
        now: Millis,
    ) -> Result<(Hold, Vec<HoldId>), HoldError> {
        let ParkedOffer { visitor, tier, quantity, seated_tier, until } = offer;
        let (tier, quantity, seated_tier, until) = (tier.as_ref(), *quantity, seated_tier.as_ref(), *until);
        if is_waitlist(visitor) {
            return Err(HoldError::NotYourHold);
        }
        if self.holds.contains_key(&id) {
            return Err(HoldError::DuplicateHoldId);
        }
        // Checked before anything changes: the buyer's limit, the seated tier (named, or any with
        // room).
        let (limit, current) = (self.settings.max_tickets_per_visitor, self.tickets_of(visitor));
        if current + quantity > limit {
            return Err(HoldError::LimitExceeded { limit, current, requested: quantity });
        }
        let seated = match tier {
            None => {
                let named = seated_tier.filter(|t| {
                    self.seated.iter().any(|s| &&s.id == t && s.on_sale_at(now) && s.room() >= quantity)
                });
                self.seated_tier(named, quantity, now)?
            }
            Some(_) => None,
        };
        let mut changed = Vec::new();
        let (seats, places) = self.unpark_places(tier, quantity, true, now, &mut changed)?;
        let hold = Hold::held(
            id,
            visitor.clone(),
            seats,
            tier.map(|t| GaPlaces { tier: t.clone(), quantity: places }),
            seated.map(|i| self.seated[i].id.clone()),
            now,
            until,
        );
        // Its places were freed just above, in this step.
        self.apply_hold_effects(&hold, 1)?;
        self.schedule(&hold.id, hold.expires_at);
        self.holds.insert(hold.id.clone(), hold.clone());
        self.stats.holds_placed += 1;
        self.stats.live_holds += 1;
        self.version += 1;
        changed.push(hold.id.clone());
        Ok((hold, changed))
    }

    /// Before a late payment reclaims an ended hold: its places, if they are still parked, are
    /// given back to it rather than kept for the list (the buyer paid for exactly those). The
    /// parked holds ended (as they were), to park again if the reclaim fails.
    pub(super) fn unpark_for_reclaim(&mut self, id: &HoldId, now: Millis) -> Vec<Hold> {
        let parked: Vec<Hold> =
            self.live_parked().filter(|h| h.parked_from.as_ref() == Some(id)).cloned().collect();
        for p in &parked {
            self.end_hold(&p.id, HoldState::Released, now);
            self.park_changes.push(p.id.clone());
        }
        parked
    }

    /// The next parked-hold sequence after a restart: past every `wl-<n>` id held.
    pub(super) fn restore_park_seq(&mut self) {
        self.park_seq = self.holds.keys().filter_map(sequence_of).max().unwrap_or(0);
    }
}

fn sequence_of(id: &HoldId) -> Option<u64> {
    id.as_str().strip_prefix("wl-").and_then(|n| n.parse().ok())
}
