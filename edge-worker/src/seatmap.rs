//! `GET /api/v1/events/{event}/seatmap`: what the buyer's map is drawn from. The seats of every
//! shard in the availability snapshot's order (so the snapshot's `seats` string, one character
//! per seat, lines up with it), the price zones, every seated tier with its price in each zone,
//! and the GA tiers. No state: that is the availability snapshot's, which the page follows.
//!
//! The objects keep the core's definition; the edge asks them for it once per inventory version
//! per isolate and keeps the compact form ([`MAX_KEPT`] events), so a crowd loading the page costs
//! the objects nothing more. Browsers may keep it [`MAX_AGE_SECS`].
//!
//! Each seat is an array, to keep a 20,000-seat map small:
//! `[id, label, x, y, zone index, flags]`, flags being [`ACCESS_FLAGS`] bits and [`AISLE_AFTER`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use durable_objects::inventory::Caller;
use serde::Serialize;
use shared_types::ids::EventId;
use shared_types::inventory::{Accessibility, Inventory};
use worker::Response;

use crate::context::{EventCtx, Result};
use crate::objects;

/// Events whose map one isolate keeps.
const MAX_KEPT: usize = 8;
/// How long a browser may keep the map.
const MAX_AGE_SECS: u32 = 30;

/// A seat's accessibility features as flag bits, in this order (the page reads the same).
pub const ACCESS_FLAGS: [Accessibility; 5] = [
    Accessibility::Wheelchair,
    Accessibility::Companion,
    Accessibility::EasyAccess,
    Accessibility::HearingLoop,
    Accessibility::LimitedView,
];
/// The flag of a seat followed by an aisle or gap.
pub const AISLE_AFTER: u32 = 1 << 5;

thread_local! {
    /// Each event's compact map, with the inventory version it was made from.
    static KEPT: RefCell<HashMap<EventId, (u64, Rc<str>)>> = RefCell::new(HashMap::new());
}

#[derive(Serialize)]
struct Map<'a> {
    event: &'a str,
    version: u64,
    currency: &'a str,
    /// Sold by section: a hold's seats must all be in one section.
    sectioned: bool,
    zones: Vec<Named<'a>>,
    /// Each seated tier's price in each zone, by zone index. An inventory from before seated tiers
    /// has one, with no id (a hold then names none), priced at the zones' own prices.
    seated_tiers: Vec<SeatedTier<'a>>,
    ga_tiers: Vec<GaTier<'a>>,
    sections: Vec<Section<'a>>,
}

#[derive(Serialize)]
struct Named<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct SeatedTier<'a> {
    id: Option<&'a str>,
    name: &'a str,
    prices: Vec<i64>,
}

#[derive(Serialize)]
struct GaTier<'a> {
    id: &'a str,
    name: &'a str,
    price_minor: i64,
    capacity: u32,
}

#[derive(Serialize)]
struct Section<'a> {
    id: &'a str,
    name: &'a str,
    rows: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct Row<'a> {
    label: &'a str,
    seats: Vec<(&'a str, &'a str, f32, f32, usize, u32)>,
}

/// The compact map of an event made of `shards` (in layout order).
fn compact(event: &EventId, shards: &[Inventory]) -> std::result::Result<String, serde_json::Error> {
    let first = shards.first();
    let zones: Vec<_> = first.map(|i| i.seat_map.zones.iter().collect()).unwrap_or_default();
    let zone_index: HashMap<&str, usize> =
        zones.iter().enumerate().map(|(i, z)| (z.id.as_str(), i)).collect();
    let tiers = shards.iter().find(|s| !s.seat_map.seated_tiers.is_empty()).map(|s| &s.seat_map.seated_tiers);
    let seated_tiers = match tiers {
        Some(tiers) => tiers
            .iter()
            .map(|t| SeatedTier {
                id: Some(t.id.as_str()),
                name: &t.name,
                prices: zones.iter().map(|z| t.price_in(&z.id).unwrap_or(z.price).amount_minor).collect(),
            })
            .collect(),
        None if zones.is_empty() => Vec::new(),
        None => vec![SeatedTier {
            id: None,
            name: "Seat",
            prices: zones.iter().map(|z| z.price.amount_minor).collect(),
        }],
    };
    let flags = |seat: &shared_types::inventory::Seat| {
        let access = ACCESS_FLAGS
            .iter()
            .enumerate()
            .filter(|(_, f)| seat.accessibility.contains(f))
            .fold(0, |bits, (i, _)| bits | 1 << i);
        access | if seat.aisle_after { AISLE_AFTER } else { 0 }
    };
    let map = Map {
        event: event.as_str(),
        version: shards.iter().map(|s| s.version).max().unwrap_or_default(),
        currency: first.map_or("", |i| i.currency.as_str()),
        sectioned: first.is_some_and(|i| i.sharding == shared_types::inventory::Sharding::BySection),
        zones: zones.iter().map(|z| Named { id: z.id.as_str(), name: &z.name }).collect(),
        seated_tiers,
        ga_tiers: shards
            .iter()
            .flat_map(|s| &s.seat_map.ga_tiers)
            .map(|t| GaTier {
                id: t.id.as_str(),
                name: &t.name,
                price_minor: t.price.amount_minor,
                capacity: t.capacity,
            })
            .collect(),
        sections: shards
            .iter()
            .flat_map(|s| &s.seat_map.sections)
            .map(|s| Section {
                id: s.id.as_str(),
                name: &s.name,
                rows: s
                    .rows
                    .iter()
                    .map(|r| Row {
                        label: &r.label,
                        seats: r
                            .seats
                            .iter()
                            .map(|x| {
                                let zone = zone_index.get(x.zone.as_str()).copied().unwrap_or(0);
                                (x.id.as_str(), x.label.as_str(), x.x, x.y, zone, flags(x))
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string(&map)
}

/// `GET /seatmap`.
pub async fn seatmap(ev: &EventCtx<'_>) -> Result<Response> {
    let layout = objects::layout(ev.env, &ev.event)
        .await?
        .ok_or_else(|| ev.problem(shared_types::ProblemType::NotFound, "this event is not on sale"))?;
    let kept = KEPT.with(|k| {
        k.borrow().get(&ev.event).filter(|(v, _)| *v == layout.inventory_version).map(|(_, m)| m.clone())
    });
    let body = match kept {
        Some(body) => body,
        None => {
            let (_, shards): (_, Vec<Inventory>) =
                objects::every_shard(ev, &Caller::Edge, "/layout", "this event is not on sale").await?;
            let body: Rc<str> = compact(&ev.event, &shards)?.into();
            KEPT.with(|k| {
                let mut k = k.borrow_mut();
                if k.len() >= MAX_KEPT && !k.contains_key(&ev.event) {
                    if let Some(any) = k.keys().next().cloned() {
                        k.remove(&any);
                    }
                }
                k.insert(ev.event.clone(), (layout.inventory_version, body.clone()));
            });
            body
        }
    };
    let mut resp = Response::ok(body.to_string())?;
    resp.headers_mut().set("content-type", "application/json")?;
    resp.headers_mut().set("cache-control", &format!("public, max-age={MAX_AGE_SECS}"))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::ids::{TierId, ZoneId};
    use shared_types::inventory::{Currency, Money, PriceZone, SeatMap, SeatedTier, ZonePrice};

    fn inventory(tiers: bool) -> Inventory {
        let eur = Currency::parse("EUR").unwrap();
        let money = |amount_minor| Money { amount_minor, currency: eur };
        let zone = |z: &str| ZoneId::parse(z).unwrap();
        let mut sections = SeatMap::grid(1, 1, 3, |_, _, n| {
            (
                zone(if n == 0 { "front" } else { "std" }),
                if n == 0 { vec![Accessibility::Wheelchair] } else { vec![] },
            )
        });
        sections[0].rows[0].seats[1].aisle_after = true;
        Inventory {
            event: EventId::parse("evt").unwrap(),
            version: 4,
            currency: eur,
            seat_map: SeatMap {
                sections,
                zones: vec![
                    PriceZone { id: zone("std"), name: "Standard".into(), price: money(4500) },
                    PriceZone { id: zone("front"), name: "Front".into(), price: money(6500) },
                ],
                ga_tiers: vec![],
                seated_tiers: if tiers {
                    vec![SeatedTier {
                        id: TierId::parse("child").unwrap(),
                        name: "Child".into(),
                        prices: vec![
                            ZonePrice { zone: zone("std"), price: money(2000) },
                            ZonePrice { zone: zone("front"), price: money(3000) },
                        ],
                        capacity: 3,
                        sale_starts_at_ms: None,
                        sale_ends_at_ms: None,
                    }]
                } else {
                    vec![]
                },
            },
            settings: Default::default(),
            sharding: Default::default(),
        }
    }

    #[test]
    fn seats_are_compact_arrays_with_their_zone_index_and_flags() {
        let map: serde_json::Value =
            serde_json::from_str(&compact(&EventId::parse("evt").unwrap(), &[inventory(true)]).unwrap())
                .unwrap();
        assert_eq!(map["version"], 4);
        assert_eq!(map["seats"], serde_json::Value::Null);
        let seats = &map["sections"][0]["rows"][0]["seats"];
        assert_eq!(seats[0], serde_json::json!(["S0-0-0", "0", 0.0, 0.0, 1, 1]), "front, wheelchair");
        assert_eq!(seats[1], serde_json::json!(["S0-0-1", "1", 1.0, 0.0, 0, AISLE_AFTER]));
        assert_eq!(
            map["seated_tiers"],
            serde_json::json!([{ "id": "child", "name": "Child", "prices": [2000, 3000] }])
        );
    }

    #[test]
    fn an_inventory_without_seated_tiers_sells_at_the_zones_prices_under_no_tier() {
        let map: serde_json::Value =
            serde_json::from_str(&compact(&EventId::parse("evt").unwrap(), &[inventory(false)]).unwrap())
                .unwrap();
        assert_eq!(
            map["seated_tiers"],
            serde_json::json!([{ "id": null, "name": "Seat", "prices": [4500, 6500] }])
        );
    }
}
