//! An event's ticket tiers: what is sold, at what price, how many, when.
//!
//! - `POST  /api/v1/events/{id}/tiers`         a ticket tier
//! - `GET   /api/v1/events/{id}/tiers`
//! - `PATCH /api/v1/events/{id}/tiers/{tier}`

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use shared_types::inventory::{Currency, FieldError};
use uuid::Uuid;

use crate::api::{self, Creating, Listing};
use crate::auth::need;
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::models::event::{EventState, Tier, TIER_COLUMNS};
use crate::models::venue::{find_venue, GaArea, ZoneIn};
use crate::publishing::touch;
use crate::state::AppState;
use axum::body::Bytes;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTier {
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

#[utoipa::path(post, path = "/api/v1/events/{id}/tiers", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = NewTier, responses((status = 201, body = Tier), crate::api::Problems))]
pub(super) async fn create_tier(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewTier = creating.json()?;
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
    let (org, event_id, c) = (event.organization_id, event.id, caller.clone());
    let path = format!("/api/v1/events/{event_id}/tiers");
    creating.run(&caller, &path, move |conn| {
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
            let details = json!({ "event_id": event_id, "name": tier.name, "kind": tier.kind, "price_minor": tier.price_minor,
                                  "currency": tier.currency, "quantity": tier.quantity });
            crate::audit::by(conn, &c, org, "tier.create", format!("tier:{}", tier.id), details).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&tier).unwrap_or_default()))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/events/{id}/tiers", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Listing<Tier>), crate::api::Problems))]
pub(super) async fn list_tiers(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
) -> Result<Json<Listing<Tier>>> {
    Listing::of_event(&state.db, "ticket_tiers", TIER_COLUMNS, event.id).await
}

/// The fields of a tier an organizer may change (absent: unchanged).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TierChanges {
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
pub(super) async fn update_tier(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    Path((_, tier)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Tier>> {
    let tier: Uuid = tier.parse().map_err(|_| ApiError::NotFound)?;
    // The body is read after the event is found and the tier id parsed (a foreign event or a
    // malformed tier id is 404 before any 400 or 422; a tier of another event is 404 at its update).
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
    let before: Option<Tier> = sqlx::query_as(&format!(
        "SELECT {TIER_COLUMNS} FROM ticket_tiers WHERE id = $1 AND event_id = $2 FOR UPDATE"
    ))
    .bind(tier)
    .bind(event.id)
    .fetch_optional(&mut *tx)
    .await?;
    let before = before.ok_or(ApiError::NotFound)?;
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
    let details = crate::audit::diff(&before, &updated);
    crate::audit::by(&mut tx, &caller, event.organization_id, "tier.update", format!("tier:{tier}"), details)
        .await?;
    tx.commit().await?;
    Ok(Json(updated))
}
