//! Events, their state machine, and their ticket tiers, as rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Result};

/// The states of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EventState {
    Draft,
    Published,
    OnSale,
    SoldOut,
    Cancelled,
    Completed,
}

/// The states an event may go to from `from`.
pub fn allowed(from: EventState) -> &'static [EventState] {
    use EventState::*;
    match from {
        Draft => &[Published, Cancelled],
        Published => &[OnSale, Cancelled, Completed],
        OnSale => &[SoldOut, Cancelled, Completed],
        SoldOut => &[OnSale, Cancelled, Completed],
        Cancelled | Completed => &[],
    }
}

/// When an event happens: its start and end, and the time zone its audience reads them in.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Schedule {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// An IANA time zone name (`Europe/Berlin`).
    pub time_zone: String,
}

impl Schedule {
    /// A time as the event's audience reads it (`format` as chrono's `format`).
    pub fn local(&self, at: DateTime<Utc>, format: &str) -> String {
        local_time(at, &self.time_zone, format)
    }
}

/// A time in the time zone named `zone`, formatted; in UTC when the zone is not a known name.
pub fn local_time(at: DateTime<Utc>, zone: &str, format: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).format(format).to_string(),
        Err(_) => at.format(format).to_string(),
    }
}

/// What an event's page says: the organizer writes it, buyers read it in the catalog.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventDetails {
    pub title: String,
    pub description: String,
    pub genre: String,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub schedule: Schedule,
    /// Image URLs.
    #[schema(value_type = Vec<String>)]
    pub images: Value,
    /// The event's colour on the buyer's pages (`#rrggbb`), if the organizer chose one.
    pub color: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub venue_id: Uuid,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub details: EventDetails,
    #[schema(value_type = Vec<RefundWindow>)]
    pub refund_policy: Value,
    pub state: EventState,
    /// The series the event is a date of (docs/series.md), if any.
    pub series_id: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, organization_id, venue_id, title, description, genre, starts_at, ends_at, time_zone, \
                             images, color, refund_policy, state, series_id, version, created_at, updated_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
// Its own name in the OpenAPI document: the health report's `Tier` (edge, core…) is another schema.
#[schema(as = TicketTier)]
pub struct Tier {
    pub id: Uuid,
    pub event_id: Uuid,
    pub name: String,
    pub kind: String,
    pub ga_area: Option<String>,
    pub currency: String,
    pub price_minor: i64,
    #[schema(value_type = Object)]
    pub zone_prices: Value,
    pub quantity: i32,
    pub per_order_limit: i32,
    pub sale_starts_at: Option<DateTime<Utc>>,
    pub sale_ends_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub(crate) const TIER_COLUMNS: &str =
    "id, event_id, name, kind, ga_area, currency, price_minor, zone_prices, quantity, \
                            per_order_limit, sale_starts_at, sale_ends_at, created_at";

/// A tier as buyers are offered it: its price (per zone for seats), how many one order may take
/// and when it is sold. The catalog shows it; checkout prices holds with it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TierOffer {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub currency: String,
    pub price_minor: i64,
    /// A seated tier's price per zone: the zone's id to its price in minor units.
    #[schema(value_type = std::collections::BTreeMap<String, i64>)]
    pub zone_prices: Value,
    pub per_order_limit: i32,
    pub sale_starts_at: Option<DateTime<Utc>>,
    pub sale_ends_at: Option<DateTime<Utc>>,
}

/// The columns of [`TierOffer`] in `ticket_tiers`.
pub(crate) const TIER_OFFER_COLUMNS: &str =
    "id, name, kind, currency, price_minor, zone_prices, per_order_limit, sale_starts_at, sale_ends_at";

/// An event of the caller's organization (404 otherwise).
pub async fn find_event(db: &PgPool, caller: &Caller, id: &str) -> Result<Event> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let row: Option<Event> = sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.filter(|e| e.organization_id == caller.organization_id).ok_or(ApiError::NotFound)
}

/// One window of a refund policy (`promotions.rs` has its rules): until `hours_before` the start, `percent` is refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundWindow {
    /// At most a year (8760 hours).
    #[schema(maximum = 8760)]
    pub hours_before: u32,
    #[schema(maximum = 100)]
    pub percent: u8,
}
