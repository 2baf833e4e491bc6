//! `EventDirectory`: one small object per event that knows how the event's inventory is spread
//! over objects (its shard layout), so that the edge can route a hold to the shard that owns it.
//! The layout only grows: a shard keeps its index for life (hold ids carry it), new sections are
//! appended, and the sharding mode of an event never changes once set.

use serde::{Deserialize, Serialize};
use shared_types::ids::EventId;
use shared_types::inventory::{Sharding, MAIN_SHARD};
use shared_types::{Problem, ProblemType};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::caller::{Caller, CALLER_HEADER, NONCE_HEADER};
use crate::http;

/// How an event's inventory is spread over objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub event: EventId,
    pub sharding: Sharding,
    /// Shard names; a shard's index here is its number in hold ids.
    pub shards: Vec<String>,
    pub inventory_version: u64,
}

/// The Durable Object name of one shard of an event.
pub fn object_name(event: &EventId, shard: &str) -> String {
    if shard == MAIN_SHARD {
        event.to_string()
    } else {
        format!("{event}:{shard}")
    }
}

impl Layout {
    /// The Durable Object name of shard `index`.
    pub fn object_name(&self, index: usize) -> Option<String> {
        self.shards.get(index).map(|s| object_name(&self.event, s))
    }

    /// The index of a shard by name.
    pub fn index_of(&self, shard: &str) -> Option<usize> {
        self.shards.iter().position(|s| s == shard)
    }

    /// The layout after an update: shards keep their index, new ones are appended; changing the
    /// sharding mode or going back in version is refused.
    pub fn merge(current: Option<&Layout>, next: Layout) -> std::result::Result<Layout, String> {
        let Some(current) = current else { return Ok(next) };
        if current.event != next.event {
            return Err(format!("this directory serves {}, not {}", current.event, next.event));
        }
        if current.sharding != next.sharding {
            return Err("the sharding of an event cannot change once its inventory is published".into());
        }
        if next.inventory_version < current.inventory_version {
            return Err(format!(
                "inventory version {} is older than the published {}",
                next.inventory_version, current.inventory_version
            ));
        }
        let mut shards = current.shards.clone();
        for s in next.shards {
            if !shards.contains(&s) {
                shards.push(s);
            }
        }
        Ok(Layout { shards, ..next })
    }
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

/// The Durable Object class of an event's directory.
#[durable_object]
pub struct EventDirectory {
    state: State,
}

/// The directory's tables, created in one statement batch (one call into the runtime).
const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS core_nonces (nonce TEXT PRIMARY KEY, at INTEGER NOT NULL);
";

impl EventDirectory {
    fn layout(&self) -> Result<Option<Layout>> {
        let sql = self.state.storage().sql();
        sql.exec(SCHEMA, None)?;
        let rows: Vec<Body> = sql.exec("SELECT body FROM meta WHERE key = 'layout'", None)?.to_array()?;
        rows.first().map(|r| serde_json::from_str(&r.body).map_err(worker::Error::from)).transpose()
    }
}

impl DurableObject for EventDirectory {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let caller = req.headers().get(CALLER_HEADER)?.as_deref().and_then(Caller::parse);
        match (req.method(), path.as_str(), caller) {
            (Method::Get, "/layout", Some(_)) => match self.layout()? {
                Some(layout) => http::json(200, &layout),
                None => {
                    http::problem_of(ProblemType::NotFound, "this event is not published at the edge", &path)
                }
            },
            (Method::Put, "/layout", Some(Caller::Core)) => {
                let next: Layout = match req.json().await {
                    Ok(l) => l,
                    Err(e) => return http::problem_of(ProblemType::MalformedRequest, e.to_string(), &path),
                };
                let current = self.layout()?;
                let sql = self.state.storage().sql();
                let nonce = req.headers().get(NONCE_HEADER)?.unwrap_or_default();
                let seen: Vec<serde_json::Value> = sql
                    .exec("SELECT 1 AS seen FROM core_nonces WHERE nonce = ?", vec![nonce.as_str().into()])?
                    .to_array()?;
                if nonce.is_empty() || !seen.is_empty() {
                    let problem =
                        Problem::new(ProblemType::Unauthorized, "this request was already received (replay)")
                            .with_instance(&path)
                            .with_extension(
                                "reason",
                                (if nonce.is_empty() { "unsigned" } else { "replayed" }).into(),
                            );
                    return http::problem(&problem);
                }
                let now = worker::Date::now().as_millis() as i64;
                sql.exec(
                    "INSERT INTO core_nonces (nonce, at) VALUES (?, ?)",
                    vec![nonce.as_str().into(), now.into()],
                )?;
                match Layout::merge(current.as_ref(), next) {
                    Ok(layout) => {
                        sql.exec(
                            "INSERT OR REPLACE INTO meta (key, body) VALUES ('layout', ?)",
                            vec![serde_json::to_string(&layout)?.into()],
                        )?;
                        http::json(200, &layout)
                    }
                    Err(detail) => http::problem_of(ProblemType::Conflict, detail, &path),
                }
            }
            (_, _, None) => http::problem_of(ProblemType::Unauthorized, "no authenticated caller", &path),
            _ => http::problem_of(ProblemType::NotFound, "no such route on the directory", &path),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        Response::ok("the directory sets no alarms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(sharding: Sharding, shards: &[&str], version: u64) -> Layout {
        Layout {
            event: EventId::parse("evt").unwrap(),
            sharding,
            shards: shards.iter().map(|s| s.to_string()).collect(),
            inventory_version: version,
        }
    }

    #[test]
    fn shards_keep_their_index_and_new_ones_are_appended() {
        let first = layout(Sharding::BySection, &["A", "B", "ga"], 1);
        let next =
            Layout::merge(Some(&first), layout(Sharding::BySection, &["A", "C", "B", "ga"], 2)).unwrap();
        assert_eq!(next.shards, ["A", "B", "ga", "C"]);
        assert_eq!(next.inventory_version, 2);
        assert_eq!(next.object_name(3).as_deref(), Some("evt:C"));
        assert_eq!(layout(Sharding::None, &["main"], 1).object_name(0).as_deref(), Some("evt"));
    }

    #[test]
    fn the_sharding_mode_never_changes_and_versions_never_go_back() {
        let first = layout(Sharding::None, &["main"], 2);
        assert!(Layout::merge(Some(&first), layout(Sharding::BySection, &["A"], 3)).is_err());
        assert!(Layout::merge(Some(&first), layout(Sharding::None, &["main"], 1)).is_err());
        assert!(Layout::merge(Some(&first), layout(Sharding::None, &["main"], 2)).is_ok());
    }
}
