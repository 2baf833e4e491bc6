//! The buyer's routes that the core answers, forwarded by the edge:
//!
//! - `POST /api/v1/checkout`              a hold token becomes an order (`Idempotency-Key`)
//! - `POST /api/v1/checkout/quote`        what that order would cost (the price summary)
//! - `GET  /api/v1/orders/{id}`           the order, with the buyer's order token
//! - `POST /api/v1/orders/{id}/cancel`    the buyer cancels
//! - `GET  /api/v1/orders/{id}/tickets[/{ticket}/qr.svg|qr.png]`  the tickets' codes and QR codes
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/reissue`       a new code for a lost one
//! - `POST /api/v1/orders/{id}/tickets/{ticket}/transfer[/cancel]`  offer a ticket by e-mail, or withdraw the offer
//! - `GET  /api/v1/transfers/{id}[/qr.svg|qr.png]`, `POST …/accept|decline|transfer[/cancel]`  the recipient's side
//! - `GET  /api/v1/keys`                  the core's public keys (for scanners)
//! - `POST /api/v1/buyer/sign-in`, `GET /api/v1/buyer/orders`  a sign-in link by mail, and what it lists
//!
//! The edge checks what it can offline first (a checkout's hold token is its own signature), so
//! that junk never reaches the core, and extends a checkout's hold for payment on the way
//! (`extend_for_checkout`); it forwards only the headers the core needs, plus the
//! caller's address and a `traceparent` that names the request end to end (a trace started here,
//! the edge being the trust boundary: `web::trace_onward`).

use durable_objects::inventory::{Caller, Hold};
use shared_types::ids::{EventId, VisitorId};
use shared_types::inventory::HoldState;
use shared_types::token::{unverified_audience, Claims, HoldGrant, TokenKind};
use shared_types::{Problem, ProblemType};
use worker::{Fetch, Headers, Method, Request, RequestInit, Response};

use crate::context::{Ctx, Result, Stop};
use crate::keys::EdgeKeys;
use crate::objects::{self, Call};

/// Headers passed on to the core.
const FORWARDED: [&str; 4] = ["authorization", "idempotency-key", "content-type", "accept"];

/// A checkout's hold token, verified as the edge itself would accept it (refused otherwise).
async fn check_hold_token(
    body: &[u8],
    keys: &EdgeKeys,
) -> std::result::Result<(EventId, Claims<HoldGrant>), (String, &'static str)> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| ("the body is not JSON".to_owned(), "malformed"))?;
    let token = value["hold_token"].as_str().ok_or(("hold_token is required".to_owned(), "missing"))?;
    let event = unverified_audience(token).ok_or(("the hold token is malformed".to_owned(), "malformed"))?;
    let claims = keys
        .verify::<HoldGrant>(TokenKind::Hold, token, &event, None)
        .await
        .map_err(|e| (e.to_string(), e.reason()))?;
    let event =
        EventId::parse(&event).map_err(|_| ("the hold token is malformed".to_owned(), "malformed"))?;
    Ok((event, claims))
}

/// Extends the buyer's hold for payment as their checkout passes, and answers the body with the
/// hold token signed again (the extended expiry, `extended` set): the core then starts the payment
/// without a call of its own to the edge (docs/checkout.md, "What an order costs"). Only for a
/// checkout the core could take as far as the edge can tell (a valid `Idempotency-Key`, a valid
/// e-mail address: the core's own rules), never for a quote. Best
/// effort: when the object refuses (the hold gone, not the buyer's) or cannot be reached, `None`,
/// and the body goes on as it came; the core extends the hold itself, or says why it cannot.
async fn extend_for_checkout(
    cx: &Ctx<'_>,
    event: EventId,
    claims: &Claims<HoldGrant>,
    body: &[u8],
    idempotency_key: Option<&str>,
) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let plausible = value["email"].as_str().is_some_and(|e| shared_types::email::valid_email(e.trim()))
        && idempotency_key.is_some_and(|k| shared_types::idempotency::IdempotencyKey::parse(k).is_ok());
    if claims.extra.extended || !plausible {
        return None;
    }
    let visitor = VisitorId::parse(&claims.sub).ok()?;
    let ev = cx.at(event);
    let hold = claims.extra.hold.as_str();
    let name = crate::holds::hold_object(&ev, hold).await.ok()?;
    let caller = Caller::Visitor(visitor.clone());
    let path = format!("/holds/{hold}/extend");
    let mut resp =
        objects::inventory(ev.env, &name, Method::Post, &path, &Call::by(&caller), None).await.ok()?;
    if resp.status_code() != 200 {
        // A retry of a checkout whose hold this already extended: sign what the hold is now.
        let path = format!("/holds/{hold}");
        resp = objects::inventory(ev.env, &name, Method::Get, &path, &Call::by(&caller), None).await.ok()?;
        if resp.status_code() != 200 {
            return None;
        }
    }
    let hold: Hold = durable_objects::http::answer_json(&mut resp).await.ok()?;
    if hold.state != HoldState::Held || !hold.extended {
        return None;
    }
    value["hold_token"] = crate::holds::hold_token(&ev, &visitor, &hold, true).await.ok()?.into();
    serde_json::to_vec(&value).ok()
}

/// A request for a sign-in link (a mail to whoever's address is given) passes the line's request
/// checks: sane headers, and the per-address budget joins spend (`IP_LIMIT`). The core bounds it
/// per address it mails (docs/privacy.md).
async fn screen_sign_in(cx: &Ctx<'_>, req: &Request) -> Result<()> {
    use crate::room::screen::{insane_headers, ip_budget, IpBudget};
    if let Some(why) = insane_headers(req)? {
        return Err(cx.refusal(ProblemType::BotCheckFailed, "bad-headers", why));
    }
    match ip_budget(cx.env, req).await {
        Err(()) => {
            Err(cx.problem(ProblemType::Internal, "the edge is not configured to take sign-in requests"))
        }
        Ok(IpBudget::Spent) => Err(cx.refusal(
            ProblemType::RateLimited,
            "ip-rate",
            "too many requests from this address; try again in a minute",
        )),
        Ok(IpBudget::Left | IpBudget::Unknown) => Ok(()),
    }
}

/// Forwards a buyer's request to the core.
pub async fn forward(cx: &Ctx<'_>, mut req: Request) -> Result<Response> {
    let path = cx.path;
    if path == "/api/v1/buyer/sign-in" {
        screen_sign_in(cx, &req).await?;
    }
    let keys = cx.keys()?;
    let Some(core) = crate::settings::CORE_URL.read(cx.env) else {
        return Err(cx.problem(ProblemType::DependencyUnavailable, "the core is not configured"));
    };
    let method = req.method();
    let body = crate::body::read(&mut req, crate::body::PROXY, path).await?;
    let mut body = body;
    if path == "/api/v1/checkout" || path == "/api/v1/checkout/quote" {
        let (event, claims) = check_hold_token(&body, keys).await.map_err(|(detail, reason)| {
            let kind = if reason == "malformed" && detail.contains("JSON") {
                ProblemType::MalformedRequest
            } else {
                ProblemType::Unauthorized
            };
            cx.refusal(kind, reason, detail)
        })?;
        if path == "/api/v1/checkout" {
            let key = req.headers().get("idempotency-key")?;
            if let Some(extended) = extend_for_checkout(cx, event, &claims, &body, key.as_deref()).await {
                body = extended;
            }
        }
    }
    let headers = Headers::new();
    for name in FORWARDED {
        if let Some(v) = req.headers().get(name)? {
            headers.set(name, &v)?;
        }
    }
    let trace = crate::web::trace_onward()?;
    headers.set("traceparent", &trace.to_string())?;
    if let Some(ip) = req.headers().get("cf-connecting-ip")? {
        headers.set("x-forwarded-for", &ip)?;
    }
    // The query goes along (an order's long poll: `?wait=…&while=…`); the core checks it.
    let asked = req.url()?;
    let mut url = format!("{}{}", core.trim_end_matches('/'), asked.path());
    if let Some(query) = asked.query() {
        url.push('?');
        url.push_str(query);
    }
    let mut init = RequestInit::new();
    init.with_method(method.clone()).with_headers(headers);
    if method != Method::Get && method != Method::Head {
        init.with_body(Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    match Fetch::Request(Request::new_with_init(&url, &init)?).send().await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            // One JSON line, with the trace id the core's logs would have carried.
            let trace_id = trace.trace_id_hex();
            durable_objects::log::error(
                "core unreachable",
                serde_json::json!({ "path": path, "trace_id": trace_id, "error": e.to_string() }),
            );
            Err(Stop::problem(
                &Problem::new(
                    ProblemType::DependencyUnavailable,
                    "the core could not be reached; retry with the same Idempotency-Key",
                )
                .with_instance(path)
                .with_extension("trace_id", trace_id.into()),
            ))
        }
    }
}
