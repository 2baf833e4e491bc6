//! `QueueShard`: one shard of an event's line. It hands out places (one per visitor: a visitor
//! always lands in the same shard, so a returning visitor finds their place), records admissions
//! the coordinator decides, exchanges an admitted place for an admission session exactly once,
//! and counts sessions that end, which the coordinator reads at each sync.
//!
//! Places live in the object's SQLite storage, never in memory: a shard holding 250,000 places
//! keeps a heap of a few counters. Each join is one insert; each admission one update.
//!
//! Reachable only through the edge Worker (which says who calls in `x-caller`) and the
//! coordinator.

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};
use shared_types::ids::{EventId, VisitorId};
use shared_types::waiting_room::{hex32, prequeue_seq, Phase, QueueMode, WaitingRoomSettings};
use shared_types::{Problem, ProblemType};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, SqlStorageValue, State};

use super::coordinator::{Millis, ShardReport, SyncRequest};
use crate::http;
use crate::inventory::Caller;
use crate::stub::{call, COORDINATOR_BINDING};

/// The Durable Object name of shard `index` of `event`'s line.
pub fn shard_name(event: &EventId, index: u16) -> String {
    format!("{event}#q{index}")
}

/// Body of `POST /join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub event: EventId,
    pub shard: u16,
    pub visitor: VisitorId,
    /// The settings the edge holds (the shard keeps the newest version it has seen).
    pub settings: WaitingRoomSettings,
    /// The proof-of-work challenge spent on this join: its id and expiry (single use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<(String, Millis)>,
}

/// The answer to a join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub n: u64,
    pub pre: bool,
    /// The visitor already had this place.
    pub returning: bool,
    pub joined_ms: Millis,
}

/// Body of `POST /exchange` and `POST /leave`: the place a ticket names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceRef {
    pub visitor: VisitorId,
    pub pre: bool,
    pub n: u64,
}

/// A session granted by an exchange: the edge signs it into an admission token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub jti: String,
    pub started_ms: Millis,
    pub ends_ms: Millis,
    pub max_tickets: u32,
}

/// Body of `POST /session`: is the session an admission token names still open?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionCheck {
    pub visitor: VisitorId,
    pub pre: bool,
    pub n: u64,
    pub jti: String,
}

/// Body of `POST /sessions/end` (from the core: the buyer has bought).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndSession {
    pub visitor: VisitorId,
}

/// The shard's tables, created in one statement batch (one call into the runtime).
const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS places (id INTEGER PRIMARY KEY, visitor TEXT NOT NULL,
    pre INTEGER NOT NULL, n INTEGER NOT NULL, joined_ms INTEGER NOT NULL,
    admitted_ms INTEGER, exchanged_ms INTEGER, session_end_ms INTEGER, jti TEXT, left_ms INTEGER, closed_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1, attempt_window_ms INTEGER NOT NULL, challenge TEXT, UNIQUE (pre, n));
-- One open place per visitor; a visitor who left or whose session ended may join again.
CREATE UNIQUE INDEX IF NOT EXISTS open_place ON places (visitor) WHERE left_ms IS NULL AND closed_ms IS NULL;
-- Admitted and not yet ended: the sessions the sync closes when they time out.
CREATE INDEX IF NOT EXISTS open_sessions ON places (admitted_ms) WHERE admitted_ms IS NOT NULL AND closed_ms IS NULL;
-- Proofs of work already spent: a new place's in its row (so a join is one write), a returning
-- visitor's here.
CREATE TABLE IF NOT EXISTS challenges (jti TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
";

/// What a table stored by an earlier release lacks, added once (after [`SCHEMA`]), and the index
/// on it.
const UPGRADE: &str = "ALTER TABLE places ADD COLUMN challenge TEXT;";
const CHALLENGE_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS place_challenge ON places (challenge) WHERE challenge IS NOT NULL;";

/// The shard's small state (places are rows, not here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    event: Option<EventId>,
    shard: u16,
    settings: Option<WaitingRoomSettings>,
    phase: Option<Phase>,
    prequeue_final: bool,
    admitted_through: u64,
    seed: Option<String>,
    ended: u64,
    awake_until_ms: Millis,
}

/// One place, as stored.
#[derive(Debug, Deserialize)]
struct Row {
    visitor: String,
    pre: i64,
    n: i64,
    joined_ms: i64,
    admitted_ms: Option<i64>,
    exchanged_ms: Option<i64>,
    session_end_ms: Option<i64>,
    jti: Option<String>,
    left_ms: Option<i64>,
    closed_ms: Option<i64>,
    attempts: i64,
    attempt_window_ms: i64,
}

const ROW_COLUMNS: &str =
    "visitor, pre, n, joined_ms, admitted_ms, exchanged_ms, left_ms, closed_ms, attempts, attempt_window_ms";

#[derive(Deserialize)]
struct OpenSession {
    jti: Option<String>,
    session_end_ms: Option<i64>,
    closed_ms: Option<i64>,
}

#[derive(Deserialize)]
struct Count {
    c: i64,
}

#[derive(Deserialize)]
struct MaxN {
    pre: i64,
    n: i64,
}

#[derive(Deserialize)]
struct BucketRow {
    sec: i64,
    last: i64,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[durable_object]
pub struct QueueShard {
    state: State,
    env: Env,
    meta: RefCell<Meta>,
    /// Join numbers handed out so far: (pre-queue, after).
    counts: Cell<(u64, u64)>,
    loaded: Cell<bool>,
    /// Requests taken since this instance started, by route (for the benchmarks).
    requests: RefCell<std::collections::BTreeMap<&'static str, u64>>,
    /// Write statements since this instance started (`storage_writes` in its stats).
    writes: Cell<u64>,
}

fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::from(v as i64)
}

fn pow_reused(path: &str) -> Result<Response> {
    refusal(ProblemType::BotCheckFailed, "this proof of work was already used", "pow-reused", path)
}

fn refusal(kind: ProblemType, detail: &str, reason: &str, path: &str) -> Result<Response> {
    http::problem(&Problem::new(kind, detail).with_instance(path).with_extension("reason", reason.into()))
}

impl QueueShard {
    fn sql(&self) -> worker::SqlStorage {
        self.state.storage().sql()
    }

    fn ensure_loaded(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let sql = self.sql();
        sql.exec(SCHEMA, None)?;
        if !sql.exec("SELECT * FROM places LIMIT 0", None)?.column_names().iter().any(|c| c == "challenge") {
            sql.exec(UPGRADE, None)?;
        }
        sql.exec(CHALLENGE_INDEX, None)?;
        let meta: Vec<Body> = sql.exec("SELECT body FROM meta WHERE key = 'shard'", None)?.to_array()?;
        let meta = match meta.first() {
            Some(b) => serde_json::from_str(&b.body)?,
            None => Meta::default(),
        };
        let maxes: Vec<MaxN> =
            sql.exec("SELECT pre, MAX(n) AS n FROM places GROUP BY pre", None)?.to_array()?;
        let mut counts = (0, 0);
        for m in maxes {
            if m.pre == 1 {
                counts.0 = m.n as u64;
            } else {
                counts.1 = m.n as u64;
            }
        }
        *self.meta.borrow_mut() = meta;
        self.counts.set(counts);
        self.loaded.set(true);
        Ok(())
    }

    /// Runs a statement that writes, counted in `storage_writes` (the benchmarks divide it by the
    /// joins; a test holds a new join to one).
    fn write(&self, sql: &worker::SqlStorage, query: &str, params: Vec<SqlStorageValue>) -> Result<()> {
        sql.exec(query, params)?;
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    fn save_meta(&self) -> Result<()> {
        let body = serde_json::to_string(&*self.meta.borrow())?;
        self.write(
            &self.sql(),
            "INSERT OR REPLACE INTO meta (key, body) VALUES ('shard', ?)",
            vec![body.into()],
        )?;
        Ok(())
    }

    /// Adopts settings if they are newer than the ones held (and learns who this shard is).
    fn adopt(&self, event: &EventId, shard: u16, settings: &WaitingRoomSettings) -> Result<()> {
        let changed = {
            let mut meta = self.meta.borrow_mut();
            let newer = meta.settings.as_ref().is_none_or(|s| settings.version > s.version);
            if newer {
                meta.settings = Some(settings.clone());
            }
            let first = meta.event.is_none();
            if first {
                meta.event = Some(event.clone());
                meta.shard = shard;
            }
            newer || first
        };
        if changed {
            self.save_meta()?;
        }
        Ok(())
    }

    /// Whether a proof of work was spent already: by a place (its row) or a returning visitor.
    fn challenge_spent(&self, sql: &worker::SqlStorage, jti: &str) -> Result<bool> {
        let seen: Vec<Count> = sql
            .exec(
                "SELECT (SELECT COUNT(*) FROM places WHERE challenge = ?1)
                      + (SELECT COUNT(*) FROM challenges WHERE jti = ?1) AS c",
                vec![jti.into()],
            )?
            .to_array()?;
        Ok(seen.first().is_some_and(|c| c.c > 0))
    }

    fn find_open(&self, visitor: &VisitorId) -> Result<Option<Row>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM places WHERE visitor = ? AND left_ms IS NULL AND closed_ms IS NULL"
                ),
                vec![visitor.as_str().into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next())
    }

    fn find(&self, place: &PlaceRef) -> Result<Option<Row>> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!("SELECT {ROW_COLUMNS} FROM places WHERE pre = ? AND n = ?"),
                vec![SqlStorageValue::from(i64::from(place.pre)), int(place.n)],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().filter(|r| r.visitor == place.visitor.as_str()))
    }

    async fn join(&self, body: JoinRequest, path: &str) -> Result<Response> {
        self.adopt(&body.event, body.shard, &body.settings)?;
        let now = crate::now_ms();
        let (settings, phase, prequeue_final) = {
            let meta = self.meta.borrow();
            (meta.settings.clone().unwrap_or_default(), meta.phase, meta.prequeue_final)
        };
        if settings.mode == QueueMode::Closed || matches!(phase, Some(Phase::SoldOut | Phase::Closed)) {
            return refusal(ProblemType::Conflict, "this line is closed", "closed", path);
        }
        let sql = self.sql();
        if let Some(row) = self.find_open(&body.visitor)? {
            // A returning visitor keeps their place; joining again is rate limited all the same,
            // and its proof of work is spent like any other.
            if let Some((jti, expires_ms)) = &body.challenge {
                if self.challenge_spent(&sql, jti)? {
                    return pow_reused(path);
                }
                self.write(
                    &sql,
                    "INSERT INTO challenges (jti, expires_ms) VALUES (?, ?)",
                    vec![jti.as_str().into(), SqlStorageValue::from(*expires_ms)],
                )?;
            }
            let window_open = now - row.attempt_window_ms < 60_000;
            let attempts = if window_open { row.attempts + 1 } else { 1 };
            if window_open && attempts > i64::from(settings.rate_limits.joins_per_visitor_per_minute) {
                return refusal(
                    ProblemType::RateLimited,
                    "too many joins from this visitor",
                    "visitor-rate",
                    path,
                );
            }
            self.write(
                &sql,
                "UPDATE places SET attempts = ?, attempt_window_ms = ? WHERE pre = ? AND n = ?",
                vec![
                    SqlStorageValue::from(attempts),
                    SqlStorageValue::from(if window_open { row.attempt_window_ms } else { now }),
                    SqlStorageValue::from(row.pre),
                    SqlStorageValue::from(row.n),
                ],
            )?;
            return http::json(
                200,
                &Joined { n: row.n as u64, pre: row.pre == 1, returning: true, joined_ms: row.joined_ms },
            );
        }
        let pre = !prequeue_final && settings.is_prequeue(now);
        let (mut pre_count, mut post_count) = self.counts.get();
        let n = if pre {
            pre_count += 1;
            pre_count
        } else {
            post_count += 1;
            post_count
        };
        let admitted = (settings.mode == QueueMode::Passthrough).then_some(now);
        // One statement: the place, with its proof of work, unless that proof was spent already
        // (by a place or a returning visitor), in which case nothing is written.
        let challenge = body.challenge.as_ref().map(|(jti, _)| jti.as_str());
        let placed: Vec<Count> = sql
            .exec(
                "INSERT INTO places (visitor, pre, n, joined_ms, admitted_ms, attempt_window_ms, challenge)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?4, ?6
                 WHERE ?6 IS NULL OR (NOT EXISTS (SELECT 1 FROM places WHERE challenge = ?6)
                                      AND NOT EXISTS (SELECT 1 FROM challenges WHERE jti = ?6))
                 RETURNING 1 AS c",
                vec![
                    body.visitor.as_str().into(),
                    SqlStorageValue::from(i64::from(pre)),
                    int(n),
                    SqlStorageValue::from(now),
                    admitted.map_or(SqlStorageValue::Null, SqlStorageValue::from),
                    challenge.map_or(SqlStorageValue::Null, SqlStorageValue::from),
                ],
            )?
            .to_array()?;
        if placed.is_empty() {
            return pow_reused(path);
        }
        self.writes.set(self.writes.get() + 1);
        self.counts.set((pre_count, post_count));
        // An idle coordinator sleeps; the first join after a quiet spell wakes it.
        let wake = {
            let mut meta = self.meta.borrow_mut();
            let asleep = now > meta.awake_until_ms;
            if asleep {
                meta.awake_until_ms = now + 2_000;
            }
            asleep
        };
        if wake {
            let resp =
                call(&self.env, COORDINATOR_BINDING, body.event.as_str(), Method::Post, "/wake", None).await;
            if let Err(e) = resp {
                crate::log::error(
                    "queue shard could not wake the coordinator",
                    serde_json::json!({ "error": e.to_string() }),
                );
            }
        }
        http::json(201, &Joined { n, pre, returning: false, joined_ms: now })
    }

    fn exchange(&self, place: PlaceRef, path: &str) -> Result<Response> {
        let now = crate::now_ms();
        let settings = self.meta.borrow().settings.clone().unwrap_or_default();
        let Some(row) = self.find(&place)? else {
            return refusal(ProblemType::NotFound, "no such place in this line", "unknown-place", path);
        };
        if row.exchanged_ms.is_some() {
            return refusal(
                ProblemType::Conflict,
                "this queue ticket was already exchanged for an admission",
                "already-exchanged",
                path,
            );
        }
        if row.left_ms.is_some() {
            return refusal(ProblemType::Conflict, "this place was given up", "left", path);
        }
        let Some(admitted_ms) = row.admitted_ms else {
            return refusal(
                ProblemType::Conflict,
                "this place has not been admitted yet",
                "not-admitted",
                path,
            );
        };
        let grace_end = admitted_ms + i64::from(settings.return_grace_seconds) * 1000;
        if row.closed_ms.is_some() || now > grace_end {
            self.close(&place, now)?;
            return refusal(
                ProblemType::Conflict,
                "your turn came and the time to come back has passed; join the line again",
                "expired",
                path,
            );
        }
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
        let session = Session {
            jti: hex::encode(bytes),
            started_ms: now,
            ends_ms: now + i64::from(settings.session_seconds) * 1000,
            max_tickets: settings.max_tickets_per_buyer,
        };
        self.write(
            &self.sql(),
            "UPDATE places SET exchanged_ms = ?, session_end_ms = ?, jti = ? WHERE pre = ? AND n = ?",
            vec![
                SqlStorageValue::from(now),
                SqlStorageValue::from(session.ends_ms),
                session.jti.as_str().into(),
                SqlStorageValue::from(i64::from(place.pre)),
                int(place.n),
            ],
        )?;
        let _ = (row.session_end_ms, row.jti, row.joined_ms);
        http::json(200, &session)
    }

    /// Ends a place's session now (counted as ended if it had been admitted).
    fn close(&self, place: &PlaceRef, now: Millis) -> Result<()> {
        let Some(row) = self.find(place)? else { return Ok(()) };
        if row.closed_ms.is_some() {
            return Ok(());
        }
        let sql = self.sql();
        let key = vec![SqlStorageValue::from(i64::from(place.pre)), int(place.n)];
        if row.admitted_ms.is_some() {
            let mut params = vec![SqlStorageValue::from(now)];
            params.extend(key);
            self.write(&sql, "UPDATE places SET closed_ms = ? WHERE pre = ? AND n = ?", params)?;
            self.meta.borrow_mut().ended += 1;
            self.save_meta()?;
        } else if row.left_ms.is_none() {
            let mut params = vec![SqlStorageValue::from(now)];
            params.extend(key);
            self.write(&sql, "UPDATE places SET left_ms = ? WHERE pre = ? AND n = ?", params)?;
        }
        Ok(())
    }

    fn leave(&self, place: PlaceRef, path: &str) -> Result<Response> {
        if self.find(&place)?.is_none() {
            return refusal(ProblemType::NotFound, "no such place in this line", "unknown-place", path);
        }
        self.close(&place, crate::now_ms())?;
        http::json(200, &serde_json::json!({ "left": true }))
    }

    fn end_session(&self, body: EndSession) -> Result<Response> {
        let rows: Vec<Row> = self
            .sql()
            .exec(
                &format!(
                    "SELECT {ROW_COLUMNS} FROM places WHERE visitor = ? AND exchanged_ms IS NOT NULL
                     AND closed_ms IS NULL"
                ),
                vec![body.visitor.as_str().into()],
            )?
            .to_array()?;
        let mut ended = 0;
        for row in rows {
            let place = PlaceRef { visitor: body.visitor.clone(), pre: row.pre == 1, n: row.n as u64 };
            self.close(&place, crate::now_ms())?;
            ended += 1;
        }
        http::json(200, &serde_json::json!({ "ended": ended }))
    }

    /// An admission token is good only while its session is open: not ended by leaving, buying or
    /// time, and for the one exchange that issued it.
    fn check_session(&self, check: SessionCheck, path: &str) -> Result<Response> {
        let place = PlaceRef { visitor: check.visitor, pre: check.pre, n: check.n };
        let rows: Vec<OpenSession> = self
            .sql()
            .exec(
                "SELECT jti, session_end_ms, closed_ms FROM places WHERE pre = ? AND n = ? AND visitor = ?",
                vec![
                    SqlStorageValue::from(i64::from(place.pre)),
                    int(place.n),
                    place.visitor.as_str().into(),
                ],
            )?
            .to_array()?;
        let open = rows.first().filter(|r| {
            r.jti.as_deref() == Some(check.jti.as_str())
                && r.closed_ms.is_none()
                && r.session_end_ms.is_some_and(|end| end > crate::now_ms())
        });
        match open {
            Some(r) => http::json(200, &serde_json::json!({ "open": true, "ends_ms": r.session_end_ms })),
            None => {
                refusal(ProblemType::Unauthorized, "this shopping session has ended", "session-ended", path)
            }
        }
    }

    /// The coordinator's sync: record the admissions it decided, close what timed out, report.
    fn sync(&self, req: SyncRequest) -> Result<Response> {
        self.adopt(&req.event, req.shard, &req.settings)?;
        let now = crate::now_ms();
        let sql = self.sql();
        let (pre_count, post_count) = self.counts.get();
        let settings = self.meta.borrow().settings.clone().unwrap_or_default();
        {
            let mut meta = self.meta.borrow_mut();
            meta.phase = Some(req.phase);
            meta.awake_until_ms = meta.awake_until_ms.max(req.awake_until_ms);
            if req.seed.is_some() {
                meta.seed = req.seed.clone();
            }
            // Nobody joins the pre-queue once the sale has started here.
            if !meta.prequeue_final && !settings.is_prequeue(now) {
                meta.prequeue_final = true;
            }
        }
        let (from, prequeue) = (self.meta.borrow().admitted_through, req.prequeue);
        if req.admitted_through > from {
            let Some(p) = prequeue else {
                return http::problem_of(
                    ProblemType::Conflict,
                    "admission before the pre-queue is final",
                    "/sync",
                );
            };
            let seed = self.meta.borrow().seed.as_deref().and_then(hex32);
            let stamp = SqlStorageValue::from(now);
            for rank in (from + 1)..=req.admitted_through.min(p) {
                let Some(seed) = seed else {
                    return http::problem_of(
                        ProblemType::Conflict,
                        "admission before the seed is known",
                        "/sync",
                    );
                };
                let n = prequeue_seq(&seed, req.shard, rank, p);
                self.write(
                    &sql,
                    "UPDATE places SET admitted_ms = ? WHERE pre = 1 AND n = ? AND admitted_ms IS NULL",
                    vec![stamp.clone(), int(n)],
                )?;
            }
            if req.admitted_through > p {
                let (lo, hi) = (from.max(p) - p + 1, req.admitted_through - p);
                self.write(&sql,
                    "UPDATE places SET admitted_ms = ? WHERE pre = 0 AND n BETWEEN ? AND ? AND admitted_ms IS NULL",
                    vec![stamp, int(lo), int(hi)],
                )?;
            }
            self.meta.borrow_mut().admitted_through = req.admitted_through;
        }
        // Close sessions that ended: left before their turn, never came back in time, or ran out.
        let grace_ms = i64::from(settings.return_grace_seconds) * 1000;
        let due = "admitted_ms IS NOT NULL AND closed_ms IS NULL AND (left_ms IS NOT NULL
                   OR (exchanged_ms IS NULL AND admitted_ms <= ?) OR session_end_ms <= ?)";
        let params = || vec![SqlStorageValue::from(now - grace_ms), SqlStorageValue::from(now)];
        let closing: Vec<Count> =
            sql.exec(&format!("SELECT COUNT(*) AS c FROM places WHERE {due}"), params())?.to_array()?;
        let closing = closing.first().map_or(0, |c| c.c as u64);
        if closing > 0 {
            let mut p = vec![SqlStorageValue::from(now)];
            p.extend(params());
            self.write(&sql, &format!("UPDATE places SET closed_ms = ? WHERE {due}"), p)?;
        }
        self.write(&sql, "DELETE FROM challenges WHERE expires_ms < ?", vec![SqlStorageValue::from(now)])?;
        self.meta.borrow_mut().ended += closing;
        let buckets: Vec<BucketRow> = sql
            .exec(
                "SELECT joined_ms / 1000 AS sec, MAX(n) AS last FROM places WHERE pre = 0 AND n > ?
                 GROUP BY sec ORDER BY sec",
                vec![int(req.known_post)],
            )?
            .to_array()?;
        self.save_meta()?;
        let meta = self.meta.borrow();
        http::json(
            200,
            &ShardReport {
                now_ms: now,
                pre_joined: pre_count,
                prequeue_final: meta.prequeue_final,
                post_joined: post_count,
                post_buckets: buckets.into_iter().map(|b| (b.sec, b.last as u64)).collect(),
                admitted_through: meta.admitted_through,
                ended: meta.ended,
            },
        )
    }

    fn stats(&self) -> Result<Response> {
        let (pre, post) = self.counts.get();
        let meta = self.meta.borrow();
        http::json(
            200,
            &serde_json::json!({
                "event": meta.event,
                "shard": meta.shard,
                "pre_joined": pre,
                "post_joined": post,
                "admitted_through": meta.admitted_through,
                "ended": meta.ended,
                "requests": *self.requests.borrow(),
                "storage_bytes": self.sql().database_size(),
                "storage_writes": self.writes.get(),
                "wasm_memory_bytes": crate::wasm_memory_bytes(),
            }),
        )
    }

    async fn route(&self, mut req: Request, path: &str, caller: Caller) -> Result<Response> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        macro_rules! body {
            () => {
                match req.json().await {
                    Ok(b) => b,
                    Err(e) => return http::malformed(path, e),
                }
            };
        }
        let route = match segments.as_slice() {
            ["join"] => "join",
            ["exchange"] => "exchange",
            ["leave"] => "leave",
            ["sync"] => "sync",
            ["sessions", "end"] => "end",
            ["session"] => "session",
            _ => "other",
        };
        *self.requests.borrow_mut().entry(route).or_default() += 1;
        match (req.method(), segments.as_slice(), &caller) {
            (Method::Post, ["join"], Caller::Edge) => self.join(body!(), path).await,
            (Method::Post, ["exchange"], Caller::Edge) => self.exchange(body!(), path),
            (Method::Post, ["leave"], Caller::Edge) => self.leave(body!(), path),
            (Method::Post, ["sessions", "end"], Caller::Core) => self.end_session(body!()),
            (Method::Post, ["session"], Caller::Edge) => self.check_session(body!(), path),
            (Method::Post, ["sync"], Caller::Edge) => self.sync(body!()),
            (Method::Get, ["stats"], Caller::Core | Caller::Edge) => self.stats(),
            _ => http::problem_of(ProblemType::NotFound, "no such route on the queue shard", path),
        }
    }
}

impl DurableObject for QueueShard {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            meta: RefCell::new(Meta::default()),
            counts: Cell::new((0, 0)),
            loaded: Cell::new(false),
            requests: RefCell::new(Default::default()),
            writes: Cell::new(0),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let load = async { self.ensure_loaded() };
        let route = |req, path: String, caller| async move { self.route(req, &path, caller).await };
        http::serve(req, "queue", load, route, || self.loaded.set(false)).await
    }
}
