//! Personal data (docs/privacy.md): what the core keeps about a person, found by their e-mail
//! address, given back ([`access`]), erased ([`erase`]) and aged out ([`retention`]); and the
//! buyers' sign-in links that give them their orders again without a password ([`sign_in`]).
//!
//! Who may ask: an organizer admin for their organization's buyers, the platform admin for every
//! organization ([`Scope`]). Every request is in the audit log, named by the address's hash (never
//! the address: the log outlives an erasure).
//!
//! - `POST /api/v1/privacy/access-requests`    everything kept about an address, as JSON
//! - `POST /api/v1/privacy/erasure-requests`   the address removed or made anonymous
//! - `POST /api/v1/buyer/sign-in`              a buyer asks for a sign-in link by mail
//! - `GET  /api/v1/buyer/orders`               the buyer's orders and tickets, with the link's token

pub mod access;
pub mod erase;
pub mod retention;
pub mod routes;
pub mod sign_in;

use uuid::Uuid;

use crate::auth::{Caller, Role};

/// The domain every erased address is given (RFC 2606's `.invalid`: nothing is ever delivered to
/// it). An address in it is never mailed ([`undeliverable`]).
pub const ERASED_DOMAIN: &str = "erased.invalid";

/// True for an address nothing can be delivered to: an erased one, a walk-up buyer's who gave
/// none at the box office (`walk-up-<order>@box-office.invalid`), any in RFC 2606's `.invalid`.
/// Never mailed ([`crate::notifications::queue`]).
pub fn undeliverable(email: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(_, domain)| {
        let domain = domain.to_ascii_lowercase();
        domain == "invalid" || domain.ends_with(".invalid")
    })
}

/// Whose data a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One organization's (an organizer admin's request).
    Organization(Uuid),
    /// Every organization's (the platform admin's request, the retention job).
    Platform,
}

impl Scope {
    pub fn of(caller: &Caller) -> Self {
        match caller.role {
            Role::PlatformAdmin => Self::Platform,
            _ => Self::Organization(caller.organization_id),
        }
    }

    /// The organization the statements filter on (`$2`): none for the platform.
    pub fn organization(self) -> Option<Uuid> {
        match self {
            Self::Organization(id) => Some(id),
            Self::Platform => None,
        }
    }
}

/// The address a request is about, as the core compares addresses: trimmed and lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    /// `None` for something that is not an address.
    pub fn parse(email: &str) -> Option<Self> {
        let email = email.trim();
        crate::validate::valid_email(email).then(|| Self(email.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// How the audit log names it: the hash ticket codes carry (never the address itself; the
    /// organization's admins, who may ask for the address's data anyway, can compare it).
    pub fn audit_name(&self) -> String {
        format!("person:{}", crate::tokens::holder_of(&self.0))
    }
}
