//! The core's one error type at the HTTP boundary, mapped once to RFC 9457 problem+json.
//! Internals (SQL errors, causes) go to the log, never to the client.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use shared_types::{Problem, ProblemType, PROBLEM_CONTENT_TYPE};

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            Self::NoRoute(path) => {
                Problem::new(ProblemType::NotFound, "no such route").with_instance(path.clone())
            }
            Self::MethodNotAllowed => {
                Problem::new(ProblemType::MethodNotAllowed, "this route does not accept that method")
            }
            Self::Database(_) => Problem::new(ProblemType::Internal, "the request could not be completed"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Database(e) = &self {
            tracing::error!(error = %e, "database error");
        }
        problem_response(&self.problem())
    }
}

/// Renders a problem with its status and media type.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], body).into_response()
}
