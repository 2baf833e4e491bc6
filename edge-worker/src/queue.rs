//! The waiting room at the edge: anti-bot checks, joining, polling, the single exchange of an
//! admitted place for an admission token, and leaving.
//!
//! - `POST   /api/v1/events/{event}/challenge`  a proof-of-work challenge (and a visitor id)
//! - `POST   /api/v1/events/{event}/queue`      join: checks, then a place from the visitor's shard
//! - `GET    /api/v1/events/{event}/queue`      status from the ticket and the cached view; when
//!   admitted, the exchange for an admission token
//! - `DELETE /api/v1/events/{event}/queue`      leave
//!
//! Polls cost no Durable Object request: the coordinator's view is cached per isolate for a
//! second and the ticket carries the place. Only joins, exchanges and leaves reach a shard.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use durable_objects::http;
use durable_objects::waiting_room::{
    call, shard_name, JoinRequest, Joined, PlaceRef, Session, SessionCheck, COORDINATOR_BINDING,
    SHARD_BINDING,
};
use serde::{Deserialize, Serialize};
use shared_types::ids::{EventId, VisitorId};
use shared_types::token::{verify, Claims, Expectation, TokenKind};
use shared_types::waiting_room::{
    pow_valid, shard_of_visitor, status_of, AdmissionGrant, BotCheck, BotFailure, ChallengeGrant, Phase,
    QueuePlace, QueueStatus, RoomView, StatusState, CHALLENGE_SECS, QUEUE_TICKET_SECS, STALL_SHARD,
};
use shared_types::{Problem, ProblemType};
use worker::{Context, Env, Method, Request, Response, Result};

use crate::keys::EdgeKeys;

/// How long an isolate answers polls from a view before asking the coordinator again.
const VIEW_TTL_MS: f64 = 1_000.0;
/// How often an isolate sends its refusal counts to the coordinator (at most).
const REFUSAL_FLUSH_MS: f64 = 5_000.0;
/// The Turnstile verification endpoint when `TURNSTILE_VERIFY_URL` is not set.
const TURNSTILE_URL: &str = "https://challenges.cloudflare.com/turnstile/v0/siteverify";

/// Refusal counts not yet sent, with when this isolate last sent some.
type Refusals = (f64, BTreeMap<String, u64>);

thread_local! {
    static VIEWS: RefCell<HashMap<EventId, (f64, Rc<RoomView>)>> = RefCell::new(HashMap::new());
    static REFUSALS: RefCell<HashMap<EventId, Refusals>> = RefCell::new(HashMap::new());
    /// Requests per client IP in the current minute (this isolate's share of the traffic).
    static IP_WINDOWS: RefCell<(i64, HashMap<String, u32>)> = RefCell::new((0, HashMap::new()));
    /// Admission sessions a shard confirmed open, by token id, with when (bounded; see `session_open`).
    static SESSIONS: RefCell<HashMap<String, f64>> = RefCell::new(HashMap::new());
}

/// How long an isolate trusts a shard's word that a session is open.
const SESSION_TTL_MS: f64 = 5_000.0;

/// True while the shopping session an admission token was issued for is open (asked of the queue
/// shard that issued it; a positive answer is trusted for five seconds by this isolate).
pub async fn session_open(
    env: &Env,
    event: &EventId,
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
    let check = SessionCheck {
        visitor: visitor.clone(),
        pre: claims.extra.pre,
        n: claims.extra.seq,
        jti: claims.jti.clone(),
    };
    let name = shard_name(event, claims.extra.shard);
    let resp =
        call(env, SHARD_BINDING, &name, Method::Post, "/session", Some(serde_json::to_string(&check)?))
            .await?;
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

/// Everything a waiting-room handler needs.
pub struct Room<'a> {
    pub env: &'a Env,
    pub ctx: &'a Context,
    pub keys: &'a EdgeKeys,
    pub event: &'a EventId,
    pub path: &'a str,
}

/// The event's line as the coordinator last published it (cached per isolate for a second), or
/// `None` when the event has no waiting room (not published).
pub async fn view(env: &Env, event: &EventId) -> Result<Option<Rc<RoomView>>> {
    let now = durable_objects::now_ms() as f64;
    let cached = VIEWS.with(|v| {
        v.borrow().get(event).filter(|(at, _)| now - at < VIEW_TTL_MS).map(|(_, view)| view.clone())
    });
    if cached.is_some() {
        return Ok(cached);
    }
    let mut resp = call(env, COORDINATOR_BINDING, event.as_str(), Method::Get, "/view", None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    let view = Rc::new(resp.json::<RoomView>().await?);
    VIEWS.with(|v| v.borrow_mut().insert(event.clone(), (now, view.clone())));
    Ok(Some(view))
}

/// Forgets the cached view (after this isolate changed the settings).
pub fn forget_view(event: &EventId) {
    VIEWS.with(|v| v.borrow_mut().remove(event));
}

impl Room<'_> {
    /// A refusal: counted under `reason` (sent to the coordinator now and then), answered as a problem.
    pub fn refuse(&self, kind: ProblemType, reason: &str, detail: impl Into<String>) -> Result<Response> {
        self.count_refusal(reason);
        http::problem(
            &Problem::new(kind, detail).with_instance(self.path).with_extension("reason", reason.into()),
        )
    }

    fn count_refusal(&self, reason: &str) {
        let now = durable_objects::now_ms() as f64;
        let flush = REFUSALS.with(|r| {
            let mut r = r.borrow_mut();
            let (last, counts) = r.entry(self.event.clone()).or_insert((0.0, BTreeMap::new()));
            *counts.entry(reason.to_owned()).or_default() += 1;
            if now - *last >= REFUSAL_FLUSH_MS {
                *last = now;
                Some(std::mem::take(counts))
            } else {
                None
            }
        });
        if let Some(counts) = flush {
            let env = self.env.clone();
            let event = self.event.clone();
            self.ctx.wait_until(async move {
                let body = serde_json::to_string(&counts).unwrap_or_default();
                if let Err(e) =
                    call(&env, COORDINATOR_BINDING, event.as_str(), Method::Post, "/refusals", Some(body))
                        .await
                {
                    worker::console_error!("refusal counts not delivered: {e}");
                }
            });
        }
    }

    /// Basic request sanity: what browsers and real apps always send, within sane sizes.
    fn insane_headers(req: &Request) -> Result<Option<&'static str>> {
        let headers = req.headers();
        let ua = headers.get("user-agent")?.unwrap_or_default();
        if ua.trim().is_empty() {
            return Ok(Some("no User-Agent header"));
        }
        if ua.len() > 512 {
            return Ok(Some("the User-Agent header is absurdly long"));
        }
        let mut count = 0;
        for (name, value) in headers.entries() {
            count += 1;
            if name.len() + value.len() > 8 * 1024 {
                return Ok(Some("a header is absurdly long"));
            }
        }
        if count > 64 {
            return Ok(Some("too many headers"));
        }
        Ok(None)
    }

    /// Counts a request against its client IP's budget for this minute.
    fn over_ip_limit(req: &Request, per_minute: u32) -> Result<bool> {
        let ip = req.headers().get("cf-connecting-ip")?.unwrap_or_else(|| "unknown".into());
        let minute = durable_objects::now_ms() / 60_000;
        Ok(IP_WINDOWS.with(|w| {
            let mut w = w.borrow_mut();
            if w.0 != minute {
                *w = (minute, HashMap::new());
            }
            let n = w.1.entry(ip).or_default();
            *n += 1;
            *n > per_minute
        }))
    }

    /// The checks every join and challenge passes first; `Some(response)` refuses.
    fn screen(&self, req: &Request, view: &RoomView) -> Result<Option<Response>> {
        if let Some(why) = Self::insane_headers(req)? {
            return self.refuse(ProblemType::BotCheckFailed, "bad-headers", why).map(Some);
        }
        if Self::over_ip_limit(req, view.settings.rate_limits.per_ip_per_minute)? {
            return self
                .refuse(
                    ProblemType::RateLimited,
                    "ip-rate",
                    "too many requests from this address; try again in a minute",
                )
                .map(Some);
        }
        let (reason, detail) = match view.phase {
            Phase::BeforeOpening => ("not-open", "the line for this event is not open yet"),
            Phase::SoldOut => ("sold-out", "this event is sold out"),
            Phase::Closed => ("closed", "the line for this event is closed"),
            _ => return Ok(None),
        };
        let mut problem = Problem::new(ProblemType::Conflict, detail)
            .with_instance(self.path)
            .with_extension("reason", reason.into());
        if let Some(opens) = view.settings.pre_queue_opens_at_ms {
            problem = problem.with_extension("opens_at_ms", opens.into());
        }
        http::problem(&problem).map(Some)
    }
}

/// The visitor id of the `visitor` cookie, if any.
pub fn visitor_cookie(req: &Request) -> Result<Option<VisitorId>> {
    Ok(cookie(req, "visitor")?.and_then(|v| VisitorId::parse(&v).ok()))
}

/// A cookie's value.
pub fn cookie(req: &Request, name: &str) -> Result<Option<String>> {
    let cookies = req.headers().get("cookie")?.unwrap_or_default();
    Ok(cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned()))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Secure when served over https.
pub fn set_cookie(req: &Request, name: &str, value: &str, max_age_secs: i64) -> Result<String> {
    let secure = req.url()?.scheme() == "https";
    Ok(format!(
        "{name}={value}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    ))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
    Ok(hex::encode(buf))
}

fn new_visitor() -> Result<VisitorId> {
    VisitorId::parse(&format!("v{}", random_hex(16)?)).map_err(|e| worker::Error::RustError(e.to_string()))
}

/// The answer to a challenge request.
#[derive(Serialize)]
struct ChallengeAnswer {
    /// `proof_of_work`, `turnstile` or `off`: what the join must carry.
    check: &'static str,
    visitor: VisitorId,
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    difficulty: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site_key: Option<String>,
}

/// What the visitor must do before joining; for proof of work, a fresh signed puzzle.
pub async fn challenge(room: &Room<'_>, req: &Request) -> Result<Response> {
    let Some(view) = view(room.env, room.event).await? else {
        return http::problem_of(ProblemType::NotFound, "no such event", room.path);
    };
    if let Some(refused) = room.screen(req, &view)? {
        return Ok(refused);
    }
    let (visitor, fresh) = match visitor_cookie(req)? {
        Some(v) => (v, false),
        None => (new_visitor()?, true),
    };
    let now = durable_objects::now_ms();
    let mut answer = ChallengeAnswer {
        check: "off",
        visitor: visitor.clone(),
        challenge: None,
        difficulty: None,
        expires_at_ms: None,
        site_key: None,
    };
    match &view.settings.bot.check {
        BotCheck::Off => {}
        BotCheck::Turnstile { site_key } => {
            answer.check = "turnstile";
            answer.site_key = Some(site_key.clone());
        }
        BotCheck::ProofOfWork { .. } => {
            let claims = Claims {
                iss: "edge".into(),
                aud: room.event.to_string(),
                sub: visitor.to_string(),
                iat: now / 1000,
                exp: now / 1000 + CHALLENGE_SECS,
                jti: random_hex(12)?,
                extra: ChallengeGrant { difficulty: view.difficulty },
            };
            answer.check = "proof_of_work";
            answer.challenge = Some(room.keys.signer.sign(TokenKind::Challenge, &claims));
            answer.difficulty = Some(view.difficulty);
            answer.expires_at_ms = Some(claims.exp * 1000);
        }
    }
    let mut resp = http::json(200, &answer)?;
    resp.headers_mut().set("cache-control", "no-store")?;
    if fresh {
        resp.headers_mut()
            .append("set-cookie", &set_cookie(req, "visitor", visitor.as_str(), 365 * 86_400)?)?;
    }
    Ok(resp)
}

/// What a join may carry (JSON from apps, a form from the page).
#[derive(Debug, Default, Deserialize)]
pub struct JoinBody {
    #[serde(default)]
    pub challenge: Option<String>,
    #[serde(default)]
    pub solution: Option<String>,
    #[serde(default, alias = "cf-turnstile-response")]
    pub turnstile_token: Option<String>,
}

/// The answer to a join.
#[derive(Serialize)]
pub struct JoinAnswer {
    pub ticket: String,
    pub visitor: VisitorId,
    pub place: QueuePlace,
    pub returning: bool,
    pub status: QueueStatus,
}

/// A failed bot check: its reason and what to tell.
struct Failed(&'static str, String);

/// Runs the event's bot check; returns the visitor and the challenge spent (id, expiry).
async fn bot_check(
    room: &Room<'_>,
    req: &Request,
    view: &RoomView,
    body: &JoinBody,
) -> Result<std::result::Result<(VisitorId, Option<(String, i64)>), Failed>> {
    let cookie_visitor = visitor_cookie(req)?;
    match &view.settings.bot.check {
        BotCheck::Off => Ok(Ok((cookie_visitor.map_or_else(new_visitor, Ok)?, None))),
        BotCheck::ProofOfWork { .. } => {
            let (Some(challenge), Some(solution)) = (&body.challenge, &body.solution) else {
                return Ok(Err(Failed("pow-missing", "a solved proof-of-work challenge is required".into())));
            };
            let expect = Expectation {
                kind: TokenKind::Challenge,
                issuer: "edge",
                audience: room.event.as_str(),
                subject: cookie_visitor.as_ref().map(VisitorId::as_str),
                now: durable_objects::now_ms() / 1000,
            };
            let claims: Claims<ChallengeGrant> = match verify(challenge, &room.keys.edge, &expect) {
                Ok(c) => c,
                Err(e) => return Ok(Err(Failed("pow-invalid", format!("the challenge is not valid: {e}")))),
            };
            if !pow_valid(challenge, solution, claims.extra.difficulty) {
                return Ok(Err(Failed(
                    "pow-invalid",
                    "the proof of work does not solve the challenge".into(),
                )));
            }
            let Ok(visitor) = VisitorId::parse(&claims.sub) else {
                return Ok(Err(Failed("pow-invalid", "the challenge names no valid visitor".into())));
            };
            Ok(Ok((visitor, Some((claims.jti, claims.exp * 1000)))))
        }
        BotCheck::Turnstile { .. } => {
            let Some(token) = body.turnstile_token.as_deref().filter(|t| !t.is_empty() && t.len() <= 2048)
            else {
                return Ok(Err(Failed("turnstile-missing", "a Turnstile response is required".into())));
            };
            match turnstile_verify(room.env, req, token).await {
                Ok(true) => Ok(Ok((cookie_visitor.map_or_else(new_visitor, Ok)?, None))),
                Ok(false) => Ok(Err(Failed("turnstile-failed", "the Turnstile check failed".into()))),
                Err(e) => {
                    worker::console_error!("turnstile siteverify: {e}");
                    Ok(Err(Failed("turnstile-unavailable", "the Turnstile check could not be made".into())))
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct SiteVerify {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// Asks Turnstile's siteverify (`TURNSTILE_VERIFY_URL`, secret `TURNSTILE_SECRET`) about a token.
async fn turnstile_verify(env: &Env, req: &Request, token: &str) -> Result<bool> {
    let url = env.var("TURNSTILE_VERIFY_URL").map(|v| v.to_string()).unwrap_or_else(|_| TURNSTILE_URL.into());
    let secret = env
        .secret("TURNSTILE_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("TURNSTILE_SECRET").map(|v| v.to_string()))
        .map_err(|_| worker::Error::RustError("TURNSTILE_SECRET is not set".into()))?;
    let mut form = vec![("secret", secret), ("response", token.to_owned())];
    if let Some(ip) = req.headers().get("cf-connecting-ip")? {
        form.push(("remoteip", ip));
    }
    let body: String =
        form.iter().map(|(k, v)| format!("{k}={}", js_encode(v))).collect::<Vec<_>>().join("&");
    let headers = worker::Headers::new();
    headers.set("content-type", "application/x-www-form-urlencoded")?;
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let mut resp = worker::Fetch::Request(Request::new_with_init(&url, &init)?).send().await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!("siteverify answered {}", resp.status_code())));
    }
    let answer: SiteVerify = resp.json().await?;
    if !answer.success {
        worker::console_log!("turnstile refused: {:?}", answer.error_codes);
    }
    Ok(answer.success)
}

/// Percent-encodes a form value.
fn js_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Decodes `application/x-www-form-urlencoded`.
pub fn form_decode(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match std::str::from_utf8(&bytes[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&').filter_map(|pair| pair.split_once('=')).map(|(k, v)| (decode(k), decode(v))).collect()
}

/// Joins the line. Returns the answer, or the response that refused.
pub async fn join(
    room: &Room<'_>,
    req: &mut Request,
) -> Result<std::result::Result<(JoinAnswer, Vec<String>), Response>> {
    let Some(view) = view(room.env, room.event).await? else {
        return http::problem_of(ProblemType::NotFound, "no such event", room.path).map(Err);
    };
    if let Some(refused) = room.screen(req, &view)? {
        return Ok(Err(refused));
    }
    let form = req
        .headers()
        .get("content-type")?
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let raw = match crate::body::read(req, crate::body::JOIN, room.path).await? {
        Ok(raw) => raw,
        Err(refused) => return Ok(Err(refused)),
    };
    let body: JoinBody = if raw.is_empty() {
        JoinBody::default()
    } else if form {
        let fields = form_decode(&String::from_utf8_lossy(&raw));
        JoinBody {
            challenge: fields.get("challenge").cloned(),
            solution: fields.get("solution").cloned(),
            turnstile_token: fields.get("cf-turnstile-response").or(fields.get("turnstile_token")).cloned(),
        }
    } else {
        match serde_json::from_slice(&raw) {
            Ok(b) => b,
            Err(e) => {
                return http::problem_of(
                    ProblemType::MalformedRequest,
                    format!("not a join request: {e}"),
                    room.path,
                )
                .map(Err)
            }
        }
    };
    let now = durable_objects::now_ms();
    let mut cookies = Vec::new();
    let (visitor, place, returning) = match bot_check(room, req, &view, &body).await? {
        Ok((visitor, spent)) => {
            let shards = view.settings.queue_shards;
            let shard = shard_of_visitor(visitor.as_str(), shards);
            let join = JoinRequest {
                event: room.event.clone(),
                shard,
                visitor: visitor.clone(),
                settings: view.settings.clone(),
                challenge: spent,
            };
            let name = shard_name(room.event, shard);
            let mut resp = call(
                room.env,
                SHARD_BINDING,
                &name,
                Method::Post,
                "/join",
                Some(serde_json::to_string(&join)?),
            )
            .await?;
            if !matches!(resp.status_code(), 200 | 201) {
                let problem: Problem = resp.json().await.unwrap_or_else(|_| {
                    Problem::new(ProblemType::Internal, "the queue answered an unreadable error")
                });
                let reason = problem.extensions.get("reason").and_then(|r| r.as_str()).unwrap_or("refused");
                room.count_refusal(reason);
                return http::problem(&problem.with_instance(room.path)).map(Err);
            }
            let joined: Joined = resp.json().await?;
            (visitor, QueuePlace { shard, seq: joined.n, pre: joined.pre }, joined.returning)
        }
        Err(Failed(reason, detail)) => {
            if view.settings.bot.on_failure == BotFailure::Refuse {
                return room.refuse(ProblemType::BotCheckFailed, reason, detail).map(Err);
            }
            // A line that never moves: the visitor is told nothing, and is counted.
            room.count_refusal(&format!("stalled-{reason}"));
            let visitor = visitor_cookie(req)?.map_or_else(new_visitor, Ok)?;
            let seq = u64::from_str_radix(&random_hex(4)?, 16).unwrap_or(0) % 1000 + view.waiting;
            (visitor, QueuePlace { shard: STALL_SHARD, seq, pre: false }, false)
        }
    };
    let claims = Claims {
        iss: "edge".into(),
        aud: room.event.to_string(),
        sub: visitor.to_string(),
        iat: now / 1000,
        exp: now / 1000 + QUEUE_TICKET_SECS,
        jti: format!("{}-{}{}", place.shard, if place.pre { "p" } else { "a" }, place.seq),
        extra: place,
    };
    let ticket = room.keys.signer.sign(TokenKind::Queue, &claims);
    cookies.push(set_cookie(req, "visitor", visitor.as_str(), 365 * 86_400)?);
    cookies.push(set_cookie(req, &format!("queue_{}", room.event), &ticket, QUEUE_TICKET_SECS)?);
    let status = status_of(&view, &place, now);
    Ok(Ok((JoinAnswer { ticket, visitor, place, returning, status }, cookies)))
}

/// A verified queue ticket: its visitor and place.
pub struct Ticket {
    pub visitor: VisitorId,
    pub place: QueuePlace,
}

/// Reads and verifies the queue ticket (`Authorization: Bearer` or the event's `queue_` cookie).
pub fn ticket(room: &Room<'_>, req: &Request) -> Result<std::result::Result<Ticket, (&'static str, String)>> {
    let bearer = req
        .headers()
        .get("authorization")?
        .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    let token = match bearer.filter(|t| token_kind(t) == Some("queue")) {
        Some(t) => Some(t),
        None => cookie(req, &format!("queue_{}", room.event))?,
    };
    let Some(token) = token else { return Ok(Err(("missing", "a queue ticket is required".into()))) };
    let expect = Expectation {
        kind: TokenKind::Queue,
        issuer: "edge",
        audience: room.event.as_str(),
        subject: None,
        now: durable_objects::now_ms() / 1000,
    };
    let claims: Claims<QueuePlace> = match verify(&token, &room.keys.edge, &expect) {
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
pub fn held_admission(room: &Room<'_>, req: &Request) -> Result<Option<(String, Claims<AdmissionGrant>)>> {
    let bearer = req
        .headers()
        .get("authorization")?
        .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    let token = match bearer.filter(|t| token_kind(t) == Some("admission")) {
        Some(t) => Some(t),
        None => cookie(req, &format!("admission_{}", room.event))?,
    };
    let Some(token) = token else { return Ok(None) };
    let expect = Expectation {
        kind: TokenKind::Admission,
        issuer: "edge",
        audience: room.event.as_str(),
        subject: None,
        now: durable_objects::now_ms() / 1000,
    };
    Ok(verify::<AdmissionGrant>(&token, &room.keys.edge, &expect).ok().map(|c| (token, c)))
}

/// Where a poller stands, after the exchange when their turn has come.
pub enum Standing {
    /// Admitted: the admission token (new, or the one already held) and the cookie to set.
    Admitted {
        token: String,
        expires_at_ms: i64,
        cookie: Option<String>,
    },
    Waiting {
        status: QueueStatus,
        place: QueuePlace,
    },
}

/// What the caller holds for this event, each token verified once per request.
pub enum Credentials {
    /// A valid admission token (and its claims).
    Admission(String, Claims<AdmissionGrant>),
    /// A valid queue ticket.
    Ticket(Ticket),
    /// Neither: why the ticket (if any) was refused.
    None(&'static str, String),
}

/// Reads the caller's admission token, else their queue ticket.
pub fn credentials(room: &Room<'_>, req: &Request) -> Result<Credentials> {
    if let Some((token, claims)) = held_admission(room, req)? {
        return Ok(Credentials::Admission(token, claims));
    }
    Ok(match ticket(room, req)? {
        Ok(t) => Credentials::Ticket(t),
        Err((reason, detail)) => Credentials::None(reason, detail),
    })
}

/// The poller's standing, or the problem to answer.
pub async fn standing(
    room: &Room<'_>,
    req: &Request,
    credentials: Credentials,
) -> Result<std::result::Result<Standing, Response>> {
    let ticket = match credentials {
        Credentials::Admission(token, claims) => {
            return Ok(Ok(Standing::Admitted { token, expires_at_ms: claims.exp * 1000, cookie: None }))
        }
        Credentials::Ticket(t) => t,
        Credentials::None(reason, detail) => {
            return room.refuse(ProblemType::Unauthorized, reason, detail).map(Err)
        }
    };
    let Some(view) = view(room.env, room.event).await? else {
        return http::problem_of(ProblemType::NotFound, "no such event", room.path).map(Err);
    };
    let now = durable_objects::now_ms();
    let status = status_of(&view, &ticket.place, now);
    if status.state != StatusState::Admitted {
        return Ok(Ok(Standing::Waiting { status, place: ticket.place }));
    }
    // Their turn: the shard exchanges the place once.
    let place = PlaceRef { visitor: ticket.visitor.clone(), pre: ticket.place.pre, n: ticket.place.seq };
    let name = shard_name(room.event, ticket.place.shard);
    let mut resp =
        call(room.env, SHARD_BINDING, &name, Method::Post, "/exchange", Some(serde_json::to_string(&place)?))
            .await?;
    if resp.status_code() != 200 {
        let problem: Problem = resp.json().await.unwrap_or_else(|_| {
            Problem::new(ProblemType::Internal, "the queue answered an unreadable error")
        });
        let reason =
            problem.extensions.get("reason").and_then(|r| r.as_str()).unwrap_or("refused").to_owned();
        if reason == "not-admitted" {
            // The view ran ahead of the shard by a moment: ask again shortly.
            let status = QueueStatus { state: StatusState::Waiting, poll_after_seconds: 1, ..status };
            return Ok(Ok(Standing::Waiting { status, place: ticket.place }));
        }
        room.count_refusal(&reason);
        return http::problem(&problem.with_instance(room.path)).map(Err);
    }
    let session: Session = resp.json().await?;
    let claims = Claims {
        iss: "edge".into(),
        aud: room.event.to_string(),
        sub: ticket.visitor.to_string(),
        iat: session.started_ms / 1000,
        exp: session.ends_ms / 1000,
        jti: session.jti,
        extra: AdmissionGrant {
            shard: ticket.place.shard,
            seq: ticket.place.seq,
            pre: ticket.place.pre,
            max_tickets: session.max_tickets,
        },
    };
    let token = room.keys.signer.sign(TokenKind::Admission, &claims);
    let max_age = (session.ends_ms - now) / 1000;
    let cookie = set_cookie(req, &format!("admission_{}", room.event), &token, max_age)?;
    Ok(Ok(Standing::Admitted { token, expires_at_ms: session.ends_ms, cookie: Some(cookie) }))
}

/// `GET /queue` for apps.
pub async fn status(room: &Room<'_>, req: &Request) -> Result<Response> {
    status_of_caller(room, req, credentials(room, req)?).await
}

/// The status answer for credentials already read.
pub async fn status_of_caller(room: &Room<'_>, req: &Request, credentials: Credentials) -> Result<Response> {
    let standing = match standing(room, req, credentials).await? {
        Ok(s) => s,
        Err(resp) => return Ok(resp),
    };
    let mut resp = match standing {
        Standing::Admitted { token, expires_at_ms, cookie } => {
            let mut resp = http::json(
                200,
                &serde_json::json!({
                    "state": "admitted",
                    "admission_token": token,
                    "expires_at_ms": expires_at_ms,
                    "next": format!("/events/{}/buy", room.event),
                }),
            )?;
            if let Some(cookie) = cookie {
                resp.headers_mut().append("set-cookie", &cookie)?;
            }
            resp
        }
        Standing::Waiting { status, place } => {
            let mut resp = http::json(200, &serde_json::json!({ "place": place, "status": status }))?;
            resp.headers_mut().set("retry-after", &status.poll_after_seconds.to_string())?;
            resp
        }
    };
    resp.headers_mut().set("cache-control", "no-store")?;
    Ok(resp)
}

/// `POST /queue` for apps.
pub async fn join_api(room: &Room<'_>, mut req: Request) -> Result<Response> {
    match join(room, &mut req).await? {
        Ok((answer, cookies)) => {
            let mut resp = http::json(if answer.returning { 200 } else { 201 }, &answer)?;
            for c in cookies {
                resp.headers_mut().append("set-cookie", &c)?;
            }
            resp.headers_mut().set("cache-control", "no-store")?;
            Ok(resp)
        }
        Err(resp) => Ok(resp),
    }
}

/// `DELETE /queue`: gives up the place (or ends the session of an admitted buyer).
pub async fn leave(room: &Room<'_>, req: &Request) -> Result<Response> {
    let (shard, place) = match credentials(room, req)? {
        Credentials::Admission(_, claims) => {
            SESSIONS.with(|s| s.borrow_mut().remove(&claims.jti));
            let visitor =
                VisitorId::parse(&claims.sub).map_err(|e| worker::Error::RustError(e.to_string()))?;
            (claims.extra.shard, PlaceRef { visitor, pre: claims.extra.pre, n: claims.extra.seq })
        }
        Credentials::Ticket(t) => {
            (t.place.shard, PlaceRef { visitor: t.visitor, pre: t.place.pre, n: t.place.seq })
        }
        Credentials::None(reason, detail) => return room.refuse(ProblemType::Unauthorized, reason, detail),
    };
    if shard != STALL_SHARD {
        let name = shard_name(room.event, shard);
        let resp = call(
            room.env,
            SHARD_BINDING,
            &name,
            Method::Post,
            "/leave",
            Some(serde_json::to_string(&place)?),
        )
        .await?;
        if resp.status_code() != 200 {
            return crate::objects::relay(resp, room.path).await;
        }
    }
    let mut resp = http::json(200, &serde_json::json!({ "left": true }))?;
    for name in [format!("queue_{}", room.event), format!("admission_{}", room.event)] {
        resp.headers_mut().append("set-cookie", &set_cookie(req, &name, "", 0)?)?;
    }
    Ok(resp)
}

/// The answer to a waiting-room route called with a method it does not take.
pub fn method_not_allowed(path: &str) -> Result<Response> {
    http::problem_of(ProblemType::MethodNotAllowed, "this route does not accept that method", path)
}
