//! An event's waiting list, for its organizer (docs/waiting-list.md). The list lives at the edge
//! (its own Durable Object); these routes ask it through the signed internal API:
//!
//! - `GET  /api/v1/events/{id}/waitlist`             counts: waiting, offers made, claimed, lapsed
//! - `GET  /api/v1/events/{id}/waitlist/export`      every entry as CSV (with its address)
//! - `POST /api/v1/events/{id}/waitlist/close`       nobody joins any more; those waiting leave
//! - `GET  /api/v1/events/{id}/waitlist/history`     the list's decisions in order (the audit)
//!
//! Its settings are the waiting room's `waitlist` (`PUT /api/v1/events/{id}/waiting-room`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use shared_types::internal_api::InternalRoute;

use crate::auth::need;
use crate::edge_client::EdgeError;
use crate::error::{ApiError, Result};
use crate::extract::OwnEvent;
use crate::reporting::exports;
use crate::state::AppState;

/// The edge's answer to `route` about `event`, or the error the organizer sees.
async fn ask(state: &AppState, event: uuid::Uuid, route: InternalRoute) -> Result<Value> {
    match state.edge.call(event, &route).await {
        // The list's object answers nothing when the event never had a waiting list set up.
        Ok(Value::Null) => Err(ApiError::NotFound),
        Ok(answer) => Ok(answer),
        Err(EdgeError::Refused { status: 404, .. }) => Err(ApiError::NotFound),
        Err(EdgeError::Refused { reason, detail, .. }) => {
            Err(ApiError::Unavailable(format!("the edge refused ({reason}): {detail}")))
        }
        Err(e) => Err(unreachable(&e)),
    }
}

/// The edge did not answer, or failed: what went wrong is logged, the organizer is told to try again (the
/// transport's details are not theirs to see).
fn unreachable(e: &EdgeError) -> ApiError {
    tracing::warn!(error = %e, "the waiting list's edge call failed");
    ApiError::Unavailable("the edge is unavailable; try again shortly".into())
}

/// `GET /api/v1/events/{id}/waitlist`: the waiting list's counts.
#[utoipa::path(get, path = "/api/v1/events/{id}/waitlist", tag = "reporting", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "waiting, offers_out, free places per pool, entries per pool asked for by state, offers made, claimed, lapsed and declined, the settings", body = Object), crate::api::Problems))]
pub(super) async fn waitlist(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
) -> Result<Json<Value>> {
    Ok(Json(ask(&state, event.id, InternalRoute::Waitlist).await?))
}

/// `POST /api/v1/events/{id}/waitlist/close`: closes the list (those waiting are told they left;
/// offers standing stand until claimed or lapsed). Answers the counts.
#[utoipa::path(post, path = "/api/v1/events/{id}/waitlist/close", tag = "publishing", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, body = Object), crate::api::Problems))]
pub(super) async fn close_waitlist(
    State(state): State<AppState>,
    OwnEvent { caller, event, .. }: OwnEvent<need::ManageCatalog>,
) -> Result<Json<Value>> {
    // The change is the edge's: its row is written first and committed once the list's object has
    // made it (a refusal rolls it back), so that no close is left without its row but one cut off
    // between the edge's answer and the commit.
    let mut tx = state.db.begin().await?;
    let subject = format!("event:{}", event.id);
    crate::audit::by(&mut tx, &caller, event.organization_id, "event.close_waitlist", subject, json!({}))
        .await?;
    let counts = ask(&state, event.id, InternalRoute::CloseWaitlist).await?;
    tx.commit().await?;
    Ok(Json(counts))
}

/// The page of `GET …/waitlist/history`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryPage {
    /// Records after this position (from the previous page's `next_after`); from the start when
    /// absent.
    after: Option<u64>,
    /// At most this many records (1 to 5000, default 1000).
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<u32>,
}

/// `GET /api/v1/events/{id}/waitlist/history`: the list's decisions in the order taken (joins,
/// places back, offers, claims, lapses, declines, releases; docs/waiting-list.md), a page at a
/// time: what an organizer needs to audit that offers followed the order of joining. Who joined
/// is their number only: visitor ids and address hashes are left out.
#[utoipa::path(get, path = "/api/v1/events/{id}/waitlist/history", tag = "reporting", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id"), HistoryPage), responses((status = 200, description = "records (each with its type), from (the first one's position), next_after (the position to ask after for the next page; null at the end)", body = Object), crate::api::Problems))]
pub(super) async fn waitlist_history(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
    crate::api::Query(page): crate::api::Query<HistoryPage>,
) -> Result<Json<Value>> {
    let limit = page.limit.unwrap_or(1000);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::field("limit", "must be 1 to 5000"));
    }
    let after = page.after.map(|a| format!("&after={a}")).unwrap_or_default();
    let path = format!("{}?limit={limit}{after}", InternalRoute::WaitlistRecords.path(&event.id.to_string()));
    let mut answer = match state.edge.get(&path).await {
        Ok(answer) => answer,
        Err(EdgeError::Refused { status: 404, .. }) => return Err(ApiError::NotFound),
        Err(e) => return Err(unreachable(&e)),
    };
    for record in answer["records"].as_array_mut().into_iter().flatten() {
        for key in ["entry", "offer"] {
            if let Some(fields) = record.get_mut(key).and_then(Value::as_object_mut) {
                fields.remove("visitor");
                fields.remove("email_key");
            }
        }
    }
    Ok(Json(answer))
}

const EXPORT_HEADER: &str = "number,joined_at,email,wants,quantity,state,position";

/// `GET /api/v1/events/{id}/waitlist/export`: every entry of the list, oldest first, as CSV.
#[utoipa::path(get, path = "/api/v1/events/{id}/waitlist/export", tag = "reporting", security(("api_key" = [])), params(("id" = String, Path, description = "the resource id")), responses((status = 200, description = "text/csv: number, joined_at (UTC), email, wants, quantity, state, position"), crate::api::Problems))]
pub(super) async fn export_waitlist(
    State(state): State<AppState>,
    OwnEvent { event, .. }: OwnEvent<need::Read>,
) -> Result<Response> {
    let answer = ask(&state, event.id, InternalRoute::WaitlistEntries).await?;
    let mut out = format!("{EXPORT_HEADER}\r\n");
    for e in answer["entries"].as_array().into_iter().flatten() {
        let joined = e["joined_at"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let text = |v: &Value| exports::text(v.as_str().unwrap_or_default());
        let number = |v: &Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
        let row = [
            number(&e["number"]),
            joined,
            text(&e["email"]),
            text(&e["wants"]),
            number(&e["quantity"]),
            text(&e["state"]),
            number(&e["position"]),
        ];
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    let name = format!("attachment; filename=\"{}-waitlist.csv\"", event.id);
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()), (header::CONTENT_DISPOSITION, name)],
        out,
    )
        .into_response())
}
