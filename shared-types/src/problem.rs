//! RFC 9457 problem details: the one error body that every tier returns.
//!
//! Each failure has a stable [`ProblemType`]; clients branch on `type`, humans read `detail`.
//! Details never carry internals (stack traces, SQL, secrets): those go to the operator's logs.

use serde::{Deserialize, Serialize};

/// The media type of a problem body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Prefix of every problem `type` URI. The path under it is stable and documented in docs/api.md.
pub const PROBLEM_TYPE_BASE: &str = "https://errors.ticketing.dev/";

/// The kinds of failure the platform reports. The slug is the stable part of the `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum ProblemType {
    /// No route or no such resource (also for another tenant's resources).
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The body or a parameter could not be parsed.
    MalformedRequest,
    /// The request parsed but a field is not acceptable.
    ValidationFailed,
    /// No or invalid credentials.
    Unauthorized,
    /// Credentials valid but not allowed to do this.
    Forbidden,
    /// The request conflicts with the current state.
    Conflict,
    /// Too many requests from this client.
    RateLimited,
    /// The body is larger than the route takes (refused before it is read when its length is known).
    PayloadTooLarge,
    /// The request did not pass the anti-bot checks (proof of work, Turnstile, header sanity).
    BotCheckFailed,
    /// A tier this request depends on did not answer in time.
    DependencyUnavailable,
    /// A bug or an unexpected failure; the operator's logs have the cause.
    Internal,
}

impl ProblemType {
    /// The stable slug, the last part of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::MalformedRequest => "malformed-request",
            Self::ValidationFailed => "validation-failed",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate-limited",
            Self::PayloadTooLarge => "payload-too-large",
            Self::BotCheckFailed => "bot-check-failed",
            Self::DependencyUnavailable => "dependency-unavailable",
            Self::Internal => "internal",
        }
    }

    /// The short, fixed human summary (RFC 9457 `title`).
    pub fn title(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::MalformedRequest => "Malformed request",
            Self::ValidationFailed => "Validation failed",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Not allowed",
            Self::Conflict => "Conflict with the current state",
            Self::RateLimited => "Too many requests",
            Self::PayloadTooLarge => "Payload too large",
            Self::BotCheckFailed => "Bot check failed",
            Self::DependencyUnavailable => "A dependency is unavailable",
            Self::Internal => "Internal error",
        }
    }

    /// The HTTP status that goes with it.
    pub fn status(self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::MalformedRequest => 400,
            Self::ValidationFailed => 422,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Conflict => 409,
            Self::RateLimited => 429,
            Self::PayloadTooLarge => 413,
            Self::BotCheckFailed => 403,
            Self::DependencyUnavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The full `type` URI.
    pub fn uri(self) -> String {
        format!("{PROBLEM_TYPE_BASE}{}", self.slug())
    }
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension members (RFC 9457 §3.2), such as the fields that failed validation.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of the given type with a human explanation of this occurrence.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status(),
            detail: Some(detail.into()),
            instance: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Names the request path (or resource) this occurrence is about.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// True when this problem is of the given type.
    pub fn is(&self, kind: ProblemType) -> bool {
        self.type_uri == kind.uri()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_rfc9457_members_with_extensions_flattened() {
        let p = Problem::new(ProblemType::ValidationFailed, "quantity must be 1 to 8")
            .with_instance("/api/v1/holds")
            .with_extension("field", serde_json::json!("quantity"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://errors.ticketing.dev/validation-failed");
        assert_eq!(v["title"], "Validation failed");
        assert_eq!(v["status"], 422);
        assert_eq!(v["field"], "quantity");
        let back: Problem = serde_json::from_value(v).unwrap();
        assert!(back.is(ProblemType::ValidationFailed));
        assert_eq!(back, p);
    }

    #[test]
    fn slugs_are_unique() {
        use strum::IntoEnumIterator;
        let mut slugs: Vec<_> = ProblemType::iter().map(ProblemType::slug).collect();
        let all = slugs.len();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), all);
    }
}
