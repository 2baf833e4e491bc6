//! `HealthProbe`: the object the health chain writes to and reads back from, proving that the
//! edge can reach a Durable Object and that its SQLite storage accepts and returns a write.
//! It holds nothing but the last few probes; it must never touch event state.

use serde::{Deserialize, Serialize};
use shared_types::ProblemType;
use worker::{durable_object, DurableObject, Env, Method, Request, Response, Result, State};

use crate::http;

/// How many probe rows the object keeps; older ones are deleted on each write.
const KEEP_ROWS: i64 = 16;

/// What the edge asks the probe to write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeWrite {
    /// A random value chosen by the caller; the read-back must return exactly it.
    pub nonce: String,
    /// The caller's clock, stored with the row.
    pub at_ms: i64,
}

/// What the probe read back after writing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReadBack {
    /// Row id of the write (grows by one per probe; survives restarts).
    pub id: i64,
    /// The nonce as read back from storage.
    pub nonce: String,
    /// Rows kept in the table after the write.
    pub rows: i64,
}

#[derive(Deserialize)]
struct IdRow {
    id: i64,
}

#[derive(Deserialize)]
struct NonceRow {
    nonce: String,
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

/// The Durable Object class behind `GET /healthz`'s storage check.
#[durable_object]
pub struct HealthProbe {
    state: State,
}

impl HealthProbe {
    fn write_and_read_back(&self, write: &ProbeWrite) -> Result<ProbeReadBack> {
        let sql = self.state.storage().sql();
        let inserted: IdRow = sql
            .exec(
                "INSERT INTO probe (nonce, at_ms) VALUES (?, ?) RETURNING id",
                vec![write.nonce.clone().into(), write.at_ms.into()],
            )?
            .one()?;
        // A separate read: the answer must come from storage, not from the insert's echo.
        let read: NonceRow =
            sql.exec("SELECT nonce FROM probe WHERE id = ?", vec![inserted.id.into()])?.one()?;
        sql.exec("DELETE FROM probe WHERE id <= ?", vec![(inserted.id - KEEP_ROWS).into()])?;
        let count: CountRow = sql.exec("SELECT COUNT(*) AS n FROM probe", None)?.one()?;
        Ok(ProbeReadBack { id: inserted.id, nonce: read.nonce, rows: count.n })
    }
}

impl DurableObject for HealthProbe {
    fn new(state: State, _env: Env) -> Self {
        // Failing here would fail every request to the object; the table statement is static and
        // valid, so an error can only come from the runtime itself, which the first probe reports.
        let _ = state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS probe (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                nonce TEXT NOT NULL,
                at_ms INTEGER NOT NULL
            )",
            None,
        );
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Post, "/probe") => {
                let write: ProbeWrite = match req.json().await {
                    Ok(w) => w,
                    Err(e) => {
                        return http::problem_of(
                            ProblemType::MalformedRequest,
                            format!("probe body must be {{nonce, at_ms}}: {e}"),
                            &path,
                        )
                    }
                };
                match self.write_and_read_back(&write) {
                    Ok(read) => http::json(200, &read),
                    Err(e) => http::problem_of(ProblemType::Internal, format!("storage: {e}"), &path),
                }
            }
            (_, "/probe") => http::problem_of(ProblemType::MethodNotAllowed, "use POST", &path),
            _ => http::problem_of(ProblemType::NotFound, "no such route on HealthProbe", &path),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        // The probe never sets an alarm; answer anyway, because the default handler panics.
        Response::ok("no alarm work")
    }
}
