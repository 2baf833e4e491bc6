//! What an event's page says about the event, above its line: the catalog's details (title, start
//! in the venue's zone, venue, description, images), its tiers with their prices, and how many
//! places are left.
//!
//! - The details come from the core's public catalog (`GET /api/v1/catalog/events/{id}`), kept by
//!   each isolate (`catalog.rs`): a crowd on the page costs the core one request per isolate per
//!   30 s. An event the catalog does not know, or a core that cannot be reached, leaves the page
//!   with its line alone.
//! - What is left comes from the edge's availability snapshot (`holds::snapshot`: one request to
//!   each inventory shard per isolate per second, whatever the number of viewers); the page's
//!   script (`assets/event.js`) follows it every few seconds.

use std::collections::HashMap;

use durable_objects::inventory::{Availability, Counts};
use serde::Deserialize;
use shared_types::money::{decimal, money};

use crate::catalog::{self, Answer};
use crate::context::EventCtx;

/// Images shown on the page (the catalog allows 20).
const MAX_IMAGES: usize = 4;

/// The event as the catalog gives it (the fields the page shows).
#[derive(Debug, Deserialize)]
struct Details {
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    genre: String,
    #[serde(default)]
    starts_local: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    venue_name: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    organizer: String,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    tiers: Vec<TierIn>,
    /// The event's series and its next dates (docs/series.md), when it is a date of one.
    #[serde(default)]
    series: Option<SeriesIn>,
}

#[derive(Debug, Deserialize)]
struct SeriesIn {
    id: String,
    /// How many of its dates the catalog lists.
    #[serde(default)]
    dates: u32,
    #[serde(default)]
    next: Vec<DateIn>,
}

/// A date of a series as the catalog gives it (`catalog/series` answers these too).
#[derive(Debug, Clone, Deserialize)]
pub struct DateIn {
    pub id: String,
    #[serde(default)]
    pub starts_local: String,
    #[serde(default)]
    pub day_local: String,
    #[serde(default)]
    pub time_local: String,
    #[serde(default)]
    pub state: String,
}

impl DateIn {
    /// What the date's link says of its sale besides its time: nothing while it sells.
    pub fn note(&self) -> &'static str {
        match self.state.as_str() {
            "sold_out" => "Sold out",
            "published" => "Not on sale yet",
            _ => "",
        }
    }

    /// Only a date whose id is an event id becomes a link.
    pub fn is_linkable(&self) -> bool {
        shared_types::ids::EventId::parse(&self.id).is_ok()
    }
}

/// The other dates of the event's series, as its page shows them.
#[derive(Debug, PartialEq)]
pub struct OtherDates {
    /// The series' page at the edge (`/series/{id}`).
    pub path: String,
    /// How many dates the series has on sale or coming.
    pub total: u32,
    /// Its next dates (this one among them), each with whether it is this one.
    pub dates: Vec<(DateLink, bool)>,
}

/// A date a page links to.
#[derive(Debug, Clone, PartialEq)]
pub struct DateLink {
    pub id: String,
    pub when: String,
    pub note: &'static str,
}

#[derive(Debug, Deserialize)]
struct TierIn {
    id: String,
    name: String,
    kind: String,
    currency: String,
    price_minor: i64,
    #[serde(default)]
    price_range: Option<PriceRange>,
    /// `on_sale`, `not_yet` or `ended` (as of the catalog's answer).
    #[serde(default)]
    sale_state: String,
}

#[derive(Debug, Deserialize)]
struct PriceRange {
    min_minor: i64,
    max_minor: i64,
}

/// The event, as its page shows it.
#[derive(Debug, PartialEq)]
pub struct About {
    pub title: String,
    /// `Fri 12 Jun 2026, 20:00 (Europe/Berlin)`.
    pub when: String,
    /// `Globe Hall, Berlin`.
    pub place: String,
    pub organizer: String,
    pub genre: String,
    /// The description's paragraphs (its lines kept within each).
    pub paragraphs: Vec<String>,
    /// `https` images only: a page served over https shows no other.
    pub images: Vec<String>,
    pub tiers: Vec<TierLine>,
    pub cancelled: bool,
    /// The series' other dates (more than this one), when the event is a date of a series.
    pub dates: Option<OtherDates>,
}

/// What the page's script matches to a seated tier when the snapshot has no counts of its own for
/// it (an inventory from before seated tiers): the event's free seats. Not a tier id (those have
/// no `*`).
pub const ALL_SEATS: &str = "*seats";

/// A tier on the page.
#[derive(Debug, PartialEq)]
pub struct TierLine {
    /// What the page's script matches in the availability snapshot: the tier's id, or
    /// [`ALL_SEATS`].
    pub key: String,
    pub name: String,
    pub seated: bool,
    /// `45.00 EUR`, or `45.00–65.00 EUR` for a seated tier whose zones differ.
    pub price: String,
    pub left: Left,
}

/// How many places of a tier are left, as the page says it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Left {
    /// The snapshot could not be had (the event is not on sale here yet, say).
    Unknown,
    /// Its sale has not started, or is over.
    NotYet,
    Ended,
    SoldOut,
    /// Few enough to say how many.
    Few(u32),
    Plenty,
}

impl Left {
    /// From a tier's counts: "few" is at most 10, or at most a tenth of its capacity.
    fn of(counts: Counts) -> Self {
        match counts.available {
            0 => Left::SoldOut,
            n if n <= 10 || u64::from(n) * 10 <= u64::from(counts.capacity) => Left::Few(n),
            _ => Left::Plenty,
        }
    }

    /// Its sale is not open: the page's script leaves it as it is.
    pub fn is_closed(self) -> bool {
        matches!(self, Left::NotYet | Left::Ended)
    }

    /// What the page says (`assets/event.js` says the same).
    pub fn text(self) -> String {
        match self {
            Left::Unknown => String::new(),
            Left::NotYet => "Not on sale yet".to_owned(),
            Left::Ended => "No longer on sale".to_owned(),
            Left::SoldOut => "Sold out".to_owned(),
            Left::Few(n) => format!("Only {n} left"),
            Left::Plenty => "Available".to_owned(),
        }
    }
}

/// How a page other than the event's own shows the event: its title and first https image in the
/// catalog (kept by `catalog.rs`).
#[derive(Debug, Default)]
pub struct Brand {
    pub title: Option<String>,
    pub image: Option<String>,
    /// `#rrggbb` (the core stores no other; the edge checks again, as it goes into a style).
    pub color: Option<String>,
}

/// `#rrggbb` in lower case, and nothing else.
fn is_color(c: &str) -> bool {
    c.len() == 7 && c.starts_with('#') && c.bytes().skip(1).all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The event's [`Brand`], empty when the catalog has nothing.
pub async fn brand(ev: &EventCtx<'_>) -> Brand {
    #[derive(Deserialize)]
    struct Branded {
        title: String,
        #[serde(default)]
        images: Vec<String>,
        #[serde(default)]
        color: Option<String>,
    }
    let path = format!("/api/v1/catalog/events/{}", ev.event);
    let Ok(Answer::Found(text)) = catalog::get(ev, &path).await else { return Brand::default() };
    match serde_json::from_str::<Branded>(&text) {
        Ok(b) => Brand {
            title: Some(b.title).filter(|t| !t.trim().is_empty()),
            image: b.images.into_iter().find(|u| u.starts_with("https://")),
            color: b.color.filter(|c| is_color(c)),
        },
        Err(_) => Brand::default(),
    }
}

/// What the page says about `ev`'s event, or `None` when the catalog has nothing (or cannot be
/// read: the page then shows the line alone, and the log says why).
pub async fn about(ev: &EventCtx<'_>) -> Option<About> {
    let path = format!("/api/v1/catalog/events/{}", ev.event);
    let text = match catalog::get(ev, &path).await {
        Ok(Answer::Found(text)) => text,
        // `catalog.rs` logs a failure when it asks the core.
        Ok(Answer::Missing) | Err(_) => return None,
    };
    let details: Details = match serde_json::from_str(&text) {
        Ok(details) => details,
        Err(e) => {
            durable_objects::log::error(
                "the catalog's event is not readable",
                serde_json::json!({ "error": e.to_string(), "event": ev.event.as_str() }),
            );
            return None;
        }
    };
    // The snapshot is best effort: an event not yet on sale here has none.
    let availability = match crate::holds::snapshot(ev).await {
        Ok(snapshot) => serde_json::from_str::<Option<Availability>>(&snapshot.counts).ok().flatten(),
        Err(_) => None,
    };
    Some(describe(details, ev.event.as_str(), availability.as_ref()))
}

/// The page's view of `details`, with what `availability` says is left.
fn describe(details: Details, this: &str, availability: Option<&Availability>) -> About {
    let tier_left: HashMap<&str, Counts> = availability
        .map(|a| a.tiers.iter().chain(&a.seated_tiers).map(|(t, c)| (t.as_str(), *c)).collect())
        .unwrap_or_default();
    let seats_left = availability.filter(|a| !a.sections.is_empty()).map(|a| {
        a.sections.iter().fold(Counts::default(), |sum, (_, c)| Counts {
            capacity: sum.capacity + c.capacity,
            available: sum.available + c.available,
            held: sum.held + c.held,
            sold: sum.sold + c.sold,
        })
    });
    let tiers = details
        .tiers
        .iter()
        .map(|t| {
            let seated = t.kind == "seated";
            let (lo, hi) =
                t.price_range.as_ref().map_or((t.price_minor, t.price_minor), |r| (r.min_minor, r.max_minor));
            let price = if lo == hi {
                money(lo, &t.currency)
            } else {
                format!("{}–{}", decimal(lo, &t.currency), money(hi, &t.currency))
            };
            let own = tier_left.get(t.id.as_str()).copied();
            let (key, counts) = match own {
                None if seated => (ALL_SEATS.to_owned(), seats_left),
                _ => (t.id.clone(), own),
            };
            let left = match t.sale_state.as_str() {
                "not_yet" => Left::NotYet,
                "ended" => Left::Ended,
                _ => counts.map_or(Left::Unknown, Left::of),
            };
            TierLine { key, name: t.name.clone(), seated, price, left }
        })
        .collect();
    let dates = details.series.as_ref().and_then(|series| {
        // A series id goes into a link: only one that is a plain id does.
        let plain = crate::series::plain_id(&series.id);
        let links: Vec<(DateLink, bool)> = series
            .next
            .iter()
            .filter(|d| d.is_linkable())
            .map(|d| {
                let link = DateLink { id: d.id.clone(), when: d.starts_local.clone(), note: d.note() };
                (link, d.id == this)
            })
            .collect();
        (plain && (series.dates > 1 || links.iter().any(|(_, current)| !current))).then(|| OtherDates {
            path: format!("/series/{}", series.id),
            total: series.dates,
            dates: links,
        })
    });
    let place = [details.venue_name.trim(), details.city.trim()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let when = match details.time_zone.trim() {
        "" => details.starts_local.clone(),
        zone => format!("{} ({zone})", details.starts_local),
    };
    About {
        title: details.title,
        when,
        place,
        organizer: details.organizer,
        genre: details.genre,
        paragraphs: details
            .description
            .split("\n\n")
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        images: details.images.into_iter().filter(|u| u.starts_with("https://")).take(MAX_IMAGES).collect(),
        tiers,
        cancelled: details.state == "cancelled",
        dates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_types::ids::{EventId, SectionId, TierId};

    fn details() -> Details {
        serde_json::from_value(serde_json::json!({
            "title": "Opening Night", "description": "First.\n\n\n Second,\nstill second. ",
            "starts_local": "Fri 12 Jun 2026, 20:00", "time_zone": "Europe/Berlin",
            "venue_name": "Globe Hall", "city": "Berlin", "organizer": "Acme", "state": "on_sale",
            "images": ["https://img.test/1.jpg", "http://img.test/2.jpg", "javascript:alert(1)"],
            "tiers": [
                { "id": "t-seated", "name": "Standard", "kind": "seated", "currency": "EUR", "price_minor": 4500,
                  "price_range": { "min_minor": 4500, "max_minor": 6500 } },
                { "id": "t-floor", "name": "Floor", "kind": "ga", "currency": "EUR", "price_minor": 3000,
                  "price_range": { "min_minor": 3000, "max_minor": 3000 } },
                { "id": "t-jpy", "name": "Yen", "kind": "ga", "currency": "JPY", "price_minor": 5000 },
            ],
        }))
        .unwrap()
    }

    fn counts(capacity: u32, available: u32) -> Counts {
        Counts { capacity, available, held: 0, sold: capacity - available }
    }

    #[test]
    fn the_page_says_when_where_what_and_for_how_much() {
        let about = describe(details(), "evt", None);
        assert_eq!(about.when, "Fri 12 Jun 2026, 20:00 (Europe/Berlin)");
        assert_eq!(about.place, "Globe Hall, Berlin");
        assert_eq!(about.paragraphs, ["First.", "Second,\nstill second."]);
        assert_eq!(about.images, ["https://img.test/1.jpg"], "only https images");
        let prices: Vec<&str> = about.tiers.iter().map(|t| t.price.as_str()).collect();
        assert_eq!(prices, ["45.00–65.00 EUR", "30.00 EUR", "5000 JPY"]);
        assert!(about.tiers.iter().all(|t| t.left == Left::Unknown));
        assert_eq!(about.tiers[0].key, ALL_SEATS);
    }

    #[test]
    fn what_is_left_comes_from_the_snapshot_seated_tiers_sharing_the_seats() {
        let availability = Availability {
            event: EventId::parse("evt").unwrap(),
            version: 3,
            inventory_version: 1,
            seats: String::new(),
            sections: vec![
                (SectionId::parse("A").unwrap(), counts(100, 40)),
                (SectionId::parse("B").unwrap(), counts(100, 0)),
            ],
            tiers: vec![(TierId::parse("t-floor").unwrap(), counts(500, 0))],
            seated_tiers: vec![],
            waitlist_held: 0,
        };
        let about = describe(details(), "evt", Some(&availability));
        let left: Vec<Left> = about.tiers.iter().map(|t| t.left).collect();
        assert_eq!(left, [Left::Plenty, Left::SoldOut, Left::Unknown]);
        // A seated tier with counts of its own (its capacity) shows them, under its id.
        let with_tiers = Availability {
            seated_tiers: vec![(TierId::parse("t-seated").unwrap(), counts(30, 3))],
            ..availability
        };
        let about = describe(details(), "evt", Some(&with_tiers));
        assert_eq!((about.tiers[0].key.as_str(), about.tiers[0].left), ("t-seated", Left::Few(3)));
        // A tier whose sale has not started or is over says so, whatever is left.
        let mut closed = details();
        closed.tiers[0].sale_state = "ended".into();
        closed.tiers[1].sale_state = "not_yet".into();
        let about = describe(closed, "evt", Some(&with_tiers));
        assert_eq!((about.tiers[0].left, about.tiers[1].left), (Left::Ended, Left::NotYet));
        assert_eq!(Left::of(counts(200, 20)), Left::Few(20), "a tenth of the capacity is few");
        assert_eq!(Left::of(counts(1000, 11)), Left::Few(11));
        assert_eq!(Left::of(counts(1000, 101)), Left::Plenty);
        assert_eq!(Left::Few(3).text(), "Only 3 left");
    }

    #[test]
    fn a_date_of_a_series_links_its_other_dates_and_marks_its_own() {
        let mut d = details();
        d.series = Some(
            serde_json::from_value(serde_json::json!({
                "id": "0b8f7c52-8a3e-4c7e-9d1e-3f2a1b0c9d8e", "dates": 14,
                "next": [
                    { "id": "evt", "starts_local": "Sat 2 Jan 2027, 10:00", "state": "on_sale" },
                    { "id": "evt-2", "starts_local": "Sat 2 Jan 2027, 12:00", "state": "sold_out" },
                    { "id": "not an id!", "starts_local": "x", "state": "on_sale" },
                ],
            }))
            .unwrap(),
        );
        let about = describe(d, "evt", None);
        let dates = about.dates.expect("other dates");
        assert_eq!(dates.path, "/series/0b8f7c52-8a3e-4c7e-9d1e-3f2a1b0c9d8e");
        assert_eq!(dates.total, 14);
        let shown: Vec<(&str, &str, bool)> =
            dates.dates.iter().map(|(l, current)| (l.id.as_str(), l.note, *current)).collect();
        assert_eq!(shown, [("evt", "", true), ("evt-2", "Sold out", false)], "no link from a bad id");
        // A series of one date, this one, has no other dates to show; nor one whose id is no id.
        let mut alone = details();
        alone.series = Some(
            serde_json::from_value(serde_json::json!({
            "id": "0b8f7c52-aaaa-4c7e-9d1e-3f2a1b0c9d8e", "dates": 1, "next": [{ "id": "evt", "starts_local": "x", "state": "on_sale" }] }))
            .unwrap(),
        );
        assert_eq!(describe(alone, "evt", None).dates, None);
        let mut bad = details();
        bad.series = Some(serde_json::from_value(serde_json::json!({
            "id": "\"><script>", "dates": 3, "next": [{ "id": "evt-2", "starts_local": "x", "state": "on_sale" }] })).unwrap());
        assert_eq!(describe(bad, "evt", None).dates, None);
        assert_eq!(describe(details(), "evt", None).dates, None, "not a date of a series");
    }

    #[test]
    fn only_a_plain_colour_goes_into_the_waiting_pages_style() {
        assert!(is_color("#1a7f37"));
        for bad in ["#1A7F37", "#abc", "red", "#1a7f37;}body{display:none", "#1a7f3", ""] {
            assert!(!is_color(bad), "{bad}");
        }
    }
}
