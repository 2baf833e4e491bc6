//! What every admin route shares: JSON bodies that fail as problem+json ([`JsonBody`]), cursor
//! pagination ([`PageQuery::fetch`]), and `Idempotency-Key` on creating routes ([`Creating`]).
//!
//! **Pagination**: `?limit=1..200` (default 50) and `?cursor=<opaque>`; answers
//! `{"items": [...], "next_cursor": "..." | null}`. The cursor is the last item's
//! `(created_at, id)`, so pages are stable while rows are added.
//!
//! **Idempotency**: a creating request with `Idempotency-Key` runs once per (user, key). The first
//! answer is stored in the same transaction as the change; a retry with the same method, path and
//! body gets it again (with `Idempotent-Replayed: true`); the same key with another request is a
//! `409` (`reason: idempotency_conflict`). Concurrent retries wait on a transaction-scoped lock.
//! A stored answer lives [`IDEMPOTENCY_HOURS`] hours, then the key may be used again; the pruner
//! ([`prune`]) deletes expired rows. An answer that carries a secret (a new API key) is stored
//! without it: a replay answers `secret_withheld: "<field>"` instead ([`Creating::run_with_secret`]).

use std::future::Future;
use std::pin::Pin;

use axum::body::Bytes;
use axum::extract::{
    FromRef, FromRequest, FromRequestParts, OptionalFromRequestParts, RawPathParams, Request,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared_types::idempotency::{self, IdempotencyKey};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{PgConnection, PgPool, Postgres};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use uuid::Uuid;

/// A resource's documented routes: each bracketed group is one path's handlers (one per method),
/// as `utoipa_axum::routes!` takes them.
macro_rules! resource_routes {
    ($( [$($group:tt)*] ),* $(,)?) => {
        utoipa_axum::router::OpenApiRouter::new()$(.routes(utoipa_axum::routes!($($group)*)))*
    };
}
pub(crate) use resource_routes;

/// The request's `Idempotency-Key` header, under the one rule of [`shared_types::idempotency`]
/// (also the edge's for holds). As an extractor it is required; `Option<IdempotencyHeader>` takes
/// it when present. A key that breaks the rule is a `422 validation-failed` naming the header.
#[derive(Debug, Clone)]
pub struct IdempotencyHeader(pub IdempotencyKey);

impl IdempotencyHeader {
    /// The key when the header is present, checked.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>> {
        let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
        let key = value.to_str().map_err(|_| ApiError::field("Idempotency-Key", idempotency::RULE))?;
        IdempotencyKey::parse(key)
            .map(|k| Some(Self(k)))
            .map_err(|rule| ApiError::field("Idempotency-Key", rule))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        Self::from_headers(&parts.headers)?
            .ok_or_else(|| ApiError::field("Idempotency-Key", "this header is required"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>> {
        Self::from_headers(&parts.headers)
    }
}

/// The failure answer every documented route shares, `4XX` problem+json (RFC 9457): named once
/// here and listed in each route's `responses(...)` as `crate::api::Problems`.
pub struct Problems;

impl utoipa::IntoResponses for Problems {
    fn responses(
    ) -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        use utoipa::openapi::{content::ContentBuilder, response::ResponseBuilder, Ref};
        let schema = Ref::from_schema_name(<ProblemDoc as utoipa::ToSchema>::name());
        let content = ContentBuilder::new().schema(Some(schema)).build();
        let problem = ResponseBuilder::new()
            .description("a problem (RFC 9457)")
            .content(shared_types::PROBLEM_CONTENT_TYPE, content)
            .build();
        std::collections::BTreeMap::from([("4XX".to_owned(), problem.into())])
    }
}

/// The route's `{id}` (for extractors that check what it names before the handler runs); a route
/// without one answers 404.
pub async fn path_id<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String> {
    let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound)?;
    let id = params.iter().find(|(name, _)| *name == "id").map(|(_, id)| id.to_owned());
    id.ok_or(ApiError::NotFound)
}

/// A JSON request body, parsed before the handler runs (after the caller's checks): one that does
/// not parse is a `malformed-request` problem naming what was wrong, one over the body limit a 413.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        parse_json(&body).map(JsonBody).map_err(IntoResponse::into_response)
    }
}

/// A query string read into `T`, refused as a problem (400, `malformed-request`) when it does not
/// fit, like a malformed body: axum's own `Query` answers such a request in plain text.
pub struct Query<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                Err(ApiError::Malformed(format!("the query string is not valid: {}", rejection.body_text())))
            }
        }
    }
}

/// Reads a JSON body; a parse failure is a `malformed-request` problem naming what was wrong.
///
/// A number with a zero fraction (`2.0`) is read as the integer it equals where an integer is
/// wanted: JSON Schema, which the OpenAPI document speaks, counts it an integer, and serde alone
/// would refuse it (found by the API fuzzing, tests/tests/api_fuzz.rs). Only a body that fails to
/// parse as sent pays for the second reading.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    // PostgreSQL's text cannot hold NUL: a string carrying one is refused here rather than failing
    // in the database as a 500 (found by the API fuzzing). Only a body with the escape is scanned.
    // The scan keeps nothing of the body (a 16 MiB import is not built in memory to be refused).
    if body.windows(6).any(|w| w == b"\\u0000") && shared_types::json::holds_nul(body) == Some(true) {
        return Err(ApiError::Malformed("text may not contain NUL (\\u0000)".into()));
    }
    shared_types::json::from_slice(body).map_err(|e| malformed(&e))
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::Malformed(format!("the body is not valid: {e}"))
}

/// `?limit` and `?cursor`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Where the page starts: the previous page's `next_cursor` (empty or absent: the beginning).
    pub cursor: Option<String>,
}

/// A page position: after the row with this creation time and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: String,
}

impl PageQuery {
    /// The page size to ask for (one more is fetched to learn whether another page follows).
    pub fn limit(&self) -> Result<i64> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=200) => Ok(i64::from(n)),
            Some(_) => Err(ApiError::field("limit", "must be 1 to 200")),
        }
    }

    /// Where the page starts (`None`: the beginning, also for an empty `cursor=` as a form sends).
    pub fn after(&self) -> Result<Option<Cursor>> {
        let Some(raw) = self.cursor.as_deref().filter(|c| !c.is_empty()) else { return Ok(None) };
        URL_SAFE_NO_PAD
            .decode(raw)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .map(Some)
            .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API gave out"))
    }
}

/// The id half of a page position: a row's id, of the type the table keys it by.
pub trait KeysetId:
    ToString + Send + sqlx::Type<Postgres> + for<'q> sqlx::Encode<'q, Postgres> + Sized
{
    /// The position before every row.
    fn first() -> Self;
    fn parse(s: &str) -> Option<Self>;
}

impl KeysetId for Uuid {
    fn first() -> Self {
        Uuid::nil()
    }
    fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl KeysetId for i64 {
    fn first() -> Self {
        i64::MIN
    }
    fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

impl KeysetId for String {
    fn first() -> Self {
        String::new()
    }
    fn parse(s: &str) -> Option<Self> {
        Some(s.to_owned())
    }
}

impl PageQuery {
    /// One page of a listing ordered by `(time, id)`. `query` binds its filters first and ends with
    /// `(<time>, id) > ($n, $n+1) ORDER BY <time>, id LIMIT $n+2`: this binds the page's position
    /// and one row more than its size (to learn whether another page follows), runs it, and makes
    /// the page; `position` names a row's `(time, id)`.
    pub async fn fetch<'q, T, K>(
        &self,
        query: QueryAs<'q, Postgres, T, PgArguments>,
        db: &PgPool,
        position: impl Fn(&T) -> (DateTime<Utc>, K),
    ) -> Result<Listing<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, PgRow>,
        K: KeysetId + 'q,
    {
        let limit = self.limit()?;
        let (at, id) = match self.after()? {
            None => (DateTime::<Utc>::UNIX_EPOCH, K::first()),
            Some(c) => (
                c.at,
                K::parse(&c.id)
                    .ok_or_else(|| ApiError::field("cursor", "is not a cursor this API gave out"))?,
            ),
        };
        let rows = query.bind(at).bind(id).bind(limit + 1).fetch_all(db).await?;
        Ok(page(rows, limit, |row| {
            let (at, id) = position(row);
            Cursor { at, id: id.to_string() }
        }))
    }
}

/// One page of a listing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Listing<T> {
    /// Every row of `table` (whose `columns` are `T`'s) that belongs to `event`, oldest first, as
    /// one page: for the small per-event collections (tiers, promo codes).
    pub async fn of_event(
        db: &PgPool,
        table: &'static str,
        columns: &'static str,
        event: Uuid,
    ) -> Result<Json<Self>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let sql = format!("SELECT {columns} FROM {table} WHERE event_id = $1 ORDER BY created_at, id");
        let items = sqlx::query_as(&sql).bind(event).fetch_all(db).await?;
        Ok(Json(Self { items, next_cursor: None }))
    }
}

/// The problem+json body, as the OpenAPI document describes it (`shared_types::Problem`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDoc {
    /// A stable URI under `https://errors.ticketing.dev/`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: Option<String>,
    pub instance: Option<String>,
    /// `reason`, `errors` (each `{field, message}`) and other extension members.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: serde_json::Map<String, Value>,
}

/// Builds a page from `limit + 1` fetched rows.
pub fn page<T>(mut rows: Vec<T>, limit: i64, position: impl Fn(&T) -> Cursor) -> Listing<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rows.last().map(|r| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&position(r)).unwrap_or_default()))
        })
        .flatten();
    Listing { items: rows, next_cursor }
}

/// The work of a creating request, inside the transaction that also records its answer.
pub type Work<'c> = Pin<Box<dyn Future<Output = Result<(StatusCode, Value)>> + Send + 'c>>;

#[derive(sqlx::FromRow)]
struct Stored {
    method: String,
    path: String,
    request_sha256: Vec<u8>,
    status: i16,
    body: Value,
}

/// How long an idempotent answer is kept (and a key's reuse refused or replayed).
pub const IDEMPOTENCY_HOURS: i32 = 24;

/// A creating request (`POST`, with an optional `Idempotency-Key`), read before the handler runs:
/// the pool, the headers and the body. [`Creating::run`] does the handler's work once per key (see
/// the module documentation).
pub struct Creating {
    db: PgPool,
    headers: HeaderMap,
    body: Bytes,
}

impl<S> FromRequest<S> for Creating
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        Ok(Self { db: PgPool::from_ref(state), headers, body })
    }
}

impl Creating {
    /// The body, parsed as JSON (a `malformed-request` problem otherwise).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        parse_json(&self.body)
    }

    /// The body, parsed as JSON, or `T::default()` for an empty one.
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T> {
        // No body, or JSON's `null` (what an optional body is when absent), is the default.
        if self.body.is_empty() || self.body.trim_ascii() == b"null" {
            Ok(T::default())
        } else {
            self.json()
        }
    }

    /// Runs `work` once for this request's `Idempotency-Key` (or once, without one); `path` names
    /// what is created (a replay must name the same).
    pub async fn run<F>(&self, caller: &Caller, path: &str, work: F) -> Result<Response>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Work<'c>,
    {
        create_with_secret(&self.db, caller, &self.headers, "POST", path, &self.body, None, work).await
    }

    /// [`Creating::run`] for an answer whose field `secret` is shown once (see [`create_with_secret`]).
    pub async fn run_with_secret<F>(
        &self,
        caller: &Caller,
        path: &str,
        secret: &'static str,
        work: F,
    ) -> Result<Response>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> Work<'c>,
    {
        create_with_secret(&self.db, caller, &self.headers, "POST", path, &self.body, Some(secret), work)
            .await
    }
}

/// Runs a creating request once per `Idempotency-Key`; for an answer whose top-level field `secret` is shown once: it is never stored, and
/// a replay answers the rest with `secret_withheld: "<secret>"`. The caller who lost the first
/// answer revokes what was made (its id is in the replay) and makes another.
#[allow(clippy::too_many_arguments)]
pub async fn create_with_secret<F>(
    db: &PgPool,
    caller: &Caller,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &Bytes,
    secret: Option<&'static str>,
    work: F,
) -> Result<Response>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> Work<'c>,
{
    let key = IdempotencyHeader::from_headers(headers)?.map(|h| h.0.as_str().to_owned());
    let digest = Sha256::digest(body).to_vec();
    let mut tx = db.begin().await?;
    if let Some(key) = &key {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:{key}", caller.user_id))
            .execute(&mut *tx)
            .await?;
        // An expired answer is forgotten: the key starts afresh.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2
               AND created_at <= now() - make_interval(hours => $3)",
        )
        .bind(caller.user_id)
        .bind(key)
        .bind(IDEMPOTENCY_HOURS)
        .execute(&mut *tx)
        .await?;
        let stored: Option<Stored> = sqlx::query_as(
            "SELECT method, path, request_sha256, status, body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .bind(caller.user_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(s) = stored {
            if s.method != method || s.path != path || s.request_sha256 != digest {
                return Err(ApiError::conflict(
                    "idempotency_conflict",
                    "this Idempotency-Key was used with a different request",
                ));
            }
            let status = StatusCode::from_u16(s.status as u16).unwrap_or(StatusCode::OK);
            return Ok((status, [("idempotent-replayed", "true")], Json(s.body)).into_response());
        }
    }
    let (status, answer) = work(&mut tx).await?;
    if let Some(key) = &key {
        let mut kept = answer.clone();
        if let (Some(field), Some(fields)) = (secret, kept.as_object_mut()) {
            fields.remove(field);
            fields.insert("secret_withheld".into(), Value::String(field.to_owned()));
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, user_id, key, method, path, request_sha256, status, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(caller.organization_id)
        .bind(caller.user_id)
        .bind(key)
        .bind(method)
        .bind(path)
        .bind(&digest)
        .bind(status.as_u16() as i16)
        .bind(&kept)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((status, Json(answer)).into_response())
}

/// Deletes expired idempotent answers (in batches of 10,000, until none is left) and ended
/// promo-attempt windows; the number of rows deleted.
pub async fn prune(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut answers = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1) LIMIT 10000))",
        )
        .bind(IDEMPOTENCY_HOURS)
        .execute(db)
        .await?
        .rows_affected();
        answers += batch;
        if batch < 10_000 {
            break;
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tier {
        quantity: i32,
        price: Option<u32>,
        x: f32,
    }

    #[test]
    fn an_integral_float_is_read_as_the_integer_it_equals() {
        // Found by the API fuzzing: JSON Schema counts 60.0 an integer, serde alone refused it.
        let got: Tier = parse_json(br#"{"quantity": 60.0, "price": 2.0e3, "x": 1}"#).unwrap();
        assert_eq!(got, Tier { quantity: 60, price: Some(2000), x: 1.0 });
    }

    #[test]
    fn text_with_nul_is_refused_before_it_reaches_the_database() {
        // Found by the API fuzzing: PostgreSQL refused the string, and the core answered 500.
        for body in [r#"["A-1", "x\u0000"]"#, r#"{"a\u0000": 1}"#] {
            assert!(matches!(parse_json::<Value>(body.as_bytes()), Err(ApiError::Malformed(_))), "{body}");
        }
        // An escaped backslash before "u0000" is no NUL.
        assert_eq!(parse_json::<Vec<String>>(br#"["\\u0000"]"#).unwrap(), vec!["\\u0000".to_owned()]);
    }

    #[test]
    fn a_fraction_where_an_integer_is_wanted_is_refused_with_where_it_is() {
        let Err(ApiError::Malformed(detail)) = parse_json::<Tier>(br#"{"quantity": 60.5, "x": 1}"#) else {
            panic!("60.5 read as an integer")
        };
        assert!(detail.contains("line 1 column"), "{detail}");
        assert!(parse_json::<Tier>(br#"{"quantity": 1.0, "x": 1, "other": 2}"#).is_err());
    }

    #[test]
    fn a_key_given_twice_stays_refused_whatever_else_the_body_holds() {
        // Found by review: the second reading (into a Value) kept the last of two equal keys.
        for body in
            [r#"{"quantity": 1, "quantity": 900, "x": 1}"#, r#"{"quantity": 1.0, "quantity": 900, "x": 1}"#]
        {
            assert!(parse_json::<Tier>(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: Option<u32>,
    }

    #[tokio::test]
    async fn a_query_that_does_not_fit_is_a_problem_not_plain_text() {
        // Found by the API fuzzing: axum's Query answered `?limit=-1` in text/plain.
        let (mut parts, ()) =
            axum::http::Request::builder().uri("/x?limit=-1").body(()).unwrap().into_parts();
        let Err(ApiError::Malformed(detail)) = Query::<Page>::from_request_parts(&mut parts, &()).await
        else {
            panic!("a negative limit was read")
        };
        assert!(detail.contains("limit"), "{detail}");
        let (mut parts, ()) = axum::http::Request::builder().uri("/x?limit=7").body(()).unwrap().into_parts();
        assert!(Query::<Page>::from_request_parts(&mut parts, &()).await.is_ok());
    }
}
