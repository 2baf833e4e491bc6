//! The baseline's seat locks in Redis, through the well-kept `redis` crate (redis-rs): one
//! multiplexed connection that reconnects by itself ([`ConnectionManager`]), so that the
//! side-by-side cannot be blamed on a client of our own. `SET … NX PX`, a compare-and-delete and a
//! compare-and-extend script, `MGET` and `SCAN` are all the design needs.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, AsyncIter, Script};

/// Releases a lock only if it is still ours (a lapsed lock may belong to another buyer now).
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
/// Extends a lock only if it is still ours.
const EXTEND: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// The locks of one Redis server. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct Locks {
    conn: ConnectionManager,
    release: Script,
    extend: Script,
}

fn failed(e: redis::RedisError) -> String {
    format!("redis: {e}")
}

impl Locks {
    /// For the server at `addr` (`host:port`); connects on first use. Must be called inside a
    /// Tokio runtime.
    pub fn new(addr: &str) -> Result<Self, String> {
        let client = redis::Client::open(format!("redis://{addr}/")).map_err(failed)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(10)));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(failed)?;
        Ok(Self { conn, release: Script::new(RELEASE), extend: Script::new(EXTEND) })
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(failed)
    }

    /// `SET key owner NX PX ms`: whether the lock was taken (false: someone holds it).
    pub async fn lock(&self, key: &str, owner: &str, ms: u64) -> Result<bool, String> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(set.is_some())
    }

    /// Gives the lock back if it is still `owner`'s.
    pub async fn release(&self, key: &str, owner: &str) -> Result<(), String> {
        let mut conn = self.conn.clone();
        self.release.key(key).arg(owner).invoke_async::<i64>(&mut conn).await.map(drop).map_err(failed)
    }

    /// Extends the lock to `ms` from now if it is still `owner`'s: whether it was.
    pub async fn extend(&self, key: &str, owner: &str, ms: u64) -> Result<bool, String> {
        let mut conn = self.conn.clone();
        let n: i64 = self.extend.key(key).arg(owner).arg(ms).invoke_async(&mut conn).await.map_err(failed)?;
        Ok(n == 1)
    }

    /// `MGET` of `keys`: for each, whether nobody holds it.
    pub async fn free(&self, keys: &[String]) -> Result<Vec<bool>, String> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let held: Vec<Option<String>> = conn.mget(keys).await.map_err(failed)?;
        Ok(held.iter().map(Option::is_none).collect())
    }

    /// How many keys match `pattern` (SCAN, so Redis is never blocked).
    pub async fn count(&self, pattern: &str) -> Result<usize, String> {
        let mut conn = self.conn.clone();
        let mut keys: AsyncIter<'_, String> = conn.scan_match(pattern).await.map_err(failed)?;
        let mut n = 0;
        while let Some(key) = keys.next_item().await {
            key.map_err(failed)?;
            n += 1;
        }
        Ok(n)
    }
}
