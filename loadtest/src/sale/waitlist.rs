//! The waiting-list phase of `loadtest sale` (`--waitlist N`, docs/waiting-list.md).
//!
//! Once the sale is seen sold out (no seat available), N people join the event's waiting list as
//! the event page does: the line's bot check, then the list, asking for 1 to `--max-tickets` seats.
//! Seats that come back from then on (abandoned holds expiring, declined payments, and
//! `--waitlist-refunds` orders the organizer refunds) are offered to them in order: each member
//! reads the offer mail the core queued (its outbox, where the real mail is written before it is
//! sent), follows the link, and pays, declines, or lets the offer lapse, as planned.
//!
//! The phase ends when nothing more can be offered: the buyers are done, every member has joined
//! (or given up: a seat nobody buys stays on public sale), no order is unfinished, no offer or
//! buyer's hold stands and everything held is parked for the list (five seconds in a row).
//! Members still waiting then stop. The audit (`crate::audit::waitlist`) replays the list's
//! records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use shared_types::internal_api::InternalRoute;
use shared_types::token::TokenSigner;
use sqlx::PgPool;

use super::plan::{Fate, ListPlan, Step};
use super::{buy, reason, solve_challenge, Ctx, Outcome};
use crate::edge::{core_call, nonce};

/// What the members share.
pub(super) struct List {
    db: PgPool,
    event: String,
    /// The sale was seen sold out: members may join.
    open: AtomicBool,
    /// Nothing more will be offered: members still waiting stop.
    over: AtomicBool,
    /// The buyers' visits are all done.
    pub sale_done: AtomicBool,
    /// Members not yet past joining.
    joining: AtomicU64,
    /// When the first entry was acknowledged (ms since the start, plus one; 0: none yet).
    first_entry: AtomicU64,
    /// The offer links mailed, per address, in the order they were queued.
    links: Mutex<HashMap<String, Vec<String>>>,
    /// Tickets of the orders the organizer refunded (`--waitlist-refunds`).
    pub refunded_tickets: AtomicU64,
    /// The seats on public sale a few seconds after the first entry (they were before anyone
    /// waited; returns since are parked), and when that answer arrived (ms since the start).
    public: Mutex<Option<(u64, Vec<usize>)>>,
}

impl List {
    pub(super) fn new(db: PgPool, event: String, members: usize) -> Self {
        Self {
            db,
            event,
            open: AtomicBool::new(false),
            over: AtomicBool::new(false),
            sale_done: AtomicBool::new(false),
            joining: AtomicU64::new(members as u64),
            first_entry: AtomicU64::new(0),
            links: Mutex::new(HashMap::new()),
            refunded_tickets: AtomicU64::new(0),
            public: Mutex::new(None),
        }
    }

    /// When the first entry was acknowledged, in ms since the run's start.
    pub(super) fn first_entry_ms(&self) -> Option<u64> {
        self.first_entry.load(Ordering::Relaxed).checked_sub(1)
    }

    /// The seats on public sale just after the first entry, and when that was read.
    pub(super) fn public_at_first_entry(&self) -> Option<(u64, Vec<usize>)> {
        self.public.lock().ok().and_then(|p| p.clone())
    }
}

/// One member, from joining to an outcome (a key of the report's `waitlist.outcomes`).
pub(super) async fn member(ctx: Arc<Ctx>, list: Arc<List>, plan: ListPlan, n: usize) -> String {
    let joined = join(&ctx, &list, &plan, n).await;
    list.joining.fetch_sub(1, Ordering::Relaxed);
    let (email, cookie) = match joined {
        Ok(joined) => joined,
        Err(outcome) => return outcome,
    };
    let base = &ctx.base;
    // The mails, in order: a link whose offer ended (it came late) is passed over.
    let mut used = 0;
    loop {
        if ctx.out_of_time() {
            return "timed_out".into();
        }
        let token = list.links.lock().ok().and_then(|l| l.get(&email).and_then(|v| v.get(used).cloned()));
        let Some(token) = token else {
            if list.over.load(Ordering::Relaxed) {
                // Offered, but the link came after the offer had ended.
                return if used > 0 { "offer_ended" } else { "waiting_at_end" }.into();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        used += 1;
        let take = ctx
            .http
            .post(format!("{base}/waitlist/offer"))
            .header("cookie", &cookie)
            .json(&json!({ "token": token }));
        let Some(offer) = ctx.send(Step::Offer, take).await else { return "failed_offer".into() };
        match offer.status {
            200 => {}
            409 => continue,
            s if s >= 500 => return "failed_offer".into(),
            _ => return format!("refused_{}", reason(&offer.body)),
        }
        let hold_token = offer.body["hold_token"].as_str().unwrap_or_default().to_owned();
        tokio::time::sleep(plan.think).await;
        return match plan.fate {
            Fate::Abandon => "let_lapse".into(),
            Fate::Decline => {
                let no = ctx.http.post(format!("{base}/waitlist/decline")).header("cookie", &cookie);
                match ctx.send(Step::Decline, no).await {
                    Some(a) if a.status == 200 => "declined_offer".into(),
                    _ => "failed_decline".into(),
                }
            }
            Fate::Pay => outcome_key(&buy(&ctx, &hold_token, &email, Fate::Pay).await),
        };
    }
}

/// Joins the list once the sale is sold out: the address and the visitor cookie.
async fn join(ctx: &Ctx, list: &List, plan: &ListPlan, n: usize) -> Result<(String, String), String> {
    while !list.open.load(Ordering::Relaxed) {
        if ctx.out_of_time() || list.over.load(Ordering::Relaxed) {
            return Err("never_sold_out".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(plan.arrive_after).await;
    let email = format!("list-{n}-{}@sale.test", nonce().to_lowercase().replace(['-', '_'], "x"));
    let mut cookie: Option<String> = None;
    // "Not sold out" answers since the buyers were done: a seat nobody buys stays on sale.
    let mut unsold = 0;
    loop {
        if ctx.out_of_time() || list.over.load(Ordering::Relaxed) || unsold >= 5 {
            return Err("never_sold_out".into());
        }
        let (visitor, mut body) =
            solve_challenge(ctx, cookie.as_deref()).await.map_err(|o| outcome_key(&o))?;
        body["email"] = json!(email);
        body["seats"] = json!(true);
        body["quantity"] = json!(plan.tickets);
        let req = ctx.http.post(format!("{}/waitlist", ctx.base)).header("cookie", &visitor).json(&body);
        let Some(a) = ctx.send(Step::Waitlist, req).await else { return Err("failed_waitlist".into()) };
        cookie = Some(a.cookie.unwrap_or(visitor));
        match a.status {
            201 => {
                let at = u64::from(ctx.now_ms()) + 1;
                let _ = list.first_entry.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
                return Ok((email, cookie.unwrap_or_default()));
            }
            // A seat came back to public sale before anyone waited: buyers take it first.
            409 if reason(&a.body) == "not-sold-out" => {
                unsold += u32::from(list.sale_done.load(Ordering::Relaxed));
                tokio::time::sleep(Duration::from_secs(2)).await
            }
            s if s >= 500 => return Err("failed_waitlist".into()),
            _ => return Err(format!("refused_{}", reason(&a.body))),
        }
    }
}

/// An outcome's key in the report (`paid`, `declined`, `failed_checkout`, …).
fn outcome_key(o: &Outcome) -> String {
    match o {
        Outcome::Failed(step) => format!("failed_{step}"),
        Outcome::Refused(r) => format!("refused_{r}"),
        other => {
            serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
    }
}

/// The token of an offer mail's link (`…/events/{e}/offer#<token>`).
fn offer_token(text: &str) -> Option<String> {
    let start = text.find("/offer#")? + "/offer#".len();
    let token: String = text[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
    (!token.is_empty()).then_some(token)
}

/// Reads the offer mails the core queued for the event, every second.
pub(super) async fn read_mail(list: Arc<List>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rows: Result<Vec<(String, String)>, _> = sqlx::query_as(
            "SELECT recipient, text_body FROM notifications WHERE kind = 'waitlist_offer' AND event_id = $1::uuid
             ORDER BY created_at, id",
        )
        .bind(&list.event)
        .fetch_all(&list.db)
        .await;
        let Ok(rows) = rows else { continue };
        let mut links: HashMap<String, Vec<String>> = HashMap::new();
        for (to, text) in rows {
            if let Some(token) = offer_token(&text) {
                links.entry(to).or_default().push(token);
            }
        }
        if let Ok(mut l) = list.links.lock() {
            *l = links;
        }
    }
}

/// How long after the first entry the seats on public sale are read: past the edge's
/// availability cache (1 s, renewed up to 2 s late), so that the answer is newer than the entry.
const PUBLIC_READ_AFTER_MS: u64 = 4_000;

/// Opens the list to the members once the sale is sold out; then has the organizer refund
/// `refunds` paid orders once someone waits; then says when nothing more will be offered.
pub(super) async fn watch(
    ctx: Arc<Ctx>,
    list: Arc<List>,
    signer: TokenSigner,
    admin_key: String,
    refunds: u64,
) {
    let (edge, event) = (ctx.edge.clone(), list.event.clone());
    // Seconds the buyers have been done without the sale selling out (then it never will).
    let mut unsold = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if list.sale_done.load(Ordering::Relaxed) {
            unsold += 1;
            if unsold > 30 {
                list.over.store(true, Ordering::Relaxed);
                return;
            }
        }
        let Some(a) = ctx.send(Step::Availability, ctx.http.get(format!("{}/availability", ctx.base))).await
        else {
            continue;
        };
        let seats = a.body["seats"].as_str().unwrap_or_default();
        if !seats.is_empty() && !seats.contains('a') {
            list.open.store(true, Ordering::Relaxed);
            break;
        }
    }
    let first = loop {
        match list.first_entry_ms() {
            Some(first) => break first,
            None if list.over.load(Ordering::Relaxed) => return,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    // What is on public sale once the edge's availability (cached up to 3 s) is newer than the
    // first entry: seats that came back before anyone waited, which buyers may still take.
    let wait = (first + PUBLIC_READ_AFTER_MS).saturating_sub(u64::from(ctx.now_ms()));
    tokio::time::sleep(Duration::from_millis(wait)).await;
    if let Some(a) = ctx.send(Step::Availability, ctx.http.get(format!("{}/availability", ctx.base))).await {
        let seats = a.body["seats"].as_str().unwrap_or_default();
        let public = seats.bytes().enumerate().filter(|(_, c)| *c == b'a').map(|(i, _)| i).collect();
        if let Ok(mut p) = list.public.lock() {
            *p = Some((u64::from(ctx.now_ms()), public));
        }
    }
    // The organizer's refunds, once everyone has joined (or given up): their seats are offered.
    while list.joining.load(Ordering::Relaxed) > 0 && !ctx.out_of_time() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refund(&ctx, &list, &admin_key, refunds).await;
    let mut quiet = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = !list.sale_done.load(Ordering::Relaxed) || list.joining.load(Ordering::Relaxed) > 0;
        if busy || !settled(&ctx.http, &signer, &edge, &list.db, &event).await.unwrap_or(false) {
            quiet = 0;
            continue;
        }
        quiet += 1;
        if quiet >= 5 {
            list.over.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Whether nothing more can be offered now: no order unfinished, no offer standing, no buyer's or
/// offer's hold live, and all that is held at the edge is what the list keeps parked.
async fn settled(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    db: &PgPool,
    event: &str,
) -> Result<bool, String> {
    let unfinished: i64 = sqlx::query_scalar(crate::audit::UNFINISHED)
        .bind(event)
        .fetch_one(db)
        .await
        .map_err(|e| e.to_string())?;
    let (_, stats) = core_call(http, signer, edge, event, &InternalRoute::Stats, vec![]).await?;
    let (_, summary) = core_call(http, signer, edge, event, &InternalRoute::Waitlist, vec![]).await?;
    let held = stats["totals"]["held"].as_u64().unwrap_or(u64::MAX);
    let live = stats["stats"]["live_holds"].as_u64().unwrap_or(u64::MAX);
    let free: u64 = summary["free"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let out = summary["offers_out"].as_u64().unwrap_or(u64::MAX);
    Ok(unfinished == 0 && out == 0 && live == 0 && held == free)
}

/// The organizer refunds `n` paid orders of the sale (not the list's own) that their buyers saw
/// paid, seats back on sale: to the list, since people wait on it.
async fn refund(ctx: &Ctx, list: &List, admin_key: &str, n: u64) {
    if n == 0 {
        return;
    }
    // Orders the buyers saw paid (so that what they counted sold includes what is refunded).
    let seen: Vec<String> = ctx.paid_orders.lock().map(|p| p.clone()).unwrap_or_default();
    let orders: Vec<(String, i64)> = sqlx::query_as(
        "SELECT o.id::text, (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state <> 'void')
         FROM orders o WHERE o.event_id = $1::uuid AND o.id::text = ANY($3) AND o.state = 'paid'
           AND o.hold_id NOT LIKE 'h%-w%'
         ORDER BY o.created_at LIMIT $2",
    )
    .bind(&list.event)
    .bind(n as i64)
    .bind(&seen)
    .fetch_all(&list.db)
    .await
    .unwrap_or_default();
    for (id, tickets) in orders {
        let req = ctx
            .http
            .post(format!("{}/api/v1/orders/{id}/refund", ctx.core))
            .bearer_auth(admin_key)
            .json(&json!({ "seats": "return" }));
        if ctx.send(Step::Refund, req).await.is_some_and(|a| a.status == 202) {
            list.refunded_tickets.fetch_add(tickets as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::offer_token;

    #[test]
    fn the_token_is_read_from_the_mails_link() {
        let text = "Pay by 20:00:\nhttps://shop.test/events/e1/offer#eyJh.eyJi.c2ln\n\nThanks";
        assert_eq!(offer_token(text).as_deref(), Some("eyJh.eyJi.c2ln"));
        assert_eq!(offer_token("no link here"), None);
    }
}
