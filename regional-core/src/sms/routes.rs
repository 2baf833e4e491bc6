//! The provider's calls to the core (delivery reports and incoming messages, both signed by
//! Twilio's scheme) and the operators' view of texts.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::twilio;
use crate::api::{Listing, PageQuery, Query};
use crate::auth::{need, Can};
use crate::error::{ApiError, Result};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(delivery_report)).routes(routes!(incoming)).routes(routes!(list_sms))
}

/// The most parameters a provider's request may carry (Twilio sends about 20).
const MAX_PARAMS: usize = 64;

/// Words that opt a number out, and back in, as carriers and Twilio define them (case and spaces
/// ignored).
const STOP_WORDS: [&str; 9] =
    ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE", "STOP ALL"];
const START_WORDS: [&str; 3] = ["START", "YES", "UNSTOP"];

/// A provider's request: its form parameters, once its signature over the public URL of `path`
/// checks out with the auth token.
fn signed_params(
    state: &AppState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>> {
    let sms = state.sms.as_ref().ok_or(ApiError::NotFound)?;
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .take(MAX_PARAMS + 1)
        .collect();
    if params.len() > MAX_PARAMS {
        return Err(ApiError::Malformed(format!("at most {MAX_PARAMS} parameters")));
    }
    let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok());
    let url = sms.provider.callback_url(path);
    if !twilio::verify(&sms.provider.auth_token, &url, &params, signature) {
        return Err(ApiError::Token {
            reason: "bad-signature",
            detail: "X-Twilio-Signature does not sign this request".into(),
        });
    }
    // Another account's report (a signature is per auth token, but an account SID that is not ours
    // means a misrouted callback).
    let account = param(&params, "AccountSid");
    if !account.is_empty() && account != sms.provider.account_sid {
        return Err(ApiError::field("AccountSid", "not this core's account"));
    }
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// The parameters of the provider's delivery report the core reads (the document's; the route reads
/// the form itself, for the signature covers every parameter).
#[derive(utoipa::ToSchema)]
#[allow(non_snake_case, dead_code)]
pub struct StatusReport {
    AccountSid: Option<String>,
    MessageSid: String,
    /// `queued`, `sending`, `sent`, `delivered`, `undelivered`, `failed`, `read`…
    MessageStatus: String,
    ErrorCode: Option<String>,
}

/// The parameters of a text someone sent the shop's number that the core reads.
#[derive(utoipa::ToSchema)]
#[allow(non_snake_case, dead_code)]
pub struct IncomingText {
    AccountSid: Option<String>,
    MessageSid: String,
    From: String,
    Body: Option<String>,
    /// `STOP`, `START` or `HELP` (Twilio's Advanced Opt-Out).
    OptOutType: Option<String>,
}

/// How far along an outgoing text's provider status is (stored as `status_rank`): a report only
/// moves a text forward (reports may arrive out of order). 0: not a status of an outgoing text.
pub fn rank(status: &str) -> i16 {
    match status {
        "accepted" | "scheduled" | "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" | "canceled" => 4,
        "read" => 5,
        _ => 0,
    }
}

/// Statuses of the Messages API that are not an outgoing text's (incoming ones, and an MMS's
/// partial delivery): answered `204`, recorded nowhere.
const OTHER_STATUSES: [&str; 3] = ["receiving", "received", "partially_delivered"];

/// `POST /api/v1/sms/status`: the provider's delivery report of a message (Twilio's
/// `StatusCallback`: form parameters `MessageSid`, `MessageStatus`, `ErrorCode`…, signed with
/// `X-Twilio-Signature`). A report of a message not ours, or older than what is known, changes
/// nothing and is answered `204` too.
#[utoipa::path(post, path = "/api/v1/sms/status", tag = "operations",
    request_body(content = StatusReport, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback parameters (others are taken and signed too)"),
    responses((status = 204, description = "recorded (or nothing to record)"), crate::api::Problems))]
async fn delivery_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode> {
    let params = signed_params(&state, "/api/v1/sms/status", &headers, &body)?;
    let sid = param(&params, "MessageSid");
    let status = param(&params, "MessageStatus");
    if sid.is_empty() || sid.len() > 64 {
        return Err(ApiError::field("MessageSid", "must be the provider's message id"));
    }
    if OTHER_STATUSES.contains(&status) {
        return Ok(StatusCode::NO_CONTENT);
    }
    let new_rank = rank(status);
    if new_rank == 0 {
        return Err(ApiError::field("MessageStatus", "must be a message status of the Messages API"));
    }
    crate::metrics::SMS_REPORTS.get_or_create(&vec![("status", status.to_owned())]).inc();
    let code: Option<i64> = param(&params, "ErrorCode").parse().ok();
    sqlx::query(
        "UPDATE sms_messages SET provider_status = $2, status_rank = $4, status_at = now(),
             error_code = COALESCE($3, error_code),
             state = CASE WHEN $2 IN ('delivered', 'read') THEN 'delivered'
                          WHEN $2 = 'undelivered' THEN 'undelivered'
                          WHEN $2 IN ('failed', 'canceled') THEN 'failed' ELSE state END
         WHERE provider_sid = $1 AND state IN ('sent', 'delivered', 'undelivered', 'failed') AND status_rank < $4",
    )
    .bind(sid)
    .bind(status)
    .bind(code)
    .bind(new_rank)
    .execute(&state.db)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/sms/incoming`: a message someone sent to the shop's number (Twilio's messaging
/// webhook: `MessageSid`, `From`, `Body`, and `OptOutType` with Advanced Opt-Out). `STOP` (and
/// the other opt-out words) opts the number out: nothing more is sent to it, and what waits is
/// suppressed; `START` opts it back in. Each message counts once (by `MessageSid`). Answered with
/// empty TwiML: the provider sends the carriers' confirmation itself.
#[utoipa::path(post, path = "/api/v1/sms/incoming", tag = "operations",
    request_body(content = IncomingText, content_type = "application/x-www-form-urlencoded", description = "Twilio's incoming message parameters (others are taken and signed too)"),
    responses((status = 200, description = "TwiML, empty", content_type = "text/xml", body = String), crate::api::Problems))]
async fn incoming(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    let params = signed_params(&state, "/api/v1/sms/incoming", &headers, &body)?;
    // Any well-formed number: an opt-out is honoured even from outside the allowed countries.
    let from = super::Reach { allowed_prefixes: vec![] }
        .phone(param(&params, "From"))
        .map_err(|why| ApiError::field("From", &why))?;
    let sid = param(&params, "MessageSid");
    if sid.is_empty() || sid.len() > 64 {
        return Err(ApiError::field("MessageSid", "must be the provider's message id"));
    }
    let word = param(&params, "Body").split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase();
    let kind = param(&params, "OptOutType").to_uppercase();
    let mut tx = state.db.begin().await?;
    // Once per message: a signed request replayed (the signature carries no time) changes nothing.
    let fresh = sqlx::query("INSERT INTO sms_incoming (message_sid) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(sid)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !fresh {
        tracing::info!("sms: an incoming text seen before; ignored");
    } else if kind == "STOP" || STOP_WORDS.contains(&word.as_str()) {
        super::opt_out(&mut tx, &from, "keyword").await?;
        tracing::info!("sms: a number opted out");
    } else if kind == "START" || START_WORDS.contains(&word.as_str()) {
        super::opt_in(&mut tx, &from).await?;
        tracing::info!("sms: a number opted back in");
    }
    tx.commit().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

/// A text as operators see it (its body is not shown: it carries the buyer's link).
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SmsView {
    id: Uuid,
    kind: String,
    recipient: String,
    /// `pending`, `sent` (the provider took it), `delivered`, `undelivered`, `failed` or
    /// `suppressed` (the number opted out).
    state: String,
    /// The provider's last status (`queued`, `sent`, `delivered`…).
    provider_status: Option<String>,
    provider_sid: Option<String>,
    error_code: Option<i64>,
    last_error: Option<String>,
    attempts: i32,
    order_id: Option<Uuid>,
    event_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    status_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SmsFilter {
    /// `pending`, `sent`, `delivered`, `undelivered`, `failed` or `suppressed` (default: every state).
    pub state: Option<String>,
}

const STATES: [&str; 6] = ["pending", "sent", "delivered", "undelivered", "failed", "suppressed"];

/// `GET /api/v1/ops/sms`: text messages and their delivery status, oldest first (platform operators).
#[utoipa::path(get, path = "/api/v1/ops/sms", tag = "operations", security(("api_key" = [])),
    params(PageQuery, SmsFilter),
    responses((status = 200, body = Listing<SmsView>), crate::api::Problems))]
async fn list_sms(
    State(state): State<AppState>,
    _: Can<need::ManagePlatform>,
    Query(page): Query<PageQuery>,
    Query(filter): Query<SmsFilter>,
) -> Result<Json<Listing<SmsView>>> {
    if let Some(s) = filter.state.as_deref() {
        if !STATES.contains(&s) {
            return Err(ApiError::field(
                "state",
                "must be pending, sent, delivered, undelivered, failed or suppressed",
            ));
        }
    }
    let query = sqlx::query_as(
        "SELECT id, kind, recipient, state, provider_status, provider_sid, error_code, last_error,
                attempts, order_id, event_id, created_at, sent_at, status_at
         FROM sms_messages WHERE ($1::text IS NULL OR state = $1) AND (created_at, id) > ($2, $3)
         ORDER BY created_at, id LIMIT $4",
    )
    .bind(filter.state);
    Ok(Json(page.fetch(query, &state.db, |r: &SmsView| (r.created_at, r.id)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(rank("accepted") > 0 && rank("queued") < rank("sent"));
        assert!(OTHER_STATUSES.iter().all(|s| rank(s) == 0));
        assert!(rank("sent") < rank("delivered"));
        assert!(rank("delivered") < rank("read"));
        assert_eq!(rank("delivered"), rank("undelivered"));
        assert_eq!(rank("made-up"), 0);
    }
}
