//! The audit log (docs/audit.md): every change an organizer, operator or box office makes through
//! the admin API, and every refund, cancellation, re-issue and transfer, one append-only row each:
//! who (the user, their role and API key, or the buyer), when, what (`action` on `subject`, with
//! `details`), and from where (the client's address, its user agent, the request id).
//!
//! A change and its row are written in one transaction ([`record`]), so that no change is kept
//! without its row and no row names a change that was rolled back. A change made at the edge (the
//! waiting list closed) is recorded once the edge has made it. The table refuses updates, deletes
//! and truncation (a trigger); only [`prune`], the retention job, deletes rows, and only rows older
//! than the cutoff it names for its own transaction.
//!
//! - `GET /api/v1/audit-log`          filtered, paged (oldest first, like every listing)
//! - `GET /api/v1/audit-log/export`   the same filters, every row, streamed as CSV or NDJSON

use std::fmt::Display;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::api::{resource_routes, Cursor, Listing, PageQuery, Query};
use crate::auth::{need, Caller, Can, Role};
use crate::error::{ApiError, Result};
use crate::origin::Origin;
use crate::reporting::exports;
use crate::state::AppState;

/// Longest text filter (`actor`, `action`, `subject`).
const FILTER_MAX: usize = 200;

/// Rows the retention job deletes per statement (each its own transaction).
const PRUNE_BATCH: i64 = 5_000;

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    resource_routes!([list_audit_log], [export_audit_log])
}

/// Who made a change, as the log names them.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user:<id>` for a caller with an API key, `buyer:order:<id>` for an order's token,
    /// `recipient:transfer:<id>` for a transfer's token, `cli:create-admin` for the command.
    pub name: String,
    pub role: Option<Role>,
    pub api_key_id: Option<String>,
    pub origin: Origin,
}

impl Actor {
    pub fn of(caller: &Caller) -> Self {
        Self {
            name: format!("user:{}", caller.user_id),
            role: Some(caller.role),
            api_key_id: Some(caller.key_id.clone()),
            origin: caller.origin.clone(),
        }
    }

    /// A buyer, acting with their order's token: named by the order (not by their visitor id,
    /// which is the same for every organizer's events, nor by their address).
    pub fn buyer(order: Uuid, origin: Origin) -> Self {
        Self { name: format!("buyer:order:{order}"), role: None, api_key_id: None, origin }
    }

    /// The core itself (`system:<what>`), for a change no person made: an endpoint disabled after
    /// a long failure.
    pub fn system(what: &str) -> Self {
        Self { name: format!("system:{what}"), role: None, api_key_id: None, origin: Origin::default() }
    }

    /// The recipient of a transfer, acting with its token: named by the transfer (their address
    /// stays in the transfer's row, not in the log).
    pub fn recipient(transfer: Uuid, origin: Origin) -> Self {
        Self { name: format!("recipient:transfer:{transfer}"), role: None, api_key_id: None, origin }
    }
}

/// Records a change in `conn`'s transaction: `action` is `{kind}.{verb}` (`tier.create`), the
/// subject `{kind}:{id}` of what changed, `details` what the change was (never a secret, never
/// more personal data than the change itself names).
pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    organization: Uuid,
    action: &str,
    subject: impl Display,
    details: Value,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (organization_id, actor, actor_role, api_key_id, action, subject, details,
                                ip, user_agent, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::inet, $9, $10)",
    )
    .bind(organization)
    .bind(&actor.name)
    .bind(actor.role.map(Role::as_str))
    .bind(&actor.api_key_id)
    .bind(action)
    .bind(subject.to_string())
    .bind(details)
    .bind(actor.origin.ip.map(|ip| ip.to_string()))
    .bind(&actor.origin.user_agent)
    .bind(&actor.origin.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`record`] of a change to something of `event`, in the event's organization.
pub async fn record_for_event(
    conn: &mut PgConnection,
    actor: &Actor,
    event: Uuid,
    action: &str,
    subject: impl Display,
    details: Value,
) -> std::result::Result<(), sqlx::Error> {
    let organization: Uuid = sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
        .bind(event)
        .fetch_one(&mut *conn)
        .await?;
    record(conn, actor, organization, action, subject, details).await
}

/// [`record`] by the caller of an admin route.
pub async fn by(
    conn: &mut PgConnection,
    caller: &Caller,
    organization: Uuid,
    action: &str,
    subject: impl Display,
    details: Value,
) -> std::result::Result<(), sqlx::Error> {
    record(conn, &Actor::of(caller), organization, action, subject, details).await
}

/// What a change changed, for an audit row's details: `{field: {"from": …, "to": …}}` for each
/// top-level field of `after` whose value differs from `before`'s (bookkeeping fields, `version`
/// and `updated_at`, left out). Both sides serialize to JSON objects.
pub fn diff(before: &impl Serialize, after: &impl Serialize) -> Value {
    let (before, after) =
        (serde_json::to_value(before).unwrap_or_default(), serde_json::to_value(after).unwrap_or_default());
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else { return Value::Null };
    let changed: serde_json::Map<String, Value> = a
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "version" | "updated_at"))
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, v)| (k.clone(), serde_json::json!({ "from": b.get(k.as_str()), "to": v })))
        .collect();
    Value::Object(changed)
}

/// One row of the log.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The organization the change belongs to (none for a few platform-wide rows).
    pub organization_id: Option<Uuid>,
    /// `user:<id>`, `buyer:order:<id>`, `recipient:transfer:<id>` or `cli:create-admin`.
    pub actor: String,
    /// The user's role when they made the change.
    pub actor_role: Option<String>,
    /// The API key's public id (`tk_<id>_…`).
    pub api_key_id: Option<String>,
    /// `{kind}.{verb}`, e.g. `event.state`, `order.refund`, `ticket.reissue`.
    pub action: String,
    /// `{kind}:{id}` of what changed.
    pub subject: String,
    #[schema(value_type = Object)]
    pub details: Value,
    /// The client's address (see `CORE_TRUSTED_PROXIES`). An operator's (a platform admin's)
    /// address, user agent and key are shown to operators only.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request's id (its `x-request-id`), to find its log lines.
    pub request_id: Option<String>,
}

/// The columns as an operator reads them.
const ENTRY_COLUMNS: &str =
    "id, at, organization_id, actor, actor_role, api_key_id, action, subject, details,
    host(ip) AS ip, user_agent, request_id";

/// The columns as an organization reads them: an operator's address, user agent and key are theirs.
const TENANT_ENTRY_COLUMNS: &str = "id, at, organization_id, actor, actor_role,
    CASE WHEN actor_role = 'platform_admin' THEN NULL ELSE api_key_id END AS api_key_id,
    action, subject, details,
    CASE WHEN actor_role = 'platform_admin' THEN NULL ELSE host(ip) END AS ip,
    CASE WHEN actor_role = 'platform_admin' THEN NULL ELSE user_agent END AS user_agent, request_id";

/// The filters both routes take, as a query string gives them (the list's and the export's
/// parameters are declared apart, each refusing the other's). An empty text filter is no filter,
/// as a form sends it.
macro_rules! filter_query {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
        #[into_params(parameter_in = Query)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// One organization (platform admins: any, or every one when absent; others: their own only).
            pub organization: Option<Uuid>,
            /// One actor, exactly (`user:<id>`, `buyer:order:<id>`, `recipient:transfer:<id>`).
            #[param(max_length = 200)]
            pub actor: Option<String>,
            /// One action (`order.refund`), or a family with a trailing `*` (`order.*`).
            #[param(max_length = 200)]
            pub action: Option<String>,
            /// One subject, exactly (`event:<id>`).
            #[param(max_length = 200)]
            pub subject: Option<String>,
            /// From this time on (inclusive; RFC 3339).
            pub since: Option<DateTime<Utc>>,
            /// Before this time (exclusive; RFC 3339).
            pub until: Option<DateTime<Utc>>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            fn filter(&self) -> Filter {
                let text = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
                Filter {
                    organization: self.organization,
                    actor: text(&self.actor),
                    action: text(&self.action),
                    subject: text(&self.subject),
                    since: self.since,
                    until: self.until,
                }
            }
        }
    };
}

filter_query!(
    /// `GET /api/v1/audit-log`'s parameters.
    ListQuery {
        /// Rows per page (default 50).
        #[param(minimum = 1, maximum = 200)]
        limit: Option<u32>,
        /// The previous page's `next_cursor`.
        cursor: Option<String>,
    }
);

filter_query!(
    /// `GET /api/v1/audit-log/export`'s parameters.
    ExportQuery {
        /// `csv` (the default) or `ndjson`.
        #[param(pattern = "^(csv|ndjson)?$")]
        format: Option<String>,
    }
);

/// What to read of the log. Every filter is optional; they combine (a window that ends before it
/// starts selects nothing).
#[derive(Debug, Default)]
struct Filter {
    organization: Option<Uuid>,
    actor: Option<String>,
    action: Option<String>,
    subject: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Filter {
    /// The organization the caller may read: their own, or for a platform admin the one asked for
    /// (every one when none). Another organization's log is a 404, as any of its rows would be.
    fn scope(&self, caller: &Caller) -> Result<Scope> {
        let operator = caller.role == Role::PlatformAdmin;
        let organization = match (operator, self.organization) {
            (true, asked) => asked,
            (false, Some(org)) if org != caller.organization_id => return Err(ApiError::NotFound),
            (false, _) => Some(caller.organization_id),
        };
        Ok(Scope { organization, operator })
    }

    fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
        for (field, value) in [("actor", &self.actor), ("action", &self.action), ("subject", &self.subject)] {
            if value.as_ref().is_some_and(|v| v.chars().count() > FILTER_MAX || v.contains('\0')) {
                errors.push(shared_types::inventory::FieldError::new(
                    field,
                    "must be at most 200 characters, without NUL",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errors))
        }
    }

    /// One page of the rows selected, after `after` in `(at, id)` order, at most `limit`: only the
    /// filters given are in the statement (each plan is made for what is asked), every value bound.
    fn select(
        &self,
        scope: &Scope,
        after: (DateTime<Utc>, i64),
        limit: i64,
    ) -> QueryBuilder<'static, Postgres> {
        let columns = if scope.operator { ENTRY_COLUMNS } else { TENANT_ENTRY_COLUMNS };
        let mut q = QueryBuilder::new(format!("SELECT {columns} FROM audit_log WHERE "));
        if let Some(org) = scope.organization {
            q.push("organization_id = ").push_bind(org).push(" AND ");
        }
        if let Some(actor) = &self.actor {
            q.push("actor = ").push_bind(actor.clone()).push(" AND ");
        }
        match self.action.as_deref().map(|a| (a, a.strip_suffix('*'))) {
            Some((_, Some(prefix))) => {
                let pattern =
                    format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                q.push("action LIKE ").push_bind(pattern).push(" AND ");
            }
            Some((action, None)) => {
                q.push("action = ").push_bind(action.to_owned()).push(" AND ");
            }
            None => {}
        }
        if let Some(subject) = &self.subject {
            q.push("subject = ").push_bind(subject.clone()).push(" AND ");
        }
        if let Some(since) = self.since {
            q.push("at >= ").push_bind(since).push(" AND ");
        }
        if let Some(until) = self.until {
            q.push("at < ").push_bind(until).push(" AND ");
        }
        q.push("(at, id) > (").push_bind(after.0).push(", ").push_bind(after.1).push(")");
        q.push(" ORDER BY at, id LIMIT ").push_bind(limit);
        q
    }
}

/// Whose log a caller reads, and whether as an operator.
struct Scope {
    /// One organization's rows, or (operators only) every one's.
    organization: Option<Uuid>,
    operator: bool,
}

/// The start of the log, before every row.
const BEGINNING: (DateTime<Utc>, i64) = (DateTime::<Utc>::UNIX_EPOCH, i64::MIN);

/// `GET /api/v1/audit-log`: the log, filtered, a page at a time, oldest first.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "accounts", security(("api_key" = [])),
    params(ListQuery),
    responses((status = 200, body = Listing<AuditEntry>), crate::api::Problems))]
async fn list_audit_log(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ReadAudit>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Listing<AuditEntry>>> {
    let filter = query.filter();
    filter.check()?;
    let scope = filter.scope(&caller)?;
    let page = PageQuery { limit: query.limit, cursor: query.cursor.clone() };
    let limit = page.limit()?;
    let after = match page.after()? {
        None => BEGINNING,
        Some(c) => {
            (c.at, c.id.parse().map_err(|_| ApiError::field("cursor", "is not a cursor this API gave out"))?)
        }
    };
    let rows: Vec<AuditEntry> =
        filter.select(&scope, after, limit + 1).build_query_as().fetch_all(&state.read_db).await?;
    Ok(Json(crate::api::page(rows, limit, |e| Cursor { at: e.at, id: e.id.to_string() })))
}

/// `GET /api/v1/audit-log/export`: every row the filters select, oldest first, streamed a page at a
/// time (never all in memory): CSV (RFC 4180, `details` as JSON text) or NDJSON (one entry a line).
#[utoipa::path(get, path = "/api/v1/audit-log/export", tag = "accounts", security(("api_key" = [])),
    params(ExportQuery),
    responses((status = 200, description = "text/csv or application/x-ndjson, streamed"), crate::api::Problems))]
async fn export_audit_log(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ReadAudit>,
    Query(query): Query<ExportQuery>,
) -> Result<Response> {
    let filter = query.filter();
    filter.check()?;
    let scope = filter.scope(&caller)?;
    let ndjson = match query.format.as_deref() {
        None | Some("" | "csv") => false,
        Some("ndjson") => true,
        Some(_) => return Err(ApiError::field("format", "must be csv or ndjson")),
    };
    let (db, filter, scope) =
        (state.read_db.clone(), std::sync::Arc::new(filter), std::sync::Arc::new(scope));
    let page = move |after: Option<(DateTime<Utc>, i64)>| {
        let (db, filter, scope) = (db.clone(), filter.clone(), scope.clone());
        async move {
            let after = after.unwrap_or(BEGINNING);
            let rows: Vec<AuditEntry> =
                filter.select(&scope, after, exports::PAGE).build_query_as().fetch_all(&db).await?;
            let lines = rows.iter().map(|e| if ndjson { ndjson_line(e) } else { csv_line(e) }).collect();
            Ok((lines, rows.last().map(|e| (e.at, e.id))))
        }
    };
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let (body, kind, name): (Body, _, _) = if ndjson {
        (exports::stream_lines(None, "\n", page), "application/x-ndjson", format!("audit-log-{stamp}.ndjson"))
    } else {
        (
            exports::stream_lines(Some(CSV_HEADER), "\r\n", page),
            "text/csv; charset=utf-8",
            format!("audit-log-{stamp}.csv"),
        )
    };
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok(([(header::CONTENT_TYPE, kind.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
        .into_response())
}

const CSV_HEADER: &str =
    "id,at,organization_id,actor,actor_role,api_key_id,action,subject,ip,user_agent,request_id,details";

fn csv_line(e: &AuditEntry) -> String {
    let opt = |s: &Option<String>| exports::text(s.as_deref().unwrap_or_default());
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{}",
        e.id,
        e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        e.organization_id.map(|o| o.to_string()).unwrap_or_default(),
        exports::text(&e.actor),
        opt(&e.actor_role),
        opt(&e.api_key_id),
        exports::text(&e.action),
        exports::text(&e.subject),
        opt(&e.ip),
        opt(&e.user_agent),
        opt(&e.request_id),
        exports::text(&e.details.to_string()),
    )
}

fn ndjson_line(e: &AuditEntry) -> String {
    serde_json::to_string(e).unwrap_or_default()
}

/// Deletes the rows older than `retention_days`, a batch per transaction; answers how many. The
/// only deletion the table's trigger lets through: the cutoff is set for the transaction alone.
pub async fn prune(db: &PgPool, retention_days: u32) -> std::result::Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - chrono::Duration::days(i64::from(retention_days));
    let mut total = 0;
    loop {
        let mut tx = db.begin().await?;
        sqlx::query("SELECT set_config('ticketing.audit_prune_before', $1, true)")
            .bind(cutoff.to_rfc3339())
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(
            "DELETE FROM audit_log WHERE id IN
               (SELECT id FROM audit_log WHERE at < $1 ORDER BY at, id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(PRUNE_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_names_each_changed_field_from_and_to() {
        let before = serde_json::json!({ "name": "A", "price": 10, "version": 1, "same": [1] });
        let after = serde_json::json!({ "name": "B", "price": 10, "version": 2, "same": [1], "new": true });
        assert_eq!(
            diff(&before, &after),
            serde_json::json!({ "name": { "from": "A", "to": "B" }, "new": { "from": null, "to": true } })
        );
        assert_eq!(diff(&before, &before), serde_json::json!({}));
    }
}
