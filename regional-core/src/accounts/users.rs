//! The users of an organization (one role each).
//!
//! - `POST /api/v1/users`          organizer admin (own organization) or platform admin
//! - `GET  /api/v1/users[?role=]`  the caller's organization
//! - `GET  /api/v1/users/{id}`

use crate::api::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared_types::inventory::FieldError;
use sqlx::PgPool;
use uuid::Uuid;

use super::rules::{actor, audit, check_name};
use crate::api::{Creating, Listing, PageQuery};
use crate::auth::{need, Caller, Can, Permission, Role};
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::validate::valid_email;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    #[schema(format = Email, min_length = 3, max_length = 254)]
    email: String,
    #[serde(default)]
    name: String,
    role: Role,
    /// Platform admins name the organization; others create in their own.
    #[serde(default)]
    organization_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", security(("api_key" = [])), request_body = NewUser, responses((status = 201, body = User), crate::api::Problems))]
pub(super) async fn create_user(
    Can(caller, _): Can<need::ManageUsers>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewUser = creating.json()?;
    let organization = match (caller.role, new.organization_id) {
        (Role::PlatformAdmin, Some(org)) => org,
        (_, Some(org)) if org != caller.organization_id => return Err(ApiError::NotFound),
        _ => caller.organization_id,
    };
    let mut errors = Vec::new();
    if !valid_email(&new.email) {
        errors.push(FieldError::new("email", "must be an e-mail address"));
    }
    check_name(&mut errors, "name", &new.name, false);
    if new.role == Role::PlatformAdmin {
        errors.push(FieldError::new("role", "platform admins are made with `regional-core create-admin`"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let c = caller.clone();
    creating
        .run(&caller, "/api/v1/users", move |conn| {
            Box::pin(async move {
                let exists: Option<bool> =
                    sqlx::query_scalar("SELECT is_platform FROM organizations WHERE id = $1")
                        .bind(organization)
                        .fetch_optional(&mut *conn)
                        .await?;
                match exists {
                    None => return Err(ApiError::field("organization_id", "no such organization")),
                    Some(true) => return Err(ApiError::field(
                        "organization_id",
                        "the platform organization holds platform admins only (`regional-core create-admin`)",
                    )),
                    Some(false) => {}
                }
                let user: Option<User> = sqlx::query_as(
                    "INSERT INTO users (id, organization_id, email, name, role) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (lower(email)) DO NOTHING
                 RETURNING id, organization_id, email, name, role, disabled, created_at",
                )
                .bind(Uuid::new_v4())
                .bind(organization)
                .bind(new.email.trim())
                .bind(new.name.trim())
                .bind(new.role)
                .fetch_optional(&mut *conn)
                .await?;
                let user =
                    user.ok_or_else(|| ApiError::conflict("email_taken", "a user with this e-mail exists"))?;
                audit(
                    conn,
                    &actor(&c),
                    user.organization_id,
                    "user.create",
                    user.id,
                    json!({ "role": user.role }),
                )
                .await?;
                Ok((StatusCode::CREATED, serde_json::to_value(&user).unwrap_or_default()))
            })
        })
        .await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UserFilter {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", security(("api_key" = [])), params(UserFilter), responses((status = 200, body = Listing<User>), crate::api::Problems))]
pub(super) async fn list_users(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Query(f): Query<UserFilter>,
) -> Result<Json<Listing<User>>> {
    let q = PageQuery { limit: f.limit, cursor: f.cursor };
    let query = sqlx::query_as(
        "SELECT id, organization_id, email, name, role, disabled, created_at FROM users
         WHERE organization_id = $1 AND ($2::text IS NULL OR role = $2) AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5",
    )
    .bind(caller.organization_id)
    .bind(f.role.map(Role::as_str));
    Ok(Json(q.fetch(query, &state.db, |u: &User| (u.created_at, u.id)).await?))
}

pub(super) async fn find_user(db: &PgPool, caller: &Caller, id: &str) -> Result<User> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    let user: Option<User> = sqlx::query_as(
        "SELECT id, organization_id, email, name, role, disabled, created_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    user.filter(|u| caller.sees(u.organization_id)).ok_or(ApiError::NotFound)
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = User), crate::api::Problems))]
pub(super) async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<User>> {
    let user = find_user(&state.db, &caller, &id).await?;
    if user.id != caller.user_id {
        caller.require(Permission::Read)?;
    }
    Ok(Json(user))
}
