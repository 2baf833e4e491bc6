//! The seats CSV (`PUT /api/v1/venues/{id}/seats`, `regional_core::venues`): any text is read or
//! refused without a panic; every data line becomes exactly one seat; and any fields written as an
//! RFC 4180 line are read back as the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regional_core::models::venue::{validate, VenueIn};
use regional_core::venues::{csv_fields, parse_seats_csv};

/// The first byte picks: even, the rest is a CSV file; odd, fields separated by U+001F.
enum Input {
    Text(String),
    Fields(Vec<String>),
}

fn input(data: &[u8]) -> Option<Input> {
    let (first, rest) = data.split_first()?;
    let text = std::str::from_utf8(rest).ok()?.to_owned();
    Some(if first % 2 == 0 {
        Input::Text(text)
    } else {
        Input::Fields(text.split('\u{1f}').map(str::to_owned).collect())
    })
}

fn quote(field: &str) -> String {
    if field.contains([',', '"']) || field.is_empty() {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fuzz_target!(|data: &[u8]| match input(data) {
    None => {}
    Some(input) => check(input),
});

fn check(input: Input) {
    match input {
        Input::Text(text) => {
            let known = serde_json::json!([{ "id": "A", "name": "Stalls" }]);
            let Ok(sections) = parse_seats_csv(&text, &known) else { return };
            let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
            let seats: usize = sections.iter().flat_map(|s| &s.rows).map(|r| r.seats.len()).sum();
            assert_eq!(seats + 1, lines, "a data line did not become exactly one seat");
            let venue = VenueIn {
                name: "Hall".into(),
                city: String::new(),
                address: String::new(),
                time_zone: "Europe/Berlin".into(),
                zones: serde_json::from_value(serde_json::json!([{ "id": "std", "name": "Standard" }]))
                    .expect("zones"),
                ga_areas: Vec::new(),
                sections,
            };
            let _ = validate(&venue);
        }
        Input::Fields(fields) => {
            if fields.is_empty() || fields.iter().any(|f| f.contains(['\n', '\r'])) {
                return;
            }
            let line = fields.iter().map(|f| quote(f)).collect::<Vec<_>>().join(",");
            assert_eq!(csv_fields(&line).as_ref(), Ok(&fields), "{line:?} did not read back as its fields");
        }
    }
}
