//! What the edge sells of an event, set by its organizer:
//!
//! - `PUT  /api/v1/events/{id}/waiting-room`    the waiting room's settings (a merge patch)
//! - `PUT  /api/v1/events/{id}/seats-off-sale`  seats held back from sale
//! - `GET  /api/v1/events/{id}/sync`, `POST …/sync`  what the edge holds of the event; push it again

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};
use shared_types::ids::SeatId;
use shared_types::inventory::FieldError;
use shared_types::waiting_room::WaitingRoomSettings;

use crate::api::{self, JsonBody};
use crate::auth::need;
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::publishing::{self, touch};
use crate::state::AppState;

/// `PUT /api/v1/events/{id}/waiting-room`: changes the event's waiting-room settings. The body
/// names only what changes (a JSON merge patch, RFC 7396: fields left out keep their value, `null`
/// resets one to its default); their `version` is set by the core from the event's version when
/// pushed. The result is checked against the same bounds and the same rule the edge applies
/// ([`WaitingRoomSettings::validate`], [`WaitingRoomSettings::check_change`]), so that a change
/// the core accepts is one the edge takes: once anyone has joined a started sale, its on-sale time,
/// mode and shards stay (`409`, the edge's reason); when the edge cannot say whether anyone has
/// joined, such a change waits (`503`).
#[utoipa::path(put, path = "/api/v1/events/{id}/waiting-room", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body(content = Object, description = "the WaitingRoomSettings fields to change, a JSON merge patch (docs/api.md)"), responses((status = 200, body = WaitingRoomSettings, description = "the settings as they now are"), crate::api::Problems))]
pub(super) async fn set_waiting_room(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    body: Bytes,
) -> Result<Json<Value>> {
    let patch: Value = api::parse_json(&body)?;
    let Some(fields) = patch.as_object() else {
        return Err(ApiError::Malformed("the body must be a JSON object of the fields to change".into()));
    };
    // Set by the core when it pushes (the event's version and title), never by the organizer.
    let mut core_owned: Vec<FieldError> = ["version", "display_name"]
        .into_iter()
        .filter(|f| fields.contains_key(*f))
        .map(|f| FieldError::new(f, "is set by the core"))
        .collect();
    // Retired: the per-address limit is the platform's (the edge's IP_LIMIT binding).
    if patch.pointer("/rate_limits/per_ip_per_minute").is_some() {
        core_owned.push(FieldError::new(
            "rate_limits.per_ip_per_minute",
            "is the platform's (the edge's IP_LIMIT rate limiting binding, per environment); leave it out",
        ));
    }
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
    let next =
        current.patched(&patch).map_err(|e| ApiError::Malformed(format!("the change is not valid: {e}")))?;
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
    let subject = format!("event:{}", event.id);
    let details = json!({ "patch": patch });
    crate::audit::by(&mut tx, &caller, event.organization_id, "event.set_waiting_room", subject, details)
        .await?;
    tx.commit().await?;
    Ok(Json(serde_json::to_value(&next).unwrap_or_default()))
}

/// `PUT /api/v1/events/{id}/seats-off-sale`: the seats of the venue this event does not sell
/// (replacing the list; `[]` puts every seat back on sale). Pushed to the edge, where a seat held or
/// sold when it was taken off keeps its hold or sale; when the hold ends, the seat stays off sale.
#[utoipa::path(put, path = "/api/v1/events/{id}/seats-off-sale", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = Vec<String>, responses((status = 200, body = OffSaleSeats, description = "the seats now off sale"), crate::api::Problems))]
pub(super) async fn set_seats_off_sale(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    JsonBody(seats): JsonBody<Vec<String>>,
) -> Result<Json<OffSaleSeats>> {
    if seats.len() > 100_000 {
        return Err(ApiError::field("seats", "at most 100000 seats"));
    }
    let malformed: Vec<FieldError> = seats
        .iter()
        .enumerate()
        .filter(|(_, s)| SeatId::parse(s).is_err())
        .take(50)
        .map(|(i, _)| FieldError::new(format!("[{i}]"), "is not a seat id"))
        .collect();
    if !malformed.is_empty() {
        return Err(ApiError::Validation(malformed));
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
    let before: Value = sqlx::query_scalar("SELECT off_sale_seats FROM events WHERE id = $1 FOR UPDATE")
        .bind(event.id)
        .fetch_one(&mut *tx)
        .await?;
    let before: Vec<String> = serde_json::from_value(before).unwrap_or_default();
    sqlx::query("UPDATE events SET off_sale_seats = $2 WHERE id = $1")
        .bind(event.id)
        .bind(json!(seats))
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, event.id).await?;
    let details = off_sale_change(&before, &seats);
    let subject = format!("event:{}", event.id);
    crate::audit::by(&mut tx, &caller, event.organization_id, "event.set_seats_off_sale", subject, details)
        .await?;
    tx.commit().await?;
    Ok(Json(OffSaleSeats { off_sale_seats: seats }))
}

/// Most seat ids an audit row of a change of the seats off sale names, each way (the counts are
/// always whole).
const AUDITED_SEATS: usize = 500;

/// What a new list of seats off sale changed: the seats taken off and put back (at most
/// [`AUDITED_SEATS`] of each named), and how many of each.
fn off_sale_change(before: &[String], after: &[String]) -> Value {
    let (old, new): (std::collections::HashSet<&String>, std::collections::HashSet<&String>) =
        (before.iter().collect(), after.iter().collect());
    let mut taken_off: Vec<&String> = new.difference(&old).copied().collect();
    let mut put_back: Vec<&String> = old.difference(&new).copied().collect();
    taken_off.sort();
    put_back.sort();
    json!({
        "taken_off": taken_off.len(),
        "put_back": put_back.len(),
        "off_sale": new.len(),
        "taken_off_seats": &taken_off[..taken_off.len().min(AUDITED_SEATS)],
        "put_back_seats": &put_back[..put_back.len().min(AUDITED_SEATS)],
    })
}

/// The seats an event holds back from sale, as `PUT /api/v1/events/{id}/seats-off-sale` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffSaleSeats {
    pub off_sale_seats: Vec<String>,
}

/// `GET /api/v1/events/{id}/sync`: what the edge holds of the event.
#[utoipa::path(get, path = "/api/v1/events/{id}/sync", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "what the edge holds of the event", body = Object), crate::api::Problems))]
pub(super) async fn sync_status(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
) -> Result<Json<Value>> {
    Ok(Json(publishing::status(&state.db, event.id).await?))
}

/// `POST /api/v1/events/{id}/sync`: push the event to the edge now. One without orders is pushed
/// even when recorded as synced (the edge may have lost it); one with orders only when its push is
/// pending or failing (a retry now). The push itself runs in the background.
#[utoipa::path(post, path = "/api/v1/events/{id}/sync", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Object), crate::api::Problems))]
pub(super) async fn sync_now(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
) -> Result<Json<Value>> {
    if !publishing::visible_at_edge(event.state) {
        return Err(ApiError::conflict("not_published", "only a published event is pushed to the edge"));
    }
    let mut tx = state.db.begin().await?;
    let forced = publishing::force(&mut tx, event.id).await?;
    if !forced {
        publishing::enqueue(&mut tx, event.id, event.organization_id, event.version).await?;
    }
    let details = json!({ "version": event.version, "forced": forced });
    crate::audit::by(
        &mut tx,
        &caller,
        event.organization_id,
        "event.sync",
        format!("event:{}", event.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(publishing::status(&state.db, event.id).await?))
}
