//! Events and their state machine; their ticket tiers (`tiers.rs`); what the edge sells of them
//! (`sale.rs`: the waiting room's settings, seats off sale, the sync with the edge); the waiting
//! list's counts, export and closing (`waitlist.rs`).
//!
//! - `POST  /api/v1/events`                  a draft event at one of the organization's venues
//! - `GET   /api/v1/events[?state=]`         the organization's events (paged)
//! - `GET   /api/v1/events/{id}`, `PATCH /api/v1/events/{id}`
//! - `POST  /api/v1/events/{id}/state`       `{"state": "published"}`: one step of the state machine
//!
//! A route about one event takes an [`OwnEvent`]: the caller's permission is checked and the event
//! looked up in their organization before the handler runs (a route that must read its body before
//! the event, as `change_state` does, takes `Can` and looks the event up itself).
//!
//! The state machine ([`allowed`]): draft → published → on_sale → sold_out ⇄ on_sale; any of
//! draft, published, on_sale, sold_out → cancelled; published, on_sale, sold_out → completed.
//! Cancelled and completed are final. Publishing needs at least one tier.

use crate::api::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use shared_types::inventory::FieldError;
use uuid::Uuid;

use crate::api::resource_routes;
use crate::api::{self, Creating, JsonBody, Listing};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::models::event::{allowed, find_event, Event, EventState, EVENT_COLUMNS};
use crate::models::venue::find_venue;
use crate::publishing::{self, touch};
use crate::state::AppState;
use crate::validate::valid_time_zone;
use crate::validate::{is_url, normal_color};
use utoipa_axum::router::OpenApiRouter;

mod sale;
mod tiers;
mod waitlist;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [create_event, list_events], [get_event, update_event], [change_state],
        [tiers::create_tier, tiers::list_tiers], [tiers::update_tier], [sale::set_waiting_room],
        [sale::set_seats_off_sale], [sale::sync_status, sale::sync_now],
        [waitlist::waitlist], [waitlist::close_waitlist], [waitlist::export_waitlist],
        [waitlist::waitlist_history]
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEvent {
    venue_id: Uuid,
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    genre: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    /// Defaults to the venue's.
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    /// The event's colour on the buyer's pages: `#rrggbb`.
    #[serde(default)]
    color: Option<String>,
}

/// The rules of an event's descriptive fields, for creating and for changing it.
fn check_event_fields(
    title: &str,
    description: &str,
    genre: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    images: &[String],
    color: Option<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if color.is_some_and(|c| normal_color(c).is_none()) {
        errors.push(FieldError::new("color", "must be a colour as #rrggbb"));
    }
    if !(1..=200).contains(&title.trim().chars().count()) {
        errors.push(FieldError::new("title", "must be 1 to 200 characters"));
    }
    if description.chars().count() > 20_000 {
        errors.push(FieldError::new("description", "must be at most 20000 characters"));
    }
    if genre.chars().count() > 50 {
        errors.push(FieldError::new("genre", "must be at most 50 characters"));
    }
    if ends_at <= starts_at {
        errors.push(FieldError::new("ends_at", "must be after starts_at"));
    }
    for (i, url) in images.iter().enumerate() {
        if !is_url(url) {
            errors.push(FieldError::new(format!("images[{i}]"), "must be an http(s) URL"));
        }
    }
    if images.len() > 20 {
        errors.push(FieldError::new("images", "at most 20 images"));
    }
    errors
}

#[utoipa::path(post, path = "/api/v1/events", tag = "catalog", security(("api_key" = [])), request_body = NewEvent, responses((status = 201, body = Event), crate::api::Problems))]
async fn create_event(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewEvent = creating.json()?;
    let venue = find_venue(&state.db, &caller, &new.venue_id.to_string())
        .await
        .map_err(|_| ApiError::field("venue_id", "no such venue in this organization"))?;
    let mut errors = check_event_fields(
        &new.title,
        &new.description,
        &new.genre,
        new.starts_at,
        new.ends_at,
        &new.images,
        new.color.as_deref(),
    );
    let time_zone = new.time_zone.clone().unwrap_or(venue.time_zone.clone());
    if !valid_time_zone(&time_zone) {
        errors.push(FieldError::new("time_zone", "must be an IANA time zone name such as Europe/Berlin"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (org, c) = (caller.organization_id, caller.clone());
    creating.run(&caller, "/api/v1/events", move |conn| {
        Box::pin(async move {
            let event: Event = sqlx::query_as(&format!(
                "INSERT INTO events (id, organization_id, venue_id, title, description, genre, starts_at, ends_at,
                                     time_zone, images, color)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {EVENT_COLUMNS}"
            ))
            .bind(Uuid::new_v4())
            .bind(org)
            .bind(venue.id)
            .bind(new.title.trim())
            .bind(&new.description)
            .bind(&new.genre)
            .bind(new.starts_at)
            .bind(new.ends_at)
            .bind(&time_zone)
            .bind(json!(new.images))
            .bind(new.color.as_deref().and_then(normal_color))
            .fetch_one(&mut *conn)
            .await?;
            let details = json!({ "title": event.details.title, "venue_id": venue.id });
            crate::audit::by(conn, &c, org, "event.create", format!("event:{}", event.id), details).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&event).unwrap_or_default()))
        })
    })
    .await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventFilter {
    #[serde(default)]
    state: Option<EventState>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "catalog", security(("api_key" = [])), params(EventFilter), responses((status = 200, body = Listing<Event>), crate::api::Problems))]
async fn list_events(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Query(f): Query<EventFilter>,
) -> Result<Json<Listing<Event>>> {
    let q = api::PageQuery { limit: f.limit, cursor: f.cursor };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE organization_id = $1 AND ($2::text IS NULL OR state = $2) AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5"
    );
    let query = sqlx::query_as(&sql).bind(caller.organization_id).bind(f.state);
    Ok(Json(q.fetch(query, &state.db, |e: &Event| (e.created_at, e.id)).await?))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Event), crate::api::Problems))]
async fn get_event(OwnEvent { event, .. }: OwnEvent<need::Read>) -> Result<Json<Event>> {
    Ok(Json(event))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: EventState,
}

#[utoipa::path(post, path = "/api/v1/events/{id}/state", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = StateChange, responses((status = 200, body = Event), crate::api::Problems))]
async fn change_state(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<StateChange>,
) -> Result<Json<Event>> {
    let event = find_event(&state.db, &caller, &id).await?;
    if event.state == change.state {
        return Ok(Json(event));
    }
    let mut tx = state.db.begin().await?;
    let updated = transition(&mut tx, &caller, &event, change.state).await?;
    tx.commit().await?;
    Ok(Json(updated))
}

/// Moves `event` (read in its current state) to `to`, which [`allowed`] permits, in `conn`'s
/// transaction: publishing needs a tier; an event the edge shows is pushed to it; audited. The
/// state it was read in must still be its state (a concurrent change wins: `409`). Also the series'
/// bulk change of its dates (`series/mod.rs`).
pub(crate) async fn transition(
    conn: &mut sqlx::PgConnection,
    caller: &crate::auth::Caller,
    event: &Event,
    to: EventState,
) -> Result<Event> {
    if !allowed(event.state).contains(&to) {
        let allowed: Vec<_> = allowed(event.state).to_vec();
        return Err(ApiError::conflict(
            "invalid_transition",
            format!("an event in state {:?} may go to {allowed:?} only", event.state),
        ));
    }
    if to == EventState::Published {
        let tiers: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_tiers WHERE event_id = $1")
            .bind(event.id)
            .fetch_one(&mut *conn)
            .await?;
        if tiers == 0 {
            return Err(ApiError::conflict(
                "no_tiers",
                "an event needs at least one ticket tier to be published",
            ));
        }
    }
    // The state it was read in: a concurrent change wins, this one is refused.
    let updated: Option<Event> = sqlx::query_as(&format!(
        "UPDATE events SET state = $2, version = version + 1, updated_at = now()
         WHERE id = $1 AND state = $3 RETURNING {EVENT_COLUMNS}"
    ))
    .bind(event.id)
    .bind(to)
    .bind(event.state)
    .fetch_optional(&mut *conn)
    .await?;
    let updated = updated.ok_or_else(|| {
        ApiError::conflict("concurrent_change", "the event changed meanwhile; read it again")
    })?;
    // A draft was never at the edge: its cancellation has nothing to tell it.
    let never_at_edge = event.state == EventState::Draft && to == EventState::Cancelled;
    if publishing::visible_at_edge(updated.state) && !never_at_edge {
        publishing::enqueue(conn, updated.id, updated.organization_id, updated.version).await?;
    }
    let details = json!({ "from": event.state, "to": to });
    crate::audit::by(
        conn,
        caller,
        event.organization_id,
        "event.state",
        format!("event:{}", event.id),
        details,
    )
    .await?;
    Ok(updated)
}

/// The fields of an event an organizer may change (absent: unchanged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EventChanges {
    title: Option<String>,
    description: Option<String>,
    genre: Option<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    images: Option<Vec<String>>,
    /// `#rrggbb`, or `null` for none.
    #[serde(default, deserialize_with = "crate::validate::nullable")]
    color: Option<Option<String>>,
}

/// `PATCH /api/v1/events/{id}`: pushed to the edge like every change (the title names the event
/// on the buyer's pages).
#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = EventChanges, responses((status = 200, body = Event), crate::api::Problems))]
async fn update_event(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    JsonBody(c): JsonBody<EventChanges>,
) -> Result<Json<Event>> {
    if matches!(event.state, EventState::Cancelled | EventState::Completed) {
        return Err(ApiError::conflict("event_closed", "a cancelled or completed event does not change"));
    }
    let before = event.details.clone();
    let title = c.title.unwrap_or(event.details.title);
    let description = c.description.unwrap_or(event.details.description);
    let genre = c.genre.unwrap_or(event.details.genre);
    let (starts_at, ends_at) = (
        c.starts_at.unwrap_or(event.details.schedule.starts_at),
        c.ends_at.unwrap_or(event.details.schedule.ends_at),
    );
    let images: Vec<String> = match c.images {
        Some(images) => images,
        None => serde_json::from_value(event.details.images).unwrap_or_default(),
    };
    let color = c.color.unwrap_or(event.details.color);
    let errors =
        check_event_fields(&title, &description, &genre, starts_at, ends_at, &images, color.as_deref());
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE events SET title = $2, description = $3, genre = $4, starts_at = $5, ends_at = $6, images = $7,
                           color = $8
         WHERE id = $1",
    )
    .bind(event.id)
    .bind(title.trim())
    .bind(&description)
    .bind(&genre)
    .bind(starts_at)
    .bind(ends_at)
    .bind(json!(images))
    .bind(color.as_deref().and_then(normal_color))
    .execute(&mut *tx)
    .await
    .map_err(|e| match &e {
        // `events_series_start`: a series has one date at each start.
        sqlx::Error::Database(d) if d.constraint() == Some("events_series_start") => ApiError::conflict(
            "date_taken",
            "another date of this event's series starts at that time",
        ),
        _ => e.into(),
    })?;
    touch(&mut tx, event.id).await?;
    let after: Event = sqlx::query_as(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
        .bind(event.id)
        .fetch_one(&mut *tx)
        .await?;
    let details = crate::audit::diff(&before, &after.details);
    crate::audit::by(
        &mut tx,
        &caller,
        event.organization_id,
        "event.update",
        format!("event:{}", event.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_has_final_states_and_no_way_back_to_draft() {
        use EventState::*;
        for s in [Draft, Published, OnSale, SoldOut, Cancelled, Completed] {
            assert!(!allowed(s).contains(&Draft));
        }
        assert!(allowed(Cancelled).is_empty() && allowed(Completed).is_empty());
        assert!(allowed(SoldOut).contains(&OnSale) && allowed(OnSale).contains(&SoldOut));
        assert!(!allowed(Draft).contains(&OnSale), "publish first");
    }
}
