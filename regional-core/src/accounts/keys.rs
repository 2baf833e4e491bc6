//! API keys: a user's credentials for the admin API. A new key's secret is in the creating answer
//! only (replays withhold it); only its SHA-256 is stored.
//!
//! - `POST   /api/v1/users/{id}/api-keys`  the user themself, their organizer admin, or platform admin
//! - `GET    /api/v1/api-keys`             organizer admin: the organization's; others: their own
//! - `DELETE /api/v1/api-keys/{id}`        revoke (same rule as creating)

use crate::api::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::rules::{actor, audit, check_name};
use super::users::find_user;
use crate::api::{Creating, Listing, PageQuery};
use crate::auth::{new_key, Caller, Permission, Role};
use crate::error::{ApiError, Result};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewKeyBody {
    #[serde(default)]
    name: String,
}

/// May `caller` manage the keys of `user` (of `role`, in `organization`)? Themself, their
/// organization's admin, or the platform; a platform admin's keys, only a platform admin.
pub(super) fn may_manage_keys_of(caller: &Caller, user_id: Uuid, role: Role, organization: Uuid) -> bool {
    if role == Role::PlatformAdmin {
        return caller.role == Role::PlatformAdmin;
    }
    caller.user_id == user_id
        || caller.role == Role::PlatformAdmin
        || (caller.role.may(Permission::ManageUsers) && caller.organization_id == organization)
}

#[utoipa::path(post, path = "/api/v1/users/{id}/api-keys", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = Option<NewKeyBody>, responses((status = 201, description = "the key row and `key`, shown once", body = ApiKey), crate::api::Problems))]
pub(super) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let user = find_user(&state.db, &caller, &id).await?;
    if !may_manage_keys_of(&caller, user.id, user.role, user.organization_id) {
        return Err(ApiError::Forbidden(
            "only the user or their organization's admin may make their keys".into(),
        ));
    }
    let new: NewKeyBody = creating.json_or_default()?;
    let mut errors = Vec::new();
    check_name(&mut errors, "name", &new.name, false);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let c = caller.clone();
    let path = format!("/api/v1/users/{}/api-keys", user.id);
    creating
        .run_with_secret(&caller, &path, "key", move |conn| {
            Box::pin(async move {
                let (key, row) = insert_key(conn, user.id, user.organization_id, &new.name).await?;
                audit(
                    conn,
                    &actor(&c),
                    user.organization_id,
                    "api_key.create",
                    &row.id,
                    json!({ "user": user.id }),
                )
                .await?;
                let mut answer = serde_json::to_value(&row).unwrap_or_default();
                answer["key"] = Value::String(key);
                Ok((StatusCode::CREATED, answer))
            })
        })
        .await
}

pub(super) async fn insert_key(
    conn: &mut PgConnection,
    user: Uuid,
    organization: Uuid,
    name: &str,
) -> Result<(String, ApiKey)> {
    let key = new_key();
    let row: ApiKey = sqlx::query_as(
        "INSERT INTO api_keys (id, user_id, organization_id, name, secret_sha256) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, user_id, organization_id, name, created_at, last_used_at, revoked_at",
    )
    .bind(&key.id)
    .bind(user)
    .bind(organization)
    .bind(name.trim())
    .bind(&key.secret_sha256)
    .fetch_one(conn)
    .await?;
    Ok((key.token, row))
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "accounts", security(("api_key" = [])), params(PageQuery), responses((status = 200, body = Listing<ApiKey>), crate::api::Problems))]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Listing<ApiKey>>> {
    let everyone = caller.role.may(Permission::ManageUsers);
    let query = sqlx::query_as(
        "SELECT id, user_id, organization_id, name, created_at, last_used_at, revoked_at FROM api_keys
         WHERE organization_id = $1 AND ($2 OR user_id = $3) AND (created_at, id) > ($4, $5)
         ORDER BY created_at, id LIMIT $6",
    )
    .bind(caller.organization_id)
    .bind(everyone)
    .bind(caller.user_id);
    Ok(Json(q.fetch(query, &state.db, |k: &ApiKey| (k.created_at, k.id.clone())).await?))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = ApiKey), crate::api::Problems))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>> {
    let row: Option<(String, Uuid, Uuid, Role)> = sqlx::query_as(
        "SELECT k.id, k.user_id, k.organization_id, u.role FROM api_keys k JOIN users u ON u.id = k.user_id
         WHERE k.id = $1",
    )
    .bind(&id)
    .fetch_optional(&state.db)
    .await?;
    let (_, user, organization, role) =
        row.filter(|(_, _, org, _)| caller.sees(*org)).ok_or(ApiError::NotFound)?;
    if !may_manage_keys_of(&caller, user, role, organization) {
        return Err(ApiError::NotFound);
    }
    let mut tx = state.db.begin().await?;
    let revoked: ApiKey = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING id, user_id, organization_id, name, created_at, last_used_at, revoked_at",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    audit(&mut tx, &actor(&caller), organization, "api_key.revoke", id, json!({ "user": user })).await?;
    tx.commit().await?;
    Ok(Json(revoked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_platform_admin_manages_a_platform_admins_keys() {
        let org = Uuid::new_v4();
        let caller = |role| Caller {
            user_id: Uuid::new_v4(),
            organization_id: org,
            role,
            key_id: "k".into(),
            origin: Default::default(),
        };
        let admin = Uuid::new_v4();
        // Even an organizer admin of the same organization (which the database no longer allows).
        assert!(!may_manage_keys_of(&caller(Role::OrganizerAdmin), admin, Role::PlatformAdmin, org));
        assert!(may_manage_keys_of(&caller(Role::PlatformAdmin), admin, Role::PlatformAdmin, org));
        assert!(may_manage_keys_of(&caller(Role::OrganizerAdmin), admin, Role::Scanner, org));
        assert!(!may_manage_keys_of(&caller(Role::OrganizerStaff), admin, Role::Scanner, org));
    }
}
