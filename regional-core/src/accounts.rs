//! Organizations (tenants), users and API keys.
//!
//! - `POST   /api/v1/organizations`            platform admin
//! - `GET    /api/v1/organizations`            platform admin: all; others: their own
//! - `GET    /api/v1/organizations/{id}`
//! - `POST   /api/v1/users`                    organizer admin (own organization) or platform admin
//! - `GET    /api/v1/users[?role=]`            the caller's organization
//! - `GET    /api/v1/users/{id}`
//! - `POST   /api/v1/users/{id}/api-keys`      the user themself, their organizer admin, or platform admin
//! - `GET    /api/v1/api-keys`                 organizer admin: the organization's; others: their own
//! - `DELETE /api/v1/api-keys/{id}`            revoke (same rule as creating)
//!
//! Another organization's resources answer 404, never 403. The first platform admin comes from
//! `regional-core create-admin` ([`create_platform_admin`]). The platform organization holds
//! platform admins and nobody else (enforced here and by a trigger on `users`), and only a platform
//! admin manages a platform admin's keys.
//!
//! A new key's secret is in the creating answer only: with an `Idempotency-Key`, a replay answers
//! the key's row without it (`secret_withheld: "key"`; see [`api::create_with_secret`]).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared_types::inventory::FieldError;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::api::bounds;
use crate::api::{self, page, Cursor, Listing, PageQuery};
use crate::auth::{need, new_key, Caller, Can, Permission, Role};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate::{valid_email, valid_time_zone};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_organization, list_organizations))
        .routes(routes!(get_organization))
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user))
        .routes(routes!(create_key))
        .routes(routes!(list_keys))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    name: String,
    slug: String,
    #[serde(default = "utc")]
    time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    #[serde(default)]
    name: String,
    role: Role,
    /// Platform admins name the organization; others create in their own.
    #[serde(default)]
    organization_id: Option<Uuid>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    #[serde(default)]
    name: String,
}

fn check_name(errors: &mut Vec<FieldError>, field: &str, value: &str, required: bool) {
    if (required && value.trim().is_empty()) || value.chars().count() > 200 {
        errors.push(FieldError::new(
            field,
            if required { "must be 1 to 200 characters" } else { "must be at most 200 characters" },
        ));
    }
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

async fn audit(
    conn: &mut PgConnection,
    caller: &str,
    action: &str,
    subject: &str,
    details: Value,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO audit_log (actor, action, subject, details) VALUES ($1, $2, $3, $4)")
        .bind(caller)
        .bind(action)
        .bind(subject)
        .bind(details)
        .execute(conn)
        .await?;
    Ok(())
}

fn actor(caller: &Caller) -> String {
    format!("user:{}", caller.user_id)
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "accounts", security(("api_key" = [])), request_body = NewOrganization, responses((status = 201, body = Organization), crate::api::Problems))]
async fn create_organization(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManagePlatform>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    let new: NewOrganization = api::parse_json(&body)?;
    let mut errors = Vec::new();
    check_name(&mut errors, "name", &new.name, true);
    if !valid_slug(&new.slug) {
        errors.push(FieldError::new(
            "slug",
            "must be 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'",
        ));
    }
    if !valid_time_zone(&new.time_zone) {
        errors.push(FieldError::new("time_zone", "must be an IANA time zone name such as Europe/Berlin"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let c = caller.clone();
    api::create(&state.db, &caller, &headers, "POST", "/api/v1/organizations", &body, move |conn| {
        Box::pin(async move {
            let org: Option<Organization> = sqlx::query_as(
                "INSERT INTO organizations (id, name, slug, time_zone) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (slug) DO NOTHING RETURNING id, name, slug, time_zone, created_at",
            )
            .bind(Uuid::new_v4())
            .bind(new.name.trim())
            .bind(&new.slug)
            .bind(&new.time_zone)
            .fetch_optional(&mut *conn)
            .await?;
            let org =
                org.ok_or_else(|| ApiError::conflict("slug_taken", "an organization with this slug exists"))?;
            audit(
                conn,
                &actor(&c),
                "organization.create",
                &format!("organization:{}", org.id),
                json!({ "slug": org.slug }),
            )
            .await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&org).unwrap_or_default()))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/organizations", tag = "accounts", security(("api_key" = [])), params(PageQuery), responses((status = 200, body = Listing<Organization>), crate::api::Problems))]
async fn list_organizations(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Listing<Organization>>, ApiError> {
    let limit = q.limit()?;
    let after = q.after()?;
    let (at, id) = bounds(after)?;
    let rows: Vec<Organization> = sqlx::query_as(
        "SELECT id, name, slug, time_zone, created_at FROM organizations
         WHERE ($1 OR id = $2) AND NOT is_platform AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5",
    )
    .bind(caller.role == Role::PlatformAdmin)
    .bind(caller.organization_id)
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit, |o| Cursor { at: o.created_at, id: o.id.to_string() })))
}

#[utoipa::path(get, path = "/api/v1/organizations/{id}", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Organization), crate::api::Problems))]
async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Organization>, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    if !caller.sees(id) {
        return Err(ApiError::NotFound);
    }
    let org: Option<Organization> =
        sqlx::query_as("SELECT id, name, slug, time_zone, created_at FROM organizations WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    org.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", security(("api_key" = [])), request_body = NewUser, responses((status = 201, body = User), crate::api::Problems))]
async fn create_user(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageUsers>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    let new: NewUser = api::parse_json(&body)?;
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
    api::create(&state.db, &caller, &headers, "POST", "/api/v1/users", &body, move |conn| {
        Box::pin(async move {
            let exists: Option<bool> =
                sqlx::query_scalar("SELECT is_platform FROM organizations WHERE id = $1")
                    .bind(organization)
                    .fetch_optional(&mut *conn)
                    .await?;
            match exists {
                None => return Err(ApiError::field("organization_id", "no such organization")),
                Some(true) => {
                    return Err(ApiError::field(
                        "organization_id",
                        "the platform organization holds platform admins only (`regional-core create-admin`)",
                    ))
                }
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
                "user.create",
                &format!("user:{}", user.id),
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
struct UserFilter {
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", security(("api_key" = [])), params(UserFilter), responses((status = 200, body = Listing<User>), crate::api::Problems))]
async fn list_users(
    State(state): State<AppState>,
    Can(caller, _): Can<need::Read>,
    Query(f): Query<UserFilter>,
) -> Result<Json<Listing<User>>, ApiError> {
    let q = PageQuery { limit: f.limit, cursor: f.cursor };
    let limit = q.limit()?;
    let (at, id) = bounds(q.after()?)?;
    let rows: Vec<User> = sqlx::query_as(
        "SELECT id, organization_id, email, name, role, disabled, created_at FROM users
         WHERE organization_id = $1 AND ($2::text IS NULL OR role = $2) AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5",
    )
    .bind(caller.organization_id)
    .bind(f.role.map(Role::as_str))
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit, |u| Cursor { at: u.created_at, id: u.id.to_string() })))
}

async fn find_user(db: &PgPool, caller: &Caller, id: &str) -> Result<User, ApiError> {
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
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<User>, ApiError> {
    let user = find_user(&state.db, &caller, &id).await?;
    if user.id != caller.user_id {
        caller.require(Permission::Read)?;
    }
    Ok(Json(user))
}

/// May `caller` manage the keys of `user` (of `role`, in `organization`)? Themself, their
/// organization's admin, or the platform; a platform admin's keys, only a platform admin.
fn may_manage_keys_of(caller: &Caller, user_id: Uuid, role: Role, organization: Uuid) -> bool {
    if role == Role::PlatformAdmin {
        return caller.role == Role::PlatformAdmin;
    }
    caller.user_id == user_id
        || caller.role == Role::PlatformAdmin
        || (caller.role.may(Permission::ManageUsers) && caller.organization_id == organization)
}

#[utoipa::path(post, path = "/api/v1/users/{id}/api-keys", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = NewKeyBody, responses((status = 201, description = "the key row and `key`, shown once", body = ApiKey), crate::api::Problems))]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    let user = find_user(&state.db, &caller, &id).await?;
    if !may_manage_keys_of(&caller, user.id, user.role, user.organization_id) {
        return Err(ApiError::Forbidden(
            "only the user or their organization's admin may make their keys".into(),
        ));
    }
    let new: NewKeyBody = if body.is_empty() { NewKeyBody::default() } else { api::parse_json(&body)? };
    let mut errors = Vec::new();
    check_name(&mut errors, "name", &new.name, false);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let c = caller.clone();
    let path = format!("/api/v1/users/{}/api-keys", user.id);
    api::create_with_secret(&state.db, &caller, &headers, "POST", &path, &body, Some("key"), move |conn| {
        Box::pin(async move {
            let (key, row) = insert_key(conn, user.id, user.organization_id, &new.name).await?;
            audit(
                conn,
                &actor(&c),
                "api_key.create",
                &format!("api_key:{}", row.id),
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

async fn insert_key(
    conn: &mut PgConnection,
    user: Uuid,
    organization: Uuid,
    name: &str,
) -> Result<(String, ApiKey), ApiError> {
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
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<Json<Listing<ApiKey>>, ApiError> {
    let limit = q.limit()?;
    let (at, id) = match q.after()? {
        None => (DateTime::<Utc>::UNIX_EPOCH, String::new()),
        Some(c) => (c.at, c.id),
    };
    let everyone = caller.role.may(Permission::ManageUsers);
    let rows: Vec<ApiKey> = sqlx::query_as(
        "SELECT id, user_id, organization_id, name, created_at, last_used_at, revoked_at FROM api_keys
         WHERE organization_id = $1 AND ($2 OR user_id = $3) AND (created_at, id) > ($4, $5)
         ORDER BY created_at, id LIMIT $6",
    )
    .bind(caller.organization_id)
    .bind(everyone)
    .bind(caller.user_id)
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(page(rows, limit, |k| Cursor { at: k.created_at, id: k.id.clone() })))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = ApiKey), crate::api::Problems))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, ApiError> {
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
    audit(&mut tx, &actor(&caller), "api_key.revoke", &format!("api_key:{id}"), json!({})).await?;
    tx.commit().await?;
    Ok(Json(revoked))
}

/// What `create-admin` made: the organization, the user, and their key (shown once).
#[derive(Debug, Serialize)]
pub struct Bootstrap {
    pub organization: Uuid,
    pub user: Uuid,
    pub key: String,
}

/// Creates the platform organization (if there is none yet) and a platform admin with one key.
/// Refuses an e-mail that already has a user.
pub async fn create_platform_admin(db: &PgPool, email: &str, name: &str) -> Result<Bootstrap, ApiError> {
    if !valid_email(email) {
        return Err(ApiError::field("email", "must be an e-mail address"));
    }
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('create-admin', 0))")
        .execute(&mut *tx)
        .await?;
    let org: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE is_platform").fetch_optional(&mut *tx).await?;
    let org = match org {
        Some(id) => id,
        None => {
            let id = Uuid::new_v4();
            sqlx::query("INSERT INTO organizations (id, name, slug, is_platform) VALUES ($1, 'Platform', 'platform', true)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            id
        }
    };
    let user: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (id, organization_id, email, name, role) VALUES ($1, $2, $3, $4, 'platform_admin')
         ON CONFLICT (lower(email)) DO NOTHING RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(org)
    .bind(email)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let user = user.ok_or_else(|| ApiError::conflict("email_taken", "a user with this e-mail exists"))?;
    let (key, row) = insert_key(&mut tx, user, org, "created by create-admin").await?;
    audit(
        &mut tx,
        "cli:create-admin",
        "user.create",
        &format!("user:{user}"),
        json!({ "role": "platform_admin", "key": row.id }),
    )
    .await?;
    tx.commit().await?;
    Ok(Bootstrap { organization: org, user, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_shapes() {
        assert!(valid_slug("acme-tickets") && !valid_slug("-x") && !valid_slug("Acme") && !valid_slug(""));
        assert!(valid_time_zone("UTC") && valid_time_zone("America/Argentina/Buenos_Aires"));
        assert!(!valid_time_zone("Europe//Berlin") && !valid_time_zone("a b"));
        assert!(valid_email("ops@example.com") && !valid_email("nobody") && !valid_email("a b@x.io"));
    }

    #[test]
    fn only_a_platform_admin_manages_a_platform_admins_keys() {
        let org = Uuid::new_v4();
        let caller =
            |role| Caller { user_id: Uuid::new_v4(), organization_id: org, role, key_id: "k".into() };
        let admin = Uuid::new_v4();
        // Even an organizer admin of the same organization (which the database no longer allows).
        assert!(!may_manage_keys_of(&caller(Role::OrganizerAdmin), admin, Role::PlatformAdmin, org));
        assert!(may_manage_keys_of(&caller(Role::PlatformAdmin), admin, Role::PlatformAdmin, org));
        assert!(may_manage_keys_of(&caller(Role::OrganizerAdmin), admin, Role::Scanner, org));
        assert!(!may_manage_keys_of(&caller(Role::OrganizerStaff), admin, Role::Scanner, org));
    }
}
