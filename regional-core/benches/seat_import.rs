//! A 100,000-seat import (`PUT /api/v1/venues/{id}/seats`, the part before the database): the CSV
//! read into sections and rows, then the venue's checks. Three shapes of the same size: 10 sections
//! of 100 rows of 100 seats, 1,000 sections of one row, and one section of 100,000 one-seat rows
//! (standing places numbered as rows): the import was quadratic in rows × sections before it kept
//! an index, and that last shape took minutes. Prints one JSON line per shape; the
//! figures are in docs/benchmarks.md.

use std::time::Instant;

use regional_core::models::venue::{validate, VenueIn, ZoneIn};
use regional_core::venues::parse_seats_csv;
use shared_types::ids::ZoneId;

fn csv(sections: usize, rows: usize, seats: usize) -> String {
    let mut out = String::from("section,row,seat,label,x,y,zone,accessibility,aisle_after\n");
    for s in 0..sections {
        for r in 0..rows {
            for n in 0..seats {
                out.push_str(&format!("S{s},{r},S{s}-{r}-{n},{n},{n},{r},std,,\n"));
            }
        }
    }
    out
}

fn main() {
    for (sections, rows, seats) in [(10, 100, 100), (1_000, 1, 100), (1, 100_000, 1)] {
        let text = csv(sections, rows, seats);
        let mut best = f64::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            let parsed = parse_seats_csv(&text, &serde_json::json!([])).expect("the CSV parses");
            let venue = VenueIn {
                name: "Arena".into(),
                city: String::new(),
                address: String::new(),
                time_zone: "UTC".into(),
                zones: vec![ZoneIn { id: ZoneId::parse("std").unwrap(), name: "Standard".into() }],
                ga_areas: Vec::new(),
                sections: parsed,
            };
            validate(&venue).expect("the venue is valid");
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{}",
            serde_json::json!({ "bench": "seat_import", "seats": sections * rows * seats, "sections": sections,
                                "rows_per_section": rows, "csv_bytes": text.len(), "best_ms": (best * 1000.0 * 10.0).round() / 10.0 })
        );
    }
}
