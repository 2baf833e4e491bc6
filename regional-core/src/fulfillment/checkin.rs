//! Check-in over gRPC (`proto/checkin.proto`): a scanner sends the code it read and its gate; the
//! core verifies the code (its own signature, the scanner's event, the ticket's current version)
//! and marks the ticket used with one conditional `UPDATE`, so that of two gates scanning one
//! ticket at the same moment exactly one admits and the other is told when and where it was used.
//! Every scan is recorded in `check_ins`.
//!
//! - A ticket is used only while its order is paid: the write takes a share lock on the order, so a
//!   refund (which locks it for update and counts used tickets) and a scan never cross.
//! - An offline scan of an earlier version counts when it was made before the next version began
//!   (`ticket_versions`) and the list its scanner had then (its latest `ValidCodes` before the scan,
//!   `scanner_lists`) was fetched before that too: the ticket is marked used at that time and the
//!   later version is refused as already used. A re-issue or a transfer after the scan cannot admit
//!   a second person, and a scanner key cannot backdate a scan past what its list held.
//! - `ValidCodes` gives an offline scanner what it needs to check the codes it reads (ticket,
//!   version, seat, used), never the codes themselves: a scanner key cannot mint an entry.

// tonic's `Status` is large, and gRPC handlers return it by value: that is tonic's design.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;

use chrono::SubsecRound as _;
use futures_util::Stream;
use shared_types::token::{verify, Claims, Expectation, KeyRing, TicketGrant, TokenKind};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{authenticate, Caller, Permission};
use crate::checkout::Checkout;
use crate::models::ticket::{TicketRow, TICKET_COLUMNS};

pub mod proto {
    tonic::include_proto!("ticketing.checkin.v1");
}

use proto::check_in_reply::Result as Outcome;
use proto::check_in_server::{CheckIn, CheckInServer};
use proto::{CheckInReply, CheckInRequest, SyncScansReply, SyncScansRequest, ValidCode, ValidCodesRequest};

/// Serves check-in on `addr` until asked to stop (then stops accepting and finishes the calls in
/// flight): over TLS with `tls` (PEM certificate chain and key), in plaintext otherwise (loopback,
/// or TLS ended before the core: see `CORE_GRPC_PLAINTEXT`).
pub async fn serve(
    gates: CheckInServer<Gates>,
    addr: std::net::SocketAddr,
    tls: Option<(Vec<u8>, Vec<u8>)>,
    stop: crate::shutdown::Stop,
) -> Result<(), tonic::transport::Error> {
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    server.add_service(gates).serve_with_shutdown(addr, async move { stop.wait().await }).await
}

/// The check-in service.
pub struct Gates {
    checkout: Arc<Checkout>,
}

impl Gates {
    pub fn server(checkout: Arc<Checkout>) -> CheckInServer<Self> {
        CheckInServer::new(Self { checkout })
    }

    fn db(&self) -> &PgPool {
        &self.checkout.db
    }

    /// The scanner behind the request, allowed to scan `event` (its organization's).
    async fn scanner<T>(&self, req: &Request<T>, event: &str) -> Result<(Caller, Uuid), Status> {
        let authorization = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let caller = authenticate(self.db(), authorization)
            .await
            .map_err(|_| Status::unauthenticated("a valid API key is required (authorization: Bearer)"))?;
        caller.require(Permission::Scan).map_err(|_| Status::permission_denied("this role may not scan"))?;
        let event: Uuid = event.parse().map_err(|_| Status::not_found("no such event"))?;
        let org: Option<Uuid> = sqlx::query_scalar("SELECT organization_id FROM events WHERE id = $1")
            .bind(event)
            .fetch_optional(self.db())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match org {
            Some(org) if caller.sees(org) => Ok((caller, event)),
            _ => Err(Status::not_found("no such event")),
        }
    }

    async fn record(
        &self,
        event: Uuid,
        ticket: Option<Uuid>,
        gate: &str,
        reply: &CheckInReply,
        scanner: Uuid,
    ) {
        let result = match reply.result() {
            Outcome::Admitted => "admitted",
            Outcome::AlreadyUsed => "already_used",
            _ => "refused",
        };
        let reason = (!reply.reason.is_empty()).then_some(reply.reason.as_str());
        let written = sqlx::query(
            "INSERT INTO check_ins (event_id, ticket_id, gate, result, reason, scanner) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event)
        .bind(ticket)
        .bind(gate)
        .bind(result)
        .bind(reason)
        .bind(scanner)
        .execute(self.db())
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "a scan could not be recorded");
        }
    }
}

fn refused(reason: &str) -> CheckInReply {
    CheckInReply { result: Outcome::Refused as i32, reason: reason.to_owned(), ..Default::default() }
}

#[tonic::async_trait]
impl CheckIn for Gates {
    async fn check_in(&self, req: Request<CheckInRequest>) -> Result<Response<CheckInReply>, Status> {
        let (caller, event) = self.scanner(&req, &req.get_ref().event_id).await?;
        let CheckInRequest { code, gate, .. } = req.into_inner();
        check_gate(&gate)?;
        self.scan(&caller, event, &code, &gate, None).await.map(Response::new)
    }

    async fn sync_scans(&self, req: Request<SyncScansRequest>) -> Result<Response<SyncScansReply>, Status> {
        let (caller, event) = self.scanner(&req, &req.get_ref().event_id).await?;
        let scans = req.into_inner().scans;
        let timed = offline_batch(&scans, chrono::Utc::now())?;
        let mut results = vec![CheckInReply::default(); scans.len()];
        for (at, i) in timed {
            let s = &scans[i];
            results[i] = self.scan(&caller, event, &s.code, &s.gate, Some(at)).await?;
        }
        Ok(Response::new(SyncScansReply { results }))
    }

    type ValidCodesStream = Pin<Box<dyn Stream<Item = Result<ValidCode, Status>> + Send>>;

    async fn valid_codes(
        &self,
        req: Request<ValidCodesRequest>,
    ) -> Result<Response<Self::ValidCodesStream>, Status> {
        let (caller, event) = self.scanner(&req, &req.get_ref().event_id).await?;
        // What this scanner's list holds from now on (offline scans of earlier versions are
        // judged by it).
        sqlx::query("INSERT INTO scanner_lists (event_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(event)
            .bind(caller.user_id)
            .execute(self.db())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let rows: Vec<TicketRow> = sqlx::query_as(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets t JOIN events e ON e.id = t.event_id
             WHERE t.event_id = $1 AND t.state IN ('valid', 'used') ORDER BY t.id"
        ))
        .bind(event)
        .fetch_all(self.db())
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let codes = rows.into_iter().map(move |t| {
            Ok(ValidCode {
                ticket_id: t.id.to_string(),
                version: t.version,
                seat: t.seat_id.clone().unwrap_or_default(),
                used: t.state == "used",
            })
        });
        Ok(Response::new(Box::pin(futures_util::stream::iter(codes))))
    }
}

/// A ticket's state, version, seat, and when and where it was used.
type TicketUse = (String, i32, Option<String>, Option<chrono::DateTime<chrono::Utc>>, Option<String>);

fn check_gate(gate: &str) -> Result<(), Status> {
    if gate.is_empty() || gate.len() > 64 {
        return Err(Status::invalid_argument("gate must be 1 to 64 characters"));
    }
    Ok(())
}

/// The checks of an offline batch that need no database: at most 10,000 scans, each with a gate and
/// a time within the last 7 days (5 minutes of clock skew ahead), in the order they are to be judged
/// (time order, so that a ticket's first use is its earliest scan): `(time, index in the batch)`.
pub fn offline_batch(
    scans: &[proto::OfflineScan],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<(chrono::DateTime<chrono::Utc>, usize)>, Status> {
    if scans.len() > MAX_OFFLINE_SCANS {
        return Err(Status::invalid_argument("at most 10,000 scans per call"));
    }
    let mut timed = Vec::with_capacity(scans.len());
    for (i, s) in scans.iter().enumerate() {
        check_gate(&s.gate)?;
        let at = chrono::DateTime::parse_from_rfc3339(&s.scanned_at)
            .map_err(|_| Status::invalid_argument(format!("scans[{i}].scanned_at is not RFC 3339")))?
            .with_timezone(&chrono::Utc)
            .trunc_subsecs(6);
        if at > now + chrono::Duration::minutes(5) || at < now - chrono::Duration::days(7) {
            return Err(Status::invalid_argument(format!(
                "scans[{i}].scanned_at must be within the last 7 days"
            )));
        }
        timed.push((at, i));
    }
    timed.sort();
    Ok(timed)
}

/// Most scans one sync may carry.
pub const MAX_OFFLINE_SCANS: usize = 10_000;

/// A ticket code read at a gate: the ticket and the version it shows, or why it is refused (its
/// signature, kind, event or time; a subject that is not a ticket id; a version no ticket has).
pub fn read_code(code: &str, keys: &KeyRing, expect: &Expectation<'_>) -> Result<(Uuid, i32), &'static str> {
    let claims: Claims<TicketGrant> = verify(code, keys, expect).map_err(|e| e.reason())?;
    let ticket = claims.sub.parse::<Uuid>().map_err(|_| "malformed")?;
    let version = i32::try_from(claims.extra.version).map_err(|_| "malformed")?;
    Ok((ticket, version))
}

impl Gates {
    /// One scan: `at` is when an offline scanner admitted (now when `None`).
    async fn scan(
        &self,
        caller: &Caller,
        event: Uuid,
        code: &str,
        gate: &str,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<CheckInReply, Status> {
        let audience = event.to_string();
        let expect = Expectation {
            kind: TokenKind::Ticket,
            issuer: "core",
            audience: &audience,
            subject: None,
            now: chrono::Utc::now().timestamp(),
        };
        let (ticket, version) = match read_code(code, &self.checkout.trusted_keys(), &expect) {
            Ok(read) => read,
            Err(reason) => {
                let reply = refused(reason);
                self.record(event, None, gate, &reply, caller.user_id).await;
                return Ok(reply);
            }
        };
        let db_error = |e: sqlx::Error| Status::unavailable(e.to_string());
        // The one conditional write: only a valid ticket of a paid order becomes used, by a code of
        // its current version, or (offline) of an earlier version scanned before the next one
        // began; its event goes to the outbox in the same statement.
        let admitted: Option<Option<String>> = sqlx::query_scalar(
            "WITH paid AS (
                SELECT o.id FROM orders o JOIN tickets t ON t.order_id = o.id
                WHERE t.id = $1 AND o.state = 'paid' FOR SHARE OF o),
             used AS (
                UPDATE tickets SET state = 'used', used_at = COALESCE($5, now()), used_gate = $4, updated_at = now()
                WHERE id = $1 AND event_id = $2 AND state = 'valid' AND order_id IN (SELECT id FROM paid)
                  AND (version = $3 OR ($5 IS NOT NULL AND version > $3 AND (
                      SELECT max(fetched_at) FROM scanner_lists
                      WHERE event_id = $2 AND user_id = $6 AND fetched_at <= $5) < (
                      SELECT valid_from FROM ticket_versions WHERE ticket_id = $1 AND version = $3 + 1)
                      AND $5 < (SELECT valid_from FROM ticket_versions WHERE ticket_id = $1 AND version = $3 + 1)))
                RETURNING id, seat_id, order_id, tier_id, used_at),
             published AS (
                INSERT INTO outbox (topic, key, payload)
                SELECT 'checkins', $2::text, jsonb_build_object('type', 'ticket.checked_in', 'schema_version', 1,
                    'event_id', $2, 'ticket_id', id, 'order_id', order_id, 'tier_id', tier_id, 'seat_id', seat_id,
                    'gate', $4, 'at', used_at, 'offline', $5 IS NOT NULL)
                FROM used)
             SELECT seat_id FROM used",
        )
        .bind(ticket)
        .bind(event)
        .bind(version)
        .bind(gate)
        .bind(at)
        .bind(caller.user_id)
        .fetch_optional(self.db())
        .await
        .map_err(db_error)?;
        let reply = match admitted {
            Some(seat) => CheckInReply {
                result: Outcome::Admitted as i32,
                ticket_id: ticket.to_string(),
                seat: seat.unwrap_or_default(),
                ..Default::default()
            },
            None => {
                let row: Option<TicketUse> =
                    sqlx::query_as(
                        "SELECT state, version, seat_id, used_at, used_gate FROM tickets WHERE id = $1 AND event_id = $2",
                    )
                    .bind(ticket)
                    .bind(event)
                    .fetch_optional(self.db())
                    .await
                    .map_err(db_error)?;
                match row {
                    None => refused("unknown-ticket"),
                    // This very offline scan, synced again.
                    Some((state, _, seat, used_at, used_gate))
                        if state == "used"
                            && at.is_some()
                            && used_at == at
                            && used_gate.as_deref() == Some(gate) =>
                    {
                        return Ok(CheckInReply {
                            result: Outcome::Admitted as i32,
                            ticket_id: ticket.to_string(),
                            seat: seat.unwrap_or_default(),
                            ..Default::default()
                        });
                    }
                    // Used, by this version or an earlier one: the holder of any version is told.
                    Some((state, _, seat, used_at, used_gate)) if state == "used" => CheckInReply {
                        result: Outcome::AlreadyUsed as i32,
                        ticket_id: ticket.to_string(),
                        seat: seat.unwrap_or_default(),
                        used_at: used_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        used_gate: used_gate.unwrap_or_default(),
                        reason: String::new(),
                    },
                    Some((_, current, ..)) if current != version => refused("old-version"),
                    Some((state, ..)) if state == "valid" => refused("not-paid"),
                    Some(_) => refused("void"),
                }
            }
        };
        self.record(event, Some(ticket), gate, &reply, caller.user_id).await;
        Ok(reply)
    }
}
