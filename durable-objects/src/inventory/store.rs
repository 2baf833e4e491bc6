//! Persistence of one inventory object's ledger in its SQLite storage.
//!
//! Every write here is a synchronous `sql.exec`; a Durable Object commits all writes made without
//! an intervening `await` as one atomic batch, and holds back the response until they are durable
//! (output gates). So the object mutates its ledger, calls these methods with no `await` in
//! between, and an acknowledged hold is on disk — or, if any write throws, nothing is.
//! Seat states are never stored: they are derived from the holds on load.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared_types::ids::{HoldId, VisitorId};
use shared_types::inventory::Inventory;
use shared_types::request_signing::MAX_REQUEST_AGE_SECS;
use shared_types::{Problem, ProblemType};
use worker::{Result, SqlStorage, SqlStorageValue};

use super::ledger::{Hold, HoldState, IdempotencyRecord, Ledger, Millis, Stats};

/// Why a core request's nonce was refused.
#[derive(Debug)]
pub enum NonceRefusal {
    Missing,
    Replayed,
    Storage(worker::Error),
}

impl From<worker::Error> for NonceRefusal {
    fn from(e: worker::Error) -> Self {
        Self::Storage(e)
    }
}

impl NonceRefusal {
    /// The problem to answer.
    pub fn problem(&self) -> Problem {
        let (kind, detail, reason) = match self {
            Self::Missing => (ProblemType::Unauthorized, "the core request carries no nonce", "unsigned"),
            Self::Replayed => {
                (ProblemType::Unauthorized, "this request was already received (replay)", "replayed")
            }
            Self::Storage(_) => {
                (ProblemType::Internal, "the request could not be checked for replay", "internal")
            }
        };
        Problem::new(kind, detail).with_extension("reason", reason.into())
    }
}

/// The object's storage.
pub struct Store {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

/// The small facts kept beside the holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: u64,
    stats: Stats,
    /// Whether places that come back are parked for the waiting list (a restored ledger does not
    /// know it from its holds).
    #[serde(default)]
    parking: bool,
}

/// The object's tables, created in one statement batch (one call into the runtime).
const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS holds (id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (visitor TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (visitor, key));
CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency (at);
CREATE TABLE IF NOT EXISTS chunks (key TEXT NOT NULL, part INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (key, part));
CREATE TABLE IF NOT EXISTS core_nonces (nonce TEXT PRIMARY KEY, at INTEGER NOT NULL);
";

impl Store {
    /// The storage, for an object whose tables exist (see [`Store::create`]): no statement runs.
    pub fn attach(sql: SqlStorage) -> Self {
        Self { sql }
    }

    /// Opens the storage, creating the tables if needed. Once per object instance: the hold path
    /// must not pay for schema statements.
    pub fn create(sql: SqlStorage) -> Result<Self> {
        sql.exec(SCHEMA, None)?;
        Ok(Self { sql })
    }

    /// The ledger as last stored, or `None` before the core first sent an inventory.
    pub fn load(&self) -> Result<Option<Ledger>> {
        let Some(inventory) = self.get_large("inventory")? else { return Ok(None) };
        let inventory: Inventory = serde_json::from_str(&inventory)?;
        let meta = self.meta::<Meta>("ledger")?.unwrap_or(Meta {
            version: 0,
            stats: Stats::default(),
            parking: false,
        });
        let holds: Vec<Hold> = self.bodies("SELECT body FROM holds", None)?;
        let records: Vec<IdempotencyRecord> = self.bodies("SELECT body FROM idempotency", None)?;
        let mut ledger = Ledger::restore(&inventory, holds, records, meta.version, meta.stats)
            .map_err(|e| worker::Error::RustError(format!("stored ledger is inconsistent: {e}")))?;
        if meta.parking {
            // Turning parking on changes no hold.
            ledger.set_parking(true, 0);
        }
        Ok(Some(ledger))
    }

    /// The inventory definition as the core sent it (JSON), or `None` before it first did.
    pub fn inventory_json(&self) -> Result<Option<String>> {
        self.get_large("inventory")
    }

    /// Stores the inventory definition (a stadium's is several megabytes: stored in chunks).
    pub fn save_inventory(&self, inventory: &Inventory) -> Result<()> {
        self.put_large("inventory", &to_json(inventory)?)
    }

    /// Stores a document of any size as ordered chunks, each under the row size limit.
    fn put_large(&self, key: &str, text: &str) -> Result<()> {
        self.sql.exec("DELETE FROM chunks WHERE key = ?", vec![key.into()])?;
        for (part, chunk) in chunks(text, CHUNK_BYTES).into_iter().enumerate() {
            self.sql.exec(
                "INSERT INTO chunks (key, part, body) VALUES (?, ?, ?)",
                vec![key.into(), SqlStorageValue::from(part as i64), chunk.into()],
            )?;
        }
        Ok(())
    }

    fn get_large(&self, key: &str) -> Result<Option<String>> {
        let parts: Vec<Body> = self
            .sql
            .exec("SELECT body FROM chunks WHERE key = ? ORDER BY part", vec![key.into()])?
            .to_array()?;
        Ok((!parts.is_empty()).then(|| parts.into_iter().map(|p| p.body).collect()))
    }

    /// Stores the ledger's version and statistics (after every change).
    pub fn save_meta(&self, ledger: &Ledger) -> Result<()> {
        let meta =
            Meta { version: ledger.version(), stats: ledger.stats().clone(), parking: ledger.parking() };
        self.put_meta("ledger", &meta)
    }

    /// Inserts or replaces holds as they are now.
    pub fn save_holds<'a>(&self, holds: impl IntoIterator<Item = &'a Hold>) -> Result<()> {
        for hold in holds {
            self.sql.exec(
                "INSERT INTO holds (id, state, expires_at, body) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at,
                 body = excluded.body",
                vec![
                    hold.id.as_str().into(),
                    state_name(hold.state).into(),
                    SqlStorageValue::from(hold.expires_at),
                    to_json(hold)?.into(),
                ],
            )?;
        }
        Ok(())
    }

    /// Deletes holds the ledger has forgotten.
    pub fn delete_holds(&self, ids: &[HoldId]) -> Result<()> {
        for id in ids {
            self.sql.exec("DELETE FROM holds WHERE id = ?", vec![id.as_str().into()])?;
        }
        Ok(())
    }

    /// Stores the answer to an idempotency key.
    pub fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO idempotency (visitor, key, at, body) VALUES (?, ?, ?, ?)",
            vec![
                record.visitor.as_str().into(),
                record.key.as_str().into(),
                SqlStorageValue::from(record.at),
                to_json(record)?.into(),
            ],
        )?;
        Ok(())
    }

    /// Deletes one visitor's answer to one key (the ledger forgot it to stay within its bound).
    pub fn delete_idempotency(&self, visitor: &VisitorId, key: &str) -> Result<()> {
        self.sql.exec(
            "DELETE FROM idempotency WHERE visitor = ? AND key = ?",
            vec![visitor.as_str().into(), key.into()],
        )?;
        Ok(())
    }

    /// Deletes idempotency answers older than `before` (the ledger forgot them too).
    pub fn delete_idempotency_before(&self, before: Millis) -> Result<()> {
        self.sql.exec("DELETE FROM idempotency WHERE at < ?", vec![SqlStorageValue::from(before)])?;
        Ok(())
    }

    /// This object's index in its event's shard layout (0 when unsharded).
    pub fn shard(&self) -> Result<u32> {
        Ok(self.meta::<u32>("shard")?.unwrap_or(0))
    }

    pub fn save_shard(&self, shard: u32) -> Result<()> {
        self.put_meta("shard", &shard)
    }

    /// Records a core request's nonce; refuses a missing one or one seen before (a replay).
    pub fn record_nonce(&self, nonce: Option<&str>, now: Millis) -> std::result::Result<(), NonceRefusal> {
        let nonce = nonce.ok_or(NonceRefusal::Missing)?;
        let seen: Vec<serde_json::Value> = self
            .sql
            .exec("SELECT 1 AS seen FROM core_nonces WHERE nonce = ?", vec![nonce.into()])?
            .to_array()?;
        if !seen.is_empty() {
            return Err(NonceRefusal::Replayed);
        }
        self.sql.exec(
            "INSERT INTO core_nonces (nonce, at) VALUES (?, ?)",
            vec![nonce.into(), SqlStorageValue::from(now)],
        )?;
        Ok(())
    }

    /// Forgets nonces older than any request could be (they would be refused as stale anyway).
    pub fn forget_nonces(&self, now: Millis) -> Result<()> {
        let horizon = now - 2 * MAX_REQUEST_AGE_SECS * 1000;
        self.sql.exec("DELETE FROM core_nonces WHERE at < ?", vec![SqlStorageValue::from(horizon)])?;
        Ok(())
    }

    /// Bytes of storage in use (for the operator's statistics).
    pub fn size(&self) -> usize {
        self.sql.database_size()
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let rows: Vec<T> = self.bodies("SELECT body FROM meta WHERE key = ?", vec![key.into()])?;
        Ok(rows.into_iter().next())
    }

    fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.sql.exec(
            "INSERT OR REPLACE INTO meta (key, body) VALUES (?, ?)",
            vec![key.into(), to_json(value)?.into()],
        )?;
        Ok(())
    }

    fn bodies<T: DeserializeOwned>(
        &self,
        query: &str,
        bindings: impl Into<Option<Vec<SqlStorageValue>>>,
    ) -> Result<Vec<T>> {
        let rows: Vec<Body> = self.sql.exec(query, bindings)?.to_array()?;
        rows.into_iter().map(|r| serde_json::from_str(&r.body).map_err(worker::Error::from)).collect()
    }
}

/// Durable Object SQLite refuses strings and rows over 2 MB; documents are stored in 1 MiB chunks.
const CHUNK_BYTES: usize = 1 << 20;

/// Splits `text` into pieces of at most `max` bytes, never inside a UTF-8 character.
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = max.min(rest.len());
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(worker::Error::from)
}

fn state_name(state: HoldState) -> &'static str {
    match state {
        HoldState::Held => "held",
        HoldState::Sold => "sold",
        HoldState::Released => "released",
        HoldState::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_rejoin_to_the_text_and_never_split_a_character() {
        let text = "Sitzplatz-Ä ".repeat(1000) + "🎫";
        for max in [4, 7, 64, 1000, 1 << 20] {
            let pieces = chunks(&text, max);
            assert!(pieces.iter().all(|p| p.len() <= max && !p.is_empty()), "max {max}");
            assert_eq!(pieces.concat(), text);
        }
        assert!(chunks("", 8).is_empty());
    }
}
