//! What a visitor holds for an event, read and verified once per request: the `visitor` cookie,
//! a queue ticket (a place in line), an admission token (a shopping session), and whether that
//! session is still open (asked of the queue shard that issued it).

use std::cell::RefCell;
use std::collections::HashMap;

use durable_objects::waiting_room::{call, shard_name, SessionCheck, SHARD_BINDING};
use shared_types::ids::VisitorId;
use shared_types::token::{Claims, TokenKind};
use shared_types::waiting_room::{AdmissionGrant, QueuePlace, STALL_SHARD, WAITLIST_SHARD};
use shared_types::ProblemType;
use worker::{Method, Request};

use crate::context::{EventCtx, Result};
use crate::web::{self, cookie};

/// How long an isolate trusts a shard's word that a session is open.
const SESSION_TTL_MS: f64 = 5_000.0;

thread_local! {
    /// Admission sessions a shard confirmed open, by token id, with when (bounded; see `session_open`).
    static SESSIONS: RefCell<HashMap<String, f64>> = RefCell::new(HashMap::new());
}

/// The visitor id of the `visitor` cookie, if any: only an id the edge makes ([`new_visitor`]:
/// `v` and 32 hex digits), so that no cookie can name a reserved visitor such as the waiting
/// list's.
pub fn visitor_cookie(req: &Request) -> Result<Option<VisitorId>> {
    Ok(cookie(req, "visitor")?.filter(|v| edge_made(v)).and_then(|v| VisitorId::parse(&v).ok()))
}

/// Whether `id` has the form of the visitor ids the edge makes.
pub fn edge_made(id: &str) -> bool {
    id.len() == 33 && id.starts_with('v') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new visitor id.
pub fn new_visitor() -> Result<VisitorId> {
    Ok(VisitorId::parse(&format!("v{}", web::random_hex(16)?))
        .map_err(|e| worker::Error::RustError(e.to_string()))?)
}

/// The visitor of the cookie, or a new one.
pub fn visitor_or_new(req: &Request) -> Result<VisitorId> {
    visitor_cookie(req)?.map_or_else(new_visitor, Ok)
}

/// The name of the cookie holding the event's queue ticket.
pub fn queue_cookie(ev: &EventCtx<'_>) -> String {
    format!("queue_{}", ev.event)
}

/// The name of the cookie holding the event's admission token.
pub fn admission_cookie(ev: &EventCtx<'_>) -> String {
    format!("admission_{}", ev.event)
}

/// A verified queue ticket: its visitor and place.
pub struct Ticket {
    pub visitor: VisitorId,
    pub place: QueuePlace,
}

/// Why a caller holds no usable ticket: a stable reason and what to tell them.
pub type NoTicket = (&'static str, String);

/// What the caller holds for this event, each token verified once per request.
pub enum Credentials {
    /// A valid admission token (and its claims).
    Admission(String, Claims<AdmissionGrant>),
    /// A valid queue ticket.
    Ticket(Ticket),
    /// Neither: why the ticket (if any) was refused.
    None(NoTicket),
}

/// Reads the caller's admission token, else their queue ticket.
pub async fn credentials(ev: &EventCtx<'_>, req: &Request) -> Result<Credentials> {
    if let Some((token, claims)) = held_admission(ev, req).await? {
        return Ok(Credentials::Admission(token, claims));
    }
    Ok(match ticket(ev, req).await? {
        Ok(t) => Credentials::Ticket(t),
        Err(why) => Credentials::None(why),
    })
}

/// The token of `kind` the caller presents: the bearer token when it is one of that kind, else
/// the event's cookie `cookie_name`.
fn presented(req: &Request, kind: &str, cookie_name: &str) -> Result<Option<String>> {
    match web::bearer(req)?.filter(|t| token_kind(t) == Some(kind)) {
        Some(t) => Ok(Some(t)),
        None => cookie(req, cookie_name),
    }
}

/// Reads and verifies the queue ticket (`Authorization: Bearer` or the event's `queue_` cookie).
pub async fn ticket(ev: &EventCtx<'_>, req: &Request) -> Result<std::result::Result<Ticket, NoTicket>> {
    let Some(token) = presented(req, "queue", &queue_cookie(ev))? else {
        return Ok(Err(("missing", "a queue ticket is required".into())));
    };
    let claims: Claims<QueuePlace> =
        match ev.keys()?.verify(TokenKind::Queue, &token, ev.event.as_str(), None).await {
            Ok(c) => c,
            Err(e) => return Ok(Err((e.reason(), e.to_string()))),
        };
    if let Some(v) = visitor_cookie(req)? {
        if v.as_str() != claims.sub {
            return Ok(Err(("wrong-visitor", "this ticket belongs to another visitor".into())));
        }
    }
    match VisitorId::parse(&claims.sub) {
        Ok(visitor) => Ok(Ok(Ticket { visitor, place: claims.extra })),
        Err(_) => Ok(Err(("malformed", "the ticket names no valid visitor".into()))),
    }
}

/// The `typ` of a token's header, without verifying anything (to pick among several bearer kinds).
fn token_kind(token: &str) -> Option<&'static str> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match v.get("typ")?.as_str()? {
        "queue" => Some("queue"),
        "admission" => Some("admission"),
        _ => None,
    }
}

/// A valid admission token for this event already held by the caller: (token, its claims).
pub async fn held_admission(
    ev: &EventCtx<'_>,
    req: &Request,
) -> Result<Option<(String, Claims<AdmissionGrant>)>> {
    let Some(token) = presented(req, "admission", &admission_cookie(ev))? else { return Ok(None) };
    let claims =
        ev.keys()?.verify::<AdmissionGrant>(TokenKind::Admission, &token, ev.event.as_str(), None).await;
    Ok(claims.ok().map(|c| (token, c)))
}

/// A buyer an admission token lets in: who, and how many tickets their admission allows.
pub struct Admitted {
    pub visitor: VisitorId,
    pub max_tickets: u32,
    /// Admitted by a waiting list's offer (not by the line): good for that offer's hold only.
    pub by_offer: bool,
}

/// The buyer the admission token of a hold request names (`Authorization: Bearer`, whatever its
/// kind, or the event's admission cookie), while their shopping session is open; a 401 otherwise.
pub async fn admitted(ev: &EventCtx<'_>, req: &Request) -> Result<Admitted> {
    let unauthorized = |reason: &str, detail: String| ev.refusal(ProblemType::Unauthorized, reason, detail);
    // An Authorization header is the credential when there is one (the cookie only without it).
    let token = match (req.headers().get("authorization")?, web::bearer(req)?) {
        (_, Some(token)) => Some(token),
        (Some(_), None) => None,
        (None, None) => cookie(req, &admission_cookie(ev))?,
    };
    let token = token.ok_or_else(|| unauthorized("missing", "an admission token is required".into()))?;
    // Signature, expiry and event first (whatever the grant says); then the grant's own claims.
    let claims = ev
        .keys()?
        .verify::<serde_json::Map<String, serde_json::Value>>(
            TokenKind::Admission,
            &token,
            ev.event.as_str(),
            None,
        )
        .await
        .map_err(|e| unauthorized(e.reason(), e.to_string()))?;
    let grant: AdmissionGrant = serde_json::from_value(serde_json::Value::Object(claims.extra.clone()))
        .map_err(|_| unauthorized("malformed", "the token does not name a waiting-room session".into()))?;
    let claims = claims.with_extra(grant);
    let visitor = VisitorId::parse(&claims.sub)
        .map_err(|_| unauthorized("malformed", "the token's visitor is not valid".into()))?;
    // The token is good only while the shopping session it was issued for is open.
    if !session_open(ev, &visitor, &claims).await? {
        return Err(unauthorized("session-ended", "this shopping session has ended".into()));
    }
    let by_offer = claims.extra.shard == WAITLIST_SHARD;
    Ok(Admitted { visitor, max_tickets: claims.extra.max_tickets, by_offer })
}

/// True while the shopping session an admission token was issued for is open (asked of the queue
/// shard that issued it; a positive answer is trusted for five seconds by this isolate).
pub async fn session_open(
    ev: &EventCtx<'_>,
    visitor: &VisitorId,
    claims: &Claims<AdmissionGrant>,
) -> Result<bool> {
    let now = durable_objects::now_ms() as f64;
    let cached = SESSIONS.with(|s| s.borrow().get(&claims.jti).is_some_and(|at| now - at < SESSION_TTL_MS));
    if cached {
        return Ok(true);
    }
    if claims.extra.shard == STALL_SHARD {
        return Ok(false);
    }
    if claims.extra.shard == WAITLIST_SHARD {
        // A waiting list's offer: the session is the offer, and ends with the token.
        return Ok(true);
    }
    let check = SessionCheck {
        visitor: visitor.clone(),
        pre: claims.extra.pre,
        n: claims.extra.seq,
        jti: claims.jti.clone(),
    };
    let name = shard_name(&ev.event, claims.extra.shard);
    let body = serde_json::to_string(&check)?;
    let resp = call(ev.env, SHARD_BINDING, &name, Method::Post, "/session", Some(body)).await?;
    let open = resp.status_code() == 200;
    SESSIONS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() > 10_000 {
            s.retain(|_, at| now - *at < SESSION_TTL_MS);
        }
        if open {
            s.insert(claims.jti.clone(), now);
        } else {
            s.remove(&claims.jti);
        }
    });
    Ok(open)
}

/// Forgets that a session was open (its buyer left).
pub fn forget_session(jti: &str) {
    SESSIONS.with(|s| s.borrow_mut().remove(jti));
}
