//! `QueueCoordinator`: one per event (named by the event id). It holds the event's waiting-room
//! settings and the [`Coordinator`] state, and on its alarm (every second while anyone waits or
//! shops) decides admissions, syncs every queue shard, reads how many seats are left, and
//! publishes the view the edge answers polls from.
//!
//! Routes (the edge calls them; `x-caller` says for whom):
//! - `GET  /view`       the line as the edge caches it (404 until the event exists here)
//! - `POST /ensure`     the event was published: start a line with default settings if none
//! - `PUT  /settings`   settings from the core
//! - `POST /wake`       a shard took a join while the coordinator slept
//! - `POST /refusals`   refusal counts from an edge isolate
//! - `GET  /stats`      the view, refusal counts and every shard's line (core)

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shared_types::ids::EventId;
use shared_types::waiting_room::{Phase, WaitingRoomSettings};
use shared_types::{Problem, ProblemType};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use super::coordinator::{Coordinator, Millis, SettingsError, ShardReport, Stock};
use super::shard::shard_name;
use crate::alarm::Alarm;
use crate::directory::Layout;
use crate::http;
use crate::inventory::{Availability, Caller};
use crate::stub::{call, DIRECTORY_BINDING, INVENTORY_BINDING, SHARD_BINDING};

/// How often the seats left are read from the inventory while the line is open.
const STOCK_EVERY_MS: Millis = 5_000;

/// Body of `PUT /settings` and `POST /ensure`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettingsPush {
    pub event: EventId,
    #[serde(default)]
    pub settings: Option<WaitingRoomSettings>,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[durable_object]
pub struct QueueCoordinator {
    state: State,
    env: Env,
    coordinator: RefCell<Option<Coordinator>>,
    loaded: Cell<bool>,
    alarm: Alarm,
    stock_read_ms: Cell<Millis>,
    /// Requests taken since this instance started, by route (for the benchmarks).
    requests: RefCell<BTreeMap<String, u64>>,
}

impl QueueCoordinator {
    fn load(&self) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        sql.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL)", None)?;
        let rows: Vec<Body> =
            sql.exec("SELECT body FROM meta WHERE key = 'coordinator'", None)?.to_array()?;
        *self.coordinator.borrow_mut() = match rows.first() {
            Some(b) => Some(serde_json::from_str(&b.body)?),
            None => None,
        };
        self.loaded.set(true);
        Ok(())
    }

    fn save(&self) -> Result<()> {
        let guard = self.coordinator.borrow();
        let Some(c) = guard.as_ref() else { return Ok(()) };
        let body = serde_json::to_string(c)?;
        self.state
            .storage()
            .sql()
            .exec("INSERT OR REPLACE INTO meta (key, body) VALUES ('coordinator', ?)", vec![body.into()])?;
        Ok(())
    }

    async fn arm_next(&self) -> Result<()> {
        let next = self.coordinator.borrow().as_ref().and_then(|c| c.next_tick(crate::now_ms()));
        self.alarm.keep(&self.state.storage(), next).await
    }

    fn create(&self, event: EventId, settings: Option<WaitingRoomSettings>) -> Result<()> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| worker::Error::RustError(format!("randomness: {e}")))?;
        let configured = settings.is_some();
        *self.coordinator.borrow_mut() =
            Some(Coordinator::new(event, settings.unwrap_or_default(), configured, seed));
        Ok(())
    }

    async fn put_settings(&self, push: SettingsPush, path: &str) -> Result<Response> {
        let Some(settings) = push.settings else {
            return http::problem_of(ProblemType::ValidationFailed, "settings are required", path);
        };
        if let Err(errors) = settings.validate() {
            return http::problem(
                &Problem::new(ProblemType::ValidationFailed, "the waiting-room settings are not valid")
                    .with_instance(path)
                    .with_extension("errors", serde_json::to_value(&errors)?),
            );
        }
        let outcome = {
            let mut guard = self.coordinator.borrow_mut();
            match guard.as_mut() {
                Some(c) => c.apply_settings(settings, crate::now_ms()),
                None => {
                    drop(guard);
                    self.create(push.event, Some(settings))?;
                    Ok(true)
                }
            }
        };
        match outcome {
            Ok(changed) => {
                self.save()?;
                // Read the seats left at the next tick, whatever the last reading.
                self.stock_read_ms.set(0);
                // Apply at once: the next tick brings the shards the new settings.
                self.alarm.keep(&self.state.storage(), Some(crate::now_ms())).await?;
                let version = self.coordinator.borrow().as_ref().map_or(0, |c| c.settings.version);
                http::json(200, &serde_json::json!({ "version": version, "changed": changed }))
            }
            Err(e) => {
                let kind = match e {
                    SettingsError::Stale { .. } | SettingsError::VersionConflict { .. } => {
                        ProblemType::Conflict
                    }
                    SettingsError::ShardsFixed | SettingsError::SaleStarted => ProblemType::Conflict,
                };
                let mut problem = Problem::new(kind, e.to_string()).with_instance(path);
                if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&e) {
                    problem.extensions.extend(fields);
                }
                http::problem(&problem)
            }
        }
    }

    /// One tick: decide admissions, sync every shard, read the stock, re-arm.
    async fn tick(&self) -> Result<()> {
        let now = crate::now_ms();
        // Seats left first: nobody is admitted to a sale that has just sold out.
        let event = self.coordinator.borrow().as_ref().map(|c| c.event.clone());
        if let Some(event) = event {
            if now - self.stock_read_ms.get() >= STOCK_EVERY_MS && self.wants_stock(now) {
                self.stock_read_ms.set(now);
                match read_stock(&self.env, &event).await {
                    Ok(Some(stock)) => {
                        if let Some(c) = self.coordinator.borrow_mut().as_mut() {
                            c.stock = Some(stock);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => crate::log::error(
                        "queue coordinator could not read the stock",
                        serde_json::json!({ "error": e.to_string() }),
                    ),
                }
            }
        }
        let requests = {
            let mut guard = self.coordinator.borrow_mut();
            let Some(c) = guard.as_mut() else { return Ok(()) };
            c.tick(now);
            (0..c.settings.queue_shards).map(|i| (i, c.sync_request(i, now))).collect::<Vec<_>>()
        };
        // Decisions are stored before any shard hears of them: a restart never re-decides them.
        self.save()?;
        let calls = requests.iter().map(|(i, req)| {
            let name = shard_name(&req.event, *i);
            let body = serde_json::to_string(req).unwrap_or_default();
            async move {
                let mut resp =
                    call(&self.env, SHARD_BINDING, &name, Method::Post, "/sync", Some(body)).await?;
                if resp.status_code() != 200 {
                    return Err(worker::Error::RustError(format!(
                        "shard {i} answered {}",
                        resp.status_code()
                    )));
                }
                crate::http::answer_json::<ShardReport>(&mut resp).await
            }
        });
        let reports = futures_util::future::join_all(calls).await;
        {
            let mut guard = self.coordinator.borrow_mut();
            let Some(c) = guard.as_mut() else { return Ok(()) };
            for ((i, _), report) in requests.iter().zip(reports) {
                match report {
                    Ok(r) => c.apply_report(*i, &r),
                    Err(e) => crate::log::error(
                        "queue shard did not sync",
                        serde_json::json!({ "shard": i, "error": e.to_string() }),
                    ),
                }
            }
        }
        self.save()
    }

    fn wants_stock(&self, now: Millis) -> bool {
        self.coordinator
            .borrow()
            .as_ref()
            .is_some_and(|c| !matches!(c.phase(now), Phase::BeforeOpening | Phase::Closed))
    }

    async fn route(&self, mut req: Request, path: &str, caller: Caller) -> Result<Response> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let now = crate::now_ms();
        *self.requests.borrow_mut().entry(segments.first().copied().unwrap_or("").to_owned()).or_default() +=
            1;
        match (req.method(), segments.as_slice(), &caller) {
            (Method::Get, ["view"], _) => match self.coordinator.borrow().as_ref() {
                Some(c) => http::json(200, &c.view(now)),
                None => http::problem_of(ProblemType::NotFound, "no such event", path),
            },
            (Method::Post, ["ensure"], Caller::Edge | Caller::Core) => {
                let push: SettingsPush = match req.json().await {
                    Ok(p) => p,
                    Err(e) => return http::malformed(path, e),
                };
                let created = self.coordinator.borrow().is_none();
                if created {
                    self.create(push.event, None)?;
                    self.save()?;
                    self.arm_next().await?;
                }
                http::json(200, &serde_json::json!({ "created": created }))
            }
            (Method::Put, ["settings"], Caller::Core) => {
                let push: SettingsPush = match req.json().await {
                    Ok(p) => p,
                    Err(e) => return http::malformed(path, e),
                };
                self.put_settings(push, path).await
            }
            (Method::Post, ["wake"], _) => {
                let sooner = match self.alarm.armed() {
                    Some(Some(at)) => at > now + 1_000,
                    _ => true,
                };
                if sooner && self.coordinator.borrow().is_some() {
                    self.alarm.keep(&self.state.storage(), Some(now)).await?;
                }
                http::json(200, &serde_json::json!({ "awake": true }))
            }
            (Method::Post, ["refusals"], Caller::Edge) => {
                let counts: BTreeMap<String, u64> = match req.json().await {
                    Ok(c) => c,
                    Err(e) => return http::malformed(path, e),
                };
                if let Some(c) = self.coordinator.borrow_mut().as_mut() {
                    c.add_refusals(&counts);
                }
                self.save()?;
                http::json(200, &serde_json::json!({ "counted": true }))
            }
            (Method::Get, ["stats"], Caller::Core | Caller::Edge) => match self.coordinator.borrow().as_ref()
            {
                Some(c) => http::json(
                    200,
                    &serde_json::json!({
                        "view": c.view(now),
                        "configured": c.configured,
                        // What the settings rule asks (the core checks a change before it answers).
                        "anyone_joined": c.anyone_joined(),
                        "refusals": c.refusals,
                        "average_wait_ms": c.average_wait_ms(),
                        "stock": c.stock,
                        "lines": c.lines(),
                        "requests": *self.requests.borrow(),
                        "wasm_memory_bytes": crate::wasm_memory_bytes(),
                    }),
                ),
                None => http::problem_of(ProblemType::NotFound, "no such event", path),
            },
            _ => http::problem_of(ProblemType::NotFound, "no such route on the queue coordinator", path),
        }
    }
}

/// Seats left across every inventory shard of the event (`None` if it has no inventory yet).
async fn read_stock(env: &Env, event: &EventId) -> Result<Option<Stock>> {
    let mut resp = call(env, DIRECTORY_BINDING, event.as_str(), Method::Get, "/layout", None).await?;
    if resp.status_code() != 200 {
        return Ok(None);
    }
    let layout: Layout = crate::http::answer_json(&mut resp).await?;
    let mut stock = Stock::default();
    for index in 0..layout.shards.len() {
        let Some(name) = layout.object_name(index) else { continue };
        let mut resp = call(env, INVENTORY_BINDING, &name, Method::Get, "/availability", None).await?;
        if resp.status_code() != 200 {
            return Ok(None);
        }
        let availability: Availability = crate::http::answer_json(&mut resp).await?;
        stock.waitlist_held += u64::from(availability.waitlist_held);
        let counts =
            availability.sections.iter().map(|s| &s.1).chain(availability.tiers.iter().map(|t| &t.1));
        for counts in counts {
            stock.capacity += u64::from(counts.capacity);
            stock.available += u64::from(counts.available);
            stock.held += u64::from(counts.held);
        }
    }
    Ok(Some(stock))
}

impl DurableObject for QueueCoordinator {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            coordinator: RefCell::new(None),
            loaded: Cell::new(false),
            alarm: Alarm::default(),
            stock_read_ms: Cell::new(0),
            requests: RefCell::new(BTreeMap::new()),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let load = async { self.load() };
        let route = |req, path: String, caller| async move { self.route(req, &path, caller).await };
        http::serve(req, "waiting room", load, route, || self.loaded.set(false)).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.forget();
        self.load()?;
        if let Err(e) = self.tick().await {
            crate::log::error("queue coordinator tick failed", serde_json::json!({ "error": e.to_string() }));
            self.loaded.set(false);
            self.load()?;
        }
        self.arm_next().await?;
        Response::ok("ticked")
    }
}
