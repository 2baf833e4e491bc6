//! The ids of the holds that carry a waiting list's offers (a leaf: the inventory reads them too).

use shared_types::ids::HoldId;

/// The hold an offer becomes at shard `shard`: `h<shard>-w<entry number>`. The edge routes holds by
/// the shard in their id; the entry number makes it the same id every time the offer is placed.
pub fn offer_hold_id(shard: usize, number: u64) -> HoldId {
    HoldId::parse(&format!("h{shard}-w{number}")).expect("a valid id")
}

/// Whether a hold id is an offer's ([`offer_hold_id`]).
pub fn is_offer_hold(id: &HoldId) -> bool {
    id.as_str().split_once('-').is_some_and(|(_, rest)| rest.starts_with('w'))
}
