//! What every challenge and join passes first: sane headers, a budget of requests per client
//! address, a line that is open; then, for a join, the event's bot check (a signed proof-of-work
//! challenge solved, or a Turnstile token Cloudflare confirms).

use serde::Deserialize;
use shared_types::ids::VisitorId;
use shared_types::token::{Claims, TokenKind};
use shared_types::waiting_room::{pow_valid, BotCheck, ChallengeGrant, Phase, RoomView};
use shared_types::{Problem, ProblemType};
use worker::{Env, Method, Request};

use super::credentials::{visitor_cookie, visitor_or_new};
use crate::context::{EventCtx, Result, Stop};
use crate::{settings, web};

/// The Workers Rate Limiting binding that counts challenges and joins per client address
/// (wrangler.toml `[[ratelimits]]`: its limit and period are set per environment). One counter for
/// every isolate of a Cloudflare location, not this isolate's share of the traffic.
pub const IP_LIMIT: &str = "IP_LIMIT";

/// Basic request sanity: what browsers and real apps always send, within sane sizes.
pub fn insane_headers(req: &Request) -> Result<Option<&'static str>> {
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

/// What the per-address budget counts by: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber's prefix: a host picks any of its 2^64 addresses at will).
fn limit_key(ip: &str) -> String {
    match ip.parse::<std::net::Ipv6Addr>() {
        Ok(v6) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v6) => v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_default(),
        Err(_) => ip.to_owned(),
    }
}

/// Counts a request against its client address's budget (the Rate Limiting binding). A deployment
/// without the binding refuses joins (500, the cause in the log): an edge that cannot count would
/// let one address take the line. A binding that errors now and then lets the request through (and
/// logs it, and counts it under the refusal reason `ip-limit-unavailable`, which the operator's
/// alert `TicketingEdgeRateLimiterFailing` watches): the bot check and the per-visitor limit still
/// stand, and a buyer is not turned away for the platform's hiccup.
async fn over_ip_limit(ev: &EventCtx<'_>, req: &Request) -> Result<bool> {
    match ip_budget(ev.env, req).await {
        Err(()) => Err(ev.problem(ProblemType::Internal, "the edge is not configured to take joins")),
        Ok(IpBudget::Left) => Ok(false),
        Ok(IpBudget::Spent) => Ok(true),
        Ok(IpBudget::Unknown) => {
            super::count_refusal(ev, "ip-limit-unavailable");
            Ok(false)
        }
    }
}

/// What the per-address budget says of a request.
pub enum IpBudget {
    Left,
    Spent,
    /// The binding failed (logged): let through.
    Unknown,
}

/// Counts a request against its client address's budget; `Err` when the binding is missing
/// (logged). Joins ([`over_ip_limit`]) and requests for a sign-in link (`proxy.rs`) spend it.
pub async fn ip_budget(env: &worker::Env, req: &Request) -> std::result::Result<IpBudget, ()> {
    let ip = req.headers().get("cf-connecting-ip").ok().flatten().unwrap_or_else(|| "unknown".into());
    let limiter = env.rate_limiter(IP_LIMIT).map_err(|e| {
        durable_objects::log::error(
            "the rate limiting binding is missing",
            serde_json::json!({ "binding": IP_LIMIT, "error": e.to_string() }),
        );
    })?;
    match limiter.limit(limit_key(&ip)).await {
        Ok(outcome) if outcome.success => Ok(IpBudget::Left),
        Ok(_) => Ok(IpBudget::Spent),
        Err(e) => {
            durable_objects::log::error(
                "the rate limiter failed; let through",
                serde_json::json!({ "error": e.to_string() }),
            );
            Ok(IpBudget::Unknown)
        }
    }
}

/// The checks every join and challenge passes first.
pub async fn screen(ev: &EventCtx<'_>, req: &Request, view: &RoomView) -> Result<()> {
    screen_request(ev, req).await?;
    let (reason, detail) = match view.phase {
        Phase::BeforeOpening => ("not-open", "the line for this event is not open yet"),
        Phase::SoldOut => ("sold-out", "this event is sold out"),
        Phase::Closed => ("closed", "the line for this event is closed"),
        _ => return Ok(()),
    };
    let mut problem = Problem::new(ProblemType::Conflict, detail)
        .with_instance(ev.path)
        .with_extension("reason", reason.into());
    if let Some(opens) = view.settings.pre_queue_opens_at_ms {
        problem = problem.with_extension("opens_at_ms", opens.into());
    }
    Err(Stop::problem(&problem))
}

/// The checks of the request itself (its headers, the per-address limit), which a join of the
/// waiting list passes too.
pub async fn screen_request(ev: &EventCtx<'_>, req: &Request) -> Result<()> {
    if let Some(why) = insane_headers(req)? {
        return Err(super::refuse(ev, ProblemType::BotCheckFailed, "bad-headers", why));
    }
    if over_ip_limit(ev, req).await? {
        let detail = "too many requests from this address; try again in a minute";
        return Err(super::refuse(ev, ProblemType::RateLimited, "ip-rate", detail));
    }
    Ok(())
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

impl JoinBody {
    /// The body of a join: a form, JSON, or nothing.
    pub fn read(ev: &EventCtx<'_>, raw: &[u8], form: bool) -> Result<Self> {
        if raw.is_empty() {
            return Ok(Self::default());
        }
        if form {
            let mut fields = web::form_fields(raw);
            let turnstile =
                fields.remove("cf-turnstile-response").or_else(|| fields.remove("turnstile_token"));
            return Ok(Self {
                challenge: fields.remove("challenge"),
                solution: fields.remove("solution"),
                turnstile_token: turnstile,
            });
        }
        serde_json::from_slice(raw)
            .map_err(|e| ev.problem(ProblemType::MalformedRequest, format!("not a join request: {e}")))
    }
}

/// A failed bot check: its reason and what to tell.
pub struct Failed(pub &'static str, pub String);

/// The visitor who passed the event's bot check, and the challenge spent (id, expiry).
pub type Passed = (VisitorId, Option<(String, i64)>);

/// Runs the event's bot check.
pub async fn bot_check(
    ev: &EventCtx<'_>,
    req: &Request,
    view: &RoomView,
    body: &JoinBody,
) -> Result<std::result::Result<Passed, Failed>> {
    let failed = |reason, detail: &str| Ok(Err(Failed(reason, detail.to_owned())));
    match &view.settings.bot.check {
        BotCheck::Off => Ok(Ok((visitor_or_new(req)?, None))),
        BotCheck::ProofOfWork { .. } => {
            let (Some(challenge), Some(solution)) = (&body.challenge, &body.solution) else {
                return failed("pow-missing", "a solved proof-of-work challenge is required");
            };
            let cookie_visitor = visitor_cookie(req)?;
            let subject = cookie_visitor.as_ref().map(VisitorId::as_str);
            let verified =
                ev.keys()?.verify(TokenKind::Challenge, challenge, ev.event.as_str(), subject).await;
            let claims: Claims<ChallengeGrant> = match verified {
                Ok(c) => c,
                Err(e) => return failed("pow-invalid", &format!("the challenge is not valid: {e}")),
            };
            if !pow_valid(challenge, solution, claims.extra.difficulty) {
                return failed("pow-invalid", "the proof of work does not solve the challenge");
            }
            let Ok(visitor) = VisitorId::parse(&claims.sub) else {
                return failed("pow-invalid", "the challenge names no valid visitor");
            };
            Ok(Ok((visitor, Some((claims.jti, claims.exp * 1000)))))
        }
        BotCheck::Turnstile { .. } => {
            let Some(token) = body.turnstile_token.as_deref().filter(|t| !t.is_empty() && t.len() <= 2048)
            else {
                return failed("turnstile-missing", "a Turnstile response is required");
            };
            match turnstile_verify(ev.env, req, token).await {
                Ok(true) => Ok(Ok((visitor_or_new(req)?, None))),
                Ok(false) => failed("turnstile-failed", "the Turnstile check failed"),
                Err(e) => {
                    durable_objects::log::error(
                        "turnstile siteverify failed",
                        serde_json::json!({ "error": e.to_string() }),
                    );
                    failed("turnstile-unavailable", "the Turnstile check could not be made")
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
async fn turnstile_verify(env: &Env, req: &Request, token: &str) -> worker::Result<bool> {
    let url = settings::TURNSTILE_VERIFY_URL.read_or_default(env).unwrap_or_default();
    let secret = settings::TURNSTILE_SECRET
        .read(env)
        .ok_or_else(|| worker::Error::RustError("TURNSTILE_SECRET is not set".into()))?;
    let ip = req.headers().get("cf-connecting-ip")?;
    let mut fields = vec![("secret", secret.as_str()), ("response", token)];
    if let Some(ip) = ip.as_deref() {
        fields.push(("remoteip", ip));
    }
    let headers = worker::Headers::new();
    headers.set("content-type", "application/x-www-form-urlencoded")?;
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(web::form_body(&fields).into()));
    let mut resp = worker::Fetch::Request(Request::new_with_init(&url, &init)?).send().await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!("siteverify answered {}", resp.status_code())));
    }
    let answer: SiteVerify = durable_objects::http::answer_json(&mut resp).await?;
    if !answer.success {
        durable_objects::log::info(
            "turnstile refused",
            serde_json::json!({ "error_codes": answer.error_codes }),
        );
    }
    Ok(answer.success)
}

#[cfg(test)]
mod tests {
    use super::limit_key;

    #[test]
    fn addresses_are_counted_by_ipv4_address_or_ipv6_prefix() {
        assert_eq!(limit_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(limit_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_eq!(limit_key("::ffff:198.51.100.9"), "198.51.100.9");
        assert_eq!(limit_key("unknown"), "unknown");
    }
}
