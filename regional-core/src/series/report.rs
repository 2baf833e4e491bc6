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
    /// The next page's `cursor`, when there are more dates.
    pub next_cursor: Option<String>,
    pub generated_at: DateTime<Utc>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ReportQuery {
    /// The dates starting at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Dates per page (default 100, at most 200).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Where the page starts: the previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A date of the page.
#[derive(sqlx::FromRow)]
struct DateRow {
    id: Uuid,
    starts_at: DateTime<Utc>,
    state: EventState,
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
    // Found on the primary (a series made a moment ago is there); its figures from the replica.
    let series = find_series(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let dates: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE series_id = $1")
        .bind(series.id)
        .fetch_one(&state.read_db)
        .await?;
    // Paged by (start, id): a cancelled date and its replacement may share a start.
    let paging = crate::api::PageQuery { limit: Some(q.limit.unwrap_or(100)), cursor: q.cursor };
    let query = sqlx::query_as(
        "SELECT id, starts_at, state FROM events WHERE series_id = $1 AND ($2::timestamptz IS NULL OR starts_at >= $2)
           AND (starts_at, id) > ($3, $4)
         ORDER BY starts_at, id LIMIT $5",
    )
    .bind(series.id)
    .bind(q.from);
    let page = paging.fetch(query, &state.read_db, |d: &DateRow| (d.starts_at, d.id)).await?;
    let (page, next_cursor) = (page.items, page.next_cursor);
    let ids: Vec<Uuid> = page.iter().map(|d| d.id).collect();
    let (totals, mut each) = tokio::try_join!(
        figures(&state.read_db, series.id, None, false),
        figures(&state.read_db, series.id, Some(&ids), true),
    )?;
    let per_date = page
        .into_iter()
        .map(|d| DateReport {
            event_id: d.id,
            starts_at: d.starts_at,
            state: d.state,
            figures: each.remove(&Some(d.id)).unwrap_or_default(),
        })
        .collect();
    Ok(Json(SeriesReport {
        series_id: series.id,
        dates,
        totals: totals.into_values().next().unwrap_or_default(),
        per_date,
        next_cursor,
        generated_at: Utc::now(),
    }))
}
