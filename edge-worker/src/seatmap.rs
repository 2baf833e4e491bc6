//! `GET /api/v1/events/{event}/seatmap`: what the buyer's map is drawn from. The seats of every
//! shard in the availability snapshot's order (so the snapshot's `seats` string, one character
//! per seat, lines up with it), the price zones, every seated tier with its price in each zone,
//! and the GA tiers. No state: that is the availability snapshot's, which the page follows.
//!
//! The objects keep the core's definition (a stadium's is megabytes); the edge builds the compact
//! form once per inventory version and keeps it twice: in the isolate (the most recently used,
//! within [`MAX_KEPT`] maps and [`MAX_KEPT_BYTES`]), and in the data centre's cache (the Cache API,
//! under the page's own origin and the version), so that a crowd loading the page, however many
//! isolates it lands on, costs the seat objects one read per data centre per version. A map made
//! from shards that do not all have the version the directory names (a push in progress) goes to
//! no shared cache, and its isolate keeps it only [`MIXED_TTL_MS`]. Browsers may keep it
//! [`MAX_AGE_SECS`].
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
use worker::{Cache, Request, Response};

use crate::context::{EventCtx, Result};
use crate::objects;

/// Maps one isolate keeps…
const MAX_KEPT: usize = 8;
/// …and their bytes in all (an isolate has 128 MB).
const MAX_KEPT_BYTES: usize = 24 * 1024 * 1024;
/// How long the data centre's cache keeps a map (it is keyed by version: never stale).
const CACHE_SECS: u32 = 86_400;
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

/// A compact map: the inventory version it was made from, the map, when it was last used, and
/// until when it may be used when it was made from shards of different versions (a push in
/// progress, or a section the event no longer has).
type Kept = (u64, Rc<str>, f64, Option<f64>);

/// How long an isolate keeps a map made from shards of different versions.
const MIXED_TTL_MS: f64 = 5_000.0;

thread_local! {
    /// Each event's compact map.
    static KEPT: RefCell<HashMap<EventId, Kept>> = RefCell::new(HashMap::new());
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
    #[serde(skip_serializing_if = "Option::is_none")]
    sale_starts_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sale_ends_at_ms: Option<i64>,
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
                sale_starts_at_ms: t.sale_starts_at_ms,
                sale_ends_at_ms: t.sale_ends_at_ms,
            })
            .collect(),
        None if zones.is_empty() => Vec::new(),
        None => vec![SeatedTier {
            id: None,
            name: "Seat",
            prices: zones.iter().map(|z| z.price.amount_minor).collect(),
            sale_starts_at_ms: None,
            sale_ends_at_ms: None,
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
pub async fn seatmap(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let layout = objects::layout(ev.env, &ev.event)
        .await?
        .ok_or_else(|| ev.problem(shared_types::ProblemType::NotFound, "this event is not on sale"))?;
    let version = layout.inventory_version;
    let now = durable_objects::now_ms() as f64;
    let kept = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        let entry =
            k.get_mut(&ev.event).filter(|(v, _, _, until)| *v == version && until.is_none_or(|u| now < u))?;
        entry.2 = now;
        Some(entry.1.clone())
    });
    let body = match kept {
        Some(body) => body,
        None => {
            let mut key = req.url()?;
            key.set_query(Some(&format!("v={version}")));
            let cache = Cache::default();
            let cached = match cache.get(key.as_str(), true).await {
                Ok(Some(mut resp)) => {
                    durable_objects::http::answer_text(&mut resp).await.ok().map(Rc::<str>::from)
                }
                _ => None,
            };
            let (body, complete) = match cached {
                Some(body) => (body, true),
                None => {
                    let (_, shards): (_, Vec<Inventory>) =
                        objects::every_shard(ev, &Caller::Edge, "/layout", "this event is not on sale")
                            .await?;
                    let complete = shards.iter().all(|s| s.version == version);
                    let body: Rc<str> = compact(&ev.event, &shards)?.into();
                    if complete {
                        let mut stored = Response::ok(body.to_string())?;
                        stored.headers_mut().set("content-type", "application/json")?;
                        stored
                            .headers_mut()
                            .set("cache-control", &format!("public, max-age={CACHE_SECS}"))?;
                        let (key, event) = (key.to_string(), ev.event.to_string());
                        // Stored after the answer has gone.
                        ev.worker.wait_until(async move {
                            if let Err(e) = Cache::default().put(key.as_str(), stored).await {
                                durable_objects::log::error(
                                    "the seat map could not be cached",
                                    serde_json::json!({ "error": e.to_string(), "event": event }),
                                );
                            }
                        });
                    }
                    (body, complete)
                }
            };
            keep(&ev.event, version, body.clone(), now, (!complete).then_some(now + MIXED_TTL_MS));
            body
        }
    };
    let mut resp = Response::ok(body.to_string())?;
    resp.headers_mut().set("content-type", "application/json")?;
    resp.headers_mut().set("cache-control", &format!("public, max-age={MAX_AGE_SECS}"))?;
    Ok(resp)
}

/// Keeps `body` as `event`'s map (until `until`, if given), dropping the least recently used while
/// over a bound. A map larger than the bound is not kept.
fn keep(event: &EventId, version: u64, body: Rc<str>, now: f64, until: Option<f64>) {
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.remove(event);
        if body.len() > MAX_KEPT_BYTES {
            return;
        }
        let mut bytes: usize = k.values().map(|(_, b, ..)| b.len()).sum();
        while !k.is_empty() && (k.len() >= MAX_KEPT || bytes + body.len() > MAX_KEPT_BYTES) {
            let Some(lru) = k.iter().min_by(|a, b| a.1 .2.total_cmp(&b.1 .2)).map(|(e, _)| e.clone()) else {
                break;
            };
            bytes -= k.remove(&lru).map_or(0, |(_, b, ..)| b.len());
        }
        k.insert(event.clone(), (version, body, now, until));
    });
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
