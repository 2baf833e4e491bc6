//! Who is calling: API keys and roles. Every admin route takes a [`Caller`], which only a valid,
//! unrevoked key of an enabled user yields, checked for what the route needs: [`Can<P>`] (a caller
//! allowed to do `P`, checked before the handler runs) or, for a route about one event,
//! `extract::OwnEvent<P>` (the same, and the event in the caller's organization). Every
//! query is scoped to `caller.organization_id` (another tenant's rows answer 404).
//!
//! A key is `tk_<id>_<secret>`: `id` is 16 characters of `[a-z0-9]` (public, the row's key), the
//! secret 43 characters of base64url (256 random bits). Only the secret's SHA-256 is stored; a
//! random 256-bit secret needs no slow hash. Comparison is constant-time.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::error::{ApiError, Result};

/// What a user may do. One role per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Role {
    /// The platform operator: every organization.
    PlatformAdmin,
    /// Runs an organization: its users, keys, venues, events.
    OrganizerAdmin,
    /// Works on an organization's catalog (venues, events), not its users.
    OrganizerStaff,
    /// Sells and looks up orders at the venue.
    BoxOffice,
    /// Scans tickets at the gates.
    Scanner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform_admin",
            Self::OrganizerAdmin => "organizer_admin",
            Self::OrganizerStaff => "organizer_staff",
            Self::BoxOffice => "box_office",
            Self::Scanner => "scanner",
        }
    }
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create organizations, act in any of them.
    ManagePlatform,
    /// Users and API keys of one's organization.
    ManageUsers,
    /// Venues, events, tiers, prices, promo codes, publishing.
    ManageCatalog,
    /// Read the organization's catalog, orders and reports.
    Read,
    /// Check tickets in.
    Scan,
    /// Refund and cancel orders (money): organizer admins only.
    Refund,
    /// Read the audit log (who changed what): organizer admins, for their organization.
    ReadAudit,
    /// Partner webhooks (endpoints, deliveries whose bodies carry buyers' data): organizer admins.
    ManageWebhooks,
    /// Answer privacy requests (everything kept about a person; erasure): organizer admins, for
    /// their organization's buyers.
    HandlePersonalData,
    /// Sell at the venue (hold without the line, take cash or a card on the venue's terminal,
    /// print tickets, re-issue a lost one): the box office and organizer admins.
    SellAtVenue,
}

impl Role {
    /// True when this role may do `what`.
    pub fn may(self, what: Permission) -> bool {
        use Permission::*;
        use Role::*;
        match self {
            PlatformAdmin => true,
            OrganizerAdmin => what != ManagePlatform,
            OrganizerStaff => matches!(what, ManageCatalog | Read | Scan),
            BoxOffice => matches!(what, Read | Scan | SellAtVenue),
            Scanner => what == Scan,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub role: Role,
    pub key_id: String,
    /// Where the request came from (the audit log's `ip`, `user_agent`, `request_id`).
    pub origin: crate::origin::Origin,
}

impl Caller {
    /// Refuses (403) unless the caller's role may do `what`.
    pub fn require(&self, what: Permission) -> Result<()> {
        if self.role.may(what) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("the {} role may not do this", self.role.as_str())))
        }
    }

    /// True when the caller may see `organization` at all (its own, or any for the platform).
    pub fn sees(&self, organization: Uuid) -> bool {
        self.role == Role::PlatformAdmin || self.organization_id == organization
    }
}

/// A newly made API key: the full token (shown once) and what is stored.
pub struct NewKey {
    pub id: String,
    pub token: String,
    pub secret_sha256: Vec<u8>,
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the operating system's random source");
    bytes
}

/// Makes a fresh key.
pub fn new_key() -> NewKey {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String =
        random_bytes::<16>().iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    NewKey {
        token: format!("tk_{id}_{secret}"),
        secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
        id,
    }
}

/// Splits `tk_<id>_<secret>`.
fn parse_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tk_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok_id = id.len() == 16 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok_id && secret.len() == 43).then_some((id, secret))
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    user_id: Uuid,
    organization_id: Uuid,
    role: Role,
    secret_sha256: Vec<u8>,
    revoked: bool,
    disabled: bool,
    stale_use: bool,
}

/// The caller a bearer token names, or why not.
pub async fn authenticate(db: &PgPool, authorization: Option<&str>) -> Result<Caller> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized("missing"))?;
    let (id, secret) = parse_key(token).ok_or(ApiError::Unauthorized("malformed"))?;
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT k.user_id, k.organization_id, u.role, k.secret_sha256,
                k.revoked_at IS NOT NULL AS revoked, u.disabled,
                (k.last_used_at IS NULL OR k.last_used_at < now() - interval '60 seconds') AS stale_use
         FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Err(ApiError::Unauthorized("unknown-key")) };
    if !bool::from(Sha256::digest(secret.as_bytes()).as_slice().ct_eq(&row.secret_sha256)) {
        return Err(ApiError::Unauthorized("unknown-key"));
    }
    if row.revoked {
        return Err(ApiError::Unauthorized("revoked"));
    }
    if row.disabled {
        return Err(ApiError::Unauthorized("user-disabled"));
    }
    if row.stale_use {
        // Last use is kept to the minute: one write per key per minute, not one per request.
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1").bind(id).execute(db).await?;
    }
    Ok(Caller {
        user_id: row.user_id,
        organization_id: row.organization_id,
        role: row.role,
        key_id: id.to_owned(),
        origin: crate::origin::Origin::default(),
    })
}

/// The caller of an admin route, from any state that holds the database pool.
impl<S> FromRequestParts<S> for Caller
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let caller = authenticate(&PgPool::from_ref(state), header).await?;
        let origin = parts.extensions.get::<crate::origin::Origin>().cloned().unwrap_or_default();
        Ok(Caller { origin, ..caller })
    }
}

/// A permission as a type, so that a route says what it needs in its signature: `Can<Read>`.
pub trait Need {
    const PERMISSION: Permission;
}

/// The permissions as types (see [`Permission`] for what each allows).
pub mod need {
    use super::{Need, Permission};

    macro_rules! needs {
        ($($name:ident),*) => {$(
            #[doc = concat!("Needs [`Permission::", stringify!($name), "`].")]
            pub struct $name;
            impl Need for $name {
                const PERMISSION: Permission = Permission::$name;
            }
        )*};
    }
    needs!(
        ManagePlatform,
        ManageUsers,
        ManageCatalog,
        Read,
        Scan,
        Refund,
        ReadAudit,
        ManageWebhooks,
        HandlePersonalData,
        SellAtVenue
    );
}

/// A caller allowed to do `P`: authenticated (401), then checked (403), before the handler runs.
pub struct Can<P>(pub Caller, pub PhantomData<fn() -> P>);

impl<S, P: Need> FromRequestParts<S> for Can<P>
where
    PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(P::PERMISSION)?;
        Ok(Self(caller, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_their_secret_hash_matches() {
        let key = new_key();
        let (id, secret) = parse_key(&key.token).unwrap();
        assert_eq!(id, key.id);
        assert_eq!(Sha256::digest(secret.as_bytes()).as_slice(), key.secret_sha256.as_slice());
        assert_ne!(new_key().token, key.token);
        for bad in ["", "tk_", "tk_short_x", "xx_0123456789abcdef_", &key.token.replace("tk_", "tk-")] {
            assert!(parse_key(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn roles_grant_what_they_should() {
        assert!(Role::PlatformAdmin.may(Permission::ManagePlatform));
        assert!(!Role::OrganizerAdmin.may(Permission::ManagePlatform));
        assert!(Role::OrganizerAdmin.may(Permission::ManageUsers));
        assert!(!Role::OrganizerStaff.may(Permission::ManageUsers));
        assert!(Role::OrganizerStaff.may(Permission::ManageCatalog));
        assert!(!Role::BoxOffice.may(Permission::ManageCatalog));
        assert!(!Role::Scanner.may(Permission::ManageCatalog));
        assert!(!Role::Scanner.may(Permission::Read));
        assert!(Role::Scanner.may(Permission::Scan));
        assert!(Role::OrganizerAdmin.may(Permission::ReadAudit));
        for role in [Role::OrganizerStaff, Role::BoxOffice, Role::Scanner] {
            assert!(!role.may(Permission::ReadAudit), "{role:?}");
        }
        assert!(
            Role::BoxOffice.may(Permission::SellAtVenue) && Role::OrganizerAdmin.may(Permission::SellAtVenue)
        );
        for role in [Role::OrganizerStaff, Role::Scanner] {
            assert!(!role.may(Permission::SellAtVenue), "{role:?}");
        }
        assert!(!Role::BoxOffice.may(Permission::Refund), "money back is the organizer admin's");
    }
}
