//! The waiting room's JSON routes, for apps (the pages in `pages.rs` take the same steps).

use serde_json::json;
use worker::{Request, Response};

use super::credentials::{credentials, Credentials};
use super::line::{self, Standing};
use crate::context::{EventCtx, Result};
use crate::web;

/// `POST /challenge`: what the visitor must do before joining.
pub async fn challenge(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let (answer, cookie) = line::challenge(ev, req).await?;
    web::private_json(200, &answer, cookie.as_slice())
}

/// `POST /queue`: joins (201), or finds the place a returning visitor already has (200).
pub async fn join(ev: &EventCtx<'_>, mut req: Request) -> Result<Response> {
    let (answer, cookies) = line::join(ev, &mut req).await?;
    web::private_json(if answer.returning { 200 } else { 201 }, &answer, &cookies)
}

/// `GET /queue`: the caller's place, or their admission token once their turn has come.
pub async fn status(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    status_of(ev, req, credentials(ev, req).await?).await
}

/// The status answer for credentials already read.
pub async fn status_of(ev: &EventCtx<'_>, req: &Request, credentials: Credentials) -> Result<Response> {
    match line::standing(ev, req, credentials).await? {
        Standing::Admitted { token, expires_at_ms, cookie } => {
            let answer = json!({
                "state": "admitted",
                "admission_token": token,
                "expires_at_ms": expires_at_ms,
                "next": format!("/events/{}/buy", ev.event),
            });
            web::private_json(200, &answer, cookie.as_slice())
        }
        Standing::Waiting { status, place } => {
            let mut resp = web::private_json(200, &json!({ "place": place, "status": status }), &[])?;
            resp.headers_mut().set("retry-after", &status.poll_after_seconds.to_string())?;
            Ok(resp)
        }
    }
}

/// `DELETE /queue`: gives up the place (or ends the session of an admitted buyer).
pub async fn leave(ev: &EventCtx<'_>, req: &Request) -> Result<Response> {
    let cookies = line::leave(ev, req, credentials(ev, req).await?).await?;
    web::private_json(200, &json!({ "left": true }), &cookies)
}
