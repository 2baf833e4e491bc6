//! Events, their state machine, and their ticket tiers, as rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;

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

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub venue_id: Uuid,
    pub title: String,
    pub description: String,
    pub genre: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub time_zone: String,
    #[schema(value_type = Object)]
    pub images: Value,
    #[schema(value_type = Object)]
    pub refund_policy: Value,
    pub state: EventState,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const EVENT_COLUMNS: &str =
    "id, organization_id, venue_id, title, description, genre, starts_at, ends_at, time_zone, \
                             images, refund_policy, state, version, created_at, updated_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// An event of the caller's organization (404 otherwise).
pub async fn find_event(db: &PgPool, caller: &Caller, id: &str) -> Result<Event, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let row: Option<Event> = sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.filter(|e| e.organization_id == caller.organization_id).ok_or(ApiError::NotFound)
}
