//! The operator's view of notifications: what is parked (and why), and a retry.

use crate::api::Query;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::{Listing, PageQuery};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(retry))
}

/// A queued, sent or parked mail (its bodies are not listed).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NotificationView {
    id: Uuid,
    kind: String,
    recipient: String,
    subject: String,
    state: String,
    attempts: i32,
    last_error: Option<String>,
    order_id: Option<Uuid>,
    event_id: Option<Uuid>,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationFilter {
    /// `pending`, `sent` or `parked` (default `parked`).
    pub state: Option<String>,
}

const COLUMNS: &str = "id, kind, recipient, subject, state, attempts, last_error, order_id, event_id, next_attempt_at, created_at, sent_at";

/// `GET /api/v1/ops/notifications`: mails by state, oldest first (platform operators).
#[utoipa::path(get, path = "/api/v1/ops/notifications", tag = "operations", security(("api_key" = [])),
    params(PageQuery, NotificationFilter),
    responses((status = 200, body = Listing<NotificationView>), crate::api::Problems))]
async fn list(
    State(state): State<AppState>,
    _: Can<need::ManagePlatform>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<NotificationFilter>,
) -> Result<Json<Listing<NotificationView>>> {
    let wanted = filter.state.as_deref().unwrap_or("parked");
    if !["pending", "sent", "parked"].contains(&wanted) {
        return Err(ApiError::field("state", "must be pending, sent or parked"));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications WHERE state = $1 AND (created_at, id) > ($2, $3)
         ORDER BY created_at, id LIMIT $4"
    );
    let query = sqlx::query_as(&sql).bind(wanted);
    Ok(Json(page.fetch(query, &state.db, |r: &NotificationView| (r.created_at, r.id)).await?))
}

/// `POST /api/v1/ops/notifications/{id}/retry`: a parked mail is tried again now, with a fresh
/// count of attempts (platform operators).
#[utoipa::path(post, path = "/api/v1/ops/notifications/{id}/retry", tag = "operations", security(("api_key" = [])),
    params(("id" = String, Path, description = "the notification id")),
    responses((status = 200, body = NotificationView), crate::api::Problems))]
async fn retry(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManagePlatform>,
    Path(id): Path<String>,
) -> Result<Json<NotificationView>> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let row: Option<NotificationView> = sqlx::query_as(&format!(
        "UPDATE notifications SET state = 'pending', attempts = 0, next_attempt_at = now(), last_error = NULL
         WHERE id = $1 AND state = 'parked' RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some(r) => {
            // The mail's event's organization (an operator acts for it), else the operator's own.
            let org: Option<Uuid> = sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
                .bind(r.event_id)
                .fetch_optional(&mut *tx)
                .await?;
            let details = json!({ "kind": r.kind, "order_id": r.order_id });
            let org = org.unwrap_or(caller.organization_id);
            crate::audit::by(
                &mut tx,
                &caller,
                org,
                "notification.retry",
                format!("notification:{id}"),
                details,
            )
            .await?;
            tx.commit().await?;
            Ok(Json(r))
        }
        None => {
            let exists: Option<String> = sqlx::query_scalar("SELECT state FROM notifications WHERE id = $1")
                .bind(id)
                .fetch_optional(&state.db)
                .await?;
            match exists {
                Some(s) => {
                    Err(ApiError::conflict("not_parked", format!("the notification is {s}, not parked")))
                }
                None => Err(ApiError::NotFound),
            }
        }
    }
}
