//! Event series (docs/series.md): a tour, a season, a museum's daily slots. Each date is an event
//! of its own (its inventory at the edge, its line, its orders, its report); the series names them
//! together and keeps the *template*, the date new dates are copied from (`dates.rs`).
//!
//! - `POST  /api/v1/series`                 `{"from_event"}`: the event becomes the series' first
//!   date and its template
//! - `GET   /api/v1/series`, `GET /api/v1/series/{id}` (with its dates counted by state),
//!   `PATCH /api/v1/series/{id}` (title, template, sale windows)
//! - `GET   /api/v1/series/{id}/dates`      its dates by start (paged)
//! - `POST  /api/v1/series/{id}/dates`      dates in bulk: a list, or an RFC 5545 recurrence rule
//! - `POST  /api/v1/series/{id}/state`      publish, or put on sale, its dates at once; cancel its
//!   drafts
//! - `GET   /api/v1/series/{id}/report`     figures per date and summed (`report.rs`)
//!
//! Buyers see a series in the public catalog (`catalog.rs`: each date names its series, an event's
//! answer lists its other dates, `GET /api/v1/catalog/series/{id}` them all).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::api::{self, resource_routes, Creating, JsonBody, Listing, Query};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::models::event::{allowed, find_event, Event, EventState, EVENT_COLUMNS};
use crate::state::AppState;
use utoipa_axum::router::OpenApiRouter;

mod dates;
mod model;
mod report;

use model::find_series;
use model::SERIES_COLUMNS;
pub use model::{SaleWindows, Series, MAX_DATES};

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [create_series, list_series], [get_series, update_series],
        [list_dates, dates::add_dates], [change_states], [report::series_report]
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSeries {
    /// The event that becomes the series' first date and its template (not yet in a series).
    from_event: Uuid,
    /// Defaults to the event's title.
    #[serde(default)]
    title: Option<String>,
    /// Defaults to `relative`.
    #[serde(default)]
    sale_windows: Option<SaleWindows>,
}

fn check_title(title: &str) -> Result<()> {
    if (1..=200).contains(&title.trim().chars().count()) {
        Ok(())
    } else {
        Err(ApiError::field("title", "must be 1 to 200 characters"))
    }
}

#[utoipa::path(post, path = "/api/v1/series", tag = "catalog", security(("api_key" = [])), request_body = NewSeries, responses((status = 201, body = Series), crate::api::Problems))]
async fn create_series(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewSeries = creating.json()?;
    let event = find_event(&state.db, &caller, &new.from_event.to_string())
        .await
        .map_err(|_| ApiError::field("from_event", "no such event in this organization"))?;
    let title = new.title.clone().unwrap_or_else(|| event.details.title.clone());
    check_title(&title)?;
    let c = caller.clone();
    creating
        .run(&caller, "/api/v1/series", move |conn| {
            Box::pin(async move {
                let id = Uuid::new_v4();
                // Taken in the same statement that checks it is free: two series cannot share a date.
                let taken =
                    sqlx::query("UPDATE events SET series_id = $2 WHERE id = $1 AND series_id IS NULL")
                        .bind(event.id)
                        .bind(id);
                let series: Series = sqlx::query_as(&format!(
                    "INSERT INTO event_series (id, organization_id, title, template_event_id, sale_windows)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {SERIES_COLUMNS}"
                ))
                .bind(id)
                .bind(event.organization_id)
                .bind(title.trim())
                .bind(event.id)
                .bind(new.sale_windows.unwrap_or(SaleWindows::Relative))
                .fetch_one(&mut *conn)
                .await?;
                if taken.execute(&mut *conn).await?.rows_affected() == 0 {
                    return Err(ApiError::conflict(
                        "already_in_series",
                        "this event is already a date of a series",
                    ));
                }
                let details = json!({ "title": series.title, "template_event_id": event.id });
                crate::audit::by(
                    conn,
                    &c,
                    series.organization_id,
                    "series.create",
                    format!("series:{id}"),
                    details,
                )
                .await?;
                Ok((StatusCode::CREATED, serde_json::to_value(&series).unwrap_or_default()))
            })
        })
        .await
}

#[utoipa::path(get, path = "/api/v1/series", tag = "catalog", security(("api_key" = [])), params(api::PageQuery), responses((status = 200, body = Listing<Series>), crate::api::Problems))]
async fn list_series(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Query(q): Query<api::PageQuery>,
) -> Result<Json<Listing<Series>>> {
    let sql = format!(
        "SELECT {SERIES_COLUMNS} FROM event_series WHERE organization_id = $1 AND (created_at, id) > ($2, $3)
         ORDER BY created_at, id LIMIT $4"
    );
    let query = sqlx::query_as(&sql).bind(caller.organization_id);
    Ok(Json(q.fetch(query, &state.db, |s: &Series| (s.created_at, s.id)).await?))
}

/// A series with what its dates are.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    #[serde(flatten)]
    pub series: Series,
    /// Its dates, in all.
    pub dates: i64,
    /// Its dates per state (`draft`, `published`, …; states with none left out).
    pub dates_by_state: BTreeMap<String, i64>,
    pub first_starts_at: Option<DateTime<Utc>>,
    pub last_starts_at: Option<DateTime<Utc>>,
}

async fn view(conn: &mut PgConnection, series: Series) -> Result<SeriesView> {
    let rows: Vec<(String, i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT state, count(*), min(starts_at), max(starts_at) FROM events WHERE series_id = $1 GROUP BY state",
    )
    .bind(series.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(SeriesView {
        dates: rows.iter().map(|r| r.1).sum(),
        first_starts_at: rows.iter().map(|r| r.2).min(),
        last_starts_at: rows.iter().map(|r| r.3).max(),
        dates_by_state: rows.into_iter().map(|(s, n, _, _)| (s, n)).collect(),
        series,
    })
}

#[utoipa::path(get, path = "/api/v1/series/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = SeriesView), crate::api::Problems))]
async fn get_series(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Path(id): Path<String>,
) -> Result<Json<SeriesView>> {
    let mut conn = state.db.acquire().await?;
    let series = find_series(&mut conn, &caller, &id, false).await?;
    Ok(Json(view(&mut conn, series).await?))
}

/// What may change of a series (absent: unchanged). Its dates do not change with it: each is an
/// event of its own (`PATCH /api/v1/events/{id}`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SeriesChanges {
    title: Option<String>,
    /// Another date of the series, which new dates are then copied from.
    template_event_id: Option<Uuid>,
    sale_windows: Option<SaleWindows>,
}

#[utoipa::path(patch, path = "/api/v1/series/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = SeriesChanges, responses((status = 200, body = SeriesView), crate::api::Problems))]
async fn update_series(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path(id): Path<String>,
    JsonBody(c): JsonBody<SeriesChanges>,
) -> Result<Json<SeriesView>> {
    if let Some(title) = &c.title {
        check_title(title)?;
    }
    let mut tx = state.db.begin().await?;
    let before = find_series(&mut tx, &caller, &id, true).await?;
    if let Some(template) = c.template_event_id {
        let of_series: Option<Uuid> = sqlx::query_scalar("SELECT series_id FROM events WHERE id = $1")
            .bind(template)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        if of_series != Some(before.id) {
            return Err(ApiError::field("template_event_id", "must be a date of this series"));
        }
    }
    let after: Series = sqlx::query_as(&format!(
        "UPDATE event_series SET title = COALESCE($2, title), template_event_id = COALESCE($3, template_event_id),
                                 sale_windows = COALESCE($4, sale_windows), updated_at = now()
         WHERE id = $1 RETURNING {SERIES_COLUMNS}"
    ))
    .bind(before.id)
    .bind(c.title.as_deref().map(str::trim))
    .bind(c.template_event_id)
    .bind(c.sale_windows)
    .fetch_one(&mut *tx)
    .await?;
    let details = crate::audit::diff(&before, &after);
    crate::audit::by(
        &mut tx,
        &caller,
        after.organization_id,
        "series.update",
        format!("series:{}", after.id),
        details,
    )
    .await?;
    let answer = view(&mut tx, after).await?;
    tx.commit().await?;
    Ok(Json(answer))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DateFilter {
    #[serde(default)]
    state: Option<EventState>,
    /// Dates starting at or after this time (RFC 3339).
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/series/{id}/dates", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id"), DateFilter), responses((status = 200, body = Listing<Event>), crate::api::Problems))]
async fn list_dates(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Path(id): Path<String>,
    Query(f): Query<DateFilter>,
) -> Result<Json<Listing<Event>>> {
    let series = find_series(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let q = api::PageQuery { limit: f.limit, cursor: f.cursor };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE series_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::timestamptz IS NULL OR starts_at >= $3)
           AND (starts_at, id) > ($4, $5)
         ORDER BY starts_at, id LIMIT $6"
    );
    let query = sqlx::query_as(&sql).bind(series.id).bind(f.state).bind(f.from);
    Ok(Json(q.fetch(query, &state.db, |e: &Event| (e.details.schedule.starts_at, e.id)).await?))
}

/// The most dates one bulk change names.
const MAX_NAMED: usize = 366;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatesChange {
    /// `published`, `on_sale`, or `cancelled` for drafts only (a date someone may have bought is
    /// cancelled or completed on its own: `POST /api/v1/events/{id}/state`).
    state: EventState,
    /// The dates to move (at most 366); absent: every date of the series.
    #[serde(default)]
    dates: Option<Vec<Uuid>>,
}

/// A date the bulk change left as it was, and why: `already`, `not_in_series`, `not_named` (a sold
/// out date goes back on sale only when named), `not_a_draft` (only drafts are cancelled in bulk),
/// or the event's own refusal (`invalid_transition`, `no_tiers`, `concurrent_change`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DateLeft {
    pub id: Uuid,
    pub state: Option<EventState>,
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatesChanged {
    /// The dates moved, by start.
    pub changed: Vec<dates::DateRef>,
    pub left: Vec<DateLeft>,
}

/// `POST /api/v1/series/{id}/state`: moves the dates to `state` in one transaction, each by the
/// event's own rule (`events::transition`: a tier to publish, pushed to the edge, audited); a date
/// that cannot move is left and said why, the others still move.
#[utoipa::path(post, path = "/api/v1/series/{id}/state", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = StatesChange, responses((status = 200, body = StatesChanged), crate::api::Problems))]
async fn change_states(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<StatesChange>,
) -> Result<Json<StatesChanged>> {
    if !matches!(change.state, EventState::Published | EventState::OnSale | EventState::Cancelled) {
        return Err(ApiError::field(
            "state",
            "a series moves its dates to published or on_sale, or cancels its drafts; complete a date on its own",
        ));
    }
    if change.dates.as_ref().is_some_and(|d| d.is_empty() || d.len() > MAX_NAMED) {
        return Err(ApiError::field("dates", "must name 1 to 366 dates, or be left out for every date"));
    }
    let mut tx = state.db.begin().await?;
    let series = find_series(&mut tx, &caller, &id, true).await?;
    // Read first; then only the dates that may move are locked, in one order (by start), `FOR NO
    // KEY UPDATE`: orders and tickets being recorded for them (their foreign keys' `KEY SHARE`)
    // do not wait, and dates left as they are are not locked at all. (Two bulk changes of a
    // series are already one after the other: the series' row is locked.)
    let dates: Vec<Event> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE series_id = $1 AND ($2::uuid[] IS NULL OR id = ANY($2))
         ORDER BY starts_at, id"
    ))
    .bind(series.id)
    .bind(change.dates.as_deref())
    .fetch_all(&mut *tx)
    .await?;
    let mut answer = StatesChanged { changed: Vec::new(), left: Vec::new() };
    for named in change.dates.iter().flatten() {
        if !dates.iter().any(|d| d.id == *named) && !answer.left.iter().any(|l| l.id == *named) {
            answer.left.push(DateLeft { id: *named, state: None, reason: "not_in_series".into() });
        }
    }
    let mut movable = Vec::new();
    for date in &dates {
        let refused = if date.state == change.state {
            Some("already")
        } else if change.state == EventState::Cancelled && date.state != EventState::Draft {
            // Cancelling a date refunds its buyers: one date at a time, on purpose.
            Some("not_a_draft")
        } else if date.state == EventState::SoldOut && change.dates.is_none() {
            // The organizer may have closed it: it opens again only when named.
            Some("not_named")
        } else if !allowed(date.state).contains(&change.state) {
            Some("invalid_transition")
        } else {
            None
        };
        match refused {
            Some(reason) => {
                answer.left.push(DateLeft { id: date.id, state: Some(date.state), reason: reason.into() })
            }
            None => movable.push(date.id),
        }
    }
    let locked: Vec<Event> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1) ORDER BY starts_at, id FOR NO KEY UPDATE"
    ))
    .bind(&movable)
    .fetch_all(&mut *tx)
    .await?;
    for date in locked {
        // The event's own rule, on the state it has now (`concurrent_change` if it moved since).
        match crate::events::transition(&mut tx, &caller, &date, change.state).await {
            Ok(moved) => answer.changed.push(dates::DateRef::of(&moved)),
            Err(ApiError::Conflict { reason, .. }) => {
                answer.left.push(DateLeft { id: date.id, state: Some(date.state), reason: reason.into() })
            }
            Err(e) => return Err(e),
        }
    }
    let details = json!({ "to": change.state, "changed": answer.changed.len(), "left": answer.left.len() });
    crate::audit::by(
        &mut tx,
        &caller,
        series.organization_id,
        "series.state",
        format!("series:{}", series.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(answer))
}
