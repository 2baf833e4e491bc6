//! Promo codes and refund policies of an event.
//!
//! - `POST   /api/v1/events/{id}/promo-codes`            a code: percent or amount off, usage cap,
//!   per-buyer cap, validity window, tier scope
//! - `GET    /api/v1/events/{id}/promo-codes`
//! - `DELETE /api/v1/events/{id}/promo-codes/{code_id}`  deactivate (kept for the records)
//! - `PUT    /api/v1/events/{id}/refund-policy`          windows before the start, e.g.
//!   `[{"hours_before": 168, "percent": 100}, {"hours_before": 24, "percent": 50}]`: 100 % until
//!   7 days before, 50 % until 24 hours before, nothing after ([`refund_percent`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared_types::inventory::{Currency, FieldError};
use uuid::Uuid;

use crate::api::resource_routes;
use crate::api::{self, Creating, Listing};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
pub use crate::models::event::RefundWindow;
use crate::models::event::{find_event, EventState};
use crate::state::AppState;
use axum::body::Bytes;
use utoipa_axum::router::OpenApiRouter;

pub fn routes() -> OpenApiRouter<AppState> {
    resource_routes! { [create_code, list_codes], [deactivate_code], [set_refund_policy] }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct PromoCode {
    id: Uuid,
    event_id: Uuid,
    code: String,
    kind: String,
    percent_off: Option<i32>,
    amount_off_minor: Option<i64>,
    currency: Option<String>,
    max_uses: Option<i32>,
    uses: i32,
    per_buyer_limit: Option<i32>,
    valid_from: Option<DateTime<Utc>>,
    valid_until: Option<DateTime<Utc>>,
    tier_ids: Vec<Uuid>,
    active: bool,
    created_at: DateTime<Utc>,
}

const CODE_COLUMNS: &str =
    "id, event_id, code, kind, percent_off, amount_off_minor, currency, max_uses, uses, \
                            per_buyer_limit, valid_from, valid_until, tier_ids, active, created_at";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCode {
    code: String,
    kind: String,
    #[serde(default)]
    percent_off: Option<i32>,
    #[serde(default)]
    amount_off_minor: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    max_uses: Option<i32>,
    #[serde(default)]
    per_buyer_limit: Option<i32>,
    #[serde(default)]
    valid_from: Option<DateTime<Utc>>,
    #[serde(default)]
    valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    tier_ids: Vec<Uuid>,
}

fn validate_code(c: &NewCode, tiers: &[Uuid]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let code_ok = (3..=32).contains(&c.code.len())
        && c.code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !code_ok {
        errors.push(FieldError::new("code", "must be 3 to 32 characters of A-Z, 0-9, '_' and '-'"));
    }
    match c.kind.as_str() {
        "percent" => {
            if !c.percent_off.is_some_and(|p| (1..=100).contains(&p)) {
                errors.push(FieldError::new("percent_off", "must be 1 to 100 for a percent code"));
            }
            if c.amount_off_minor.is_some() || c.currency.is_some() {
                errors.push(FieldError::new("amount_off_minor", "only for an amount code"));
            }
        }
        "amount" => {
            if c.amount_off_minor.is_none_or(|a| a <= 0) {
                errors.push(FieldError::new("amount_off_minor", "must be more than 0 for an amount code"));
            }
            if c.currency.as_deref().is_none_or(|cur| Currency::parse(cur).is_err()) {
                errors.push(FieldError::new("currency", "must be an ISO 4217 code such as EUR"));
            }
            if c.percent_off.is_some() {
                errors.push(FieldError::new("percent_off", "only for a percent code"));
            }
        }
        _ => errors.push(FieldError::new("kind", "must be percent or amount")),
    }
    if c.max_uses.is_some_and(|n| n < 1) {
        errors.push(FieldError::new("max_uses", "must be at least 1"));
    }
    if c.per_buyer_limit.is_some_and(|n| n < 1) {
        errors.push(FieldError::new("per_buyer_limit", "must be at least 1"));
    }
    if let (Some(a), Some(b)) = (c.valid_from, c.valid_until) {
        if b <= a {
            errors.push(FieldError::new("valid_until", "must be after valid_from"));
        }
    }
    for (i, t) in c.tier_ids.iter().enumerate() {
        if !tiers.contains(t) {
            errors.push(FieldError::new(format!("tier_ids[{i}]"), "is not a tier of this event"));
        }
    }
    errors
}

#[utoipa::path(post, path = "/api/v1/events/{id}/promo-codes", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = NewCode, responses((status = 201, body = PromoCode), crate::api::Problems))]
async fn create_code(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    creating: Creating,
) -> Result<axum::response::Response> {
    let new: NewCode = creating.json()?;
    let tiers: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM ticket_tiers WHERE event_id = $1")
        .bind(event.id)
        .fetch_all(&state.db)
        .await?;
    let errors = validate_code(&new, &tiers);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (org, event_id, c) = (event.organization_id, event.id, caller.clone());
    let path = format!("/api/v1/events/{event_id}/promo-codes");
    creating.run(&caller, &path, move |conn| {
        Box::pin(async move {
            let row: Option<PromoCode> = sqlx::query_as(&format!(
                "INSERT INTO promo_codes (id, organization_id, event_id, code, kind, percent_off, amount_off_minor, currency,
                                          max_uses, per_buyer_limit, valid_from, valid_until, tier_ids)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (event_id, code) DO NOTHING RETURNING {CODE_COLUMNS}"
            ))
            .bind(Uuid::new_v4())
            .bind(org)
            .bind(event_id)
            .bind(&new.code)
            .bind(&new.kind)
            .bind(new.percent_off)
            .bind(new.amount_off_minor)
            .bind(&new.currency)
            .bind(new.max_uses)
            .bind(new.per_buyer_limit)
            .bind(new.valid_from)
            .bind(new.valid_until)
            .bind(&new.tier_ids)
            .fetch_optional(&mut *conn)
            .await?;
            let row = row.ok_or_else(|| ApiError::conflict("code_taken", "this event already has this code"))?;
            let details = serde_json::to_value(&row).unwrap_or_default();
            crate::audit::by(conn, &c, org, "promo_code.create", format!("promo_code:{}", row.id), details).await?;
            Ok((StatusCode::CREATED, serde_json::to_value(&row).unwrap_or_default()))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/events/{id}/promo-codes", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Listing<PromoCode>), crate::api::Problems))]
async fn list_codes(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
) -> Result<Json<Listing<PromoCode>>> {
    Listing::of_event(&state.db, "promo_codes", CODE_COLUMNS, event.id).await
}

#[utoipa::path(delete, path = "/api/v1/events/{id}/promo-codes/{code}", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id"), ("code" = String, Path, description = "the promo code id")), responses((status = 200, body = PromoCode), crate::api::Problems))]
async fn deactivate_code(
    State(state): State<AppState>,
    Can(caller, _): Can<need::ManageCatalog>,
    Path((id, code)): Path<(String, String)>,
) -> Result<Json<PromoCode>> {
    let event = find_event(&state.db, &caller, &id).await?;
    let code: Uuid = code.parse().map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let row: Option<PromoCode> = sqlx::query_as(&format!(
        "UPDATE promo_codes SET active = false WHERE id = $1 AND event_id = $2 RETURNING {CODE_COLUMNS}"
    ))
    .bind(code)
    .bind(event.id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or(ApiError::NotFound)?;
    let details = json!({ "event_id": event.id, "code": row.code });
    crate::audit::by(
        &mut tx,
        &caller,
        event.organization_id,
        "promo_code.deactivate",
        format!("promo_code:{code}"),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(row))
}

/// The rules of a policy: windows from the earliest to the latest, percentages never rising.
pub fn validate_policy(windows: &[RefundWindow]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if windows.len() > 10 {
        errors.push(FieldError::new("windows", "at most 10 windows"));
    }
    for (i, w) in windows.iter().enumerate() {
        if w.percent > 100 {
            errors.push(FieldError::new(format!("[{i}].percent"), "must be 0 to 100"));
        }
        if w.hours_before > 24 * 365 {
            errors.push(FieldError::new(format!("[{i}].hours_before"), "must be at most a year"));
        }
        if let Some(prev) = i.checked_sub(1).map(|p| windows[p]) {
            if w.hours_before >= prev.hours_before {
                errors.push(FieldError::new(
                    format!("[{i}].hours_before"),
                    "windows must go from earliest to latest",
                ));
            }
            if w.percent > prev.percent {
                errors.push(FieldError::new(format!("[{i}].percent"), "a later window may not refund more"));
            }
        }
    }
    errors
}

/// The percentage refunded for a cancellation at `now` of an event starting at `starts_at`
/// (0 when no window is still open). A cancelled event refunds 100 % whatever the policy (the
/// checkout's refund path decides that, not this function).
pub fn refund_percent(windows: &[RefundWindow], starts_at: DateTime<Utc>, now: DateTime<Utc>) -> u8 {
    windows
        .iter()
        .find(|w| now <= starts_at - chrono::Duration::hours(i64::from(w.hours_before)))
        .map_or(0, |w| w.percent)
}

#[utoipa::path(put, path = "/api/v1/events/{id}/refund-policy", tag = "catalog", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), request_body = Vec<RefundWindow>, responses((status = 200, body = RefundPolicy, description = "the policy as it now is"), crate::api::Problems))]
async fn set_refund_policy(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
    body: Bytes,
) -> Result<Json<RefundPolicy>> {
    if matches!(event.state, EventState::Cancelled | EventState::Completed) {
        return Err(ApiError::conflict(
            "event_closed",
            "the policy of a cancelled or completed event is final",
        ));
    }
    // Read after the closed check (409 before 422).
    let windows: Vec<RefundWindow> = api::parse_json(&body)?;
    let errors = validate_policy(&windows);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("UPDATE events SET refund_policy = $2, updated_at = now() WHERE id = $1")
        .bind(event.id)
        .bind(json!(windows))
        .execute(&mut *tx)
        .await?;
    let details = json!({ "from": event.refund_policy, "to": windows });
    crate::audit::by(
        &mut tx,
        &caller,
        event.organization_id,
        "event.set_refund_policy",
        format!("event:{}", event.id),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(RefundPolicy { refund_policy: windows }))
}

/// An event's refund policy, as `PUT /api/v1/events/{id}/refund-policy` answers it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPolicy {
    pub refund_policy: Vec<RefundWindow>,
}

/// Promo code attempts that may fail per buyer (visitor) of an event in one window.
pub const PROMO_FAILURES_PER_VISITOR: i32 = 10;
/// Promo code attempts that may fail per hold in one window.
pub const PROMO_FAILURES_PER_HOLD: i32 = 5;
/// The window, in seconds.
pub const PROMO_WINDOW_SECS: i32 = 15 * 60;
/// Price summaries one hold may ask for in one window: each costs two signature checks and a few
/// queries, and a buyer needs a handful (one per promo code tried, one per return to the page).
pub const QUOTES_PER_HOLD: i32 = 30;

/// The bound on guessing promo codes at checkout: attempts counted per buyer of an event and per
/// hold, in fixed windows (`promo_attempts`), across every core replica. Each attempt takes a slot
/// in one atomic statement before the code is looked up, so concurrent guesses cannot share a
/// slot; a code that works gives its slot back. A buyer over either bound is answered `429`
/// (`reason: promo-attempts`, `Retry-After`) until the window ends, whatever code they try.
pub struct Attempts {
    scopes: Vec<(String, i32)>,
    /// The `reason` of the `429`.
    reason: &'static str,
}

impl Attempts {
    pub fn new(event: Uuid, visitor: &str, hold: &str) -> Self {
        Self {
            scopes: vec![
                (format!("visitor:{event}:{visitor}"), PROMO_FAILURES_PER_VISITOR),
                (format!("hold:{hold}"), PROMO_FAILURES_PER_HOLD),
            ],
            reason: "promo-attempts",
        }
    }

    /// The same windows counting a hold's price summaries (`POST /api/v1/checkout/quote`), never
    /// given back: `429` (`reason: quote-rate`) past [`QUOTES_PER_HOLD`].
    pub fn quotes(hold: &str) -> Self {
        Self { scopes: vec![(format!("quote:{hold}"), QUOTES_PER_HOLD)], reason: "quote-rate" }
    }

    fn names(&self) -> Vec<&str> {
        self.scopes.iter().map(|(s, _)| s.as_str()).collect()
    }

    /// Takes one attempt in every scope (a new window when the last one ended); refuses when a
    /// scope had none left.
    pub async fn take(&self, db: &sqlx::PgPool) -> Result<()> {
        let rows: Vec<(String, i32, f64)> = sqlx::query_as(
            "INSERT INTO promo_attempts (scope, failures) SELECT unnest($1::text[]), 1
             ON CONFLICT (scope) DO UPDATE SET
                 failures = CASE WHEN promo_attempts.window_start <= now() - make_interval(secs => $2)
                                 THEN 1 ELSE promo_attempts.failures + 1 END,
                 window_start = CASE WHEN promo_attempts.window_start <= now() - make_interval(secs => $2)
                                     THEN now() ELSE promo_attempts.window_start END
             RETURNING scope, failures,
                 extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8",
        )
        .bind(self.names())
        .bind(PROMO_WINDOW_SECS)
        .fetch_all(db)
        .await?;
        for (scope, taken, left) in rows {
            let limit = self.scopes.iter().find(|(s, _)| *s == scope).map_or(0, |(_, l)| *l);
            if taken > limit {
                return Err(ApiError::RateLimited {
                    reason: self.reason,
                    retry_after_secs: left.ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }

    /// Gives the attempt back: the code worked (or was not the problem).
    pub async fn give_back(&self, db: &sqlx::PgPool) -> Result<()> {
        sqlx::query("UPDATE promo_attempts SET failures = greatest(failures - 1, 0) WHERE scope = ANY($1)")
            .bind(self.names())
            .execute(db)
            .await?;
        Ok(())
    }
}

/// Deletes ended attempt windows (the pruner in [`crate::serve`]).
pub async fn prune_attempts(db: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM promo_attempts WHERE window_start < now() - make_interval(secs => $1)")
        .bind(PROMO_WINDOW_SECS)
        .execute(db)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refunds_follow_the_windows() {
        let policy = [
            RefundWindow { hours_before: 168, percent: 100 },
            RefundWindow { hours_before: 24, percent: 50 },
        ];
        let start: DateTime<Utc> = "2027-06-10T20:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(refund_percent(&policy, start, at("2027-06-01T00:00:00Z")), 100);
        assert_eq!(refund_percent(&policy, start, at("2027-06-03T20:00:00Z")), 100, "exactly 7 days before");
        assert_eq!(refund_percent(&policy, start, at("2027-06-05T00:00:00Z")), 50);
        assert_eq!(refund_percent(&policy, start, at("2027-06-10T00:00:00Z")), 0);
        assert_eq!(refund_percent(&[], start, at("2027-01-01T00:00:00Z")), 0);
        assert!(validate_policy(&policy).is_empty());
        let rising = [
            RefundWindow { hours_before: 168, percent: 50 },
            RefundWindow { hours_before: 24, percent: 100 },
        ];
        assert_eq!(validate_policy(&rising)[0].field, "[1].percent");
        let unordered = [
            RefundWindow { hours_before: 24, percent: 100 },
            RefundWindow { hours_before: 168, percent: 50 },
        ];
        assert_eq!(validate_policy(&unordered)[0].field, "[1].hours_before");
    }
}
