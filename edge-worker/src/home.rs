//! `GET /`: the shop's front page. Events not yet over from the core's public catalog
//! (`GET /api/v1/catalog/events`), searchable by words, city, genre and dates (whole days in UTC),
//! each linking to its event's page. A crowd on the front page costs the core little: each
//! isolate keeps the core's answer to a search for [`TTL_MS`] (at most [`MAX_CACHED`] searches, the
//! oldest dropped first; searches that differ only in case or spacing are one), and the page may
//! be kept by browsers as long. The core gets [`CORE_TIMEOUT_MS`] to answer; when it does not, or
//! fails, an answer kept from earlier (up to [`STALE_MS`] old) is shown rather than nothing.
//!
//! Not yet: concurrent misses of one search in an isolate each ask the core (no shared in-flight
//! request), and a failure is not remembered.

use std::cell::RefCell;
use std::collections::HashMap;

use askama::Template;
use serde::Deserialize;
use worker::{Fetch, Headers, Method, Request, RequestInit, Response};

use crate::context::{Ctx, Result};
use crate::web;

/// How long an isolate keeps the core's answer to one search (the core's own `max-age`).
const TTL_MS: f64 = 30_000.0;
/// How old a kept answer may be to stand in when the core fails.
const STALE_MS: f64 = 600_000.0;
/// How long the core gets to answer.
const CORE_TIMEOUT_MS: u64 = 3_000;
/// The largest answer read from the core (24 events with their descriptions fit many times over).
const MAX_ANSWER: usize = 1024 * 1024;
/// Searches one isolate keeps answers for.
const MAX_CACHED: usize = 256;
/// Events on the page.
const PAGE: u32 = 24;

thread_local! {
    /// The core's answers by search (the core's query string), with when they were fetched.
    static CATALOG: RefCell<HashMap<String, (f64, Vec<Listed>)>> = RefCell::new(HashMap::new());
}

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
fn date(value: &str) -> Option<(u32, u32, u32)> {
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
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

/// The catalog's answer to `query`: from this isolate's cache, else from the core, else (the core
/// failing) an older kept answer; why not, in words.
async fn listed(cx: &Ctx<'_>, query: &str) -> std::result::Result<Vec<Listed>, String> {
    let now = durable_objects::now_ms() as f64;
    let kept = CATALOG.with(|c| c.borrow().get(query).cloned());
    if let Some((at, events)) = &kept {
        if now - at < TTL_MS {
            return Ok(events.clone());
        }
    }
    let fetched = match crate::health::with_timeout(CORE_TIMEOUT_MS, ask_core(cx, query)).await {
        Some(answer) => answer,
        None => Err(format!("the core did not answer within {CORE_TIMEOUT_MS} ms")),
    };
    match (fetched, kept) {
        (Ok(events), _) => {
            CATALOG.with(|c| {
                let mut c = c.borrow_mut();
                c.retain(|_, (at, _)| now - *at < STALE_MS);
                if c.len() >= MAX_CACHED {
                    if let Some(oldest) =
                        c.iter().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).map(|(k, _)| k.clone())
                    {
                        c.remove(&oldest);
                    }
                }
                c.insert(query.to_owned(), (now, events.clone()));
            });
            Ok(events)
        }
        (Err(e), Some((at, events))) if now - at < STALE_MS => {
            durable_objects::log::error(
                "the catalog could not be read; an older answer shown",
                serde_json::json!({ "error": e }),
            );
            Ok(events)
        }
        (Err(e), _) => Err(e),
    }
}

async fn ask_core(cx: &Ctx<'_>, query: &str) -> std::result::Result<Vec<Listed>, String> {
    let core = crate::settings::CORE_URL.read(cx.env).ok_or("CORE_URL is not configured")?;
    let fail = |e: worker::Error| e.to_string();
    let headers = Headers::new();
    headers.set("accept", "application/json").map_err(fail)?;
    if let Ok(trace) = web::trace_onward() {
        headers.set("traceparent", &trace.to_string()).map_err(fail)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let url = format!("{}/api/v1/catalog/events?{query}", core.trim_end_matches('/'));
    let request = Request::new_with_init(&url, &init).map_err(fail)?;
    let mut resp = Fetch::Request(request).send().await.map_err(fail)?;
    if resp.status_code() != 200 {
        return Err(format!("the catalog answered {}", resp.status_code()));
    }
    let body = resp.bytes().await.map_err(fail)?;
    if body.len() > MAX_ANSWER {
        return Err(format!("the catalog's answer is too large ({} bytes)", body.len()));
    }
    let listing: Listing = serde_json::from_slice(&body).map_err(|e| format!("the catalog's answer: {e}"))?;
    // Only ids that are ids reach a link.
    Ok(listing.items.into_iter().filter(|e| shared_types::ids::EventId::parse(&e.id).is_ok()).collect())
}

/// `GET /`: the events, or the search's.
pub async fn home(cx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let search = Search::from_url(&req.url()?);
    let (events, unavailable) = match listed(cx, &search.core_query()).await {
        Ok(events) => (events, false),
        Err(e) => {
            durable_objects::log::error("the catalog could not be read", serde_json::json!({ "error": e }));
            (Vec::new(), true)
        }
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
            "q=jazz+night&city=berlin&from=2027-03-01T00%3A00%3A00Z&to=2027-04-01T00%3A00%3A00Z&limit=24"
        );
        let bad = search("from=2027-3-1&to=2027-02-29&q=%0Aevil");
        assert_eq!((bad.from.as_str(), bad.to.as_str(), bad.q.as_str()), ("", "", "evil"));
        assert_eq!(search("to=2028-02-29").core_query(), "to=2028-03-01T00%3A00%3A00Z&limit=24");
        assert_eq!(search("to=2027-12-31").core_query(), "to=2028-01-01T00%3A00%3A00Z&limit=24");
        assert_eq!(search(&format!("q={}", "a".repeat(500))).q.len(), 200);
        // Bytes, not characters, and never half a character.
        let cyrillic = search(&format!("q={}", "ж".repeat(150))).q;
        assert!(cyrillic.len() <= 200 && cyrillic.chars().all(|c| c == 'ж'), "{}", cyrillic.len());
        assert!(search("").is_empty() && search("").core_query() == "limit=24");
    }
}
