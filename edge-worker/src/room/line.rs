//! The line's steps, shared by the JSON routes (`api.rs`) and the pages: a challenge, a join, a
//! poller's standing (with the one exchange of an admitted place for an admission token), leaving.

use durable_objects::waiting_room::{
    call, shard_name, JoinRequest, Joined, PlaceRef, Session, SHARD_BINDING,
};
use serde::Serialize;
use shared_types::ids::VisitorId;
use shared_types::token::{Claims, TokenKind};
use shared_types::waiting_room::{
    shard_of_visitor, status_of, AdmissionGrant, BotCheck, BotFailure, ChallengeGrant, Phase, QueuePlace,
    QueueStatus, RoomView, StatusState, CHALLENGE_SECS, QUEUE_TICKET_SECS, STALL_SHARD, WAITLIST_SHARD,
};
use shared_types::ProblemType;
use worker::{Method, Request};

use super::credentials::{
    admission_cookie, forget_session, queue_cookie, visitor_cookie, visitor_or_new, Credentials, Ticket,
};
use super::screen::{bot_check, screen, screen_request, Failed, JoinBody};
use super::{count_refusal, refuse, shard_problem, shard_refused, view_or_404};
use crate::context::{EventCtx, Result};
use crate::web::{self, set_cookie};

/// How long the `visitor` cookie lasts.
pub const VISITOR_COOKIE_SECS: i64 = 365 * 86_400;

/// What a join must carry, for the visitor a challenge was issued to.
#[derive(Serialize)]
pub struct Challenge {
    /// `proof_of_work`, `turnstile` or `off`.
    pub check: &'static str,
    pub visitor: VisitorId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_key: Option<String>,
}

/// What the visitor must do before joining (for proof of work, a fresh signed puzzle), and the
/// `visitor` cookie to set when they had none.
pub async fn challenge(ev: &EventCtx<'_>, req: &Request) -> Result<(Challenge, Option<String>)> {
    let view = view_or_404(ev).await?;
    // A sold-out event with a waiting list still hands out puzzles: joining the list takes one.
    if view.phase == Phase::SoldOut && view.settings.waitlist.enabled {
        screen_request(ev, req).await?;
    } else {
        screen(ev, req, &view).await?;
    }
    let (visitor, fresh) = match visitor_cookie(req)? {
        Some(v) => (v, false),
        None => (super::credentials::new_visitor()?, true),
    };
    let mut answer = Challenge {
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
            let now = durable_objects::now_ms() / 1000;
            let claims = Claims {
                iss: "edge".into(),
                aud: ev.event.to_string(),
                sub: visitor.to_string(),
                iat: now,
                exp: now + CHALLENGE_SECS,
                jti: web::random_hex(12)?,
                extra: ChallengeGrant { difficulty: view.difficulty },
            };
            answer.check = "proof_of_work";
            answer.challenge = Some(ev.keys()?.sign(TokenKind::Challenge, &claims).await);
            answer.difficulty = Some(view.difficulty);
            answer.expires_at_ms = Some(claims.exp * 1000);
        }
    }
    let cookie =
        if fresh { Some(set_cookie(req, "visitor", visitor.as_str(), VISITOR_COOKIE_SECS)?) } else { None };
    Ok((answer, cookie))
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

/// Joins the line: the screen, the bot check, a place from the visitor's shard (or, for a failed
/// check on an event that stalls bots, a place in a line that never moves). Returns the answer and
/// the cookies to set.
pub async fn join(ev: &EventCtx<'_>, req: &mut Request) -> Result<(JoinAnswer, Vec<String>)> {
    let view = view_or_404(ev).await?;
    screen(ev, req, &view).await?;
    let form = web::is_form(req)?;
    let raw = crate::body::read(req, crate::body::JOIN, ev.path).await?;
    let body = JoinBody::read(ev, &raw, form)?;
    let (visitor, place, returning) = match bot_check(ev, req, &view, &body).await? {
        Ok((visitor, spent)) => {
            let (place, returning) = take_place(ev, &view, &visitor, spent).await?;
            (visitor, place, returning)
        }
        Err(Failed(reason, detail)) => {
            if view.settings.bot.on_failure == BotFailure::Refuse {
                return Err(refuse(ev, ProblemType::BotCheckFailed, reason, detail));
            }
            // A line that never moves: the visitor is told nothing, and is counted.
            count_refusal(ev, &format!("stalled-{reason}"));
            let seq = u64::from_str_radix(&web::random_hex(4)?, 16).unwrap_or(0) % 1000 + view.waiting;
            (visitor_or_new(req)?, QueuePlace { shard: STALL_SHARD, seq, pre: false }, false)
        }
    };
    let now = durable_objects::now_ms();
    let claims = Claims {
        iss: "edge".into(),
        aud: ev.event.to_string(),
        sub: visitor.to_string(),
        iat: now / 1000,
        exp: now / 1000 + QUEUE_TICKET_SECS,
        jti: format!("{}-{}{}", place.shard, if place.pre { "p" } else { "a" }, place.seq),
        extra: place,
    };
    let ticket = ev.keys()?.sign(TokenKind::Queue, &claims).await;
    let cookies = vec![
        set_cookie(req, "visitor", visitor.as_str(), VISITOR_COOKIE_SECS)?,
        set_cookie(req, &queue_cookie(ev), &ticket, QUEUE_TICKET_SECS)?,
    ];
    let status = status_of(&view, &place, now);
    Ok((JoinAnswer { ticket, visitor, place, returning, status }, cookies))
}

/// A place for `visitor` from their shard (the same one again for a returning visitor).
async fn take_place(
    ev: &EventCtx<'_>,
    view: &RoomView,
    visitor: &VisitorId,
    challenge: Option<(String, i64)>,
) -> Result<(QueuePlace, bool)> {
    let shard = shard_of_visitor(visitor.as_str(), view.settings.queue_shards);
    let join = JoinRequest {
        event: ev.event.clone(),
        shard,
        visitor: visitor.clone(),
        settings: view.settings.clone(),
        challenge,
    };
    let name = shard_name(&ev.event, shard);
    let body = serde_json::to_string(&join)?;
    let mut resp = call(ev.env, SHARD_BINDING, &name, Method::Post, "/join", Some(body)).await?;
    if !matches!(resp.status_code(), 200 | 201) {
        return Err(shard_refused(ev, resp).await);
    }
    let joined: Joined = durable_objects::http::answer_json(&mut resp).await?;
    Ok((QueuePlace { shard, seq: joined.n, pre: joined.pre }, joined.returning))
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

/// The poller's standing, or the problem to answer (a 401 without a ticket).
pub async fn standing(ev: &EventCtx<'_>, req: &Request, credentials: Credentials) -> Result<Standing> {
    let ticket = match credentials {
        Credentials::Admission(token, claims) => {
            return Ok(Standing::Admitted { token, expires_at_ms: claims.exp * 1000, cookie: None })
        }
        Credentials::Ticket(t) => t,
        Credentials::None((reason, detail)) => {
            return Err(refuse(ev, ProblemType::Unauthorized, reason, detail))
        }
    };
    let view = view_or_404(ev).await?;
    let status = status_of(&view, &ticket.place, durable_objects::now_ms());
    if status.state != StatusState::Admitted {
        return Ok(Standing::Waiting { status, place: ticket.place });
    }
    exchange(ev, req, ticket, status).await
}

/// Their turn: the shard exchanges the place for a shopping session, once.
async fn exchange(ev: &EventCtx<'_>, req: &Request, ticket: Ticket, status: QueueStatus) -> Result<Standing> {
    let place = PlaceRef { visitor: ticket.visitor.clone(), pre: ticket.place.pre, n: ticket.place.seq };
    let name = shard_name(&ev.event, ticket.place.shard);
    let body = serde_json::to_string(&place)?;
    let mut resp = call(ev.env, SHARD_BINDING, &name, Method::Post, "/exchange", Some(body)).await?;
    if resp.status_code() != 200 {
        let problem = shard_problem(&mut resp).await;
        if super::problem_reason(&problem) == "not-admitted" {
            // The view ran ahead of the shard by a moment: ask again shortly.
            let status = QueueStatus { state: StatusState::Waiting, poll_after_seconds: 1, ..status };
            return Ok(Standing::Waiting { status, place: ticket.place });
        }
        count_refusal(ev, super::problem_reason(&problem));
        return Err(crate::context::Stop::problem(&problem.with_instance(ev.path)));
    }
    let session: Session = durable_objects::http::answer_json(&mut resp).await?;
    let claims = Claims {
        iss: "edge".into(),
        aud: ev.event.to_string(),
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
    let token = ev.keys()?.sign(TokenKind::Admission, &claims).await;
    let max_age = (session.ends_ms - durable_objects::now_ms()) / 1000;
    let cookie = set_cookie(req, &admission_cookie(ev), &token, max_age)?;
    Ok(Standing::Admitted { token, expires_at_ms: session.ends_ms, cookie: Some(cookie) })
}

/// Gives up the place (or ends the session of an admitted buyer); returns the cookies that
/// forget the event's ticket and token.
pub async fn leave(ev: &EventCtx<'_>, req: &Request, credentials: Credentials) -> Result<Vec<String>> {
    let (shard, place) = match credentials {
        Credentials::Admission(_, claims) => {
            forget_session(&claims.jti);
            let visitor =
                VisitorId::parse(&claims.sub).map_err(|e| worker::Error::RustError(e.to_string()))?;
            (claims.extra.shard, PlaceRef { visitor, pre: claims.extra.pre, n: claims.extra.seq })
        }
        Credentials::Ticket(t) => {
            (t.place.shard, PlaceRef { visitor: t.visitor, pre: t.place.pre, n: t.place.seq })
        }
        Credentials::None((reason, detail)) => {
            return Err(refuse(ev, ProblemType::Unauthorized, reason, detail))
        }
    };
    // No queue shard holds a place for a stalled line's admission or a waiting-list offer's (the
    // list was that one's line: leaving it is `DELETE …/waitlist`).
    if shard != STALL_SHARD && shard != WAITLIST_SHARD {
        let body = serde_json::to_string(&place)?;
        let resp =
            call(ev.env, SHARD_BINDING, &shard_name(&ev.event, shard), Method::Post, "/leave", Some(body))
                .await?;
        if resp.status_code() != 200 {
            return Err(crate::objects::relayed(resp, ev.path).await);
        }
    }
    [queue_cookie(ev), admission_cookie(ev)].iter().map(|name| set_cookie(req, name, "", 0)).collect()
}
