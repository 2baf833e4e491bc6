//! `GET /api/v1/series/{id}/report`: a series' sale per date and summed, read from the same
//! projections as an event's report (`reporting/`): tickets and money per currency, orders. A
//! date's own report (`GET /api/v1/events/{id}/report`) adds its tiers, promo codes and the edge's
//! live figures; this one stays within the database (the projections' rows of its dates: a few
//! per date, tier and minute with sales).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::model::find_series;
use crate::api::Query;
use crate::auth::{need, Can};
use crate::error::Result;
use crate::models::event::EventState;
use crate::reporting::{Figures, OrderFigures, FIGURES, ORDERS};
use crate::state::AppState;

/// Figures in one currency.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CurrencyFigures {
    pub currency: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// What one date or the whole series sold.
#[derive(Debug, Default, Clone, Serialize, utoipa::ToSchema)]
pub struct SaleFigures {
    /// Places on sale (the tiers' quantities; a cancelled date's are not).
    pub capacity: i64,
    /// Tickets sold and not refunded.
    pub live_tickets: i64,
    pub orders: OrderFigures,
    /// Money per currency (a series' dates may sell in several).
    pub money: Vec<CurrencyFigures>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DateReport {
    pub event_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub state: EventState,
    #[serde(flatten)]
    pub figures: SaleFigures,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesReport {
    pub series_id: Uuid,
    /// Its dates, in all.
    pub dates: i64,
    /// Every date summed.
    pub totals: SaleFigures,
    /// The dates of this page, by start.
    pub per_date: Vec<DateReport>,
    /// The next page's `from` (the next date's start), when there are more dates.
    pub next_from: Option<DateTime<Utc>>,
    pub generated_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    /// The dates starting at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Dates per page (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The figures of the events `ids` (`None`: every date of `series`), keyed by event (`None` for
/// all of them summed).
async fn figures(
    db: &sqlx::PgPool,
    series: Uuid,
    ids: Option<&[Uuid]>,
    per_date: bool,
) -> Result<BTreeMap<Option<Uuid>, SaleFigures>> {
    let key = if per_date { "e.id" } else { "NULL::uuid" };
    let scope = "e.series_id = $1 AND ($2::uuid[] IS NULL OR e.id = ANY($2))";
    let mut out: BTreeMap<Option<Uuid>, SaleFigures> = BTreeMap::new();
    let capacity: Vec<(Option<Uuid>, i64)> = sqlx::query_as(&format!(
        "SELECT {key}, COALESCE(sum(t.quantity), 0)::int8 FROM events e JOIN ticket_tiers t ON t.event_id = e.id
         WHERE {scope} AND e.state <> 'cancelled' GROUP BY 1"
    ))
    .bind(series)
    .bind(ids)
    .fetch_all(db)
    .await?;
    for (k, c) in capacity {
        out.entry(k).or_default().capacity = c;
    }
    let orders: Vec<(Option<Uuid>, sqlx::types::Json<OrderFigures>)> = sqlx::query_as(&format!(
        "SELECT k, to_jsonb(f) - 'k' FROM (SELECT {key} AS k, {ORDERS} FROM events e
             JOIN report_event_minute r ON r.event_id = e.id WHERE {scope} GROUP BY 1) f"
    ))
    .bind(series)
    .bind(ids)
    .fetch_all(db)
    .await?;
    for (k, o) in orders {
        out.entry(k).or_default().orders = o.0;
    }
    let money: Vec<(Option<Uuid>, String, sqlx::types::Json<Figures>)> = sqlx::query_as(&format!(
        "SELECT k, currency, to_jsonb(f) - 'k' - 'currency' FROM (SELECT {key} AS k, t.currency, {FIGURES} FROM events e
             JOIN report_tier_minute r ON r.event_id = e.id JOIN ticket_tiers t ON t.id = r.tier_id
             WHERE {scope} GROUP BY 1, 2) f ORDER BY 1, 2"
    ))
    .bind(series)
    .bind(ids)
    .fetch_all(db)
    .await?;
    for (k, currency, f) in money {
        let entry = out.entry(k).or_default();
        entry.live_tickets += f.0.tickets_sold - f.0.tickets_refunded;
        entry.money.push(CurrencyFigures { currency, figures: f.0 });
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/series/{id}/report", tag = "reporting", security(("api_key" = [])),
    params(("id" = String, Path, description = "the series id"), ReportQuery),
    responses((status = 200, body = SeriesReport), crate::api::Problems))]
pub(super) async fn series_report(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Result<Json<SeriesReport>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(crate::error::ApiError::field("limit", "must be 1 to 500"));
    }
    // Found on the primary (a series made a moment ago is there); its figures from the replica.
    let series = find_series(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let dates: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE series_id = $1")
        .bind(series.id)
        .fetch_one(&state.read_db)
        .await?;
    let mut page: Vec<(Uuid, DateTime<Utc>, EventState)> = sqlx::query_as(
        "SELECT id, starts_at, state FROM events WHERE series_id = $1 AND ($2::timestamptz IS NULL OR starts_at >= $2)
         ORDER BY starts_at, id LIMIT $3",
    )
    .bind(series.id)
    .bind(q.from)
    .bind(i64::from(limit) + 1)
    .fetch_all(&state.read_db)
    .await?;
    // A series has one date at each start: the next page starts at the first date left out.
    let next_from = (page.len() > limit as usize).then(|| page[limit as usize].1);
    page.truncate(limit as usize);
    let ids: Vec<Uuid> = page.iter().map(|p| p.0).collect();
    let (totals, mut each) = tokio::try_join!(
        figures(&state.read_db, series.id, None, false),
        figures(&state.read_db, series.id, Some(&ids), true),
    )?;
    let per_date = page
        .into_iter()
        .map(|(event_id, starts_at, state)| DateReport {
            event_id,
            starts_at,
            state,
            figures: each.remove(&Some(event_id)).unwrap_or_default(),
        })
        .collect();
    Ok(Json(SeriesReport {
        series_id: series.id,
        dates,
        totals: totals.into_values().next().unwrap_or_default(),
        per_date,
        next_from,
        generated_at: Utc::now(),
    }))
}
