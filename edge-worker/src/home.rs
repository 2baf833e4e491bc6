//! `GET /`: the shop's front page. Events not yet over from the core's public catalog
//! (`GET /api/v1/catalog/events`), searchable by words, city, genre and dates (whole days in UTC),
//! each linking to its event's page. A crowd on the front page costs the core little: each
//! isolate keeps the core's answer to a search (`catalog.rs`: 30 s, an older answer when the core
//! fails; searches that differ only in case or spacing are one), and the page may be kept by
//! browsers as long.

use askama::Template;
use serde::Deserialize;
use worker::{Request, Response};

use crate::catalog::{self, Answer};
use crate::context::{Ctx, Result};
use crate::web;

/// Events on the page.
const PAGE: u32 = 24;

/// An event as the catalog lists it (the fields the page shows).
#[derive(Debug, Clone, Deserialize)]
struct Listed {
    id: String,
    title: String,
    #[serde(default)]
    genre: String,
    #[serde(default)]
    starts_local: String,
    #[serde(default)]
    venue_name: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    state: String,
    /// A date of a series (listed once, at its first date found): its series and how many dates
    /// it lists.
    #[serde(default)]
    series_id: Option<String>,
    #[serde(default)]
    series_dates: Option<u32>,
}

impl Listed {
    /// The series' page, when the event is one of several dates of a series with a plain id.
    fn series_path(&self) -> Option<String> {
        let id = self.series_id.as_deref()?;
        (crate::series::plain_id(id) && self.series_dates.unwrap_or(0) > 1).then(|| format!("/series/{id}"))
    }
}

#[derive(Deserialize)]
struct Listing {
    items: Vec<Listed>,
}

/// What the buyer searched for, each part bounded and checked (a part that is not valid is left
/// out, never passed on).
#[derive(Debug, Default, PartialEq)]
struct Search {
    q: String,
    city: String,
    genre: String,
    /// `YYYY-MM-DD`, as `<input type="date">` sends it.
    from: String,
    to: String,
}

/// `value` without control characters, its runs of white space as one space, at most
/// `max_bytes` bytes (cut at a character's boundary: the core counts bytes).
fn bounded(value: &str, max_bytes: usize) -> String {
    let mut out = String::new();
    for word in value.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        let sep = usize::from(!out.is_empty());
        if word.is_empty() || out.len() + sep >= max_bytes {
            continue;
        }
        if sep == 1 {
            out.push(' ');
        }
        for c in word.chars() {
            if out.len() + c.len_utf8() > max_bytes {
                break;
            }
            out.push(c);
        }
    }
    out
}

/// `(year, month, day)` of a real calendar date written `YYYY-MM-DD`.
pub(crate) fn date(value: &str) -> Option<(u32, u32, u32)> {
    let b = value.as_bytes();
    // Digits and the two dashes only: `parse` alone would take `+1` for a month.
    let shape =
        b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if b.len() != 10 || !shape {
        return None;
    }
    let (y, m, d) = (value[..4].parse().ok()?, value[5..7].parse().ok()?, value[8..].parse().ok()?);
    ((2000..=2999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in(y, m)).then_some((y, m, d))
}

fn days_in(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The day after a date, as `YYYY-MM-DD`.
fn next_day((y, m, d): (u32, u32, u32)) -> String {
    let (y, m, d) = if d < days_in(y, m) {
        (y, m, d + 1)
    } else if m < 12 {
        (y, m + 1, 1)
    } else {
        (y + 1, 1, 1)
    };
    format!("{y:04}-{m:02}-{d:02}")
}

impl Search {
    fn from_url(url: &worker::Url) -> Self {
        let mut s = Search::default();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "q" => s.q = bounded(&v, 200),
                // The core compares these without case: one cache entry for every spelling.
                "city" => s.city = bounded(&v, 100).to_lowercase(),
                "genre" => s.genre = bounded(&v, 50).to_lowercase(),
                "from" if date(&v).is_some() => s.from = v.into_owned(),
                "to" if date(&v).is_some() => s.to = v.into_owned(),
                _ => {}
            }
        }
        s
    }

    /// The core's query string for this search (also the cache's key): dates are whole days in
    /// UTC, `to` included (the core's `to` is exclusive: the next day's start).
    fn core_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [("q", &self.q), ("city", &self.city), ("genre", &self.genre)] {
            if !value.is_empty() {
                q.append_pair(name, value);
            }
        }
        if !self.from.is_empty() {
            q.append_pair("from", &format!("{}T00:00:00Z", self.from));
        }
        if let Some(to) = date(&self.to) {
            q.append_pair("to", &format!("{}T00:00:00Z", next_day(to)));
        }
        // A series' dates once, at the first the search finds: its page lists the others.
        q.append_pair("one_per_series", "true");
        q.append_pair("limit", &PAGE.to_string());
        q.finish()
    }

    fn is_empty(&self) -> bool {
        *self == Search::default()
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    title: String,
    refresh: Option<u64>,
    search: Search,
    events: Vec<Listed>,
    unavailable: bool,
}

/// The events the catalog lists for `query` (kept by `catalog.rs`); why not, in words.
async fn listed(cx: &Ctx<'_>, query: &str) -> std::result::Result<Vec<Listed>, String> {
    let Answer::Found(text) = catalog::get(cx, &format!("/api/v1/catalog/events?{query}")).await? else {
        return Err("the catalog has no event listing".to_owned());
    };
    let listing: Listing = serde_json::from_str(&text).map_err(|e| {
        let e = format!("the catalog's answer: {e}");
        durable_objects::log::error(
            "the catalog's listing is not readable",
            serde_json::json!({ "error": e }),
        );
        e
    })?;
    // Only ids that are ids reach a link.
    Ok(listing.items.into_iter().filter(|e| shared_types::ids::EventId::parse(&e.id).is_ok()).collect())
}

/// `GET /`: the events, or the search's.
pub async fn home(cx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let search = Search::from_url(&req.url()?);
    let (events, unavailable) = match listed(cx, &search.core_query()).await {
        Ok(events) => (events, false),
        // Logged where it failed (`catalog.rs`, or above), once rather than for every view.
        Err(_) => (Vec::new(), true),
    };
    let title =
        if search.is_empty() { "Events".to_owned() } else { format!("Events found: {}", events.len()) };
    let page = Home { title, refresh: None, search, events, unavailable };
    let body = page.render().map_err(|e| worker::Error::RustError(format!("template: {e}")))?;
    let mut resp = web::html(if unavailable { 503 } else { 200 }, body, &[])?;
    if unavailable {
        resp.headers_mut().set("retry-after", "5")?;
    } else {
        // The same for every visitor (no cookie, nothing personal): a browser may keep it as long
        // as the isolate does (so at most a minute old in all).
        resp.headers_mut().set("cache-control", "public, max-age=30")?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(query: &str) -> Search {
        Search::from_url(&worker::Url::parse(&format!("https://shop.test/?{query}")).unwrap())
    }

    #[test]
    fn a_search_is_bounded_checked_and_passed_on_as_the_cores_query() {
        let s = search("q=+jazz+++night+&city=Berlin&genre=&from=2027-03-01&to=2027-03-31&x=1");
        assert_eq!(s.q, "jazz night");
        assert_eq!(
            s.core_query(),
            "q=jazz+night&city=berlin&from=2027-03-01T00%3A00%3A00Z&to=2027-04-01T00%3A00%3A00Z&one_per_series=true&limit=24"
        );
        let bad = search("from=2027-3-1&to=2027-02-29&q=%0Aevil");
        assert_eq!((bad.from.as_str(), bad.to.as_str(), bad.q.as_str()), ("", "", "evil"));
        assert_eq!(
            search("to=2028-02-29").core_query(),
            "to=2028-03-01T00%3A00%3A00Z&one_per_series=true&limit=24"
        );
        assert_eq!(
            search("to=2027-12-31").core_query(),
            "to=2028-01-01T00%3A00%3A00Z&one_per_series=true&limit=24"
        );
        assert_eq!(search(&format!("q={}", "a".repeat(500))).q.len(), 200);
        // Bytes, not characters, and never half a character.
        let cyrillic = search(&format!("q={}", "ж".repeat(150))).q;
        assert!(cyrillic.len() <= 200 && cyrillic.chars().all(|c| c == 'ж'), "{}", cyrillic.len());
        assert!(search("").is_empty() && search("").core_query() == "one_per_series=true&limit=24");
    }

    #[test]
    fn a_date_is_digits_and_dashes_only() {
        assert_eq!(date("2027-03-01"), Some((2027, 3, 1)));
        // Found by a review: `u32::from_str` takes a leading `+`.
        for bad in ["2027-+3-01", "2027-03-+1", "+027-03-01", "2027-03-1 ", "2027/03/01", "2027-02-29"] {
            assert_eq!(date(bad), None, "{bad:?}");
        }
    }
}
