//! Persistence of one inventory object's ledger in its SQLite storage.
//!
//! Every write here is a synchronous `sql.exec`; a Durable Object commits all writes made without
//! an intervening `await` as one atomic batch, and holds back the response until they are durable
//! (output gates). So the object mutates its ledger, calls these methods with no `await` in
//! between, and an acknowledged hold is on disk — or, if any write throws, nothing is.
//! Seat states are never stored: they are derived from the holds on load.
//!
//! A hold is placed with one statement ([`Store::insert_placed`]): its row carries the ledger's
//! version at placement (`placed_version`) and, when the buyer sent an idempotency key, the key's
//! answer (`idem`), so the hot path writes neither the ledger's meta nor a separate answer row.
//! Every other change writes the meta as well; so on load the rows placed after the meta's
//! version are exactly the placements it has not counted ([`Store::load`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shared_types::ids::{HoldId, VisitorId};
use shared_types::inventory::Inventory;
use shared_types::request_signing::MAX_REQUEST_AGE_SECS;
use shared_types::{Problem, ProblemType};
use worker::{Result, SqlStorage, SqlStorageValue};

use super::ledger::{Hold, HoldState, IdempotencyRecord, Ledger, Millis, Stats};
use super::retention::Retention;

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
    writes: Writes,
}

/// Write statements run since the object started (its stats report them: the benchmarks divide
/// them by the holds placed, and a test holds a placement to one).
#[derive(Debug, Clone, Default)]
pub struct Writes(std::rc::Rc<std::cell::Cell<u64>>);

impl Writes {
    pub fn get(&self) -> u64 {
        self.0.get()
    }

    fn add(&self) {
        self.0.set(self.0.get() + 1);
    }
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

/// A hold's row as loaded.
#[derive(Deserialize)]
struct HoldRow {
    body: String,
    placed_version: i64,
    idem: Option<String>,
}

/// The answer to a buyer's idempotency key kept in the row of the hold it placed: the record
/// apart from the hold itself.
#[derive(Serialize, Deserialize)]
struct KeyOfHold {
    key: String,
    fingerprint: u64,
    at: Millis,
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
CREATE TABLE IF NOT EXISTS holds (id TEXT PRIMARY KEY, state TEXT NOT NULL, expires_at INTEGER NOT NULL, body TEXT NOT NULL, placed_version INTEGER NOT NULL DEFAULT 0, idem TEXT);
CREATE TABLE IF NOT EXISTS idempotency (visitor TEXT NOT NULL, key TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (visitor, key));
CREATE INDEX IF NOT EXISTS idempotency_at ON idempotency (at);
CREATE TABLE IF NOT EXISTS chunks (key TEXT NOT NULL, part INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (key, part));
CREATE TABLE IF NOT EXISTS core_nonces (nonce TEXT PRIMARY KEY, at INTEGER NOT NULL);
";

impl Store {
    /// The storage, for an object whose tables exist (see [`Store::create`]): no statement runs.
    pub fn attach(sql: SqlStorage, writes: &Writes) -> Self {
        Self { sql, writes: writes.clone() }
    }

    /// Opens the storage, creating the tables if needed and adding the columns a table stored by
    /// an earlier release lacks. Once per object instance: the hold path must not pay for schema
    /// statements.
    pub fn create(sql: SqlStorage, writes: &Writes) -> Result<Self> {
        sql.exec(SCHEMA, None)?;
        let columns = sql.exec("SELECT * FROM holds LIMIT 0", None)?.column_names();
        // Each column on its own (a placement's version 0: counted by the meta already).
        for (column, added) in [
            ("placed_version", "ALTER TABLE holds ADD COLUMN placed_version INTEGER NOT NULL DEFAULT 0"),
            ("idem", "ALTER TABLE holds ADD COLUMN idem TEXT"),
        ] {
            if !columns.iter().any(|c| c == column) {
                sql.exec(added, None)?;
            }
        }
        Ok(Self { sql, writes: writes.clone() })
    }

    /// The ledger as last stored, or `None` before the core first sent an inventory, remembering
    /// for `retention`. `now` drops the answers that are past it (as the ledger's pruning would
    /// have).
    pub fn load(&self, now: Millis, retention: Retention) -> Result<Option<Ledger>> {
        let Some(inventory) = self.get_large("inventory")? else { return Ok(None) };
        let inventory: Inventory = serde_json::from_str(&inventory)?;
        let mut meta = self.meta::<Meta>("ledger")?.unwrap_or(Meta {
            version: 0,
            stats: Stats::default(),
            parking: false,
        });
        // Answers past their retention are left out, from the table as from hold rows (the
        // alarm's pruning forgets them in memory and deletes the table's).
        let kept = retention.answers_under(&inventory.settings);
        let fresh = |at: Millis| at > now - kept;
        let mut records: Vec<IdempotencyRecord> = self.bodies("SELECT body FROM idempotency", None)?;
        records.retain(|r: &IdempotencyRecord| fresh(r.at));
        let rows: Vec<HoldRow> =
            self.sql.exec("SELECT body, placed_version, idem FROM holds", None)?.to_array()?;
        let mut holds = Vec::with_capacity(rows.len());
        let mut version = meta.version;
        for row in rows {
            let hold: Hold = serde_json::from_str(&row.body)?;
            // Placed after the meta was last stored: counted and versioned here.
            let placed = u64::try_from(row.placed_version).unwrap_or(0);
            if placed > meta.version {
                meta.stats.holds_placed += 1;
                version = version.max(placed);
            }
            if let Some(idem) = row.idem {
                let k: KeyOfHold = serde_json::from_str(&idem)?;
                if fresh(k.at) {
                    records.push(IdempotencyRecord {
                        visitor: hold.visitor.clone(),
                        key: k.key,
                        fingerprint: k.fingerprint,
                        answer: Ok(hold.clone()),
                        at: k.at,
                    });
                }
            }
            holds.push(hold);
        }
        let mut ledger = Ledger::restore(&inventory, holds, records, version, meta.stats)
            .map_err(|e| worker::Error::RustError(format!("stored ledger is inconsistent: {e}")))?;
        if meta.parking {
            // Turning parking on changes no hold.
            ledger.set_parking(true, 0);
        }
        ledger.set_retention(retention);
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
        self.write("DELETE FROM chunks WHERE key = ?", vec![key.into()])?;
        for (part, chunk) in chunks(text, CHUNK_BYTES).into_iter().enumerate() {
            self.write(
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

    /// Stores a hold just placed, at the ledger's `version` after placing it, and the answer to the
    /// buyer's key when there was one (`record`, whose answer is this hold): one statement, the
    /// hold path's only write. The ledger's meta is not written ([`Store::load`] recovers it).
    pub fn insert_placed(&self, hold: &Hold, version: u64, record: Option<&IdempotencyRecord>) -> Result<()> {
        let idem = record
            .map(|r| to_json(&KeyOfHold { key: r.key.clone(), fingerprint: r.fingerprint, at: r.at }))
            .transpose()?;
        self.write(
            "INSERT INTO holds (id, state, expires_at, body, placed_version, idem) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                hold.id.as_str().into(),
                state_name(hold.state).into(),
                SqlStorageValue::from(hold.expires_at),
                to_json(hold)?.into(),
                SqlStorageValue::from(i64::try_from(version).unwrap_or(i64::MAX)),
                idem.map_or(SqlStorageValue::Null, SqlStorageValue::from),
            ],
        )
    }

    /// Inserts or replaces holds as they are now (a replaced row keeps its placement's version
    /// and key).
    pub fn save_holds<'a>(&self, holds: impl IntoIterator<Item = &'a Hold>) -> Result<()> {
        for hold in holds {
            self.write(
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
            self.write("DELETE FROM holds WHERE id = ?", vec![id.as_str().into()])?;
        }
        Ok(())
    }

    /// Stores the answer to an idempotency key.
    pub fn save_idempotency(&self, record: &IdempotencyRecord) -> Result<()> {
        self.write(
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

    /// Deletes one visitor's answer to one key (the ledger forgot it to stay within its bound):
    /// its row in the table, or the copy in the row of the hold it placed (`hold`).
    pub fn delete_idempotency(&self, visitor: &VisitorId, key: &str, hold: Option<&HoldId>) -> Result<()> {
        match hold {
            Some(hold) => self.write("UPDATE holds SET idem = NULL WHERE id = ?", vec![hold.as_str().into()]),
            None => self.write(
                "DELETE FROM idempotency WHERE visitor = ? AND key = ?",
                vec![visitor.as_str().into(), key.into()],
            ),
        }
    }

    /// Deletes idempotency answers older than `before` (the ledger forgot them too).
    pub fn delete_idempotency_before(&self, before: Millis) -> Result<()> {
        self.write("DELETE FROM idempotency WHERE at < ?", vec![SqlStorageValue::from(before)])?;
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
        self.write(
            "INSERT INTO core_nonces (nonce, at) VALUES (?, ?)",
            vec![nonce.into(), SqlStorageValue::from(now)],
        )?;
        Ok(())
    }

    /// Forgets nonces older than any request could be (they would be refused as stale anyway).
    pub fn forget_nonces(&self, now: Millis) -> Result<()> {
        let horizon = now - 2 * MAX_REQUEST_AGE_SECS * 1000;
        self.write("DELETE FROM core_nonces WHERE at < ?", vec![SqlStorageValue::from(horizon)])?;
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
        self.write(
            "INSERT OR REPLACE INTO meta (key, body) VALUES (?, ?)",
            vec![key.into(), to_json(value)?.into()],
        )?;
        Ok(())
    }

    /// Runs a statement that writes, counted in [`Writes`].
    fn write(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<()> {
        self.sql.exec(query, bindings)?;
        self.writes.add();
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
