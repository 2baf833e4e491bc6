//! The public catalog, for buyers and the edge's pages: published events (on sale, sold out or
//! announced) of every organization, searchable, with their tiers and prices. No key needed;
//! answers are cacheable for 30 seconds.
//!
//! - `GET /api/v1/catalog/events?q=&city=&genre=&from=&to=&limit=&cursor=`  by start time
//! - `GET /api/v1/catalog/events/{id}`                                      with tiers and prices
//!   (each tier's `price_range` over the zones that have seats, and its `sale_state`), and those
//!   zones

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
use crate::models::event::{EventDetails, TierOffer, TIER_OFFER_COLUMNS};
use crate::models::venue::ZoneIn;
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search)).routes(routes!(one))
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
    /// The start as the audience reads it, in the event's time zone (`Fri 12 Jun 2026, 20:00`):
    /// pages show it without a time-zone database of their own.
    #[sqlx(skip)]
    pub starts_local: String,
}

/// How [`PublicEvent::starts_local`] reads.
const LOCAL_FORMAT: &str = "%a %-d %b %Y, %H:%M";

impl PublicEvent {
    fn with_local_start(mut self) -> Self {
        self.starts_local = self.details.schedule.local(self.details.schedule.starts_at, LOCAL_FORMAT);
        self
    }
}

const COLUMNS: &str =
    "e.id, e.title, e.description, e.genre, e.starts_at, e.ends_at, e.time_zone, e.images, e.color, e.state, \
                       v.name AS venue_name, v.city, o.name AS organizer";

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Search {
    q: Option<String>,
    city: Option<String>,
    genre: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
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
    let sql = format!(
        "SELECT {COLUMNS} FROM events e JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = e.organization_id
         WHERE e.state IN ('published', 'on_sale', 'sold_out')
           AND ($1::text IS NULL OR to_tsvector('simple', e.title || ' ' || e.description) @@ plainto_tsquery('simple', $1))
           AND ($2::text IS NULL OR lower(v.city) = lower($2))
           AND ($3::text IS NULL OR lower(e.genre) = lower($3))
           AND ($4::timestamptz IS NULL OR e.starts_at >= $4)
           AND ($4::timestamptz IS NOT NULL OR e.ends_at > now())
           AND ($5::timestamptz IS NULL OR e.starts_at < $5)
           AND (e.starts_at, e.id) > ($6, $7)
         ORDER BY e.starts_at, e.id LIMIT $8"
    );
    let query = sqlx::query_as(&sql)
        .bind(s.q.as_deref().filter(|q| !q.trim().is_empty()))
        .bind(s.city.as_deref())
        .bind(s.genre.as_deref())
        .bind(s.from)
        .bind(s.to);
    let mut listing =
        paging.fetch(query, &state.db, |e: &PublicEvent| (e.details.schedule.starts_at, e.id)).await?;
    listing.items = listing.items.into_iter().map(PublicEvent::with_local_start).collect();
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
        "SELECT {COLUMNS} FROM events e JOIN venues v ON v.id = e.venue_id JOIN organizations o ON o.id = e.organization_id
         WHERE e.id = $1 AND e.state IN ('published', 'on_sale', 'sold_out', 'cancelled')"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    let event = event.ok_or(ApiError::NotFound)?.with_local_start();
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
    let answer = CatalogEvent { event, tiers, zones, buy_path: format!("/events/{id}") };
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
    /// The buyer's page of the event at the edge.
    pub buy_path: String,
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
