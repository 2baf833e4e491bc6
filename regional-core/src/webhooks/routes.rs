//! The partner webhooks' API (organizer admins, for their organization; docs/webhooks.md):
//!
//! - `POST   /api/v1/webhook-endpoints`                     register (the secret is shown once)
//! - `GET    /api/v1/webhook-endpoints`
//! - `GET    /api/v1/webhook-endpoints/{id}`
//! - `PATCH  /api/v1/webhook-endpoints/{id}`                url, description, event types, enabled
//! - `DELETE /api/v1/webhook-endpoints/{id}`                with its deliveries
//! - `POST   /api/v1/webhook-endpoints/{id}/rotate-secret`  a new secret; the old one signs too for a while
//! - `POST   /api/v1/webhook-endpoints/{id}/test`           a `webhook.test` delivery
//! - `POST   /api/v1/webhook-endpoints/{id}/replay`         every failed delivery of a time window, again
//! - `GET    /api/v1/webhook-endpoints/{id}/deliveries`     filtered, paged
//! - `GET    /api/v1/webhook-deliveries/{id}`               with its body and every attempt
//! - `POST   /api/v1/webhook-deliveries/{id}/replay`        one delivery, again

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::inventory::FieldError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::settings::Sealed;
use super::{signing, target, Webhooks, EVENT_TYPES, TEST_TYPE};
use crate::api::{self, resource_routes, Creating, Listing, PageQuery, Query};
use crate::auth::{need, Caller, Can};
use crate::error::{ApiError, Result};
use crate::state::AppState;

/// Most endpoints an organization may have.
pub const MAX_ENDPOINTS: i64 = 16;
/// Most deliveries one replay of a window sends again.
pub const REPLAY_MAX: i64 = 10_000;
/// Most test pings of one endpoint waiting at once, and made in an hour (a test is a click, not a
/// load generator).
const MAX_PENDING_TESTS: i64 = 5;
const MAX_TESTS_AN_HOUR: i64 = 30;
/// How long a rotated-out secret still signs by default (hours).
const DEFAULT_KEEP_PREVIOUS_HOURS: u32 = 24;

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    resource_routes!(
        [create_webhook_endpoint, list_webhook_endpoints],
        [get_webhook_endpoint, update_webhook_endpoint, delete_webhook_endpoint],
        [rotate_webhook_secret],
        [test_webhook_endpoint],
        [replay_webhook_endpoint],
        [list_webhook_deliveries],
        [get_webhook_delivery],
        [replay_webhook_delivery],
    )
}

/// A registered endpoint (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    id: Uuid,
    organization_id: Uuid,
    url: String,
    description: String,
    /// The domain events sent to it.
    event_types: Vec<String>,
    enabled: bool,
    /// `failing` (disabled by the dispatcher after a long failure) or `by_user`.
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    /// Since when every attempt failed (absent while it answers).
    failing_since: Option<DateTime<Utc>>,
    /// Until when the secret before the last rotation still signs (a second signature).
    previous_secret_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str =
    "id, organization_id, url, description, event_types, enabled, disabled_reason, \
     disabled_at, failing_since, previous_until AS previous_secret_until, created_at, updated_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    /// `https://` and public (docs/webhooks.md, "Where an endpoint may point").
    #[schema(max_length = 2048)]
    url: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    description: String,
    /// One or more of the domain event types (docs/events.md).
    #[schema(min_items = 1, max_items = 32)]
    event_types: Vec<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointChanges {
    #[schema(max_length = 2048)]
    url: Option<String>,
    #[schema(max_length = 200)]
    description: Option<String>,
    #[schema(min_items = 1, max_items = 32)]
    event_types: Option<Vec<String>>,
    /// `false` disables it; `true` enables it again (and forgets its failure).
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// How long the current secret still signs beside the new one (0 to 168 hours, default 24).
    #[schema(maximum = 168)]
    keep_previous_hours: Option<u32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayWindow {
    /// Failed deliveries made at or after this time are sent again.
    since: DateTime<Utc>,
    /// And before this one (default: now).
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

/// How many deliveries a replay sent again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Replayed {
    replayed: i64,
}

/// A delivery: one domain event for one endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    id: Uuid,
    endpoint_id: Uuid,
    /// The `webhook-id` header it is sent with, the same at every attempt and replay.
    message_id: String,
    event_type: String,
    /// The domain event's outbox id (`data.message_id`); absent for a test.
    outbox_id: Option<i64>,
    /// `pending`, `succeeded` or `failed`.
    state: String,
    /// Attempts since it was made or last replayed.
    tries: i32,
    /// When the next attempt is due (for a pending delivery).
    next_attempt_at: DateTime<Utc>,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str =
    "id, endpoint_id, 'msg_' || replace(id::text, '-', '') AS message_id, event_type, \
     outbox_id, state, tries, next_attempt_at, last_status, last_error, created_at, updated_at";

/// One attempt and what it got.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
struct Attempt {
    attempted_at: DateTime<Utc>,
    duration_ms: i32,
    /// The HTTP status, when an answer came.
    status: Option<i32>,
    /// The answer's first 2 KiB.
    response: Option<String>,
    /// Why no usable answer came.
    error: Option<String>,
    succeeded: bool,
}

/// A delivery with its body and its attempts (oldest first).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct DeliveryDetail {
    #[serde(flatten)]
    delivery: Delivery,
    /// The body as sent: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
    body: Value,
    attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum DeliveryState {
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryFilter {
    /// Only deliveries in this state.
    #[serde(default)]
    state: Option<DeliveryState>,
    /// Only deliveries of this event type.
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

/// The webhooks, or the 503 their routes answer on a core without `CORE_WEBHOOK_KEYS`.
fn hooks(state: &AppState) -> Result<Arc<Webhooks>> {
    state.webhooks.clone().ok_or_else(|| {
        ApiError::Unavailable("webhooks are not configured on this core (CORE_WEBHOOK_KEYS)".into())
    })
}

fn check_types(errors: &mut Vec<FieldError>, types: &[String]) {
    if types.is_empty() || types.len() > 32 {
        errors.push(FieldError::new("event_types", "must name 1 to 32 event types"));
    }
    for (i, t) in types.iter().enumerate() {
        if !EVENT_TYPES.contains(&t.as_str()) {
            errors.push(FieldError::new(
                format!("event_types[{i}]"),
                "is not a domain event type (docs/events.md)",
            ));
        }
    }
}

fn check_description(errors: &mut Vec<FieldError>, description: &str) {
    if description.chars().count() > 200 {
        errors.push(FieldError::new("description", "must be at most 200 characters"));
    }
}

fn check_endpoint_url(errors: &mut Vec<FieldError>, url: &str, allow_private: bool) {
    if let Err(why) = target::check_url(url.trim(), allow_private) {
        errors.push(FieldError::new("url", why));
    }
}

/// The event types, each once, in the order given.
fn unique(types: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in types {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

async fn find_endpoint(conn: &mut PgConnection, caller: &Caller, id: &str, lock: bool) -> Result<Endpoint> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<Endpoint> =
        sqlx::query_as(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1{lock}"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.filter(|e| caller.sees(e.organization_id)).ok_or(ApiError::NotFound)
}

fn audit_subject(id: Uuid) -> String {
    format!("webhook_endpoint:{id}")
}

#[utoipa::path(post, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("api_key" = [])), request_body = NewEndpoint, responses((status = 201, body = Endpoint, description = "the endpoint, with its signing secret `secret` (`whsec_…`) shown this once"), crate::api::Problems))]
async fn create_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let hooks = hooks(&state)?;
    let new: NewEndpoint = creating.json()?;
    let mut errors = Vec::new();
    check_endpoint_url(&mut errors, &new.url, hooks.settings.allow_private);
    check_description(&mut errors, &new.description);
    check_types(&mut errors, &new.event_types);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (c, org, h) = (caller.clone(), caller.organization_id, hooks.clone());
    let answer = creating
        .run_with_secret(&caller, "/api/v1/webhook-endpoints", "secret", move |conn| {
            Box::pin(async move {
                // One organization's registrations one at a time (the cap holds under concurrency).
                sqlx::query("SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE").bind(org).execute(&mut *conn).await?;
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1")
                    .bind(org)
                    .fetch_one(&mut *conn)
                    .await?;
                if count >= MAX_ENDPOINTS {
                    return Err(ApiError::conflict(
                        "too_many_endpoints",
                        format!("an organization has at most {MAX_ENDPOINTS} webhook endpoints"),
                    ));
                }
                let id = Uuid::new_v4();
                let secret = signing::new_secret();
                let sealed = h.settings.keys.seal(&secret, id.as_bytes());
                let row: Endpoint = sqlx::query_as(&format!(
                    "INSERT INTO webhook_endpoints (id, organization_id, url, description, event_types, secret_key_id, secret_sealed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENDPOINT_COLUMNS}"
                ))
                .bind(id)
                .bind(org)
                .bind(new.url.trim())
                .bind(new.description.trim())
                .bind(unique(&new.event_types))
                .bind(&sealed.key_id)
                .bind(&sealed.bytes)
                .fetch_one(&mut *conn)
                .await?;
                let details = json!({ "url": row.url, "event_types": row.event_types, "description": row.description });
                crate::audit::by(conn, &c, org, "webhook_endpoint.create", audit_subject(id), details).await?;
                let mut answer = serde_json::to_value(&row).unwrap_or_default();
                answer["secret"] = Value::String(signing::display(&secret));
                Ok((StatusCode::CREATED, answer))
            })
        })
        .await?;
    refresh(&state, &hooks).await;
    Ok(answer)
}

/// Reads the subscriptions again after a change (the dispatcher does it each poll anyway).
async fn refresh(state: &AppState, hooks: &Webhooks) {
    if let Err(e) = hooks.refresh(&state.db).await {
        tracing::warn!(error = %e, "webhooks: could not read the subscriptions after a change");
    }
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("api_key" = [])), params(PageQuery), responses((status = 200, body = Listing<Endpoint>), crate::api::Problems))]
async fn list_webhook_endpoints(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Listing<Endpoint>>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
         WHERE organization_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4"
    );
    let query = sqlx::query_as(&sql).bind(caller.organization_id);
    Ok(Json(page.fetch(query, &state.db, |e: &Endpoint| (e.created_at, e.id)).await?))
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), responses((status = 200, body = Endpoint), crate::api::Problems))]
async fn get_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(find_endpoint(&mut conn, &caller, &id, false).await?))
}

#[utoipa::path(patch, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), request_body = EndpointChanges, responses((status = 200, body = Endpoint), crate::api::Problems))]
async fn update_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Endpoint>> {
    let hooks = hooks(&state)?;
    let mut tx = state.db.begin().await?;
    let before = find_endpoint(&mut tx, &caller, &id, true).await?;
    let c: EndpointChanges = api::parse_json(&body)?;
    let mut errors = Vec::new();
    if let Some(url) = &c.url {
        check_endpoint_url(&mut errors, url, hooks.settings.allow_private);
    }
    if let Some(d) = &c.description {
        check_description(&mut errors, d);
    }
    if let Some(types) = &c.event_types {
        check_types(&mut errors, types);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Enabling forgets the failure (a fresh start); disabling says who did it.
    let after: Endpoint = sqlx::query_as(&format!(
        "UPDATE webhook_endpoints SET url = coalesce($2, url), description = coalesce($3, description),
             event_types = coalesce($4, event_types),
             enabled = coalesce($5, enabled),
             disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason WHEN $5 THEN NULL
                                    WHEN enabled THEN 'by_user' ELSE disabled_reason END,
             disabled_at = CASE WHEN $5 IS NULL THEN disabled_at WHEN $5 THEN NULL
                                WHEN enabled THEN now() ELSE disabled_at END,
             failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END,
             updated_at = now()
         WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}"
    ))
    .bind(before.id)
    .bind(c.url.as_deref().map(str::trim))
    .bind(c.description.as_deref().map(str::trim))
    .bind(c.event_types.as_deref().map(unique))
    .bind(c.enabled)
    .fetch_one(&mut *tx)
    .await?;
    // Nothing is sent to a disabled endpoint: what waited fails, replayable once it is enabled.
    if before.enabled && !after.enabled {
        super::dispatch::fail_pending(&mut tx, after.id).await?;
    }
    let details = crate::audit::diff(&before, &after);
    crate::audit::by(
        &mut tx,
        &caller,
        after.organization_id,
        "webhook_endpoint.update",
        audit_subject(after.id),
        details,
    )
    .await?;
    tx.commit().await?;
    refresh(&state, &hooks).await;
    Ok(Json(after))
}

#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), responses((status = 204, description = "deleted, with its deliveries"), crate::api::Problems))]
async fn delete_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let mut tx = state.db.begin().await?;
    let endpoint = find_endpoint(&mut tx, &caller, &id, true).await?;
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(endpoint.id).execute(&mut *tx).await?;
    let details = json!({ "url": endpoint.url, "event_types": endpoint.event_types });
    crate::audit::by(
        &mut tx,
        &caller,
        endpoint.organization_id,
        "webhook_endpoint.delete",
        audit_subject(endpoint.id),
        details,
    )
    .await?;
    tx.commit().await?;
    if let Some(hooks) = &state.webhooks {
        refresh(&state, hooks).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), request_body = Option<Rotation>, responses((status = 200, body = Endpoint, description = "the endpoint, with its new signing secret `secret` shown this once"), crate::api::Problems))]
async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let hooks = hooks(&state)?;
    let endpoint = find_endpoint(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let rotation: Rotation = creating.json_or_default()?;
    let keep = rotation.keep_previous_hours.unwrap_or(DEFAULT_KEEP_PREVIOUS_HOURS);
    if keep > 168 {
        return Err(ApiError::field("keep_previous_hours", "must be 0 to 168"));
    }
    let (c, h) = (caller.clone(), hooks.clone());
    let path = format!("/api/v1/webhook-endpoints/{}/rotate-secret", endpoint.id);
    creating
        .run_with_secret(&caller, &path, "secret", move |conn| {
            Box::pin(async move {
                let secret = signing::new_secret();
                let sealed: Sealed = h.settings.keys.seal(&secret, endpoint.id.as_bytes());
                // The current secret becomes the previous one (re-sealed with the current key,
                // so that a rotation of CORE_WEBHOOK_KEYS needs only one rotation of each secret).
                let current: (String, Vec<u8>) =
                    sqlx::query_as("SELECT secret_key_id, secret_sealed FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
                        .bind(endpoint.id)
                        .fetch_one(&mut *conn)
                        .await?;
                let previous = h
                    .settings
                    .keys
                    .open(&Sealed { key_id: current.0, bytes: current.1 }, endpoint.id.as_bytes())
                    .map(|p| h.settings.keys.seal(&p, endpoint.id.as_bytes()))
                    .map_err(|e| tracing::warn!(endpoint = %endpoint.id, error = %e, "webhooks: the secret rotated out does not open; only the new one signs"))
                    .ok()
                    .filter(|_| keep > 0);
                let row: Endpoint = sqlx::query_as(&format!(
                    "UPDATE webhook_endpoints SET secret_key_id = $2, secret_sealed = $3,
                         previous_key_id = $4, previous_sealed = $5,
                         previous_until = CASE WHEN $4::text IS NULL THEN NULL ELSE now() + make_interval(hours => $6) END,
                         updated_at = now()
                     WHERE id = $1 RETURNING {ENDPOINT_COLUMNS}"
                ))
                .bind(endpoint.id)
                .bind(&sealed.key_id)
                .bind(&sealed.bytes)
                .bind(previous.as_ref().map(|p| p.key_id.clone()))
                .bind(previous.as_ref().map(|p| p.bytes.clone()))
                .bind(keep as i32)
                .fetch_one(&mut *conn)
                .await?;
                let details = json!({ "previous_secret_until": row.previous_secret_until });
                crate::audit::by(conn, &c, row.organization_id, "webhook_endpoint.rotate_secret", audit_subject(row.id), details)
                    .await?;
                let mut answer = serde_json::to_value(&row).unwrap_or_default();
                answer["secret"] = Value::String(signing::display(&secret));
                Ok((StatusCode::OK, answer))
            })
        })
        .await
}

#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/test", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), responses((status = 201, body = Delivery, description = "the test delivery, due now"), crate::api::Problems))]
async fn test_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
    creating: Creating,
) -> Result<axum::response::Response> {
    hooks(&state)?;
    let endpoint = find_endpoint(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    if !endpoint.enabled {
        return Err(ApiError::conflict("endpoint_disabled", "enable the endpoint first"));
    }
    let c = caller.clone();
    let path = format!("/api/v1/webhook-endpoints/{}/test", endpoint.id);
    creating
        .run(&caller, &path, move |conn| {
            Box::pin(async move {
                // The endpoint's row locked: concurrent tests count one after the other, and one
                // disabled meanwhile gets none.
                let enabled: bool = sqlx::query_scalar("SELECT enabled FROM webhook_endpoints WHERE id = $1 FOR UPDATE")
                    .bind(endpoint.id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                if !enabled {
                    return Err(ApiError::conflict("endpoint_disabled", "enable the endpoint first"));
                }
                let (waiting, lately): (i64, i64) = sqlx::query_as(
                    "SELECT count(*) FILTER (WHERE state = 'pending'),
                            count(*) FILTER (WHERE created_at > now() - interval '1 hour')
                     FROM webhook_deliveries WHERE endpoint_id = $1 AND event_type = $2",
                )
                .bind(endpoint.id)
                .bind(TEST_TYPE)
                .fetch_one(&mut *conn)
                .await?;
                if waiting >= MAX_PENDING_TESTS || lately >= MAX_TESTS_AN_HOUR {
                    return Err(ApiError::conflict(
                        "too_many_tests",
                        format!(
                            "at most {MAX_PENDING_TESTS} tests of an endpoint wait at once, and {MAX_TESTS_AN_HOUR} are made an hour"
                        ),
                    ));
                }
                let id = Uuid::new_v4();
                let now = Utc::now();
                let body = json!({
                    "type": TEST_TYPE,
                    "timestamp": now,
                    "data": { "endpoint_id": endpoint.id, "organization_id": endpoint.organization_id, "sent_by": format!("user:{}", c.user_id) },
                })
                .to_string();
                let row: Delivery = sqlx::query_as(&format!(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, body)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {DELIVERY_COLUMNS}"
                ))
                .bind(id)
                .bind(endpoint.id)
                .bind(endpoint.organization_id)
                .bind(TEST_TYPE)
                .bind(body)
                .fetch_one(&mut *conn)
                .await?;
                let details = json!({ "delivery": id });
                crate::audit::by(conn, &c, endpoint.organization_id, "webhook_endpoint.test", audit_subject(endpoint.id), details)
                    .await?;
                Ok((StatusCode::CREATED, serde_json::to_value(&row).unwrap_or_default()))
            })
        })
        .await
}

#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/replay", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id")), request_body = ReplayWindow, responses((status = 200, body = Replayed, description = "how many failed deliveries are due again"), crate::api::Problems))]
async fn replay_webhook_endpoint(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Replayed>> {
    hooks(&state)?;
    let mut tx = state.db.begin().await?;
    let endpoint = find_endpoint(&mut tx, &caller, &id, true).await?;
    let window: ReplayWindow = api::parse_json(&body)?;
    let until = window.until.unwrap_or_else(Utc::now);
    if until <= window.since {
        return Err(ApiError::field("until", "must be after since"));
    }
    if !endpoint.enabled {
        return Err(ApiError::conflict("endpoint_disabled", "enable the endpoint first"));
    }
    let replayed = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', tries = 0, next_attempt_at = now(), claim = NULL,
             lease_until = NULL, updated_at = now()
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE endpoint_id = $1 AND state = 'failed' AND created_at >= $2 AND created_at < $3
                      ORDER BY created_at, id LIMIT $4)",
    )
    .bind(endpoint.id)
    .bind(window.since)
    .bind(until)
    .bind(REPLAY_MAX)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    let details = json!({ "since": window.since, "until": until, "replayed": replayed });
    crate::audit::by(
        &mut tx,
        &caller,
        endpoint.organization_id,
        "webhook_endpoint.replay",
        audit_subject(endpoint.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(Replayed { replayed }))
}

#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the endpoint id"), DeliveryFilter), responses((status = 200, body = Listing<Delivery>), crate::api::Problems))]
async fn list_webhook_deliveries(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
    Query(f): Query<DeliveryFilter>,
) -> Result<Json<Listing<Delivery>>> {
    let endpoint = find_endpoint(&mut *state.db.acquire().await?, &caller, &id, false).await?;
    let state_filter = f.state.map(|s| match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Succeeded => "succeeded",
        DeliveryState::Failed => "failed",
    });
    let page = PageQuery { limit: f.limit, cursor: f.cursor };
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE endpoint_id = $1 AND ($2::text IS NULL OR state = $2) AND ($3::text IS NULL OR event_type = $3)
           AND (created_at, id) > ($4, $5) ORDER BY created_at, id LIMIT $6"
    );
    let query = sqlx::query_as(&sql)
        .bind(endpoint.id)
        .bind(state_filter)
        .bind(f.event_type.filter(|t| !t.is_empty()));
    Ok(Json(page.fetch(query, &state.db, |d: &Delivery| (d.created_at, d.id)).await?))
}

async fn find_delivery(
    conn: &mut PgConnection,
    caller: &Caller,
    id: &str,
) -> Result<(Delivery, String, Uuid)> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let row: Option<(Uuid, String)> =
        sqlx::query_as("SELECT organization_id, body FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let (organization, body) = row.filter(|(org, _)| caller.sees(*org)).ok_or(ApiError::NotFound)?;
    let delivery: Delivery =
        sqlx::query_as(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok((delivery, body, organization))
}

#[utoipa::path(get, path = "/api/v1/webhook-deliveries/{id}", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the delivery id")), responses((status = 200, body = DeliveryDetail), crate::api::Problems))]
async fn get_webhook_delivery(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>> {
    let mut conn = state.db.acquire().await?;
    let (delivery, body, _) = find_delivery(&mut conn, &caller, &id).await?;
    let attempts: Vec<Attempt> = sqlx::query_as(
        "SELECT attempted_at, duration_ms, status, response, error, succeeded FROM webhook_attempts
         WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(delivery.id)
    .fetch_all(&mut *conn)
    .await?;
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok(Json(DeliveryDetail { delivery, body, attempts }))
}

#[utoipa::path(post, path = "/api/v1/webhook-deliveries/{id}/replay", tag = "webhooks", security(("api_key" = [])), params(("id" = String, Path, description = "the delivery id")), responses((status = 200, body = Delivery, description = "the delivery, due now (with the same webhook-id)"), crate::api::Problems))]
async fn replay_webhook_delivery(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageWebhooks>,
    Path(id): Path<String>,
) -> Result<Json<Delivery>> {
    hooks(&state)?;
    let mut tx = state.db.begin().await?;
    let (delivery, _, organization) = find_delivery(&mut tx, &caller, &id).await?;
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM webhook_endpoints WHERE id = $1 FOR SHARE")
        .bind(delivery.endpoint_id)
        .fetch_one(&mut *tx)
        .await?;
    if !enabled {
        return Err(ApiError::conflict("endpoint_disabled", "enable the endpoint first"));
    }
    // A pending delivery is due now; one in flight keeps its lease (no second attempt at once).
    let row: Option<Delivery> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries SET state = 'pending', tries = 0, next_attempt_at = now(), claim = NULL,
             lease_until = NULL, updated_at = now()
         WHERE id = $1 AND state <> 'pending' RETURNING {DELIVERY_COLUMNS}"
    ))
    .bind(delivery.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::conflict(
            "delivery_pending",
            "this delivery is already waiting for its next attempt",
        ));
    };
    let details = json!({ "delivery": row.id, "was": delivery.state });
    crate::audit::by(
        &mut tx,
        &caller,
        organization,
        "webhook_delivery.replay",
        format!("webhook_delivery:{}", row.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(row))
}
