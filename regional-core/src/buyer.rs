//! The buyer's credentials, checked before a handler runs. An order token (from checkout) opens
//! its order ([`BuyerOrder`]); a transfer token (from the offer's mail) opens its transfer
//! ([`Recipient`]). Each must be a token the core signed for the route's `{id}`; anything else
//! answers 401 with the token's reason, and a core without checkout configured answers 503.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use crate::api::path_id;
use crate::checkout::Checkout;
use crate::error::ApiError;
use crate::state::AppState;

/// The order an order token in `Authorization: Bearer` opens.
pub struct BuyerOrder {
    pub co: Arc<Checkout>,
    pub id: Uuid,
}

impl FromRequestParts<AppState> for BuyerOrder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let co = state.checkout()?;
        let id = path_id(parts, state).await?;
        let id = co.authorize_buyer(&parts.headers, &id)?;
        Ok(Self { co, id })
    }
}

/// The transfer a transfer token in `Authorization: Bearer` opens.
pub struct Recipient {
    pub co: Arc<Checkout>,
    pub id: Uuid,
}

impl FromRequestParts<AppState> for Recipient {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let co = state.checkout()?;
        let id = path_id(parts, state).await?;
        let id = co.authorize_recipient(&parts.headers, &id)?;
        Ok(Self { co, id })
    }
}
