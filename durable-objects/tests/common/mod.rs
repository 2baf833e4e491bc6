//! Test inventories.

use shared_types::ids::{EventId, HoldId, SeatId, TierId, VisitorId, ZoneId};
use shared_types::inventory::{
    Accessibility, Currency, GaTier, HoldSettings, Inventory, Money, PriceZone, SeatMap,
};

pub fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_owned()).expect("valid id")
}

pub fn seat(s: &str) -> SeatId {
    id(s)
}

pub fn visitor(n: u32) -> VisitorId {
    id(&format!("v{n}"))
}

pub fn hold_id(n: u64) -> HoldId {
    id(&format!("h{n}"))
}

/// `sections` × `rows` × `seats` seats (ids `S{s}-{r}-{n}`), zone `std` except the first seat of
/// every row, which is `front`-zone and wheelchair accessible; a GA tier `floor` of `ga` places.
pub fn inventory(sections: usize, rows: usize, seats: usize, ga: u32, settings: HoldSettings) -> Inventory {
    let eur = Currency::parse("EUR").expect("EUR");
    let price = |amount_minor| Money { amount_minor, currency: eur };
    Inventory {
        event: id("evt"),
        version: 1,
        currency: eur,
        seat_map: SeatMap {
            sections: SeatMap::grid(sections, rows, seats, |_, _, n| {
                let front = n == 0;
                let accessibility = if front { vec![Accessibility::Wheelchair] } else { vec![] };
                (id::<ZoneId>(if front { "front" } else { "std" }), accessibility)
            }),
            zones: vec![
                PriceZone { id: id("std"), name: "Standard".into(), price: price(4500) },
                PriceZone { id: id("front"), name: "Front".into(), price: price(9000) },
            ],
            ga_tiers: if ga > 0 {
                vec![GaTier {
                    id: id::<TierId>("floor"),
                    name: "Floor".into(),
                    capacity: ga,
                    price: price(3000),
                }]
            } else {
                vec![]
            },
            seated_tiers: vec![],
        },
        settings,
        sharding: Default::default(),
    }
}

#[allow(dead_code)]
pub fn event() -> EventId {
    id("evt")
}
