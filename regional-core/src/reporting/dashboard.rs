//! The organizers' live dashboard, served by the core as plain HTML with server-drawn SVG charts
//! and one small script that refreshes the live panel (no build step, no framework).
//!
//! - `GET  /dashboard`                      sign-in (an API key), then the organization's events
//! - `POST /dashboard/sign-in`              form `key`: checked like a bearer key, kept in a cookie
//! - `POST /dashboard/sign-out`
//! - `GET  /dashboard/events/{id}`          one event's sale: sold vs capacity, sales per minute,
//!   the waiting room (waiting, admission rate, average wait, refusals), revenue, per tier
//! - `GET  /dashboard/events/{id}/live`     the live panel alone (what the script swaps in)
//! - `GET  /dashboard/assets/{dashboard.js,dashboard.css}`
//!
//! The cookie holds the key itself (HttpOnly, SameSite=Strict, Path=/dashboard, Secure off
//! loopback), so each request is authenticated by the same code, role and tenant checks as the API
//! and a revoked key signs the dashboard out at once. Figures come from [`super::report_of`] (the
//! projections, read from the replica when there is one) and the edge's picture.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{report_of, EventReport};
use crate::auth::{authenticate, Caller, Permission};
use crate::error::{ApiError, Result};
use crate::models::event::{find_event, local_time};
use crate::state::AppState;
use crate::templates;
use shared_types::money::decimal;

const COOKIE: &str = "ticketing_dashboard";
/// A sign-in lasts a working day.
const COOKIE_MAX_AGE_SECS: u32 = 8 * 3600;
/// The live panel refreshes this often (the script reads it from the page).
pub const REFRESH_SECS: u32 = 5;
/// Minutes in the sales chart.
const CHART_MINUTES: i64 = 60;

const SCRIPT: &str = include_str!("../../templates/dashboard/dashboard.js");
const STYLE: &str = include_str!("../../templates/dashboard/dashboard.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/sign-in", post(sign_in))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/events/{id}", get(event_page))
        .route("/dashboard/events/{id}/live", get(live_panel))
        .route("/dashboard/assets/dashboard.js", get(|| asset(SCRIPT, "text/javascript; charset=utf-8")))
        .route("/dashboard/assets/dashboard.css", get(|| asset(STYLE, "text/css; charset=utf-8")))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// The page `template` rendered with `context`, with the dashboard's headers.
fn page(status: StatusCode, template: &str, context: impl Serialize) -> Result<Response> {
    Ok(html(status, templates::render(template, context)?))
}

/// The key in the dashboard's cookie, if any.
fn cookie_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The signed-in organizer, or why not.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Caller> {
    let key = cookie_key(headers).ok_or(ApiError::Unauthorized("missing"))?;
    let caller = authenticate(&state.db, Some(&format!("Bearer {key}"))).await?;
    caller.require(Permission::Read)?;
    Ok(caller)
}

/// Secure cookies except on loopback, where the local stack speaks plain HTTP.
fn secure(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    !matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

fn set_cookie(value: &str, max_age: u32, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/dashboard; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn sign_in_page(status: StatusCode, problem: Option<&str>) -> Result<Response> {
    let hours = COOKIE_MAX_AGE_SECS / 3600;
    page(
        status,
        "dashboard/sign_in.html",
        json!({ "title": "Sign in", "signed_in": false, "problem": problem, "hours": hours }),
    )
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response> {
    let key = form.key.trim();
    let checked = authenticate(&state.db, Some(&format!("Bearer {key}"))).await;
    match checked.and_then(|c| c.require(Permission::Read).map(|()| c)) {
        Ok(_) => {
            let mut resp = Redirect::to("/dashboard").into_response();
            resp.headers_mut()
                .insert(header::SET_COOKIE, set_cookie(key, COOKIE_MAX_AGE_SECS, secure(&headers)));
            Ok(resp)
        }
        Err(ApiError::Unauthorized(_)) => sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("This key is not valid (unknown, revoked or disabled)."),
        ),
        Err(ApiError::Forbidden(_)) => {
            sign_in_page(StatusCode::FORBIDDEN, Some("This key's role may not read reports."))
        }
        Err(e) => Err(e),
    }
}

async fn sign_out(headers: HeaderMap) -> Response {
    let mut resp = Redirect::to("/dashboard").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, secure(&headers)));
    resp
}

/// Signed in: the events; else the sign-in form.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let caller = match signed_in(&state, &headers).await {
        Ok(c) => c,
        Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_)) => {
            return sign_in_page(StatusCode::OK, None);
        }
        Err(e) => return Err(e),
    };
    let platform = caller.role == crate::auth::Role::PlatformAdmin;
    let events: Vec<(Uuid, String, String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT id, title, state, starts_at, time_zone FROM events
         WHERE ($1 OR organization_id = $2) ORDER BY starts_at DESC LIMIT 200",
    )
    .bind(platform)
    .bind(caller.organization_id)
    .fetch_all(&state.read_db)
    .await?;
    let events: Vec<Value> = events
        .iter()
        .map(|(id, title, state, starts, tz)| {
            json!({ "id": id, "title": title, "state": state, "starts": local_time(*starts, tz, "%Y-%m-%d %H:%M %Z") })
        })
        .collect();
    page(
        StatusCode::OK,
        "dashboard/events.html",
        json!({ "title": "Events", "signed_in": true, "events": events }),
    )
}

/// `GET /dashboard/events/{id}`.
async fn event_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = match signed_in(&state, &headers).await {
        Ok(c) => c,
        Err(ApiError::Unauthorized(_)) => return Ok(Redirect::to("/dashboard").into_response()),
        Err(e) => return Err(e),
    };
    let event = match find_event(&state.read_db, &caller, &id).await {
        Ok(e) => e,
        Err(ApiError::NotFound) => {
            let context = json!({ "title": "No such event", "signed_in": true });
            return page(StatusCode::NOT_FOUND, "dashboard/message.html", context);
        }
        Err(e) => return Err(e),
    };
    let schedule = &event.details.schedule;
    let live = live_view(&state, event.id, &schedule.time_zone).await?;
    let context = json!({
        "title": event.details.title,
        "signed_in": true,
        "id": event.id,
        "starts": schedule.local(schedule.starts_at, "%Y-%m-%d %H:%M %Z"),
        "state": format!("{:?}", event.state).to_lowercase(),
        "refresh_secs": REFRESH_SECS,
        "live": live,
    });
    page(StatusCode::OK, "dashboard/event.html", context)
}

/// `GET /dashboard/events/{id}/live`: the panel alone.
async fn live_panel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = signed_in(&state, &headers).await?;
    let event = find_event(&state.read_db, &caller, &id).await?;
    let live = live_view(&state, event.id, &event.details.schedule.time_zone).await?;
    page(StatusCode::OK, "dashboard/live.html", json!({ "live": live }))
}

/// Tickets sold per minute over the last [`CHART_MINUTES`] minutes.
async fn sales_per_minute(db: &sqlx::PgPool, event: Uuid, now: DateTime<Utc>) -> Result<Vec<i64>> {
    let end = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let start = end - Duration::minutes(CHART_MINUTES - 1);
    let rows: Vec<(DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT minute, sum(tickets_sold)::int8 FROM report_tier_minute
         WHERE event_id = $1 AND minute >= $2 GROUP BY minute",
    )
    .bind(event)
    .bind(start)
    .fetch_all(db)
    .await?;
    let mut per_minute = vec![0i64; CHART_MINUTES as usize];
    for (minute, n) in rows {
        let i = (minute - start).num_minutes();
        if (0..CHART_MINUTES).contains(&i) {
            per_minute[i as usize] += n;
        }
    }
    Ok(per_minute)
}

/// The live panel's figures: what `dashboard/live.html` draws.
#[derive(Serialize)]
struct Live {
    sold: i64,
    capacity: i64,
    bar: Bar,
    held: String,
    gross: String,
    net: String,
    chart: Chart,
    queue: Option<Queue>,
    waitlist: Option<Waitlist>,
    edge_error: String,
    orders: Orders,
    tiers: Vec<TierRow>,
    generated_at: String,
    generated: String,
}

/// Sold and held against capacity, as widths of a 300-wide bar.
#[derive(Serialize)]
struct Bar {
    sold: String,
    held: String,
    held_count: u64,
}

/// Bars of tickets per minute, oldest first, with the scale's top.
#[derive(Serialize)]
struct Chart {
    width: f64,
    height: f64,
    minutes: usize,
    total: i64,
    top: i64,
    bars: Vec<ChartBar>,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct ChartBar {
    minute: usize,
    tickets: i64,
    x: String,
    y: String,
    width: String,
    height: String,
}

#[derive(Serialize)]
struct Queue {
    phase: String,
    waiting: u64,
    active: u64,
    admit_rate: String,
    average_wait: String,
    refusals: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Waitlist {
    state: &'static str,
    waiting: u64,
    offers_out: u64,
    made: u64,
    claimed: u64,
    lapsed: u64,
    declined: u64,
    /// Entries per what they asked for (a tier by its name, seats, or any), by state.
    by_pool: Vec<WaitlistPool>,
}

#[derive(Serialize)]
struct WaitlistPool {
    asked: String,
    waiting: u64,
    offered: u64,
    claimed: u64,
    lapsed: u64,
    declined: u64,
    left: u64,
}

#[derive(Serialize)]
struct Orders {
    paid: i64,
    abandoned: i64,
    hold_to_order: String,
    conversion: String,
}

#[derive(Serialize)]
struct TierRow {
    id: String,
    name: String,
    sold: i64,
    held: String,
    available: String,
    capacity: i64,
    gross: String,
}

/// The live panel: figures, the sales chart, the line, the tiers.
async fn live_view(state: &AppState, event: Uuid, tz: &str) -> Result<Live> {
    let now = Utc::now();
    let (report, per_minute) =
        tokio::join!(report_of(state, event), sales_per_minute(&state.read_db, event, now));
    let (report, per_minute) = (report?, per_minute?);
    let capacity: i64 = report.tiers.iter().map(|t| t.capacity).sum();
    let sold: i64 = report.tiers.iter().map(|t| t.live_tickets).sum();
    let held: Option<u64> = report.tiers.iter().map(|t| t.held).sum();
    let opt = |v: Option<u64>| v.map_or("–".into(), |v| v.to_string());
    let mut chart = chart(&per_minute);
    chart.from = local_time(now - Duration::minutes(CHART_MINUTES - 1), tz, "%H:%M");
    chart.to = local_time(now, tz, "%H:%M");
    let queue = report.waiting_room.as_ref().map(|q| Queue {
        phase: q.phase.clone(),
        waiting: q.waiting,
        active: q.active,
        admit_rate: format!("{:.0}", q.admitted_per_minute),
        average_wait: format!("{:.0} s", q.average_wait_seconds),
        refusals: q.refusals.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    });
    let waitlist = report.waitlist.as_ref().map(|w| {
        let n = |k: &str| w.offers.get(k).copied().unwrap_or(0);
        Waitlist {
            state: if w.closed {
                "closed"
            } else if w.enabled {
                "open"
            } else {
                "off"
            },
            waiting: w.waiting,
            offers_out: w.offers_out,
            made: n("made"),
            claimed: n("claimed"),
            lapsed: n("lapsed"),
            declined: n("declined"),
            by_pool: w
                .by_pool
                .iter()
                .map(|(pool, states)| {
                    let k = |state: &str| states.get(state).copied().unwrap_or(0);
                    let tier = report.tiers.iter().find(|t| t.tier_id.to_string() == *pool);
                    WaitlistPool {
                        asked: tier.map_or_else(|| pool.clone(), |t| t.name.clone()),
                        waiting: k("waiting"),
                        offered: k("offered"),
                        claimed: k("claimed"),
                        lapsed: k("lapsed"),
                        declined: k("declined"),
                        left: k("left"),
                    }
                })
                .collect(),
        }
    });
    let orders = Orders {
        paid: report.orders.paid,
        abandoned: report.orders.abandoned,
        hold_to_order: report.hold_to_order.map_or("–".into(), |r| format!("{:.0} %", r * 100.0)),
        conversion: format!("{:.0} %", report.conversion * 100.0),
    };
    let tiers = report
        .tiers
        .iter()
        .map(|t| TierRow {
            id: t.tier_id.to_string(),
            name: t.name.clone(),
            sold: t.live_tickets,
            held: opt(t.held),
            available: opt(t.available),
            capacity: t.capacity,
            gross: format!("{} {}", decimal(t.figures.gross_minor, &t.currency), t.currency),
        })
        .collect();
    Ok(Live {
        sold,
        capacity,
        bar: sold_bar(sold, held.unwrap_or(0), capacity),
        held: opt(held),
        gross: money_by_currency(&report, |t| t.figures.gross_minor),
        net: money_by_currency(&report, |t| t.figures.net_minor),
        chart,
        edge_error: report.edge.error.clone().unwrap_or_default(),
        queue,
        waitlist,
        orders,
        tiers,
        generated_at: now.to_rfc3339(),
        generated: local_time(now, tz, "%H:%M:%S %Z"),
    })
}

/// Money per currency (`1,234.50 EUR`), for tiers in several currencies.
fn money_by_currency(report: &EventReport, f: impl Fn(&super::TierReport) -> i64) -> String {
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for t in &report.tiers {
        *sums.entry(t.currency.as_str()).or_default() += f(t);
    }
    if sums.is_empty() {
        return "–".into();
    }
    sums.iter().map(|(c, m)| format!("{} {c}", decimal(*m, c))).collect::<Vec<_>>().join(" + ")
}

fn sold_bar(sold: i64, held: u64, capacity: i64) -> Bar {
    let cap = capacity.max(1) as f64;
    let s = (sold as f64 / cap * 300.0).clamp(0.0, 300.0);
    let h = (held as f64 / cap * 300.0).clamp(0.0, 300.0 - s);
    Bar { sold: format!("{s:.1}"), held: format!("{h:.1}"), held_count: held }
}

fn chart(per_minute: &[i64]) -> Chart {
    let (width, height) = (600.0, 160.0);
    let top = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let step = width / per_minute.len().max(1) as f64;
    let bars = per_minute
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| {
            let bh = n as f64 / top as f64 * (height - 16.0);
            ChartBar {
                minute: i,
                tickets: n,
                x: format!("{:.1}", i as f64 * step + 1.0),
                y: format!("{:.1}", height - bh),
                width: format!("{:.1}", (step - 2.0).max(1.0)),
                height: format!("{bh:.1}"),
            }
        })
        .collect();
    Chart {
        width,
        height,
        minutes: per_minute.len(),
        total: per_minute.iter().sum(),
        top,
        bars,
        from: String::new(),
        to: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_back() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; ticketing_dashboard=tk_abc_def; b=2"));
        assert_eq!(cookie_key(&h).as_deref(), Some("tk_abc_def"));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!secure(&h));
        h.insert(header::HOST, HeaderValue::from_static("tickets.example.com"));
        assert!(secure(&h));
    }

    #[test]
    fn the_chart_scales_to_the_busiest_minute() {
        let chart = chart(&[0, 2, 4, 0]);
        assert_eq!((chart.total, chart.top, chart.bars.len()), (6, 4, 2));
        let mut live = json!({
            "sold": 1, "capacity": 2, "bar": sold_bar(1, 0, 2), "held": "0", "gross": "–", "net": "–",
            "chart": chart, "queue": null, "waitlist": null, "edge_error": "<down>", "tiers": [], "generated_at": "",
            "generated": "", "orders": { "paid": 0, "abandoned": 0, "hold_to_order": "–", "conversion": "0 %" },
        });
        let svg = templates::render("dashboard/live.html", json!({ "live": live })).unwrap();
        assert!(svg.contains("data-total=\"6\"") && svg.contains("4/min"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 3 + 2, "the bar's three, the chart's two");
        assert!(svg.contains("unavailable: &lt;down&gt;"));
        assert!(!svg.contains("Waiting list"), "no list, no section");
        live["waitlist"] = json!({ "state": "open", "waiting": 3, "offers_out": 1, "made": 4, "claimed": 2, "lapsed": 1, "declined": 0,
                                   "by_pool": [{ "asked": "Floor", "waiting": 3, "offered": 1, "claimed": 2, "lapsed": 1, "declined": 0, "left": 0 }] });
        let html = templates::render("dashboard/live.html", json!({ "live": live })).unwrap();
        assert!(html.contains("<h2>Waiting list</h2>"), "{html}");
        let waiting = html.find(r#"data-figure="waitlist-waiting""#).map(|i| &html[i..i + 40]);
        assert!(waiting.is_some_and(|w| w.contains(">3<")), "{html}");
        let lapsed = html.find(r#"data-figure="waitlist-lapsed""#).map(|i| &html[i..i + 40]);
        assert!(lapsed.is_some_and(|w| w.contains(">1<")), "{lapsed:?}");
        let by_pool = html.find(r#"data-figure="waitlist-by-pool""#).map(|i| &html[i..]);
        assert!(
            by_pool.is_some_and(|t| t.contains("<td>Floor</td><td>3</td><td>1</td><td>2</td>")),
            "{html}"
        );
    }
}
