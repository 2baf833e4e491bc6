//! Organizations (tenants), users (`users.rs`) and API keys (`keys.rs`); what they share in
//! `rules.rs`.
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
//! the key's row without it (`secret_withheld: "key"`; see [`api::Creating::run_with_secret`]).

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

use crate::api::resource_routes;
use crate::api::{Creating, Listing, PageQuery};
use crate::auth::{need, Caller, Can, Role};
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::validate::{valid_email, valid_time_zone};
use utoipa_axum::router::OpenApiRouter;

mod keys;
mod rules;
mod users;

pub use keys::ApiKey;
pub use users::User;

use rules::{actor, audit, check_name, utc, valid_slug};

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! {
        [create_organization, list_organizations], [get_organization],
        [users::create_user, users::list_users], [users::get_user], [keys::create_key], [keys::list_keys],
        [keys::revoke_key]
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub time_zone: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOrganization {
    name: String,
    slug: String,
    #[serde(default = "utc")]
    time_zone: String,
}

#[utoipa::path(post, path = "/api/v1/organizations", tag = "accounts", security(("api_key" = [])), request_body = NewOrganization, responses((status = 201, body = Organization), crate::api::Problems))]
async fn create_organization(
    Can(caller, _): Can<need::ManagePlatform>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewOrganization = creating.json()?;
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
    creating
        .run(&caller, "/api/v1/organizations", move |conn| {
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
                let org = org.ok_or_else(|| {
                    ApiError::conflict("slug_taken", "an organization with this slug exists")
                })?;
                audit(conn, &actor(&c), org.id, "organization.create", org.id, json!({ "slug": org.slug }))
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
) -> Result<Json<Listing<Organization>>> {
    let query = sqlx::query_as(
        "SELECT id, name, slug, time_zone, created_at FROM organizations
         WHERE ($1 OR id = $2) AND NOT is_platform AND (created_at, id) > ($3, $4)
         ORDER BY created_at, id LIMIT $5",
    )
    .bind(caller.role == Role::PlatformAdmin)
    .bind(caller.organization_id);
    Ok(Json(q.fetch(query, &state.db, |o: &Organization| (o.created_at, o.id)).await?))
}

#[utoipa::path(get, path = "/api/v1/organizations/{id}", tag = "accounts", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Organization), crate::api::Problems))]
async fn get_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Organization>> {
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

/// What `create-admin` made: the organization, the user, and their key (shown once).
#[derive(Debug, Serialize)]
pub struct Bootstrap {
    pub organization: Uuid,
    pub user: Uuid,
    pub key: String,
}

/// Creates the platform organization (if there is none yet) and a platform admin with one key.
/// Refuses an e-mail that already has a user.
pub async fn create_platform_admin(db: &PgPool, email: &str, name: &str) -> Result<Bootstrap> {
    if !valid_email(email) {
        return Err(ApiError::field("email", "must be an e-mail address"));
    }
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('create-admin', 0))")
        .execute(&mut *tx)
        .await?;
    let org: Uuid = sqlx::query_scalar(
        "WITH found AS (SELECT id FROM organizations WHERE is_platform),
              made AS (INSERT INTO organizations (id, name, slug, is_platform)
                       SELECT $1, 'Platform', 'platform', true WHERE NOT EXISTS (SELECT FROM found) RETURNING id)
         SELECT id FROM found UNION ALL SELECT id FROM made",
    )
    .bind(Uuid::new_v4())
    .fetch_one(&mut *tx)
    .await?;
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
    let (key, row) = keys::insert_key(&mut tx, user, org, "created by create-admin").await?;
    let cli = crate::audit::Actor {
        name: "cli:create-admin".into(),
        role: None,
        api_key_id: None,
        origin: Default::default(),
    };
    audit(&mut tx, &cli, org, "user.create", user, json!({ "role": "platform_admin", "key": row.id }))
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
}
