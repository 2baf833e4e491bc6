//! What the account routes share: name and slug rules, the audit row of an account change, and
//! how a caller is named in it.

use serde_json::Value;
use shared_types::inventory::FieldError;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::Actor;
use crate::auth::Caller;
use crate::error::Result;

pub(super) fn utc() -> String {
    "UTC".into()
}

pub(super) fn check_name(errors: &mut Vec<FieldError>, field: &str, value: &str, required: bool) {
    if (required && value.trim().is_empty()) || value.chars().count() > 200 {
        errors.push(FieldError::new(
            field,
            if required { "must be 1 to 200 characters" } else { "must be at most 200 characters" },
        ));
    }
}

pub(super) fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Records an account change in `organization`'s audit log: `action` is `{kind}.{verb}`
/// (`user.create`), and the subject is `{kind}:{id}`.
pub(super) async fn audit(
    conn: &mut PgConnection,
    actor: &Actor,
    organization: Uuid,
    action: &str,
    id: impl std::fmt::Display,
    details: Value,
) -> Result<()> {
    let kind = action.split_once('.').map_or(action, |(kind, _)| kind);
    crate::audit::record(conn, actor, organization, action, format!("{kind}:{id}"), details).await?;
    Ok(())
}

pub(super) fn actor(caller: &Caller) -> Actor {
    Actor::of(caller)
}
