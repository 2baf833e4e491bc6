//! The buyer's pages: askama templates (`edge-worker/templates/`, checked when the Worker is
//! compiled, escaped by default) with their scripts and style sheet as files (`assets/`, served by
//! `assets.rs`). Readable by a screen reader, usable from the keyboard, and working without
//! JavaScript where they can (the waiting page updates in place with `refresh.js`, or refreshes
//! itself with a `<meta http-equiv="refresh">` in `<noscript>`; scripts solve the proof of work,
//! animate the clock, draw the seat map and talk to the API).
//!
//! - `GET  /events/{event}`       the event (`about.rs`: details, tiers, prices, what is left) and
//!   its line: join form, or place and wait, or on to the purchase page (`Accept:
//!   application/json` gets the line's state as JSON)
//! - `POST /events/{event}/join`  the join form
//! - `GET  /events/{event}/buy`   the purchase page (admitted buyers): hold, check out, pay
//! - `GET  /orders/{order}`       the buyer's order (needs JavaScript: the order token stays in the
//!   browser)
//! - `GET  /transfers/{transfer}` a ticket offered to the visitor
//!
//! Why askama: the templates are compiled into the Worker, so a mistake in one fails the build, not
//! a sale, and the wasm carries no template engine.

use askama::Template;
use durable_objects::http;
use serde_json::json;
use shared_types::waiting_room::{BotCheck, Phase, QueueStatus, RoomView, StatusState};
use shared_types::Problem;
use worker::{Request, Response};

use crate::about::{about, About, Brand};
use crate::context::{EventCtx, Result, Stop};
use crate::i18n::{self, Strings};
use crate::room::credentials::{credentials, held_admission, Credentials};
use crate::room::line::{self, Challenge, Standing};
use crate::room::{api, view};
use crate::web::{self, duration, secs_until};

/// A countdown to `until_ms`, animated by `clock.js`.
struct Clock {
    until_ms: i64,
    left: String,
}

impl Clock {
    fn to(until_ms: i64) -> Self {
        Self { until_ms, left: duration(secs_until(until_ms)) }
    }
}

/// What the line is doing, as the landing page tells it.
enum Line {
    /// Sold out; with the event's waiting list when it keeps one.
    SoldOut {
        waitlist: Option<WaitlistBox>,
    },
    Closed,
    NotOpen {
        opens_in: String,
    },
    Open {
        countdown: Option<Clock>,
        waiting: u64,
        check: Check,
    },
}

impl Line {
    /// The bot check of the page's form (the line's join, or the waiting list's), whose scripts
    /// the page loads.
    fn check(&self) -> Option<&Check> {
        match self {
            Line::Open { check, .. } => Some(check),
            Line::SoldOut { waitlist: Some(w) } => Some(&w.check),
            _ => None,
        }
    }
}

/// The waiting list on a sold-out event's page: the visitor's entry, or the form to join.
struct WaitlistBox {
    /// Where the visitor's entry stands, said in a sentence.
    entry: Option<String>,
    /// Their entry is live: they may leave (and not join again).
    live: bool,
    check: Check,
    /// What one may wait for: (`wants` value, label).
    options: Vec<(String, String)>,
    max: u32,
}

/// What the join form carries.
enum Check {
    Plain,
    ProofOfWork { challenge: String, difficulty: u8 },
    Turnstile { site_key: String },
}

#[derive(Template)]
#[template(path = "landing.html")]
struct Landing {
    title: String,
    refresh: Option<u64>,
    name: String,
    event: String,
    /// The catalog's details, tiers and what is left (`about.rs`), when it has them.
    about: Option<About>,
    error: Option<(String, String)>,
    line: Line,
}

/// Where a buyer in line stands, as the waiting page tells it.
enum Place {
    SoldOut,
    Closed,
    BeforeTheStart { countdown: Option<Clock> },
    InLine { position: String, wait: String, percent: u32, percent_text: String, paused: bool },
}

#[derive(Template)]
#[template(path = "waiting.html")]
struct Waiting {
    title: String,
    refresh: Option<u64>,
    /// The words, in the visitor's language (`i18n.rs`).
    t: &'static Strings,
    heading: String,
    /// The event's image from the catalog (https only).
    image: Option<String>,
    /// The page's one inline style: the event's colour, as `--brand` (allowed by its hash).
    style: Option<String>,
    place: Place,
    updates: String,
}

#[derive(Template)]
#[template(path = "buy.html")]
struct Buy<'a> {
    title: String,
    refresh: Option<u64>,
    name: &'a str,
    event: &'a str,
    max_tickets: u32,
    clock: Clock,
}

/// A page whose content its script fetches (`assets/order.js`, `assets/transfer.js`).
#[derive(Template)]
#[template(path = "app.html")]
struct App<'a> {
    title: &'static str,
    refresh: Option<u64>,
    /// `order` or `transfer`: the box's id and its data attribute, which the script
    /// (`{kind}.js`) reads.
    kind: &'static str,
    id: &'a str,
    /// What the page shows, as a sentence ends: `your order`.
    what: &'static str,
    script: &'static str,
}

/// The app pages: (kind, title, what it shows, script).
const ORDER_APP: (&str, &str, &str, &str) = ("order", "Your order", "your order", "order.js");
const TRANSFER_APP: (&str, &str, &str, &str) = ("transfer", "A ticket for you", "the offer", "transfer.js");
const OFFER_APP: (&str, &str, &str, &str) = ("offer", "Places for you", "your offer", "offer.js");
const MINE_APP: (&str, &str, &str, &str) = ("mine", "My tickets", "your orders", "mine.js");

fn app_page(
    id: &str,
    (kind, title, what, script): (&'static str, &'static str, &'static str, &'static str),
) -> Result<Response> {
    page(200, &App { title, refresh: None, kind, id, what, script }, &[])
}

#[derive(Template)]
#[template(path = "message.html")]
pub(crate) struct Message {
    pub(crate) title: &'static str,
    pub(crate) refresh: Option<u64>,
    pub(crate) message: &'static str,
}

/// A rendered page, with the headers every page carries.
pub(crate) fn page(status: u16, template: &impl Template, cookies: &[String]) -> Result<Response> {
    let body = template.render().map_err(|e| worker::Error::RustError(format!("template: {e}")))?;
    web::html(status, body, cookies)
}

fn no_such_event() -> Result<Response> {
    page(404, &Message { title: "No such event", refresh: None, message: "There is no sale here." }, &[])
}

/// What the pages call the event: its name when the organizer's settings give one, else its id.
fn event_name<'a>(ev: &'a EventCtx<'_>, view: Option<&'a RoomView>) -> &'a str {
    view.map(|v| v.settings.display_name.trim()).filter(|n| !n.is_empty()).unwrap_or(ev.event.as_str())
}

/// The landing page: the line's state, an error from a refused step, and the join form.
fn landing(
    ev: &EventCtx<'_>,
    view: &RoomView,
    about: Option<About>,
    challenge: Option<Challenge>,
    error: Option<&Problem>,
    entry: Option<serde_json::Value>,
) -> Landing {
    // The organizer's name for the line, else the catalog's title, else the id.
    let name = match (&about, view.settings.display_name.trim()) {
        (Some(a), "") => a.title.clone(),
        _ => event_name(ev, Some(view)).to_owned(),
    };
    let check_of = |challenge: Option<Challenge>| match (&view.settings.bot.check, challenge) {
        (BotCheck::ProofOfWork { .. }, Some(Challenge { challenge: Some(c), difficulty: Some(d), .. })) => {
            Check::ProofOfWork { challenge: c, difficulty: d }
        }
        (BotCheck::Turnstile { site_key }, _) => Check::Turnstile { site_key: site_key.clone() },
        _ => Check::Plain,
    };
    let (title, refresh, line) = match view.phase {
        Phase::SoldOut => {
            let waitlist = view.settings.waitlist.enabled.then(|| {
                let mut options = vec![("any".to_owned(), "Any tickets".to_owned())];
                let tiers = about.as_ref().map(|a| a.tiers.as_slice()).unwrap_or_default();
                if tiers.iter().any(|t| t.seated) {
                    options.push(("seats".to_owned(), "Seats".to_owned()));
                }
                for t in tiers.iter().filter(|t| !t.seated) {
                    options.push((format!("tier:{}", t.key), format!("{} (standing)", t.name)));
                }
                let said = entry.map(entry_sentence);
                WaitlistBox {
                    live: said.as_ref().is_some_and(|s| s.1),
                    entry: said.map(|s| s.0),
                    check: check_of(challenge),
                    options,
                    max: view.settings.max_tickets_per_buyer,
                }
            });
            ("Sold out".to_owned(), None, Line::SoldOut { waitlist })
        }
        Phase::Closed => ("Line closed".to_owned(), None, Line::Closed),
        Phase::BeforeOpening => {
            let left = secs_until(view.settings.pre_queue_opens_at_ms.unwrap_or_default());
            let line = Line::NotOpen { opens_in: duration(left) };
            ("The line is not open yet".to_owned(), Some(left.clamp(1, 30)), line)
        }
        _ => {
            let countdown =
                view.settings.on_sale_at_ms.filter(|&s| s > durable_objects::now_ms()).map(Clock::to);
            let check = check_of(challenge);
            (format!("Join the line: {name}"), None, Line::Open { countdown, waiting: view.waiting, check })
        }
    };
    Landing {
        title,
        refresh,
        name,
        event: ev.event.to_string(),
        about,
        error: error.map(|p| (p.title.clone(), p.detail.clone().unwrap_or_default())),
        line,
    }
}

/// Where a visitor's waiting-list entry stands, as the page says it; and whether it is live.
fn entry_sentence(entry: serde_json::Value) -> (String, bool) {
    let number = entry["number"].as_u64().unwrap_or(0);
    match entry["state"].as_str().unwrap_or_default() {
        "waiting" => (
            format!(
                "You are on the waiting list (number {number}): {} ahead of you. We will write when places come back.",
                entry["position"].as_u64().map_or(0, |p| p.saturating_sub(1))
            ),
            true,
        ),
        "offered" => ("Places are held for you: follow the link in the mail we sent to buy them.".to_owned(), true),
        "claimed" => ("You bought the places the waiting list offered you.".to_owned(), false),
        "lapsed" => ("The places offered to you went to the next person when their time ran out.".to_owned(), false),
        "declined" => ("You said no to the places offered; they went to the next person.".to_owned(), false),
        _ => ("You left the waiting list.".to_owned(), false),
    }
}

/// The landing page, with a fresh challenge when the event asks for proof of work.
async fn landing_page(
    ev: &EventCtx<'_>,
    req: &Request,
    view: &RoomView,
    refused: Option<Stop>,
) -> Result<Response> {
    let (status, error) = match refused {
        None => (200, None),
        // The step cannot go further (expired turn, left, refused join…): say why, offer to join again.
        Some(Stop::Answer(mut resp)) => {
            (resp.status_code(), durable_objects::http::answer_json::<Problem>(&mut resp).await.ok())
        }
        Some(fault @ Stop::Fault(_)) => return Err(fault),
    };
    // A sold-out event's waiting list: the visitor's entry, and the form's puzzle.
    let waitlist = view.phase == Phase::SoldOut && view.settings.waitlist.enabled;
    // The list unreachable: the page shows the form (a join then says what is wrong).
    let entry = if waitlist { crate::waitlist::entry_of(ev, req).await.unwrap_or(None) } else { None };
    let live_entry =
        entry.as_ref().is_some_and(|e| matches!(e["state"].as_str(), Some("waiting" | "offered")));
    let wants_challenge = (view.phase.accepts_joins() || (waitlist && !live_entry))
        && matches!(view.settings.bot.check, BotCheck::ProofOfWork { .. });
    let challenge = async {
        if !wants_challenge {
            return Ok(None);
        }
        // A refused challenge (this address's rate, say) leaves the form without one; the join
        // then says why.
        match line::challenge(ev, req).await {
            Ok(issued) => Ok(Some(issued)),
            Err(Stop::Answer(_)) => Ok(None),
            Err(fault) => Err(fault),
        }
    };
    // The catalog and the snapshot are asked while the challenge is made.
    let (about, challenge) = futures_util::future::join(about(ev), challenge).await;
    let (challenge, cookies) = match challenge? {
        Some((issued, cookie)) => (Some(issued), cookie.into_iter().collect()),
        None => (None, Vec::new()),
    };
    let mut resp = page(status, &landing(ev, view, about, challenge, error.as_ref(), entry), &cookies)?;
    web::allow_https_images(&mut resp)?;
    Ok(resp)
}

/// The waiting page of someone in line, with the event's name and image.
fn waiting(
    ev: &EventCtx<'_>,
    view: &RoomView,
    status: &QueueStatus,
    brand: Brand,
    t: &'static Strings,
) -> Waiting {
    let place = match status.state {
        StatusState::SoldOut => Place::SoldOut,
        StatusState::Closed => Place::Closed,
        StatusState::PreQueue => Place::BeforeTheStart { countdown: status.on_sale_at_ms.map(Clock::to) },
        _ => {
            let percent = ((status.progress * 100.0).round() as u32).min(100);
            Place::InLine {
                position: status.position.map_or(t.place_unknown.to_owned(), |p| p.to_string()),
                wait: status.estimated_wait_seconds.map_or(t.wait_unknown.to_owned(), duration),
                percent,
                percent_text: i18n::fill(t.progress_text, &[("percent", &percent.to_string())]),
                paused: status.state == StatusState::Paused,
            }
        }
    };
    let name = match (brand.title, view.settings.display_name.trim()) {
        (Some(title), "") => title,
        _ => event_name(ev, Some(view)).to_owned(),
    };
    let poll_secs = u64::from(status.poll_after_seconds);
    Waiting {
        title: i18n::fill(t.title, &[("name", &name)]),
        refresh: Some(poll_secs),
        t,
        heading: i18n::fill(t.heading, &[("name", &name)]),
        image: brand.image,
        style: brand.color.map(|c| format!(":root{{--brand:{c}}}")),
        place,
        updates: i18n::fill(t.updates_itself, &[("secs", &poll_secs.to_string())]),
    }
}

/// `GET /events/{event}`.
pub async fn event_page(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    // The caller's tokens are read and verified once; every branch below works from them.
    let credentials = credentials(ev, req).await?;
    if web::wants_json(req)? {
        if !matches!(credentials, Credentials::None(..)) {
            return api::status_of(ev, req, credentials).await;
        }
        let view = crate::room::view_or_404(ev).await?;
        let mut resp = http::json(
            200,
            &json!({
                "event": view.event,
                "phase": view.phase,
                "on_sale_at_ms": view.settings.on_sale_at_ms,
                "waiting": view.waiting,
                "admit_rate_per_minute": view.admit_rate_per_minute,
                "join": format!("/api/v1/events/{}/queue", ev.event),
                // Sold out with a waiting list: where to join it instead (docs/api.md).
                "waitlist": (view.settings.waitlist.enabled && view.phase == Phase::SoldOut)
                    .then(|| format!("/api/v1/events/{}/waitlist", ev.event)),
            }),
        )?;
        resp.headers_mut().set("cache-control", "public, max-age=1")?;
        return Ok(resp);
    }
    let Some(view) = view(ev.env, &ev.event).await? else { return no_such_event() };
    // Sold out with a waiting list: everyone sees the list (those who held a place in line too:
    // they are whom it is for).
    let listing = view.phase == Phase::SoldOut && view.settings.waitlist.enabled;
    if listing || matches!(credentials, Credentials::None(..)) {
        return landing_page(ev, req, &view, None).await;
    }
    match line::standing(ev, req, credentials).await {
        Ok(Standing::Admitted { cookie, .. }) => {
            web::see_other(&format!("/events/{}/buy", ev.event), cookie.as_slice())
        }
        Ok(Standing::Waiting { status, .. }) => {
            let brand = crate::about::brand(ev).await;
            let t = i18n::negotiate(req.headers().get("accept-language")?.as_deref());
            let page_of = waiting(ev, &view, &status, brand, t);
            let mut resp = page(200, &page_of, &[])?;
            web::allow(&mut resp, page_of.image.is_some(), page_of.style.as_deref())?;
            let headers = resp.headers_mut();
            headers.set("content-language", t.code)?;
            headers.set("vary", "Accept-Language")?;
            Ok(resp)
        }
        Err(refused) => landing_page(ev, req, &view, Some(refused)).await,
    }
}

/// `POST /events/{event}/join` (the form).
pub async fn join_form(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    match line::join(ev, &mut req).await {
        Ok((_, cookies)) => web::see_other(&format!("/events/{}", ev.event), &cookies),
        Err(refused) => match view(ev.env, &ev.event).await? {
            Some(view) => landing_page(ev, &req, &view, Some(refused)).await,
            None => no_such_event(),
        },
    }
}

/// `POST /events/{event}/waitlist` (the sold-out page's form): joins the waiting list, then back
/// to the page (which shows the place); a refusal is shown on the page.
pub async fn waitlist_form(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    match crate::waitlist::enter(ev, &mut req).await {
        Ok((_, cookie)) => web::see_other(&format!("/events/{}", ev.event), &[cookie]),
        Err(refused) => match view(ev.env, &ev.event).await? {
            Some(view) => landing_page(ev, &req, &view, Some(refused)).await,
            None => no_such_event(),
        },
    }
}

/// `POST /events/{event}/waitlist/leave` (the page's button): leaves the list, back to the page.
pub async fn waitlist_leave_form(ev: &EventCtx<'_>, req: Request) -> Result<Response> {
    match crate::waitlist::leave(ev, &req).await {
        Ok(_) => web::see_other(&format!("/events/{}", ev.event), &[]),
        Err(refused) => match view(ev.env, &ev.event).await? {
            Some(view) => landing_page(ev, &req, &view, Some(refused)).await,
            None => no_such_event(),
        },
    }
}

/// `GET /events/{event}/buy`: the purchase page for an admitted buyer (seat choice comes later).
pub async fn buy_page(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let Some((_, claims)) = held_admission(ev, req).await? else {
        return web::see_other(&format!("/events/{}", ev.event), &[]);
    };
    let view = view(ev.env, &ev.event).await?;
    let named = view.as_deref().is_some_and(|v| !v.settings.display_name.trim().is_empty());
    let title = if named { None } else { crate::about::brand(ev).await.title };
    let name = title.as_deref().unwrap_or_else(|| event_name(ev, view.as_deref()));
    let buy = Buy {
        title: format!("Buy tickets: {name}"),
        refresh: None,
        name,
        event: ev.event.as_str(),
        max_tickets: claims.extra.max_tickets,
        clock: Clock::to(claims.exp * 1000),
    };
    page(200, &buy, &[])
}

/// `GET /orders/{id}`: the buyer's order page. The order token comes from the fragment (or this
/// tab's storage); the script asks `/api/v1/orders/{id}` and follows the order until it is final.
pub fn order_page(order: &str) -> Result<Response> {
    app_page(order, ORDER_APP)
}

/// `GET /transfers/{id}`: a ticket offered to the visitor. The transfer token comes from the
/// fragment of the mail's link; the script shows the offer, accepts or declines it, and then shows
/// the ticket's QR code.
pub fn transfer_page(transfer: &str) -> Result<Response> {
    app_page(transfer, TRANSFER_APP)
}

/// `GET /my-tickets`: a buyer's orders and the tickets given to them, from a sign-in link (its
/// token in the fragment); without one, the form that mails such a link (docs/privacy.md).
pub fn my_tickets_page() -> Result<Response> {
    app_page("", MINE_APP)
}

/// `GET /events/{event}/offer`: a waiting list's offer, from the mail's link (the offer token in
/// the fragment); the script takes it and opens the purchase page at the places held.
pub fn offer_page(ev: &EventCtx<'_>) -> Result<Response> {
    app_page(ev.event.as_str(), OFFER_APP)
}
