//! A venue as an organizer sends it (`POST /api/v1/venues`, read by `regional_core::api::parse_json`
//! as the route does, checked by `regional_core::models::venue::validate`): any bytes are read or
//! refused without a panic; nothing read holds NUL (PostgreSQL cannot store it); a venue that passes
//! the rules keeps them when it is written out and read again (what is stored is what was checked).
#![no_main]

use libfuzzer_sys::fuzz_target;
use regional_core::api::parse_json;
use regional_core::models::venue::{validate, VenueIn};

fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(fields) => fields.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(venue) = parse_json::<VenueIn>(data) else { return };
    // A NUL in any text read (not the six characters `\u0000`, which a name may hold: the first
    // 10-minute run's false alarm, kept in fuzz/regressions/venue_json).
    let value = serde_json::to_value(&venue).expect("a venue serializes");
    assert!(!holds_nul(&value), "a venue holding NUL was read");
    if validate(&venue).is_err() {
        return;
    }
    let again: VenueIn = serde_json::from_slice(&serde_json::to_vec(&venue).expect("a venue serializes"))
        .expect("a venue written out reads back");
    assert!(validate(&again).is_ok(), "a valid venue written out and read back is refused");
    let seats = |v: &VenueIn| v.sections.iter().flat_map(|s| &s.rows).map(|r| r.seats.len()).sum::<usize>();
    assert_eq!(seats(&venue), seats(&again));
});
