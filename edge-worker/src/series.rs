//! `GET /series/{id}`: a series' dates (docs/series.md), for a buyer to pick one: the dates on
//! sale or coming, grouped by day in the venue's time zone, each linking to its own page (its own
//! line). `?from=YYYY-MM-DD` starts at a day (the venue's); `?after=` is the catalog's cursor of the next page.
//! From the core's public catalog (`GET /api/v1/catalog/series/{id}`), kept by each isolate as
//! every catalog answer is (`catalog.rs`).

use askama::Template;
use serde::Deserialize;
use worker::{Request, Response};

use crate::about::DateIn;
use crate::catalog::{self, Answer};
use crate::context::{Ctx, Result};
use crate::home::date;
use crate::pages::{page, Message};

/// Dates on one page (ten days of six slots).
const PAGE: u32 = 60;
/// The longest cursor passed on to the core (its cursors are far shorter).
const MAX_CURSOR: usize = 200;

#[derive(Debug, Deserialize)]
struct SeriesIn {
    title: String,
    #[serde(default)]
    venue_name: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    organizer: String,
    #[serde(default)]
    dates: u32,
    #[serde(default)]
    items: Vec<DateIn>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// One day of the series' dates.
#[derive(Debug)]
struct Day {
    day: String,
    dates: Vec<DateIn>,
}

#[derive(Template)]
#[template(path = "series.html")]
struct SeriesPage {
    title: String,
    refresh: Option<u64>,
    place: String,
    organizer: String,
    total: u32,
    from: String,
    days: Vec<Day>,
    /// The next page's address, when there is one.
    later: Option<String>,
}

/// A series id as it may go into a path: a UUID's characters (pages link no other).
pub(crate) fn plain_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A cursor as it may be passed on: the core's base64url text.
fn plain_cursor(cursor: &str) -> bool {
    (1..=MAX_CURSOR).contains(&cursor.len())
        && cursor.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

/// The dates, grouped by their day (they come by start).
fn by_day(dates: Vec<DateIn>) -> Vec<Day> {
    let mut days: Vec<Day> = Vec::new();
    for d in dates.into_iter().filter(DateIn::is_linkable) {
        match days.last_mut() {
            Some(last) if last.day == d.day_local => last.dates.push(d),
            _ => days.push(Day { day: d.day_local.clone(), dates: vec![d] }),
        }
    }
    days
}

/// `GET /series/{id}`.
pub async fn series_page(cx: &Ctx<'_>, req: &Request, id: &str) -> Result<Response> {
    let not_found = || {
        page(404, &Message { title: "No such series", refresh: None, message: "There is no sale here." }, &[])
    };
    if !plain_id(id) {
        return not_found();
    }
    let (mut from, mut after) = (String::new(), None);
    for (k, v) in req.url()?.query_pairs() {
        match k.as_ref() {
            "from" if date(&v).is_some() => from = v.into_owned(),
            "after" if plain_cursor(&v) => after = Some(v.into_owned()),
            _ => {}
        }
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("limit", &PAGE.to_string());
    if !from.is_empty() {
        // The core reads the day in the series' time zone (the venue's day).
        query.append_pair("from_day", &from);
    }
    if let Some(after) = &after {
        query.append_pair("cursor", after);
    }
    let path = format!("/api/v1/catalog/series/{id}?{}", query.finish());
    let text = match catalog::get(cx, &path).await {
        Ok(Answer::Found(text)) => text,
        Ok(Answer::Missing) => return not_found(),
        // Logged where it failed (`catalog.rs`).
        Err(_) => {
            let message = Message {
                title: "The dates cannot be shown right now",
                refresh: Some(10),
                message: "Please try again in a moment.",
            };
            let mut resp = page(503, &message, &[])?;
            resp.headers_mut().set("retry-after", "10")?;
            return Ok(resp);
        }
    };
    let series: SeriesIn = serde_json::from_str(&text).map_err(|e| {
        durable_objects::log::error(
            "the catalog's series is not readable",
            serde_json::json!({ "error": e.to_string() }),
        );
        worker::Error::RustError(format!("the catalog's series: {e}"))
    })?;
    let later = series.next_cursor.as_deref().filter(|c| plain_cursor(c)).map(|c| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if !from.is_empty() {
            q.append_pair("from", &from);
        }
        q.append_pair("after", c);
        format!("/series/{id}?{}", q.finish())
    });
    let place = [series.venue_name.trim(), series.city.trim()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let view = SeriesPage {
        title: series.title,
        refresh: None,
        place,
        organizer: series.organizer,
        total: series.dates,
        from,
        days: by_day(series.items),
        later,
    };
    let mut resp = page(200, &view, &[])?;
    // The same for every visitor: kept by browsers as long as by the isolate.
    resp.headers_mut().set("cache-control", "public, max-age=30")?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date_in(id: &str, day: &str, time: &str) -> DateIn {
        serde_json::from_value(
            serde_json::json!({ "id": id, "day_local": day, "time_local": time, "state": "on_sale" }),
        )
        .unwrap()
    }

    #[test]
    fn dates_group_by_their_day_and_only_ids_become_links() {
        let days = by_day(vec![
            date_in("a", "Sat 2 Jan 2027", "10:00"),
            date_in("b", "Sat 2 Jan 2027", "12:00"),
            date_in("<x>", "Sat 2 Jan 2027", "14:00"),
            date_in("c", "Sun 3 Jan 2027", "10:00"),
        ]);
        let shape: Vec<(&str, Vec<&str>)> = days
            .iter()
            .map(|d| (d.day.as_str(), d.dates.iter().map(|x| x.time_local.as_str()).collect()))
            .collect();
        assert_eq!(shape, [("Sat 2 Jan 2027", vec!["10:00", "12:00"]), ("Sun 3 Jan 2027", vec!["10:00"])]);
    }

    #[test]
    fn only_plain_ids_and_cursors_are_passed_on() {
        assert!(plain_id("0b8f7c52-8a3e-4c7e-9d1e-3f2a1b0c9d8e"));
        for bad in ["", "x/../y", "0b8f7c52?limit=1", &"a".repeat(65)] {
            assert!(!plain_id(bad), "{bad}");
        }
        assert!(plain_cursor("eyJhdCI6IjIwMjctMDEtMDJUMTA6MDA6MDBaIn0"));
        for bad in ["", "a&limit=200", "a b", &"a".repeat(201)] {
            assert!(!plain_cursor(bad), "{bad}");
        }
    }
}
