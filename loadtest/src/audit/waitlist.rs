//! The waiting list's audit (a sale run with `--waitlist`): the list's own records replayed by an
//! independent reading of them (JSON, not the list's code), checked against the orders in the
//! core's database and against the buyers' holds.
//!
//! 1. `waitlist_offers_in_order`: every offer went to a waiting entry, and no entry that joined
//!    before it, still waiting, asked for no more places of a pool the offer's serve than were
//!    free (it would have been served first: the order of joining, with the documented fit rule);
//!    and at the end no waiting entry could be served by the places left (none was forgotten; the
//!    set-aside for a head passed over `MAX_PASSES` times is allowed for). Not checked: that the
//!    set-aside was kept while offers were made (a weaker order check in that case);
//! 2. `waitlist_never_offered_more_than_came_back`: an offer's places were free on the list when it
//!    was made (no place in two offers at once);
//! 3. `waitlist_released_only_when_unwanted`: places went back to public sale only while nobody
//!    waiting could be served by them (or once the list was closed);
//! 4. `waitlist_places_accounted`: every place that came back was claimed, released, taken, or is
//!    still parked or offered;
//! 5. `waitlist_claims_are_paid_orders`: the entries that claimed an offer are exactly those with a
//!    paid order on their offer's hold, with one ticket per place offered (a payment that came
//!    after its offer had lapsed is counted apart: the inventory gives it its places back);
//! 6. `returned_seats_went_to_the_list`: from the first entry until the list gave anything back
//!    (a release, or nobody left on it), no buyer outside the list held a seat that was not
//!    already on public sale before anyone waited (read a few seconds after the first entry,
//!    once the edge's cached availability is newer than it; holds sent before that answer are
//!    not judged): every seat that came back went through the list.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use shared_types::internal_api::InternalRoute;
use shared_types::token::TokenSigner;
use sqlx::PgPool;

use super::Check;
use crate::edge::core_request;

/// What the load generator saw that the audit needs (times in ms since the Unix epoch).
pub struct Observed {
    /// When the first entry was acknowledged.
    pub first_entry_ms: Option<i64>,
    /// When the seats on public sale were read after it, and those seats (indexes in the seat
    /// map's order): on sale since before anyone waited.
    pub public_after_ms: Option<i64>,
    pub public: BTreeSet<usize>,
    /// Each buyer's hold: when its request was sent, and its seats.
    pub holds: Vec<(i64, Vec<usize>)>,
}

/// Every record of the event's list, in order (paged through the signed internal route).
async fn records(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    event: &str,
) -> Result<Vec<Value>, String> {
    let mut all = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let query = after.map_or("?limit=5000".to_owned(), |a| format!("?after={a}&limit=5000"));
        let path = format!("{}{query}", InternalRoute::WaitlistRecords.path(event));
        let (status, page) = core_request(http, signer, edge, "GET", &path, vec![]).await?;
        if status != 200 {
            return Err(format!("the list's records: {status} {page}"));
        }
        all.extend(page["records"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_u64() {
            Some(n) => after = Some(n),
            None => return Ok(all),
        }
    }
}

/// A pool as the records name it (`{"kind": "seats"}`, `{"kind": "shard", "of": 2}`, …).
fn pool_key(pool: &Value) -> String {
    match &pool["of"] {
        Value::Null => pool["kind"].as_str().unwrap_or("?").to_owned(),
        of => format!(
            "{}:{}",
            pool["kind"].as_str().unwrap_or("?"),
            of.as_str().map_or(of.to_string(), str::to_owned)
        ),
    }
}

/// Whether places of `place` serve a request for `want` (`None`: anything).
fn serves(place: &str, want: Option<&str>) -> bool {
    match want {
        None => true,
        Some("seats") => place == "seats" || place.starts_with("shard:"),
        Some(w) => w == place,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting,
    Offered { pool: String },
    Done,
}

struct Entry {
    want: Option<String>,
    quantity: u64,
    state: State,
    /// Offers made from a pool it wants to someone behind it.
    passes: u32,
}

/// The list's `MAX_PASSES` (`durable-objects/src/waitlist/list.rs`): after that many, places are
/// set aside for the first waiting entry.
const MAX_PASSES: u32 = 3;

/// What the replay found: the violations of each rule, and the figures.
#[derive(Default)]
struct Replay {
    out_of_order: Vec<String>,
    over_offered: Vec<String>,
    released_while_wanted: Vec<String>,
    returned: u64,
    offered: u64,
    claimed_places: u64,
    released: u64,
    taken: u64,
    left: u64,
    claimed: BTreeMap<u64, u64>,
    /// Entries whose offer lapsed.
    lapsed: BTreeSet<u64>,
    /// When the list first gave places back (released them, or nobody was left on it).
    first_release_ms: Option<i64>,
    counts: BTreeMap<String, u64>,
}

fn replay(records: &[Value]) -> Replay {
    let mut r = Replay::default();
    let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut free: BTreeMap<String, u64> = BTreeMap::new();
    let mut closed = false;
    for rec in records {
        let kind = rec["type"].as_str().unwrap_or_default();
        *r.counts.entry(kind.to_owned()).or_default() += 1;
        let number = rec["number"].as_u64().unwrap_or(0);
        match kind {
            "joined" => {
                let e = &rec["entry"];
                let want = (!e["pool"].is_null()).then(|| pool_key(&e["pool"]));
                let entry = Entry {
                    want,
                    quantity: e["quantity"].as_u64().unwrap_or(0),
                    state: State::Waiting,
                    passes: 0,
                };
                entries.insert(e["number"].as_u64().unwrap_or(0), entry);
            }
            "returned" => {
                let q = rec["quantity"].as_u64().unwrap_or(0);
                *free.entry(pool_key(&rec["pool"])).or_default() += q;
                r.returned += q;
            }
            "offered" => {
                let o = &rec["offer"];
                let (n, q, pool) = (
                    o["number"].as_u64().unwrap_or(0),
                    o["quantity"].as_u64().unwrap_or(0),
                    pool_key(&o["pool"]),
                );
                let was = free.entry(pool.clone()).or_default();
                let ahead: Vec<u64> = entries
                    .range(..n)
                    .filter(|(_, e)| {
                        e.state == State::Waiting && e.quantity <= *was && serves(&pool, e.want.as_deref())
                    })
                    .map(|(k, _)| *k)
                    .collect();
                if !ahead.is_empty() {
                    r.out_of_order.push(format!(
                        "entry {n} offered {q} of {pool} while {ahead:?}, ahead, fitted the {was} free"
                    ));
                }
                for (_, e) in entries.range_mut(..n) {
                    if e.state == State::Waiting && serves(&pool, e.want.as_deref()) {
                        e.passes += 1;
                    }
                }
                let was = free.entry(pool.clone()).or_default();
                if *was < q {
                    r.over_offered.push(format!("entry {n} offered {q} of {pool} when {was} were free"));
                }
                *was = was.saturating_sub(q);
                r.offered += 1;
                match entries.get_mut(&n) {
                    Some(e) if e.state == State::Waiting => e.state = State::Offered { pool },
                    _ => r.out_of_order.push(format!("entry {n} offered while not waiting")),
                }
            }
            "ended" | "claimed" | "withdrawn" => {
                let Some(e) = entries.get_mut(&number) else { continue };
                if kind == "ended" && rec["state"]["state"] == "lapsed" {
                    r.lapsed.insert(number);
                }
                if let State::Offered { pool } = &e.state {
                    if kind == "claimed" {
                        r.claimed_places += e.quantity;
                        r.claimed.insert(number, e.quantity);
                    } else {
                        *free.entry(pool.clone()).or_default() += e.quantity;
                    }
                }
                e.state = if kind == "withdrawn" { State::Waiting } else { State::Done };
            }
            "taken" | "released" => {
                let (pool, q) = (pool_key(&rec["pool"]), rec["quantity"].as_u64().unwrap_or(0));
                if kind == "released" {
                    let wanted: Vec<u64> = entries
                        .iter()
                        .filter(|(_, e)| {
                            e.state == State::Waiting && e.quantity <= q && serves(&pool, e.want.as_deref())
                        })
                        .map(|(k, _)| *k)
                        .collect();
                    if !closed && !wanted.is_empty() {
                        r.released_while_wanted
                            .push(format!("{q} of {pool} released while {wanted:?} waited"));
                    }
                    r.released += q;
                    r.first_release_ms = r.first_release_ms.or(rec["at"].as_i64());
                } else {
                    r.taken += q;
                }
                let n = free.entry(pool).or_default();
                *n = n.saturating_sub(q);
            }
            "closed" => closed = true,
            _ => {}
        }
        // Nobody left on the list (after someone was): parking stops, what comes back is public.
        let live = entries.values().any(|e| e.state != State::Done);
        if !entries.is_empty() && !live && r.first_release_ms.is_none() {
            r.first_release_ms = rec["at"].as_i64();
        }
    }
    // At the end, nobody waiting could be served by the places left free: the first waiting
    // entry, and (unless places are set aside for it) everyone behind it.
    let fits = |e: &Entry| free.iter().any(|(p, n)| *n >= e.quantity && serves(p, e.want.as_deref()));
    let waiting: Vec<(&u64, &Entry)> = entries.iter().filter(|(_, e)| e.state == State::Waiting).collect();
    let set_aside = waiting.first().is_some_and(|(_, head)| head.passes >= MAX_PASSES);
    for (i, (n, e)) in waiting.iter().enumerate() {
        if (i == 0 || !set_aside) && fits(e) {
            r.out_of_order.push(format!("entry {n} still waits for {} while {free:?} are free", e.quantity));
        }
    }
    let standing: u64 =
        entries.values().filter(|e| matches!(e.state, State::Offered { .. })).map(|e| e.quantity).sum();
    r.left = free.values().sum::<u64>() + standing;
    r
}

/// The offers' orders in the core: entry number → (state, live tickets).
async fn offer_orders(db: &PgPool, event: &str) -> Result<BTreeMap<u64, (String, i64)>, String> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT o.hold_id, o.state, (SELECT count(*) FROM tickets t WHERE t.order_id = o.id AND t.state <> 'void')
         FROM orders o WHERE o.event_id = $1::uuid AND o.hold_id LIKE 'h%-w%'",
    )
    .bind(event)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .filter_map(|(hold, state, tickets)| {
            let n = hold.split_once("-w")?.1.parse().ok()?;
            Some((n, (state, tickets)))
        })
        .collect())
}

/// The buyers' holds judged (sent after the seats on public sale were read, before the list gave
/// anything back at `released`), and those that took a seat not on public sale before anyone
/// waited: a seat that came back while people waited, which should have gone to the list.
fn leaks(seen: &Observed, released: Option<i64>) -> (usize, Vec<String>) {
    let until = released.unwrap_or(i64::MAX);
    match (seen.first_entry_ms, seen.public_after_ms) {
        (Some(_), Some(from)) => {
            let judged: Vec<&(i64, Vec<usize>)> =
                seen.holds.iter().filter(|(t, _)| *t > from && *t < until).collect();
            let leaks: Vec<String> = judged
                .iter()
                .filter_map(|(t, seats)| {
                    let parked: Vec<&usize> = seats.iter().filter(|s| !seen.public.contains(s)).collect();
                    (!parked.is_empty())
                        .then(|| format!("seats {parked:?} held at {t} by a buyer outside the list"))
                })
                .collect();
            (judged.len(), leaks)
        }
        (Some(_), None) => {
            (0, vec!["the seats on public sale after the first entry were never read".to_owned()])
        }
        (None, _) => (0, Vec::new()),
    }
}

/// The checks, and the list's figures for the report. The list records a claim in the round after
/// the payment: the records are read again (for up to 20 s) until the claims have caught up.
pub async fn audit(
    http: &reqwest::Client,
    signer: &TokenSigner,
    edge: &str,
    db: &PgPool,
    event: &str,
    seen: &Observed,
) -> Result<(Vec<Check>, Value), String> {
    let mut tries = 0;
    let (r, orders, paid) = loop {
        let r = replay(&records(http, signer, edge, event).await?);
        let orders = offer_orders(db, event).await?;
        let paid: BTreeMap<u64, i64> =
            orders.iter().filter(|(_, (s, _))| s == "paid").map(|(n, (_, t))| (*n, *t)).collect();
        tries += 1;
        let caught_up = paid.keys().all(|n| r.claimed.contains_key(n) || r.lapsed.contains(n));
        if (caught_up && r.claimed.keys().all(|n| paid.contains_key(n))) || tries >= 20 {
            break (r, orders, paid);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut checks = Vec::new();
    let mut check = |name: &'static str, problems: &[String], ok_detail: String| {
        let detail = if problems.is_empty() {
            ok_detail
        } else {
            problems.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
        };
        checks.push(Check { name, ok: problems.is_empty(), detail });
    };
    check(
        "waitlist_offers_in_order",
        &r.out_of_order,
        format!("{} offers, each to the first waiting entry it served", r.offered),
    );
    check(
        "waitlist_never_offered_more_than_came_back",
        &r.over_offered,
        format!("{} places came back", r.returned),
    );
    check(
        "waitlist_released_only_when_unwanted",
        &r.released_while_wanted,
        format!("{} places released", r.released),
    );
    let accounted = r.claimed_places + r.released + r.taken + r.left;
    let unaccounted = if accounted == r.returned {
        Vec::new()
    } else {
        vec![format!("{} came back; {accounted} accounted for", r.returned)]
    };
    check(
        "waitlist_places_accounted",
        &unaccounted,
        format!(
            "{} came back: {} claimed, {} released, {} taken, {} still parked or offered",
            r.returned, r.claimed_places, r.released, r.taken, r.left
        ),
    );
    let mut claim_problems = Vec::new();
    let claimed: BTreeSet<u64> = r.claimed.keys().copied().collect();
    // A payment after its offer lapsed (checkout had extended the hold): the inventory gives it
    // its places back, and the list records them taken, not claimed.
    let late: BTreeSet<u64> =
        paid.keys().filter(|n| !claimed.contains(n) && r.lapsed.contains(n)).copied().collect();
    let paid_set: BTreeSet<u64> = paid.keys().filter(|n| !late.contains(n)).copied().collect();
    if claimed != paid_set {
        claim_problems.push(format!(
            "claimed without a paid order: {:?}; paid orders not claimed: {:?}",
            claimed.difference(&paid_set).collect::<Vec<_>>(),
            paid_set.difference(&claimed).collect::<Vec<_>>()
        ));
    }
    for (n, quantity) in &r.claimed {
        if let Some(tickets) = paid.get(n).filter(|t| **t != *quantity as i64) {
            claim_problems
                .push(format!("entry {n} offered {quantity} places, its order has {tickets} tickets"));
        }
    }
    let tickets: i64 = paid.values().sum();
    check(
        "waitlist_claims_are_paid_orders",
        &claim_problems,
        format!("{} claims, {tickets} tickets", claimed.len()),
    );
    let (judged, leaks) = leaks(seen, r.first_release_ms);
    check(
        "returned_seats_went_to_the_list",
        &leaks,
        match seen.first_entry_ms {
            Some(_) => format!(
                "{judged} holds outside the list while people waited, each on a seat on public sale before anyone waited ({} such seats)",
                seen.public.len()
            ),
            None => "nobody joined the list".to_owned(),
        },
    );
    let by_state = orders.values().fold(BTreeMap::<String, u64>::new(), |mut m, (s, _)| {
        *m.entry(s.clone()).or_default() += 1;
        m
    });
    let figures = json!({
        "records": r.counts,
        "places": { "returned": r.returned, "claimed": r.claimed_places, "released": r.released, "taken": r.taken, "left": r.left },
        "offers": r.offered,
        "tickets_sold_through_the_list": tickets,
        "paid_after_the_offer_lapsed": late.len(),
        "offer_orders_by_state": by_state,
    });
    Ok((checks, figures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(n: u64, quantity: u64) -> Value {
        json!({ "type": "joined", "entry": { "number": n, "pool": { "kind": "seats" }, "quantity": quantity } })
    }
    fn returned(q: u64) -> Value {
        json!({ "type": "returned", "pool": { "kind": "seats" }, "quantity": q, "at": 1 })
    }
    fn offered(n: u64, q: u64) -> Value {
        json!({ "type": "offered", "offer": { "number": n, "pool": { "kind": "seats" }, "quantity": q }, "at": 2 })
    }

    #[test]
    fn a_fair_history_passes() {
        let r = replay(&[
            joined(1, 2),
            joined(2, 1),
            returned(1),
            // Entry 1 wants two: one place goes to entry 2 (the fit rule).
            offered(2, 1),
            json!({ "type": "claimed", "number": 2, "at": 3 }),
            returned(2),
            offered(1, 2),
            json!({ "type": "ended", "number": 1, "state": { "state": "declined" }, "at": 4 }),
            json!({ "type": "released", "pool": { "kind": "seats" }, "quantity": 2, "at": 5 }),
        ]);
        assert!(r.out_of_order.is_empty() && r.over_offered.is_empty() && r.released_while_wanted.is_empty());
        assert_eq!((r.returned, r.claimed_places, r.released, r.left), (3, 1, 2, 0));
    }

    #[test]
    fn each_rule_broken_is_found() {
        let r = replay(&[
            joined(1, 1),
            joined(2, 1),
            returned(1),
            offered(2, 1),
            offered(1, 1),
            json!({ "type": "released", "pool": { "kind": "seats" }, "quantity": 1, "at": 5 }),
        ]);
        assert_eq!(r.out_of_order.len(), 1, "entry 2 went before entry 1");
        assert_eq!(r.over_offered.len(), 1, "one place offered twice");
        assert!(r.released_while_wanted.is_empty(), "nobody waits any more");
        let r = replay(&[
            joined(1, 1),
            returned(1),
            json!({ "type": "released", "pool": { "kind": "seats" }, "quantity": 1, "at": 5 }),
        ]);
        assert_eq!(r.released_while_wanted.len(), 1);
        // Five places free: entry 1 (three) fitted, so one place for entry 2 went past it.
        let r = replay(&[joined(1, 3), joined(2, 1), returned(5), offered(2, 1)]);
        assert_eq!(r.out_of_order.len(), 2, "passed over, then forgotten at the end: {:?}", r.out_of_order);
        // A place left free while someone it serves waits: never offered.
        let r = replay(&[joined(1, 1), returned(1)]);
        assert_eq!(r.out_of_order.len(), 1, "{:?}", r.out_of_order);
    }

    #[test]
    fn a_buyer_taking_a_seat_that_came_back_while_people_waited_is_a_leak() {
        let seen = Observed {
            first_entry_ms: Some(1_000),
            public_after_ms: Some(5_000),
            public: [7].into_iter().collect(),
            // Before the read (not judged), on a seat public before the list (fine), on a seat
            // that came back (a leak), and after the list released places (not judged).
            holds: vec![(4_000, vec![3]), (6_000, vec![7]), (7_000, vec![7, 9]), (12_000, vec![4])],
        };
        let (judged, leaks) = leaks(&seen, Some(10_000));
        assert_eq!(judged, 2);
        assert_eq!(leaks, ["seats [9] held at 7000 by a buyer outside the list"]);
        assert_eq!(
            super::leaks(&Observed { public_after_ms: None, ..seen }, None).1.len(),
            1,
            "unread is a failure"
        );
    }

    #[test]
    fn places_set_aside_for_a_head_passed_over_often_are_not_forgotten() {
        // Entry 1 wants 3; single places went to entries 2, 3 and 4 behind it: it was passed over
        // three times, so the two places now free are set aside for it (entry 5 waits too).
        let mut history = vec![joined(1, 3), joined(2, 1), joined(3, 1), joined(4, 1), joined(5, 1)];
        for n in 2..=4 {
            history.push(returned(1));
            history.push(offered(n, 1));
        }
        history.push(returned(2));
        let r = replay(&history);
        assert!(r.out_of_order.is_empty(), "{:?}", r.out_of_order);
        // The list going back to public sale once nobody is left on it.
        let r = replay(&[
            joined(1, 1),
            returned(1),
            offered(1, 1),
            json!({ "type": "claimed", "number": 1, "at": 9 }),
        ]);
        assert_eq!(r.first_release_ms, Some(9));
    }
}
