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
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use uuid::Uuid;

use super::{report_of, EventReport};
use crate::auth::{authenticate, Caller, Permission};
use crate::error::ApiError;
use crate::models::event::find_event;
use crate::money::decimal;
use crate::state::AppState;

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

/// Text made safe for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Ticketing dashboard</title><link rel=\"stylesheet\" href=\"/dashboard/assets/dashboard.css\">\
         </head><body>{body}</body></html>",
        esc(title)
    )
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
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
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

fn sign_in_page(problem: Option<&str>) -> String {
    let problem =
        problem.map(|p| format!("<p class=\"problem\" role=\"alert\">{}</p>", esc(p))).unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<main class=\"narrow\"><h1>Organizer dashboard</h1>{problem}\
             <form method=\"post\" action=\"/dashboard/sign-in\">\
             <label for=\"key\">API key</label>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" required placeholder=\"tk_…\">\
             <button type=\"submit\">Sign in</button></form>\
             <p class=\"note\">Any key of your organization with read access. It is kept in a cookie \
             only this dashboard receives, until you sign out or for {} hours.</p></main>",
            COOKIE_MAX_AGE_SECS / 3600
        ),
    )
}

#[derive(Deserialize)]
struct SignIn {
    key: String,
}

async fn sign_in(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    let key = form.key.trim();
    let checked = authenticate(&state.db, Some(&format!("Bearer {key}"))).await;
    match checked.and_then(|c| c.require(Permission::Read).map(|()| c)) {
        Ok(_) => {
            let mut resp = Redirect::to("/dashboard").into_response();
            resp.headers_mut()
                .insert(header::SET_COOKIE, set_cookie(key, COOKIE_MAX_AGE_SECS, secure(&headers)));
            resp
        }
        Err(ApiError::Unauthorized(_)) => html(
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("This key is not valid (unknown, revoked or disabled).")),
        ),
        Err(ApiError::Forbidden(_)) => {
            html(StatusCode::FORBIDDEN, sign_in_page(Some("This key's role may not read reports.")))
        }
        Err(e) => e.into_response(),
    }
}

async fn sign_out(headers: HeaderMap) -> Response {
    let mut resp = Redirect::to("/dashboard").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, set_cookie("", 0, secure(&headers)));
    resp
}

/// Signed in: the events; else the sign-in form.
async fn home(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = match signed_in(&state, &headers).await {
        Ok(c) => c,
        Err(ApiError::Unauthorized(_) | ApiError::Forbidden(_)) => {
            return Ok(html(StatusCode::OK, sign_in_page(None)));
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
    let mut rows = String::new();
    for (id, title, state, starts, tz) in &events {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/dashboard/events/{id}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(title),
            esc(state),
            esc(&local(*starts, tz, "%Y-%m-%d %H:%M %Z"))
        );
    }
    if events.is_empty() {
        rows.push_str("<tr><td colspan=\"3\">No events yet.</td></tr>");
    }
    Ok(html(
        StatusCode::OK,
        page(
            "Events",
            &format!(
                "{}<main><h1>Events</h1><table><thead><tr><th>Event</th><th>State</th><th>Starts</th></tr></thead>\
                 <tbody>{rows}</tbody></table></main>",
                header_bar()
            ),
        ),
    ))
}

fn header_bar() -> String {
    "<header><a href=\"/dashboard\">Dashboard</a><form method=\"post\" action=\"/dashboard/sign-out\">\
     <button type=\"submit\" class=\"link\">Sign out</button></form></header>"
        .into()
}

fn local(at: DateTime<Utc>, tz: &str, format: &str) -> String {
    match tz.parse::<Tz>() {
        Ok(tz) => at.with_timezone(&tz).format(format).to_string(),
        Err(_) => at.format(format).to_string(),
    }
}

/// `GET /dashboard/events/{id}`.
async fn event_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = match signed_in(&state, &headers).await {
        Ok(c) => c,
        Err(ApiError::Unauthorized(_)) => return Ok(Redirect::to("/dashboard").into_response()),
        Err(e) => return Err(e),
    };
    let event = match find_event(&state.read_db, &caller, &id).await {
        Ok(e) => e,
        Err(ApiError::NotFound) => {
            return Ok(html(
                StatusCode::NOT_FOUND,
                page("Not found", &format!("{}<main><h1>No such event</h1></main>", header_bar())),
            ))
        }
        Err(e) => return Err(e),
    };
    let panel = live_html(&state, event.id, &event.time_zone).await?;
    let body = format!(
        "{}<main><h1>{}</h1><p class=\"sub\">{} · {}</p>\
         <div id=\"live\" data-src=\"/dashboard/events/{}/live\" data-refresh-secs=\"{REFRESH_SECS}\">{panel}</div>\
         <p class=\"note\" id=\"refresh-state\" aria-live=\"polite\"></p></main>\
         <script src=\"/dashboard/assets/dashboard.js\"></script>",
        header_bar(),
        esc(&event.title),
        esc(&local(event.starts_at, &event.time_zone, "%Y-%m-%d %H:%M %Z")),
        esc(&format!("{:?}", event.state).to_lowercase()),
        event.id,
    );
    Ok(html(StatusCode::OK, page(&event.title, &body)))
}

/// `GET /dashboard/events/{id}/live`: the panel alone.
async fn live_panel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = signed_in(&state, &headers).await?;
    let event = find_event(&state.read_db, &caller, &id).await?;
    Ok(html(StatusCode::OK, live_html(&state, event.id, &event.time_zone).await?))
}

/// Tickets sold per minute over the last [`CHART_MINUTES`] minutes.
async fn sales_per_minute(db: &sqlx::PgPool, event: Uuid, now: DateTime<Utc>) -> Result<Vec<i64>, ApiError> {
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

/// The live panel: figures, the sales chart, the line, the tiers.
async fn live_html(state: &AppState, event: Uuid, tz: &str) -> Result<String, ApiError> {
    let now = Utc::now();
    let (report, per_minute) =
        tokio::join!(report_of(state, event), sales_per_minute(&state.read_db, event, now));
    let (report, per_minute) = (report?, per_minute?);
    let mut out = String::new();
    let capacity: i64 = report.tiers.iter().map(|t| t.capacity).sum();
    let sold: i64 = report.tiers.iter().map(|t| t.live_tickets).sum();
    let held: Option<u64> = report.tiers.iter().map(|t| t.held).sum();
    let _ = write!(
        out,
        "<section class=\"cards\">{}{}{}{}</section>",
        card("Sold", "sold", &format!("{sold} / {capacity}"), &sold_bar(sold, held.unwrap_or(0), capacity)),
        card("Held now", "held", &held.map_or("–".into(), |h| h.to_string()), ""),
        card("Revenue (gross)", "gross", &money_by_currency(&report, |t| t.figures.gross_minor), ""),
        card("Net after refunds", "net", &money_by_currency(&report, |t| t.figures.net_minor), ""),
    );
    let _ = write!(
        out,
        "<section><h2>Tickets sold per minute</h2>{}<p class=\"axis\"><span>{}</span><span>{}</span></p></section>",
        chart(&per_minute),
        esc(&local(now - Duration::minutes(CHART_MINUTES - 1), tz, "%H:%M")),
        esc(&local(now, tz, "%H:%M")),
    );
    out.push_str(&queue_html(&report));
    out.push_str(&orders_html(&report));
    out.push_str(&tiers_html(&report));
    let _ = write!(
        out,
        "<p class=\"note\">Figures at <time data-figure=\"generated\" datetime=\"{}\">{}</time>.</p>",
        now.to_rfc3339(),
        esc(&local(now, tz, "%H:%M:%S %Z"))
    );
    Ok(out)
}

fn card(label: &str, figure: &str, value: &str, extra: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\" data-figure=\"{figure}\">{}</div>{extra}</div>",
        esc(label),
        esc(value)
    )
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

/// Sold and held against capacity, as a bar.
fn sold_bar(sold: i64, held: u64, capacity: i64) -> String {
    let cap = capacity.max(1) as f64;
    let s = (sold as f64 / cap * 300.0).clamp(0.0, 300.0);
    let h = (held as f64 / cap * 300.0).clamp(0.0, 300.0 - s);
    format!(
        "<svg class=\"bar\" viewBox=\"0 0 300 12\" role=\"img\" aria-label=\"{sold} sold and {held} held of {capacity}\">\
         <rect width=\"300\" height=\"12\" class=\"free\"/><rect width=\"{s:.1}\" height=\"12\" class=\"sold\"/>\
         <rect x=\"{s:.1}\" width=\"{h:.1}\" height=\"12\" class=\"held\"/></svg>"
    )
}

/// Bars of tickets per minute, oldest first, with the scale's top.
fn chart(per_minute: &[i64]) -> String {
    let (w, h) = (600.0, 160.0);
    let top = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let step = w / per_minute.len().max(1) as f64;
    let mut bars = String::new();
    for (i, &n) in per_minute.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bh = n as f64 / top as f64 * (h - 16.0);
        let _ = write!(
            bars,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" data-minute=\"{i}\"><title>{n}</title></rect>",
            i as f64 * step + 1.0,
            h - bh,
            (step - 2.0).max(1.0)
        );
    }
    let total: i64 = per_minute.iter().sum();
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{total} tickets in the last {} minutes, at most {top} a minute\" data-figure=\"chart\" data-total=\"{total}\">\
         <line x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" class=\"axis\"/><text x=\"2\" y=\"11\" class=\"scale\">{top}/min</text>{bars}</svg>",
        per_minute.len()
    )
}

fn queue_html(report: &EventReport) -> String {
    let Some(q) = &report.waiting_room else {
        let why = report.edge.error.clone().unwrap_or_default();
        return format!(
            "<section><h2>Waiting room</h2><p class=\"problem\" data-figure=\"edge-unavailable\">The edge's figures are unavailable: {}</p></section>",
            esc(&why)
        );
    };
    let mut refusals = String::new();
    for (reason, n) in &q.refusals {
        let _ = write!(
            refusals,
            "<tr><td>{}</td><td data-refusal=\"{}\">{n}</td></tr>",
            esc(reason),
            esc(reason)
        );
    }
    if refusals.is_empty() {
        refusals.push_str("<tr><td colspan=\"2\">None</td></tr>");
    }
    format!(
        "<section><h2>Waiting room</h2><section class=\"cards\">{}{}{}{}{}</section>\
         <h3>Refused, by reason</h3><table class=\"small\"><tbody>{refusals}</tbody></table></section>",
        card("Phase", "phase", &q.phase, ""),
        card("Waiting", "waiting", &q.waiting.to_string(), ""),
        card("Shopping", "active", &q.active.to_string(), ""),
        card("Admitted / minute", "admit-rate", &format!("{:.0}", q.admitted_per_minute), ""),
        card("Average wait", "average-wait", &format!("{:.0} s", q.average_wait_seconds), ""),
    )
}

fn orders_html(report: &EventReport) -> String {
    let o = &report.orders;
    let hold_to_order = report.hold_to_order.map_or("–".into(), |r| format!("{:.0} %", r * 100.0));
    format!(
        "<section><h2>Orders</h2><section class=\"cards\">{}{}{}{}</section></section>",
        card("Paid", "orders-paid", &o.paid.to_string(), ""),
        card("Abandoned", "orders-abandoned", &o.abandoned.to_string(), ""),
        card("Holds → orders", "hold-to-order", &hold_to_order, ""),
        card("Orders → paid", "conversion", &format!("{:.0} %", report.conversion * 100.0), ""),
    )
}

fn tiers_html(report: &EventReport) -> String {
    let mut rows = String::new();
    let opt = |v: Option<u64>| v.map_or("–".into(), |v| v.to_string());
    for t in &report.tiers {
        let _ = write!(
            rows,
            "<tr data-tier=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.tier_id,
            esc(&t.name),
            t.live_tickets,
            opt(t.held),
            opt(t.available),
            t.capacity,
            esc(&format!("{} {}", decimal(t.figures.gross_minor, &t.currency), t.currency)),
        );
    }
    format!(
        "<section><h2>Tiers</h2><table><thead><tr><th>Tier</th><th>Sold</th><th>Held</th><th>Available</th>\
         <th>Capacity</th><th>Gross</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_cookie_is_read_back() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
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
        let svg = chart(&[0, 2, 4, 0]);
        assert!(svg.contains("data-total=\"6\""));
        assert!(svg.contains("4/min"));
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
