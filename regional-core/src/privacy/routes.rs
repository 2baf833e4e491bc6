//! The organizers' and operator's privacy requests (docs/privacy.md): an access request answers
//! everything kept about an address; an erasure request removes it. Organizer admins reach their
//! organization's buyers, the platform admin every organization's. Both are in the audit log
//! (`privacy.access`, `privacy.erasure`: counts only, the person named by a hash).
//!
//! The edge keeps one thing the core does not: the addresses of live waiting-list entries. Both
//! requests ask each live list in reach (an erasure first removes the entries at the edge, then
//! erases the rest in one transaction; if the edge cannot be reached, nothing is changed and the
//! answer is a 503 to try again).

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use shared_types::internal_api::InternalRoute;
use uuid::Uuid;

use super::erase::{self, Erased, Upcoming};
use super::{access, Scope, Subject};
use crate::api::{resource_routes, JsonBody};
use crate::auth::{need, Caller, Can};
use crate::edge_client::EdgeError;
use crate::error::{ApiError, Result};
use crate::state::AppState;

pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    resource_routes!(
        [access_request],
        [erasure_request],
        [super::sign_in::request_sign_in],
        [super::sign_in::my_orders],
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AccessRequest {
    /// The person's e-mail address (compared without regard to case).
    #[schema(min_length = 3, max_length = 254)]
    email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    /// The person's e-mail address (compared without regard to case).
    #[schema(min_length = 3, max_length = 254)]
    email: String,
    /// What becomes of their valid tickets of events still to come: `keep` (default: they stay
    /// valid, and their address is erased once the event is over) or `void` (voided now, no
    /// refund; everything is erased now).
    #[serde(default)]
    upcoming: Upcoming,
}

fn subject_of(email: &str) -> Result<Subject> {
    Subject::parse(email).ok_or_else(|| ApiError::field("email", "must be an e-mail address"))
}

/// How many waiting lists are asked at once.
const LISTS_AT_ONCE: usize = 8;

/// Asks every waiting list in reach that may still hold addresses (`route`, with `body`), a few
/// at once: answers each list's answer with its event (a list never set up answers nothing). The
/// lists: events of the scope not over (or over within a day: offers outlive the close) whose
/// waiting-room settings name a list, whatever their state or the list's now (a closed or
/// disabled list's standing offers keep their addresses until they end). Any failure: a 503 that
/// says nothing was changed.
async fn ask_lists(
    state: &AppState,
    scope: Scope,
    route: InternalRoute,
    body: Value,
) -> Result<Vec<(Uuid, Value)>> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    if !state.edge.configured() {
        // No edge (no `CORE_SIGNING_KEY`): nothing was ever published to one.
        return Ok(Vec::new());
    }
    let events: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM events WHERE ($1::uuid IS NULL OR organization_id = $1)
           AND ends_at > now() - interval '1 day' AND waiting_room ? 'waitlist'
         ORDER BY id",
    )
    .bind(scope.organization())
    .fetch_all(&state.db)
    .await?;
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    futures_util::stream::iter(events)
        .map(|event| {
            let (route, body) = (route.clone(), body.clone());
            async move {
                match state.edge.call_with(event, &route, body).await {
                    Ok(answer) => Ok((event, answer)),
                    Err(EdgeError::Refused { status: 404, .. }) => Ok((event, Value::Null)),
                    Err(e) => {
                        tracing::warn!(error = %e, %event, "a privacy request's waiting-list call failed");
                        Err(ApiError::Unavailable(
                            "the edge is unavailable; nothing was changed, try again shortly".into(),
                        ))
                    }
                }
            }
        })
        .buffer_unordered(LISTS_AT_ONCE)
        .try_collect()
        .await
}

/// `POST /api/v1/privacy/access-requests`: everything kept about an address (orders with their
/// payments, tickets with their check-ins, transfers, mails, the buyer's own actions in the audit
/// log, domain events, partner deliveries, staff accounts, sign-in requests, live waiting-list
/// entries), as one JSON document.
#[utoipa::path(post, path = "/api/v1/privacy/access-requests", tag = "privacy", security(("api_key" = [])),
    request_body = AccessRequest,
    responses((status = 200, body = Object, description = "every section (`orders`, `tickets`, `transfers`, `mails`, `audit_log`, `domain_events`, `webhook_deliveries`, `user_accounts`, `sign_in_requests`, `waitlist_entries`), `truncated` and `elsewhere` (docs/privacy.md)"),
              crate::api::Problems))]
async fn access_request(
    State(state): State<AppState>,
    Can(caller, _): Can<need::HandlePersonalData>,
    JsonBody(req): JsonBody<AccessRequest>,
) -> Result<Json<Value>> {
    let subject = subject_of(&req.email)?;
    let scope = Scope::of(&caller);
    let mut waitlist = Vec::new();
    for (event, answer) in ask_lists(&state, scope, InternalRoute::WaitlistEntries, Value::Null).await? {
        for entry in answer["entries"].as_array().into_iter().flatten() {
            if entry["email"].as_str().and_then(Subject::parse).as_ref() == Some(&subject) {
                let mut entry = entry.clone();
                entry["event_id"] = json!(event);
                waitlist.push(entry);
            }
        }
    }
    let mut tx = state.db.begin().await?;
    // One snapshot of every table.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    let mut doc = access::report(&mut tx, scope, &subject).await?;
    tx.commit().await?;
    doc["waitlist_entries"] = Value::Array(waitlist);
    let mut details = access::counts(&doc);
    details["waitlist_entries"] = json!(doc["waitlist_entries"].as_array().map_or(0, Vec::len));
    audit(&state, &caller, "privacy.access", &subject, details).await?;
    let mut answer = json!({
        "email": subject.as_str(),
        "generated_at": Utc::now(),
        "organization_id": scope.organization(),
    });
    if let (Some(a), Value::Object(d)) = (answer.as_object_mut(), doc) {
        a.extend(d);
    }
    Ok(Json(answer))
}

/// `POST /api/v1/privacy/erasure-requests`: the address removed or made anonymous wherever it is
/// kept, the financial records staying (docs/privacy.md, "Erasure"). Safe to repeat: a second
/// request finds nothing more to erase (and erases what was deferred, once its event is over).
#[utoipa::path(post, path = "/api/v1/privacy/erasure-requests", tag = "privacy", security(("api_key" = [])),
    request_body = ErasureRequest,
    responses((status = 200, body = Erased, description = "what was erased, and what is kept until its event is over"),
              crate::api::Problems))]
async fn erasure_request(
    State(state): State<AppState>,
    Can(caller, _): Can<need::HandlePersonalData>,
    JsonBody(req): JsonBody<ErasureRequest>,
) -> Result<Json<Erased>> {
    let subject = subject_of(&req.email)?;
    let scope = Scope::of(&caller);
    // The edge first: if it cannot be reached, nothing has changed.
    let forget = json!({ "email": subject.as_str() });
    let answers = ask_lists(&state, scope, InternalRoute::ForgetWaitlistAddress, forget).await?;
    let waitlist_entries = answers.iter().map(|(_, a)| a["forgotten"].as_u64().unwrap_or(0)).sum();
    let mut tx = state.db.begin().await?;
    let mut erased = erase::erase(&mut tx, scope, &subject, req.upcoming, None).await?;
    erased.waitlist_entries = waitlist_entries;
    let mut details = serde_json::to_value(&erased).unwrap_or_default();
    details["upcoming"] = json!(req.upcoming);
    crate::audit::by(
        &mut tx,
        &caller,
        caller.organization_id,
        "privacy.erasure",
        subject.audit_name(),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(erased))
}

async fn audit(
    state: &AppState,
    caller: &Caller,
    action: &str,
    subject: &Subject,
    details: Value,
) -> Result<()> {
    let mut conn = state.db.acquire().await?;
    crate::audit::by(&mut conn, caller, caller.organization_id, action, subject.audit_name(), details)
        .await?;
    Ok(())
}
