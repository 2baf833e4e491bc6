//! What a handler takes besides the state, checked before it runs: the event a route's `{id}` names
//! for a caller allowed to act on it ([`OwnEvent`]), and the buyer's credentials: an order token
//! opens its order ([`BuyerOrder`]), a transfer token its transfer ([`Recipient`]). Each must be
//! for the route's `{id}`; another tenant's event, or a token for something else, answers as if
//! there were none (404, 401 with the token's reason). The caller alone is `auth::Can<P>`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::path_id;
use crate::auth::{Caller, Can, Need};
use crate::checkout::Checkout;
use crate::error::ApiError;
use crate::models::event::{find_event, Event};
use crate::state::AppState;
use crate::tokens::authorize_token;
use shared_types::token::TokenKind;

/// Which of the state's pools an extractor reads from.
pub trait Pool {
    fn of(state: &AppState) -> &PgPool;
}

/// The primary: what the handler then changes is read where it is written.
pub struct Primary;

impl Pool for Primary {
    fn of(state: &AppState) -> &PgPool {
        &state.db
    }
}

/// The read replica, when there is one (reports).
pub struct Replica;

impl Pool for Replica {
    fn of(state: &AppState) -> &PgPool {
        &state.read_db
    }
}

/// The event a route's `{id}` names, for a caller allowed to do `P`: authenticated (401), checked
/// (403), then the event looked up in the caller's organization (404 for none, or another
/// tenant's), read from the pool `D`, all before the handler runs.
pub struct OwnEvent<P, D = Primary> {
    pub caller: Caller,
    pub event: Event,
    need: PhantomData<fn() -> (P, D)>,
}

impl<P: Need, D: Pool> FromRequestParts<AppState> for OwnEvent<P, D> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Can(caller, _) = Can::<P>::from_request_parts(parts, state).await?;
        let id = path_id(parts, state).await?;
        let event = find_event(D::of(state), &caller, &id).await?;
        Ok(Self { caller, event, need: PhantomData })
    }
}

/// Declares an extractor for what a core-signed token of one kind in `Authorization: Bearer`
/// opens: the id in the path, which must be the token's.
macro_rules! opened_by_token {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        pub struct $name {
            pub co: Arc<Checkout>,
            pub id: Uuid,
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
                let co = state.checkout()?;
                let id = path_id(parts, state).await?;
                let id = authorize_token(&co.trusted_keys(), &parts.headers, $kind, &id)?;
                Ok(Self { co, id })
            }
        }
    };
}

opened_by_token!(
    /// The order an order token opens.
    BuyerOrder,
    TokenKind::Order
);
opened_by_token!(
    /// The transfer a transfer token opens.
    Recipient,
    TokenKind::Transfer
);
