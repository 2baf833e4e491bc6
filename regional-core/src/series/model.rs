//! A series as a row (docs/series.md): what the routes of `mod.rs` and the dates and report beside
//! it share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Result};

/// The most dates one series has (a year of a museum's slots, five or six a day): each date is an
/// event with its own inventory, pushed to the edge.
pub const MAX_DATES: i64 = 2_000;

/// How a new date's sale windows (its tiers' sale start and end, its line's opening and on-sale
/// times) are copied from the template's (on the venue's clocks: `dates.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SaleWindows {
    /// At the same distance, on the venue's clocks, from the date's start as the template's from
    /// its own (slots whose sale ends an hour before each starts).
    Relative,
    /// The template's own times (a tour whose dates all go on sale at once).
    Fixed,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Series {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub title: String,
    /// The date new dates are copied from: venue, texts, tiers and prices, the line's and the
    /// holds' settings, fees, seats off sale, refund policy.
    pub template_event_id: Uuid,
    pub sale_windows: SaleWindows,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) const SERIES_COLUMNS: &str =
    "id, organization_id, title, template_event_id, sale_windows, created_at, updated_at";

/// A series of the caller's organization (404 otherwise, as for another tenant's).
pub(crate) async fn find_series(
    conn: &mut PgConnection,
    caller: &Caller,
    id: &str,
    lock: bool,
) -> Result<Series> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<Series> = sqlx::query_as(&format!(
        "SELECT {SERIES_COLUMNS} FROM event_series WHERE id = $1 AND organization_id = $2{lock}"
    ))
    .bind(id)
    .bind(caller.organization_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.ok_or(ApiError::NotFound)
}
