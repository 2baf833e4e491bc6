//! The public catalog, for buyers and the edge's pages: published events (on sale, sold out or
//! announced) of every organization, searchable, with their tiers and prices. No key needed;
//! answers are cacheable for 30 seconds.
//!
//! - `GET /api/v1/catalog/events?q=&city=&genre=&from=&to=&limit=&cursor=`  by start time
//!   (`series=` a series' dates; `one_per_series=true` a series once, at its first date found)
//! - `GET /api/v1/catalog/events/{id}`                                      with tiers and prices
//!   (each tier's `price_range` over the zones that have seats, and its `sale_state`), those
//!   zones, and its series' next dates
//! - `GET /api/v1/catalog/series/{id}?from=&limit=&cursor=`                 a series' dates to come
//!
//! A date is listed while it is published, on sale or sold out and not over; a series is known
//! here only while one of its dates is.

use crate::api::Query;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::api::{Listing, PageQuery};
use crate::error::{ApiError, Result};
use crate::models::event::{local_time, EventDetails, TierOffer, TIER_OFFER_COLUMNS};
use crate::models::venue::ZoneIn;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(one)).routes(routes!(series))
}

/// How long buyers' clients and caches may keep an answer.
const CACHE: &str = "public, max-age=30";

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PublicEvent {
    pub id: Uuid,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub details: EventDetails,
    pub state: String,
    pub venue_name: String,
    pub city: String,
    pub organizer: String,
    /// The series the event is a date of (docs/series.md), with its title and how many of its
    /// dates are listed now.
    pub series_id: Option<Uuid>,
    pub series_title: Option<String>,
    pub series_dates: Option<i64>,
    /// The start as the audience reads it, in the event's time zone (`Fri 12 Jun 2026, 20:00`):
    /// pages show it without a time-zone database of their own.
    #[sqlx(skip)]
    pub starts_local: String,
}

/// Sets each event's `series_dates`: how many dates its series lists now (one query for the page).
async fn count_dates(db: &sqlx::PgPool, events: &mut [PublicEvent]) -> Result<()> {
    let mut series: Vec<Uuid> = events.iter().filter_map(|e| e.series_id).collect();
    series.sort();
    series.dedup();
    if series.is_empty() {
        return Ok(());
    }
    let counts: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
        "SELECT series_id, count(*) FROM events WHERE series_id = ANY($1) AND state IN {LISTED} AND ends_at > now()
         GROUP BY series_id"
    ))
    .bind(&series)
    .fetch_all(db)
    .await?;
    for e in events {
        e.series_dates = e.series_id.map(|id| counts.iter().find(|c| c.0 == id).map_or(0, |c| c.1));
    }
    Ok(())
}

/// How [`PublicEvent::starts_local`] reads.
const LOCAL_FORMAT: &str = "%a %-d %b %Y, %H:%M";

impl PublicEvent {
    fn with_local_start(mut self) -> Self {
        self.starts_local = self.details.schedule.local(self.details.schedule.starts_at, LOCAL_FORMAT);
        self
    }
}

/// The states in which a date is listed (a cancelled one keeps its page, `one`).
const LISTED: &str = "('published', 'on_sale', 'sold_out')";

const COLUMNS: &str =
    "e.id, e.title, e.description, e.genre, e.starts_at, e.ends_at, e.time_zone, e.images, e.color, \
    e.state, v.name AS venue_name, v.city, o.name AS organizer, e.series_id, s.title AS series_title,
    NULL::int8 AS series_dates";

const FROM: &str =
    "events e JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = e.organization_id
    LEFT JOIN event_series s ON s.id = e.series_id";

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Search {
    q: Option<String>,
    city: Option<String>,
    genre: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Only the dates of this series.
    series: Option<Uuid>,
    /// A series once, at its first date this search finds (with `series_dates` saying how many
    /// it lists); default `false`: every date.
    one_per_series: Option<bool>,
    /// Events per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/catalog/events", tag = "public", params(Search), responses((status = 200, body = Listing<PublicEvent>), crate::api::Problems))]
async fn search(State(state): State<AppState>, Query(s): Query<Search>) -> Result<impl IntoResponse> {
    let paging = PageQuery { limit: s.limit, cursor: s.cursor };
    if s.q.as_deref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::field("q", "must be at most 200 characters"));
    }
    // The filters, on the listed event `e` and, for `one_per_series`, on its series' dates `d`
    // (which share its venue, so its city).
    let filters = |a: &str| {
        format!(
            "{a}.state IN {LISTED}
           AND ($1::text IS NULL OR to_tsvector('simple', {a}.title || ' ' || {a}.description) @@ plainto_tsquery('simple', $1))
           AND ($3::text IS NULL OR lower({a}.genre) = lower($3))
           AND ($4::timestamptz IS NULL OR {a}.starts_at >= $4)
           AND ($4::timestamptz IS NOT NULL OR {a}.ends_at > now())
           AND ($5::timestamptz IS NULL OR {a}.starts_at < $5)"
        )
    };
    let (on_e, on_d) = (filters("e"), filters("d"));
    // A series' first date this search finds: one probe of the series' listed dates (their own
    // index) per series, not a lookup per listed row nor a pass over every series' dates
    // (docs/benchmarks.md, "The catalog with series").
    let sql = format!(
        "WITH firsts AS (
             SELECT f.id FROM event_series x CROSS JOIN LATERAL (
                 SELECT d.id FROM events d WHERE d.series_id = x.id AND {on_d} ORDER BY d.starts_at, d.id LIMIT 1) f
             WHERE $7)
         SELECT {COLUMNS} FROM {FROM}
         WHERE {on_e}
           AND ($2::text IS NULL OR lower(v.city) = lower($2))
           AND ($6::uuid IS NULL OR e.series_id = $6)
           AND (NOT $7 OR e.series_id IS NULL OR e.id IN (SELECT id FROM firsts))
           AND (e.starts_at, e.id) > ($8, $9)
         ORDER BY e.starts_at, e.id LIMIT $10"
    );
    let query = sqlx::query_as(&sql)
        .bind(s.q.as_deref().filter(|q| !q.trim().is_empty()))
        .bind(s.city.as_deref())
        .bind(s.genre.as_deref())
        .bind(s.from)
        .bind(s.to)
        .bind(s.series)
        .bind(s.one_per_series.unwrap_or(false));
    let mut listing =
        paging.fetch(query, &state.db, |e: &PublicEvent| (e.details.schedule.starts_at, e.id)).await?;
    listing.items = listing.items.into_iter().map(PublicEvent::with_local_start).collect();
    count_dates(&state.db, &mut listing.items).await?;
    Ok(([(header::CACHE_CONTROL, CACHE)], Json(listing)))
}

/// The lowest and highest price of a tier: a GA tier has one; a seated tier costs its zone's price
/// in each of the venue's zones, or its base price in a zone it gives none.
fn price_range(tier: &TierOffer, zones: &[ZoneIn]) -> (i64, i64) {
    if tier.kind != "seated" || zones.is_empty() {
        return (tier.price_minor, tier.price_minor);
    }
    let prices = zones
        .iter()
        .map(|z| tier.zone_prices.get(z.id.as_str()).and_then(Value::as_i64).unwrap_or(tier.price_minor));
    let (min, max) = prices.fold((i64::MAX, i64::MIN), |(lo, hi), p| (lo.min(p), hi.max(p)));
    (min, max)
}

#[utoipa::path(get, path = "/api/v1/catalog/events/{id}", tag = "public", params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "the event with its tiers and prices", body = CatalogEvent), crate::api::Problems))]
async fn one(State(state): State<AppState>, Path(id): Path<String>) -> Result<impl IntoResponse> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let event: Option<PublicEvent> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM {FROM} WHERE e.id = $1 AND e.state IN ('published', 'on_sale', 'sold_out', 'cancelled')"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let mut event = event.ok_or(ApiError::NotFound)?.with_local_start();
    count_dates(&state.db, std::slice::from_mut(&mut event)).await?;
    let tiers: Vec<TierOffer> = sqlx::query_as(&format!(
        "SELECT {TIER_OFFER_COLUMNS} FROM ticket_tiers WHERE event_id = $1 ORDER BY created_at, id"
    ))
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    // The venue's zones that have seats (a zone with none has no price anybody can pay).
    let (zones, seated): (Value, Vec<String>) = sqlx::query_as(
        "SELECT v.zones, ARRAY(SELECT DISTINCT zone_id FROM venue_seats s WHERE s.venue_id = v.id)
         FROM events e JOIN venues v ON v.id = e.venue_id WHERE e.id = $1",
    )
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let zones: Vec<ZoneIn> = serde_json::from_value::<Vec<ZoneIn>>(zones)
        .unwrap_or_default()
        .into_iter()
        .filter(|z| seated.iter().any(|s| s == z.id.as_str()))
        .collect();
    let now = Utc::now();
    let tiers = tiers
        .into_iter()
        .map(|offer| {
            let (min_minor, max_minor) = price_range(&offer, &zones);
            // As of this answer (kept 30 s at most): pages show it without a clock of their own.
            let sale_state = if offer.sale_starts_at.is_some_and(|s| now < s) {
                SaleState::NotYet
            } else if offer.sale_ends_at.is_some_and(|e| now >= e) {
                SaleState::Ended
            } else {
                SaleState::OnSale
            };
            CatalogTier { offer, price_range: PriceRange { min_minor, max_minor }, sale_state }
        })
        .collect();
    let series = match event.series_id {
        Some(series) => {
            // From this date on: its own among them, whichever of the series' dates it is.
            let from = Some(event.details.schedule.starts_at);
            let dates = dates_of(&state.db, series, from, None, NEXT_DATES).await?;
            Some(SeriesDates {
                id: series,
                title: event.series_title.clone().unwrap_or_default(),
                dates: event.series_dates.unwrap_or(0),
                next: dates.items,
                path: format!("/series/{series}"),
            })
        }
        None => None,
    };
    let answer = CatalogEvent { event, tiers, zones, series, buy_path: format!("/events/{id}") };
    Ok(([(header::CACHE_CONTROL, CACHE)], Json(answer)))
}

/// One event as the public catalog shows it (`GET /api/v1/catalog/events/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogEvent {
    #[serde(flatten)]
    pub event: PublicEvent,
    /// Its tiers, in the order they were made.
    pub tiers: Vec<CatalogTier>,
    /// The venue's price zones that have seats.
    pub zones: Vec<ZoneIn>,
    /// Its series' next dates (this one among them), when it is a date of a series.
    pub series: Option<SeriesDates>,
    /// The buyer's page of the event at the edge.
    pub buy_path: String,
}

/// The dates of an event's series its page shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesDates {
    pub id: Uuid,
    pub title: String,
    /// How many of its dates are listed now.
    pub dates: i64,
    /// Its listed dates from this one on (at most 12), by start.
    pub next: Vec<PublicDate>,
    /// The buyer's page of every date at the edge.
    pub path: String,
}

/// The start of `day` (`2027-01-02`) in the time zone `zone` (its first moment, should the clocks
/// skip midnight).
fn local_midnight(day: &str, zone: &str) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok().filter(|_| day.len() == 10)?;
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    (0..3)
        .find_map(|h| tz.from_local_datetime(&day.and_hms_opt(h, 0, 0)?).earliest())
        .map(|t| t.with_timezone(&Utc))
}

/// The next dates an event's answer names.
const NEXT_DATES: u32 = 12;

/// A date of a series as buyers pick it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PublicDate {
    pub id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: String,
    #[serde(skip)]
    pub time_zone: String,
    /// `Fri 12 Jun 2026, 20:00`, in the date's time zone.
    #[sqlx(skip)]
    pub starts_local: String,
    /// `Fri 12 Jun 2026`: the day, to group slots by.
    #[sqlx(skip)]
    pub day_local: String,
    /// `20:00`.
    #[sqlx(skip)]
    pub time_local: String,
    /// The date's page at the edge.
    #[sqlx(skip)]
    pub buy_path: String,
}

/// The listed dates of `series` from `from` (default: those not over), by start, paged.
async fn dates_of(
    db: &sqlx::PgPool,
    series: Uuid,
    from: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: u32,
) -> Result<Listing<PublicDate>> {
    let paging = PageQuery { limit: Some(limit), cursor };
    let sql = format!(
        "SELECT id, starts_at, ends_at, state, time_zone FROM events
         WHERE series_id = $1 AND state IN {LISTED}
           AND ($2::timestamptz IS NULL OR starts_at >= $2) AND ($2::timestamptz IS NOT NULL OR ends_at > now())
           AND (starts_at, id) > ($3, $4)
         ORDER BY starts_at, id LIMIT $5"
    );
    let query = sqlx::query_as(&sql).bind(series).bind(from);
    let mut listing = paging.fetch(query, db, |d: &PublicDate| (d.starts_at, d.id)).await?;
    for d in &mut listing.items {
        d.starts_local = local_time(d.starts_at, &d.time_zone, LOCAL_FORMAT);
        d.day_local = local_time(d.starts_at, &d.time_zone, "%a %-d %b %Y");
        d.time_local = local_time(d.starts_at, &d.time_zone, "%H:%M");
        d.buy_path = format!("/events/{}", d.id);
    }
    Ok(listing)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesQuery {
    /// Dates starting at or after this time (default: those not over).
    from: Option<DateTime<Utc>>,
    /// Dates from this day on (`2027-01-02`), in the series' time zone (its venue's day, not
    /// UTC's); instead of `from`.
    #[param(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
    from_day: Option<String>,
    /// Dates per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    cursor: Option<String>,
}

/// A series as buyers see it: where, by whom, and its dates to come.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogSeries {
    pub id: Uuid,
    pub title: String,
    pub venue_name: String,
    pub city: String,
    pub organizer: String,
    /// How many of its dates are listed now.
    pub dates: i64,
    /// This page of them, by start.
    pub items: Vec<PublicDate>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/catalog/series/{id}", tag = "public", params(("id" = String, Path, description = "the resource id"), SeriesQuery), responses((status = 200, description = "the series with its dates to come", body = CatalogSeries), crate::api::Problems))]
async fn series(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<impl IntoResponse> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    // Known while one of its dates is listed: a series of drafts is nobody's business yet.
    let about: Option<(String, String, String, String, String, i64)> = sqlx::query_as(&format!(
        "SELECT s.title, v.name, v.city, o.name, e.time_zone, count(*) OVER () FROM event_series s
         JOIN events e ON e.series_id = s.id JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = s.organization_id
         WHERE s.id = $1 AND e.state IN {LISTED} AND e.ends_at > now() ORDER BY e.starts_at LIMIT 1"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let (title, venue_name, city, organizer, zone, dates) = about.ok_or(ApiError::NotFound)?;
    let from = match q.from_day.as_deref() {
        None => q.from,
        Some(day) => Some(
            local_midnight(day, &zone)
                .ok_or_else(|| ApiError::field("from_day", "must be a day as 2027-01-02"))?,
        ),
    };
    let page = dates_of(&state.db, id, from, q.cursor, q.limit.unwrap_or(50)).await?;
    let answer = CatalogSeries {
        id,
        title,
        venue_name,
        city,
        organizer,
        dates,
        items: page.items,
        next_cursor: page.next_cursor,
    };
    Ok(([(header::CACHE_CONTROL, CACHE)], Json(answer)))
}

/// A tier as the catalog shows it: its offer, the range of its prices, and whether it sells now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogTier {
    #[serde(flatten)]
    pub offer: TierOffer,
    pub price_range: PriceRange,
    pub sale_state: SaleState,
}

/// The lowest and highest price of a tier (minor units; one price for a GA tier).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRange {
    pub min_minor: i64,
    pub max_minor: i64,
}

/// Whether a tier sells, as of the answer.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    NotYet,
    OnSale,
    Ended,
}
