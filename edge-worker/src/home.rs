//! `GET /`: the shop's front page. Upcoming and on-sale events from the core's public catalog
//! (`GET /api/v1/catalog/events`), searchable by words, city, genre and dates, each linking to its
//! event's page. A crowd on the front page costs the core little: each isolate keeps the core's
//! answer to a search for [`TTL_MS`] (at most [`MAX_CACHED`] searches, the oldest dropped first),
//! and the page may be kept by browsers and caches as long.

use std::cell::RefCell;
use std::collections::HashMap;

use askama::Template;
use serde::Deserialize;
use worker::{Fetch, Headers, Method, Request, RequestInit, Response};

use crate::context::{Ctx, Result};
use crate::web;

/// How long an isolate keeps the core's answer to one search (the core's own `max-age`).
const TTL_MS: f64 = 30_000.0;
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

fn bounded(value: &str, max_chars: usize) -> String {
    value.trim().chars().filter(|c| !c.is_control()).take(max_chars).collect()
}

fn is_date(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

impl Search {
    fn from_url(url: &worker::Url) -> Self {
        let mut s = Search::default();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "q" => s.q = bounded(&v, 200),
                "city" => s.city = bounded(&v, 100),
                "genre" => s.genre = bounded(&v, 50),
                "from" if is_date(&v) => s.from = v.into_owned(),
                "to" if is_date(&v) => s.to = v.into_owned(),
                _ => {}
            }
        }
        s
    }

    /// The core's query string for this search (also the cache's key): dates are whole days in
    /// UTC, `to` included.
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
        if !self.to.is_empty() {
            q.append_pair("to", &format!("{}T23:59:59.999Z", self.to));
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
    title: &'static str,
    refresh: Option<u64>,
    search: Search,
    events: Vec<Listed>,
    unavailable: bool,
}

/// The catalog's answer to `query`, from this isolate's cache or the core; why not, in words.
async fn listed(cx: &Ctx<'_>, query: &str) -> std::result::Result<Vec<Listed>, String> {
    let now = durable_objects::now_ms() as f64;
    let cached =
        CATALOG.with(|c| c.borrow().get(query).filter(|(at, _)| now - at < TTL_MS).map(|(_, e)| e.clone()));
    if let Some(events) = cached {
        return Ok(events);
    }
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
    let events = resp.json::<Listing>().await.map_err(fail)?.items;
    CATALOG.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|_, (at, _)| now - *at < TTL_MS);
        if c.len() >= MAX_CACHED {
            if let Some(oldest) = c.iter().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).map(|(k, _)| k.clone()) {
                c.remove(&oldest);
            }
        }
        c.insert(query.to_owned(), (now, events.clone()));
    });
    Ok(events)
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
    let title = if search.is_empty() { "Events" } else { "Events found" };
    let page = Home { title, refresh: None, search, events, unavailable };
    let body = page.render().map_err(|e| worker::Error::RustError(format!("template: {e}")))?;
    let mut resp = web::html(if unavailable { 503 } else { 200 }, body, &[])?;
    if !unavailable {
        // The same for every visitor (no cookie, nothing personal): cacheable as long as the
        // isolate keeps it.
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
        let s = search("q=+jazz+night+&city=Berlin&genre=&from=2027-03-01&to=2027-03-31&x=1");
        assert_eq!(s.q, "jazz night");
        assert_eq!(
            s.core_query(),
            "q=jazz+night&city=Berlin&from=2027-03-01T00%3A00%3A00Z&to=2027-03-31T23%3A59%3A59.999Z&limit=24"
        );
        let bad = search("from=2027-3-1&to=tomorrow&q=%0Aevil");
        assert_eq!((bad.from.as_str(), bad.to.as_str(), bad.q.as_str()), ("", "", "evil"));
        assert_eq!(search(&format!("q={}", "a".repeat(500))).q.len(), 200);
        assert!(search("").is_empty() && search("").core_query() == "limit=24");
    }
}
