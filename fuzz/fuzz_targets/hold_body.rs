//! A buyer's hold request as the edge reads it (`POST /api/v1/events/{event}/holds`: the body
//! through `shared_types::json::from_slice` into a `HoldRequest`), forwarded to the inventory
//! object as the edge writes it and read there as the object reads it (`PlaceHoldBody`), then
//! placed on a small ledger that already has another buyer's hold. Any bytes: nothing panics; what
//! serde reads as sent the edge reads the same, and what serde refuses the edge reads only as its
//! integral numbers made integers; what the edge reads is forwarded unchanged; what must be placed
//! is (free seats on sale, GA places, within the cap); a placed hold is exactly what was asked (those seats,
//! that many in that section, zone and accessibility, those GA places, within the buyer's limit)
//! and takes nothing held; a refusal changes nothing; the key's retry replays the first answer and
//! another body under it is a conflict.
#![no_main]

use std::collections::HashSet;

use durable_objects::inventory::ledger::{GaPlaces, HoldRequest, Ledger};
use durable_objects::inventory::object::PlaceHoldBody;
use durable_objects::inventory::HoldError;
use libfuzzer_sys::fuzz_target;
use shared_types::ids::{HoldId, SeatId, SectionId, TierId, VisitorId, ZoneId};
use shared_types::inventory::{
    Accessibility, Currency, GaTier, HoldSettings, Inventory, Money, PriceZone, SeatMap, SeatedTier,
    ZonePrice,
};

const NOW: i64 = 1_800_000_000_000;
/// What the buyer's admission allows (`max_tickets` in the admission token); the event allows 6.
const ADMISSION_CAP: u32 = 4;
const KEY: &str = "retry-me";

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_owned()).expect("a valid id")
}

/// Two sections of two rows of four seats (`S{s}-{r}-{n}`; the first of each row `front` and
/// wheelchair accessible, the last off sale in section 1), a seated tier `st` and a GA tier `floor`
/// of 10 places.
fn inventory() -> Inventory {
    let eur = Currency::parse("EUR").expect("EUR");
    let price = |amount_minor| Money { amount_minor, currency: eur };
    let mut sections = SeatMap::grid(2, 2, 4, |_, _, n| {
        let front = n == 0;
        (
            id::<ZoneId>(if front { "front" } else { "std" }),
            if front { vec![Accessibility::Wheelchair] } else { vec![] },
        )
    });
    for row in &mut sections[1].rows {
        row.seats[3].off_sale = true;
    }
    Inventory {
        event: id("evt"),
        version: 1,
        currency: eur,
        seat_map: SeatMap {
            sections,
            zones: vec![
                PriceZone { id: id("std"), name: "Standard".into(), price: price(4500) },
                PriceZone { id: id("front"), name: "Front".into(), price: price(9000) },
            ],
            ga_tiers: vec![GaTier {
                id: id("floor"),
                name: "Floor".into(),
                capacity: 10,
                price: price(3000),
            }],
            seated_tiers: vec![SeatedTier {
                id: id("st"),
                name: "Seated".into(),
                prices: ["std", "front"]
                    .iter()
                    .map(|z| ZonePrice { zone: id(z), price: price(5000) })
                    .collect(),
                capacity: 12,
                sale_starts_at_ms: None,
                sale_ends_at_ms: None,
            }],
        },
        settings: HoldSettings { hold_seconds: 300, extension_seconds: 60, max_tickets_per_visitor: 6 },
        sharding: Default::default(),
    }
}

/// `value` with every number that has a zero fraction made the integer it equals: what the edge's
/// reading adds to serde's (`shared_types::json`), written apart from it.
fn integral(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                *value = serde_json::Value::from(f as u64);
            } else if f.fract() == 0.0 && f < 0.0 && f >= i64::MIN as f64 {
                *value = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
    }
}

/// True when `request`, on the ledger below, must be placed for the buyer: seats that exist, on
/// sale, free, named once, in the section named; or GA places of the tier; within the admission
/// cap; under the seated tier there is.
fn must_place(inventory: &Inventory, request: &HoldRequest, taken: &HashSet<SeatId>) -> bool {
    let st = |tier: &Option<TierId>| tier.as_ref().is_none_or(|t| t.as_str() == "st");
    match request {
        HoldRequest::Seats { seats, section, tier } => {
            let distinct: HashSet<&SeatId> = seats.iter().collect();
            st(tier)
                && (1..=ADMISSION_CAP as usize).contains(&seats.len())
                && distinct.len() == seats.len()
                && seats.iter().all(|s| {
                    !taken.contains(s)
                        && inventory.seat_map.seats().any(|(sec, _, x)| {
                            &x.id == s && !x.off_sale && section.as_ref().is_none_or(|want| &sec.id == want)
                        })
                })
        }
        HoldRequest::GeneralAdmission { tier, quantity } => {
            tier.as_str() == "floor" && (1..=ADMISSION_CAP).contains(quantity)
        }
        HoldRequest::BestAvailable { quantity, section, zone, accessibility, tier } => {
            let fitting = inventory
                .seat_map
                .seats()
                .filter(|(sec, _, x)| {
                    !x.off_sale
                        && !taken.contains(&x.id)
                        && section.as_ref().is_none_or(|want| &sec.id == want)
                        && zone.as_ref().is_none_or(|z| &x.zone == z)
                        && accessibility.is_none_or(|a| x.accessibility.contains(&a))
                })
                .count();
            st(tier) && (1..=ADMISSION_CAP).contains(quantity) && fitting >= *quantity as usize
        }
    }
}

/// True when no JSON object in `body` names a key twice (serde refuses that for a struct; a
/// `Value` would keep the last), read with a visitor of the target's own.
fn keys_unique(body: &[u8]) -> bool {
    struct Check;
    impl<'de> serde::de::Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<Checked>()?.is_some() {}
            Ok(())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some((key, Checked)) = map.next_entry::<String, Checked>()? {
                if !seen.insert(key) {
                    return Err(serde::de::Error::custom("a key twice"));
                }
            }
            Ok(())
        }
    }
    struct Checked;
    impl<'de> serde::Deserialize<'de> for Checked {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check).map(|()| Checked)
        }
    }
    serde_json::from_slice::<Checked>(body).is_ok()
}

fuzz_target!(|body: &[u8]| {
    // The edge's reading: serde's, and what serde refuses only for a number with a zero fraction
    // where an integer is wanted read as the integer it equals.
    let read = shared_types::json::from_slice::<HoldRequest>(body);
    match serde_json::from_slice::<HoldRequest>(body) {
        Ok(strict) => assert_eq!(read.as_ref().ok(), Some(&strict), "the edge read otherwise than serde"),
        Err(error) => {
            // A number with a zero fraction where an integer is wanted, in a body of unique keys
            // whose integral reading is a request: the edge reads it.
            let mut value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
            if let Some(v) = value.as_mut() {
                integral(v);
            }
            let integral_reading = value.and_then(|v| serde_json::from_value::<HoldRequest>(v).ok());
            if error.to_string().starts_with("invalid type: floating point")
                && body.len() <= shared_types::json::REREAD_MAX_BYTES
                && keys_unique(body)
                && integral_reading.is_some()
            {
                assert!(
                    read.is_ok(),
                    "the edge refused {:?}, an integral reading of a request",
                    String::from_utf8_lossy(body)
                );
            }
            if let Ok(request) = &read {
                let mut value: serde_json::Value =
                    serde_json::from_slice(body).expect("what the edge read is JSON");
                integral(&mut value);
                let strict: HoldRequest =
                    serde_json::from_value(value).expect("the edge read more than integral numbers");
                assert_eq!(request, &strict, "the edge's integral reading changed the request");
            }
        }
    }
    let Ok(request) = read else { return };

    // Forwarded as the edge writes it (`holds::place`), read as the object reads it.
    let forwarded = PlaceHoldBody {
        request: request.clone(),
        idempotency_key: Some(KEY.to_owned()),
        max_tickets: Some(ADMISSION_CAP),
    };
    let at_object: PlaceHoldBody = serde_json::from_str(&serde_json::to_string(&forwarded).expect("JSON"))
        .expect("the object reads what the edge forwards");
    assert_eq!(at_object.request, request, "the object read another request");
    assert_eq!(at_object.idempotency_key.as_deref(), Some(KEY));
    assert_eq!(at_object.max_tickets, Some(ADMISSION_CAP));

    let inventory = inventory();
    let mut ledger = Ledger::new(&inventory);
    let other: VisitorId = id("v2");
    let theirs = HoldRequest::Seats { seats: vec![id("S0-0-1"), id("S0-0-2")], section: None, tier: None };
    ledger.place_hold(&other, None, &theirs, NOW, id("h0")).expect("the other buyer's hold");
    let taken: HashSet<SeatId> = [id("S0-0-1"), id("S0-0-2")].into();

    let buyer: VisitorId = id("v1");
    let (before, version) = (ledger.availability(), ledger.version());
    let got =
        ledger.place_hold_within(&buyer, Some(KEY), &at_object.request, NOW, id("h1"), at_object.max_tickets);
    ledger.check_consistency().unwrap_or_else(|e| panic!("after {request:?}: {e}"));
    if must_place(&inventory, &request, &taken) {
        assert!(got.is_ok(), "{request:?} was refused: {got:?}");
    }
    match &got {
        Err(_) => {
            assert_eq!(ledger.availability(), before, "a refused {request:?} changed what is available");
            assert_eq!(ledger.version(), version, "a refused {request:?} moved the version");
            assert!(ledger.hold(&id::<HoldId>("h1")).is_none());
        }
        Ok(placed) => {
            let hold = &placed.hold;
            assert!(!placed.replayed);
            assert_eq!(hold.visitor, buyer);
            assert!((1..=ADMISSION_CAP).contains(&hold.tickets()), "{hold:?} is outside the buyer's limit");
            let seats: HashSet<&SeatId> = hold.seats.iter().collect();
            assert_eq!(seats.len(), hold.seats.len(), "a seat twice in {hold:?}");
            assert!(hold.seats.iter().all(|s| !taken.contains(s)), "{hold:?} took a held seat");
            let seat = |s: &SeatId| {
                inventory
                    .seat_map
                    .seats()
                    .find(|(_, _, x)| &x.id == s)
                    .map(|(sec, _, x)| (sec.id.clone(), x.clone()))
            };
            for s in &hold.seats {
                let (_, x) = seat(s).unwrap_or_else(|| panic!("{hold:?} has a seat the event has not"));
                assert!(!x.off_sale, "{hold:?} has a seat off sale");
            }
            let in_section = |section: &Option<SectionId>| {
                section.as_ref().is_none_or(|want| {
                    hold.seats.iter().all(|s| seat(s).is_some_and(|(sec, _)| &sec == want))
                })
            };
            match &request {
                HoldRequest::Seats { seats: asked, section, tier } => {
                    assert_eq!(
                        asked.iter().collect::<HashSet<_>>(),
                        seats,
                        "{hold:?} is not the seats asked"
                    );
                    assert!(in_section(section), "{hold:?} is outside {section:?}");
                    assert_eq!(hold.ga, None);
                    assert_eq!(hold.seated_tier.as_ref(), Some(tier.as_ref().unwrap_or(&id::<TierId>("st"))));
                }
                HoldRequest::BestAvailable { quantity, section, zone, accessibility, tier } => {
                    assert_eq!(hold.seats.len() as u32, *quantity, "{hold:?} is not {quantity} seats");
                    assert!(in_section(section), "{hold:?} is outside {section:?}");
                    for s in &hold.seats {
                        let (_, x) = seat(s).expect("a seat of the event");
                        assert!(
                            zone.as_ref().is_none_or(|z| &x.zone == z),
                            "{hold:?} is outside zone {zone:?}"
                        );
                        assert!(
                            accessibility.is_none_or(|a| x.accessibility.contains(&a)),
                            "{hold:?} has a seat without {accessibility:?}"
                        );
                    }
                    assert_eq!(hold.ga, None);
                    assert_eq!(hold.seated_tier.as_ref(), Some(tier.as_ref().unwrap_or(&id::<TierId>("st"))));
                }
                HoldRequest::GeneralAdmission { tier, quantity } => {
                    assert_eq!(hold.ga, Some(GaPlaces { tier: tier.clone(), quantity: *quantity }));
                    assert!(hold.seats.is_empty());
                }
            }
        }
    }

    // The retry, as a client sends it after a lost answer: the first answer, nothing placed.
    let again = ledger.place_hold_within(&buyer, Some(KEY), &request, NOW + 1, id("h2"), Some(ADMISSION_CAP));
    match (&got, &again) {
        (Ok(first), Ok(retried)) => {
            assert!(retried.replayed);
            assert_eq!(retried.hold.id, first.hold.id);
        }
        (Err(first), Err(retried)) => assert_eq!(first, retried, "a retried {request:?} changed its answer"),
        _ => panic!("a retried {request:?} changed its answer: {got:?} then {again:?}"),
    }
    assert!(ledger.hold(&id::<HoldId>("h2")).is_none(), "a retry placed a second hold");
    // Another body under the same key is refused.
    let another = match &request {
        HoldRequest::GeneralAdmission { quantity: 1, .. } => {
            HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 2 }
        }
        _ => HoldRequest::GeneralAdmission { tier: id("floor"), quantity: 1 },
    };
    let conflict =
        ledger.place_hold_within(&buyer, Some(KEY), &another, NOW + 2, id("h3"), Some(ADMISSION_CAP));
    if another != request {
        assert_eq!(
            conflict.map(|p| p.hold.id),
            Err(HoldError::IdempotencyConflict),
            "another body under {KEY}"
        );
    }
    ledger.check_consistency().unwrap_or_else(|e| panic!("after the retries of {request:?}: {e}"));
});
