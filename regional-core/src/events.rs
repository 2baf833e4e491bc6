//! Events, their state machine, and their ticket tiers.
//!
//! - `POST /api/v1/events`                  a draft event at one of the organization's venues
//! - `GET  /api/v1/events[?state=]`         the organization's events (paged)
//! - `GET  /api/v1/events/{id}`
//! - `POST /api/v1/events/{id}/state`       `{"state": "published"}`: one step of the state machine
//! - `POST /api/v1/events/{id}/tiers`       a ticket tier
//! - `GET  /api/v1/events/{id}/tiers`
//!
//! The state machine ([`allowed`]): draft → published → on_sale → sold_out ⇄ on_sale; any of
//! draft, published, on_sale, sold_out → cancelled; published, on_sale, sold_out → completed.
//! Cancelled and completed are final. Publishing needs at least one tier.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use shared_types::inventory::{Currency, FieldError};
use shared_types::waiting_room::WaitingRoomSettings;
use uuid::Uuid;

use crate::api::{self, page, Cursor, Listing};
use crate::auth::{Caller, Permission};
use crate::error::ApiError;
use crate::models::event::{allowed, find_event, Event, EventState, Tier, EVENT_COLUMNS, TIER_COLUMNS};
use crate::models::venue::{find_venue, GaArea, ZoneIn};
use crate::publishing::{self, touch};
use crate::state::AppState;
use crate::validate::is_url;
use crate::validate::valid_time_zone;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, update_event))
        .routes(routes!(change_state))
        .routes(routes!(create_tier, list_tiers))
        .routes(routes!(update_tier))
        .routes(routes!(set_waiting_room))
        .routes(routes!(set_seats_off_sale))
        .routes(routes!(sync_status, sync_now))
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
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTier {
    name: String,
    /// `seated` or `ga`.
    kind: String,
    #[serde(default)]
    ga_area: Option<String>,
    currency: String,
    price_minor: i64,
    #[serde(default)]
    zone_prices: std::collections::BTreeMap<String, i64>,
    quantity: i32,
    #[serde(default = "default_limit")]
    per_order_limit: i32,
    #[serde(default)]
    sale_starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    sale_ends_at: Option<DateTime<Utc>>,
}

fn default_limit() -> i32 {
    8
}

/// The rules of an event's descriptive fields, for creating and for changing it.
fn check_event_fields(
    title: &str,
    description: &str,
    genre: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    images: &[String],
) -> Vec<FieldError> {
    let mut errors = Vec::new();
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
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let new: NewEvent = api::parse_json(&body)?;
    let venue = find_venue(&state.db, &caller, &new.venue_id.to_string())
        .await
        .map_err(|_| ApiError::field("venue_id", "no such venue in this organization"))?;
    let mut errors =
        check_event_fields(&new.title, &new.description, &new.genre, new.starts_at, new.ends_at, &new.images);
    let time_zone = new.time_zone.clone().unwrap_or(venue.time_zone.clone());
    if !valid_time_zone(&time_zone) {
        errors.push(FieldError::new("time_zone", "must be an IANA time zone name such as Europe/Berlin"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let org = caller.organization_id;
    api::create(&state.db, &caller, &headers, "POST", "/api/v1/events", &body, move |conn| {
        Box::pin(async move {
            let event: Event = sqlx::query_as(&format!(
                "INSERT INTO events (id, organization_id, venue_id, title, description, genre, starts_at, ends_at,
                                     time_zone, images)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {EVENT_COLUMNS}"
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
            .fetch_one(&mut *conn)
            .await?;
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
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "catalog", security(("api_key" = [])), params(EventFilter), responses((status = 200, body = Listing<Event>), crate::api::Problems))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(f): Query<EventFilter>,
) -> Result<Json<Listing<Event>>, ApiError> {
    caller.require(Permission::Read)?;
    let q = api::PageQuery { limit: f.limit, cursor: f.cursor };
    let limit = q.limit()?;
    let (at, id) = crate::api::bounds(q.after()?)?;
    let rows: Vec<Event> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE organization_id = $1 AND ($2::text IS NULL OR state = $2) AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5"
    ))
    .bind(caller.organization_id)
    .bind(f.state)
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit, |e| Cursor { at: e.created_at, id: e.id.to_string() })))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Event), crate::api::Problems))]
async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    caller.require(Permission::Read)?;
    Ok(Json(find_event(&state.db, &caller, &id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StateChange {
    state: EventState,
}

#[utoipa::path(post, path = "/api/v1/events/{id}/state", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = StateChange, responses((status = 200, body = Event), crate::api::Problems))]
async fn change_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Event>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let change: StateChange = api::parse_json(&body)?;
    let event = find_event(&state.db, &caller, &id).await?;
    if event.state == change.state {
        return Ok(Json(event));
    }
    if !allowed(event.state).contains(&change.state) {
        let to: Vec<_> = allowed(event.state).to_vec();
        return Err(ApiError::conflict(
            "invalid_transition",
            format!("an event in state {:?} may go to {to:?} only", event.state),
        ));
    }
    let mut tx = state.db.begin().await?;
    if change.state == EventState::Published {
        let tiers: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_tiers WHERE event_id = $1")
            .bind(event.id)
            .fetch_one(&mut *tx)
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
    .bind(change.state)
    .bind(event.state)
    .fetch_optional(&mut *tx)
    .await?;
    let updated = updated.ok_or_else(|| {
        ApiError::conflict("concurrent_change", "the event changed meanwhile; read it again")
    })?;
    if publishing::visible_at_edge(updated.state) {
        publishing::enqueue(&mut tx, updated.id, updated.organization_id, updated.version).await?;
    }
    sqlx::query("INSERT INTO audit_log (actor, action, subject, details) VALUES ($1, 'event.state', $2, $3)")
        .bind(format!("user:{}", caller.user_id))
        .bind(format!("event:{}", event.id))
        .bind(json!({ "from": event.state, "to": change.state }))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Json(updated))
}

#[utoipa::path(post, path = "/api/v1/events/{id}/tiers", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = NewTier, responses((status = 201, body = Tier), crate::api::Problems))]
async fn create_tier(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let new: NewTier = api::parse_json(&body)?;
    if matches!(event.state, EventState::Cancelled | EventState::Completed) {
        return Err(ApiError::conflict("event_closed", "a cancelled or completed event takes no new tiers"));
    }
    let venue = find_venue(&state.db, &caller, &event.venue_id.to_string()).await?;
    let zones: Vec<ZoneIn> = serde_json::from_value(venue.zones.clone()).unwrap_or_default();
    let areas: Vec<GaArea> = serde_json::from_value(venue.ga_areas.clone()).unwrap_or_default();
    let mut errors = Vec::new();
    if !(1..=100).contains(&new.name.trim().chars().count()) {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    let existing: Option<String> =
        sqlx::query_scalar("SELECT currency FROM ticket_tiers WHERE event_id = $1 LIMIT 1")
            .bind(event.id)
            .fetch_optional(&state.db)
            .await?;
    if Currency::parse(&new.currency).is_err() {
        errors.push(FieldError::new("currency", "must be an ISO 4217 code such as EUR or USD"));
    } else if existing.as_deref().is_some_and(|c| c != new.currency) {
        errors.push(FieldError::new("currency", "must be the event's currency (its other tiers')"));
    }
    if new.price_minor < 0 {
        errors.push(FieldError::new("price_minor", "must be 0 or more (minor units)"));
    }
    if new.quantity < 0 {
        errors.push(FieldError::new("quantity", "must be 0 or more"));
    }
    if !(1..=100).contains(&new.per_order_limit) {
        errors.push(FieldError::new("per_order_limit", "must be 1 to 100"));
    }
    if let (Some(a), Some(b)) = (new.sale_starts_at, new.sale_ends_at) {
        if b <= a {
            errors.push(FieldError::new("sale_ends_at", "must be after sale_starts_at"));
        }
    }
    match new.kind.as_str() {
        "seated" => {
            if new.ga_area.is_some() {
                errors.push(FieldError::new("ga_area", "only for ga tiers"));
            }
            for (zone, price) in &new.zone_prices {
                if !zones.iter().any(|z| z.id.as_str() == zone) {
                    errors.push(FieldError::new(
                        format!("zone_prices.{zone}"),
                        "is not one of the venue's zones",
                    ));
                }
                if *price < 0 {
                    errors.push(FieldError::new(format!("zone_prices.{zone}"), "must be 0 or more"));
                }
            }
        }
        "ga" => match new.ga_area.as_deref().and_then(|a| areas.iter().find(|x| x.id.as_str() == a)) {
            None => errors.push(FieldError::new("ga_area", "must name one of the venue's GA areas")),
            Some(area) if new.quantity > area.capacity as i32 => errors.push(FieldError::new(
                "quantity",
                format!("exceeds the area's capacity of {}", area.capacity),
            )),
            Some(_) => {}
        },
        _ => errors.push(FieldError::new("kind", "must be seated or ga")),
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (org, event_id) = (caller.organization_id, event.id);
    let path = format!("/api/v1/events/{event_id}/tiers");
    api::create(&state.db, &caller, &headers, "POST", &path, &body, move |conn| {
        Box::pin(async move {
            let tier: Tier = sqlx::query_as(&format!(
                "INSERT INTO ticket_tiers (id, event_id, organization_id, name, kind, ga_area, currency, price_minor,
                                           zone_prices, quantity, per_order_limit, sale_starts_at, sale_ends_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {TIER_COLUMNS}"
            ))
            .bind(Uuid::new_v4())
            .bind(event_id)
            .bind(org)
            .bind(new.name.trim())
            .bind(&new.kind)
            .bind(&new.ga_area)
            .bind(&new.currency)
            .bind(new.price_minor)
            .bind(json!(new.zone_prices))
            .bind(new.quantity)
            .bind(new.per_order_limit)
            .bind(new.sale_starts_at)
            .bind(new.sale_ends_at)
            .fetch_one(&mut *conn)
            .await?;
            touch(conn, event_id).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&tier).unwrap_or_default()))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/events/{id}/tiers", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Listing<Tier>), crate::api::Problems))]
async fn list_tiers(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Listing<Tier>>, ApiError> {
    caller.require(Permission::Read)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let rows: Vec<Tier> = sqlx::query_as(&format!(
        "SELECT {TIER_COLUMNS} FROM ticket_tiers WHERE event_id = $1 ORDER BY created_at, id"
    ))
    .bind(event.id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(Listing { items: rows, next_cursor: None }))
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
}

/// `PATCH /api/v1/events/{id}`: pushed to the edge like every change (the title names the event
/// on the buyer's pages).
#[utoipa::path(patch, path = "/api/v1/events/{id}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = EventChanges, responses((status = 200, body = Event), crate::api::Problems))]
async fn update_event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Event>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let c: EventChanges = api::parse_json(&body)?;
    if matches!(event.state, EventState::Cancelled | EventState::Completed) {
        return Err(ApiError::conflict("event_closed", "a cancelled or completed event does not change"));
    }
    let title = c.title.unwrap_or(event.title);
    let description = c.description.unwrap_or(event.description);
    let genre = c.genre.unwrap_or(event.genre);
    let (starts_at, ends_at) = (c.starts_at.unwrap_or(event.starts_at), c.ends_at.unwrap_or(event.ends_at));
    let images: Vec<String> = match c.images {
        Some(images) => images,
        None => serde_json::from_value(event.images).unwrap_or_default(),
    };
    let errors = check_event_fields(&title, &description, &genre, starts_at, ends_at, &images);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE events SET title = $2, description = $3, genre = $4, starts_at = $5, ends_at = $6, images = $7
         WHERE id = $1",
    )
    .bind(event.id)
    .bind(title.trim())
    .bind(&description)
    .bind(&genre)
    .bind(starts_at)
    .bind(ends_at)
    .bind(json!(images))
    .execute(&mut *tx)
    .await?;
    touch(&mut tx, event.id).await?;
    tx.commit().await?;
    Ok(Json(find_event(&state.db, &caller, &id).await?))
}

/// The fields of a tier an organizer may change (absent: unchanged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TierChanges {
    name: Option<String>,
    price_minor: Option<i64>,
    zone_prices: Option<std::collections::BTreeMap<String, i64>>,
    quantity: Option<i32>,
    per_order_limit: Option<i32>,
}

/// `PATCH /api/v1/events/{id}/tiers/{tier}`: a price or quantity change, pushed to the edge (live
/// holds keep their seats; a GA quantity below what is held and sold is refused by the edge and
/// shows as a failing sync).
#[utoipa::path(patch, path = "/api/v1/events/{id}/tiers/{tier}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id"), ("tier" = String, Path, description = "the tier id")), request_body = TierChanges, responses((status = 200, body = Tier), crate::api::Problems))]
async fn update_tier(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tier)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Tier>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let tier: Uuid = tier.parse().map_err(|_| ApiError::NotFound)?;
    let c: TierChanges = api::parse_json(&body)?;
    let mut errors = Vec::new();
    if c.name.as_deref().is_some_and(|n| !(1..=100).contains(&n.trim().chars().count())) {
        errors.push(FieldError::new("name", "must be 1 to 100 characters"));
    }
    if c.price_minor.is_some_and(|p| p < 0) {
        errors.push(FieldError::new("price_minor", "must be 0 or more (minor units)"));
    }
    if c.quantity.is_some_and(|q| q < 0) {
        errors.push(FieldError::new("quantity", "must be 0 or more"));
    }
    if c.per_order_limit.is_some_and(|l| !(1..=100).contains(&l)) {
        errors.push(FieldError::new("per_order_limit", "must be 1 to 100"));
    }
    for (zone, price) in c.zone_prices.iter().flatten() {
        if *price < 0 {
            errors.push(FieldError::new(format!("zone_prices.{zone}"), "must be 0 or more"));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    let updated: Option<Tier> = sqlx::query_as(&format!(
        "UPDATE ticket_tiers SET name = coalesce($3, name), price_minor = coalesce($4, price_minor),
             zone_prices = coalesce($5, zone_prices), quantity = coalesce($6, quantity),
             per_order_limit = coalesce($7, per_order_limit)
         WHERE id = $1 AND event_id = $2 RETURNING {TIER_COLUMNS}"
    ))
    .bind(tier)
    .bind(event.id)
    .bind(c.name.as_deref().map(str::trim))
    .bind(c.price_minor)
    .bind(c.zone_prices.map(|z| json!(z)))
    .bind(c.quantity)
    .bind(c.per_order_limit)
    .fetch_optional(&mut *tx)
    .await?;
    let updated = updated.ok_or(ApiError::NotFound)?;
    touch(&mut tx, event.id).await?;
    tx.commit().await?;
    Ok(Json(updated))
}

/// `PUT /api/v1/events/{id}/waiting-room`: changes the event's waiting-room settings. The body
/// names only what changes (a JSON merge patch, RFC 7396: fields left out keep their value, `null`
/// resets one to its default); their `version` is set by the core from the event's version when
/// pushed. The result is checked against the same bounds and the same rule the edge applies
/// ([`WaitingRoomSettings::validate`], [`WaitingRoomSettings::check_change`]), so that a change
/// the core accepts is one the edge takes: once anyone has joined a started sale, its on-sale time,
/// mode and shards stay (`409`, the edge's reason); when the edge cannot say whether anyone has
/// joined, such a change waits (`503`).
#[utoipa::path(put, path = "/api/v1/events/{id}/waiting-room", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body(content = Object, description = "the WaitingRoomSettings fields to change (docs/api.md)"), responses((status = 200, body = Object), crate::api::Problems))]
async fn set_waiting_room(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let patch: Value = api::parse_json(&body)?;
    let Some(fields) = patch.as_object() else {
        return Err(ApiError::Malformed("the body must be a JSON object of the fields to change".into()));
    };
    // Set by the core when it pushes (the event's version and title), never by the organizer.
    let core_owned: Vec<FieldError> = ["version", "display_name"]
        .into_iter()
        .filter(|f| fields.contains_key(*f))
        .map(|f| FieldError::new(f, "is set by the core"))
        .collect();
    if !core_owned.is_empty() {
        return Err(ApiError::Validation(core_owned));
    }
    let mut tx = state.db.begin().await?;
    let stored: Value = sqlx::query_scalar("SELECT waiting_room FROM events WHERE id = $1 FOR UPDATE")
        .bind(event.id)
        .fetch_one(&mut *tx)
        .await?;
    // A stored document the core cannot read is a bug to see, not a reason to reset the settings.
    let current: WaitingRoomSettings = if stored.is_null() || stored == json!({}) {
        WaitingRoomSettings::default()
    } else {
        serde_json::from_value(stored).map_err(|e| ApiError::Database(sqlx::Error::Decode(Box::new(e))))?
    };
    let mut merged = serde_json::to_value(&current).unwrap_or_default();
    merge_patch(&mut merged, &patch);
    let next: WaitingRoomSettings = serde_json::from_value(merged)
        .map_err(|e| ApiError::Malformed(format!("the change is not valid: {e}")))?;
    next.validate().map_err(ApiError::Validation)?;
    // Without an edge nothing was pushed, so nothing there can refuse.
    if publishing::visible_at_edge(event.state) && state.edge.configured() {
        let now = Utc::now().timestamp_millis();
        // Only a change the rule could refuse needs to know whether anyone has joined.
        if let Err(refusal) = current.check_change(&next, now, false, true) {
            let joined = match state.edge.anyone_joined(event.id).await {
                Ok(joined) => joined,
                Err(e) => {
                    return Err(ApiError::Unavailable(format!(
                        "the edge could not say whether anyone has joined the line ({e}); this change may be refused there: retry"
                    )))
                }
            };
            if joined {
                return Err(ApiError::conflict(refusal.reason(), refusal.message()));
            }
        }
    }
    sqlx::query("UPDATE events SET waiting_room = $2 WHERE id = $1")
        .bind(event.id)
        .bind(serde_json::to_value(&next).unwrap_or_default())
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, event.id).await?;
    tx.commit().await?;
    Ok(Json(serde_json::to_value(&next).unwrap_or_default()))
}

/// JSON merge patch (RFC 7396): members of `patch` replace those of `target`, objects merge
/// member by member, and `null` removes one (its default applies). Eight lines; no crate needed.
fn merge_patch(target: &mut Value, patch: &Value) {
    let (Some(fields), Value::Object(changes)) = (target.as_object_mut(), patch) else {
        *target = patch.clone();
        return;
    };
    for (k, v) in changes {
        if v.is_null() {
            fields.remove(k);
        } else {
            merge_patch(fields.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `PUT /api/v1/events/{id}/seats-off-sale`: the seats of the venue this event does not sell
/// (replacing the list; `[]` puts every seat back on sale). Pushed to the edge, where a seat held or
/// sold when it was taken off keeps its hold or sale; when the hold ends, the seat stays off sale.
#[utoipa::path(put, path = "/api/v1/events/{id}/seats-off-sale", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = Vec<String>, responses((status = 200, body = Object), crate::api::Problems))]
async fn set_seats_off_sale(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    let seats: Vec<String> = api::parse_json(&body)?;
    if seats.len() > 100_000 {
        return Err(ApiError::field("seats", "at most 100000 seats"));
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT seat_id FROM venue_seats WHERE venue_id = $1 AND seat_id = ANY($2)")
            .bind(event.venue_id)
            .bind(&seats)
            .fetch_all(&state.db)
            .await?;
    let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
    let errors: Vec<FieldError> = seats
        .iter()
        .enumerate()
        .filter(|(_, s)| !known.contains(s.as_str()))
        .take(50)
        .map(|(i, _)| FieldError::new(format!("[{i}]"), "is not a seat of this event's venue"))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE events SET off_sale_seats = $2 WHERE id = $1")
        .bind(event.id)
        .bind(json!(seats))
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, event.id).await?;
    tx.commit().await?;
    Ok(Json(json!({ "off_sale_seats": seats })))
}

/// `GET /api/v1/events/{id}/sync`: what the edge holds of the event.
#[utoipa::path(get, path = "/api/v1/events/{id}/sync", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "what the edge holds of the event", body = Object), crate::api::Problems))]
async fn sync_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::Read)?;
    let event = find_event(&state.db, &caller, &id).await?;
    Ok(Json(publishing::status(&state.db, event.id).await?))
}

/// `POST /api/v1/events/{id}/sync`: retry a failing push now.
#[utoipa::path(post, path = "/api/v1/events/{id}/sync", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Object), crate::api::Problems))]
async fn sync_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Permission::ManageCatalog)?;
    let event = find_event(&state.db, &caller, &id).await?;
    if !publishing::visible_at_edge(event.state) {
        return Err(ApiError::conflict("not_published", "only a published event is pushed to the edge"));
    }
    let mut conn = state.db.acquire().await?;
    publishing::enqueue(&mut conn, event.id, event.organization_id, event.version).await?;
    Ok(Json(publishing::status(&state.db, event.id).await?))
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
