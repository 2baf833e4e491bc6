//! The core's one error type at the HTTP boundary, mapped once to RFC 9457 problem+json.
//! Internals (SQL errors, causes) go to the log, never to the client.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use shared_types::inventory::FieldError;
use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};

/// What a handler or a service answers: `Result<T>` fails with an [`ApiError`].
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No resource, or another tenant's (never told apart).
    #[error("not found")]
    NotFound,
    /// Missing or bad credentials; the reason is a stable slug.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Authenticated, but the role may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The body or a parameter could not be parsed.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Parsed, but fields are not acceptable (each named).
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Conflicts with the current state; the reason is a stable slug.
    #[error("conflict ({reason}): {detail}")]
    Conflict { reason: &'static str, detail: String },
    /// A buyer's token (hold or order) was refused; the reason is the token error's slug.
    #[error("token refused ({reason}): {detail}")]
    Token { reason: &'static str, detail: String },
    /// Too many attempts; try again after this many seconds (`Retry-After`).
    #[error("rate limited ({reason}), retry after {retry_after_secs} s")]
    RateLimited { reason: &'static str, retry_after_secs: u64 },
    /// A dependency (the edge, the payment provider) or a part of the configuration is missing.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A page could not be rendered (a bug: a template and its context disagree).
    #[error("template: {0}")]
    Template(#[from] minijinja::Error),
}

impl ApiError {
    /// A validation failure of one field.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict { reason, detail: detail.into() }
    }

    /// True when this is a validation failure naming `field`.
    pub fn is_field(&self, field: &str) -> bool {
        matches!(self, Self::Validation(errors) if errors.iter().any(|e| e.field == field))
    }

    fn problem(&self) -> Problem {
        match self {
            Self::NoRoute(path) => {
                Problem::new(ProblemType::NotFound, "no such route").with_instance(path.clone())
            }
            Self::MethodNotAllowed => {
                Problem::new(ProblemType::MethodNotAllowed, "this route does not accept that method")
            }
            Self::NotFound => Problem::new(ProblemType::NotFound, "no such resource"),
            Self::Unauthorized(reason) => {
                Problem::new(ProblemType::Unauthorized, "a valid API key is required (Authorization: Bearer)")
                    .with_extension("reason", (*reason).into())
            }
            Self::Forbidden(detail) => Problem::new(ProblemType::Forbidden, detail.clone()),
            Self::Malformed(detail) => Problem::new(ProblemType::MalformedRequest, detail.clone()),
            Self::Validation(errors) => {
                Problem::new(ProblemType::ValidationFailed, "some fields are not valid")
                    .with_extension("errors", serde_json::to_value(errors).unwrap_or_default())
            }
            Self::Conflict { reason, detail } => {
                Problem::new(ProblemType::Conflict, detail.clone()).with_extension("reason", (*reason).into())
            }
            Self::Token { reason, detail } => Problem::new(ProblemType::Unauthorized, detail.clone())
                .with_extension("reason", (*reason).into()),
            Self::RateLimited { reason, retry_after_secs } => Problem::new(
                ProblemType::RateLimited,
                format!("too many attempts; retry after {retry_after_secs} s"),
            )
            .with_extension("reason", (*reason).into())
            .with_extension("retry_after", (*retry_after_secs).into()),
            Self::Unavailable(detail) => Problem::new(ProblemType::DependencyUnavailable, detail.clone()),
            Self::Database(e) if database_unavailable(e) => Problem::new(
                ProblemType::DependencyUnavailable,
                "the database is unavailable for a moment; retry shortly",
            ),
            Self::Database(_) | Self::Template(_) => {
                Problem::new(ProblemType::Internal, "the request could not be completed")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Database(e) => tracing::error!(error = %e, "database error"),
            Self::Template(e) => tracing::error!(error = %e, "template error"),
            _ => {}
        }
        let mut resp = problem_response(&self.problem());
        match &self {
            Self::RateLimited { retry_after_secs, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, (*retry_after_secs).into());
            }
            Self::Database(e) if database_unavailable(e) => {
                resp.headers_mut().insert(header::RETRY_AFTER, DATABASE_RETRY_AFTER_SECS.into());
            }
            _ => {}
        }
        resp
    }
}

/// What a client waits before retrying when the database is unavailable (a failover takes tens of
/// seconds; clients retry with their `Idempotency-Key`).
const DATABASE_RETRY_AFTER_SECS: u64 = 2;

/// True when a database error means "not reachable right now" rather than a bug: no connection
/// within the pool's timeout, a connection lost (I/O) or refused (SQLSTATE 08000, 08001, 08003,
/// 08004, 08006), a server shutting down or starting (57P01–57P03) or full (53300), or a primary
/// just demoted to a read-only replica during a failover (25006). Those answer
/// `503 dependency-unavailable` with `Retry-After`; anything else is a 500 — a TLS handshake that
/// fails (a misconfigured certificate stays so) and a protocol violation (08P01) included. Both
/// kinds are logged at error level and counted as 5xx.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            matches!(
                c.as_ref(),
                "08000"
                    | "08001"
                    | "08003"
                    | "08004"
                    | "08006"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "53300"
                    | "25006"
            )
        }),
        _ => false,
    }
}

/// Renders a problem with its status and media type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_answers_503_with_retry_after_and_a_bug_500() {
        let resp = ApiError::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let lost = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(ApiError::Database(sqlx::Error::Io(lost)).into_response().status(), 503);
        let bug = ApiError::Database(sqlx::Error::RowNotFound).into_response();
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(bug.headers().get(header::RETRY_AFTER).is_none());
    }
}
