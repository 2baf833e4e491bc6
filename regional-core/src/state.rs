//! What every handler can reach. This file imports no handler: handlers import it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::checkout::watch::OrderWatch;
use crate::checkout::Checkout;
use crate::error::{ApiError, Result};
use crate::reporting::edge::EdgeStats;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Where reports, exports and the dashboard read: the replica when one is configured
    /// (`DATABASE_REPLICA_URL`), else the primary.
    pub read_db: PgPool,
    /// The background work's pool (`db::background_pool`); the requests' pool until `serve` sets it.
    pub background_db: PgPool,
    pub health_timeout: Duration,
    /// Checkout, when the core has its keys (else its routes answer 503).
    pub checkout: Option<Arc<Checkout>>,
    /// The platform's commission on an organizer's ticket money, in basis points (settlement).
    pub commission_bps: i64,
    /// What the edge knows of each sale (reports, dashboard, `/metrics`).
    pub edge: Arc<EdgeStats>,
    /// True once the core is shutting down: `/readyz` answers 503 so that no new traffic comes.
    pub draining: Arc<AtomicBool>,
    /// The longest any request may take (`CORE_REQUEST_TIMEOUT_SECS`; see [`crate::limits`]).
    pub request_timeout: Duration,
    /// The buyers' long polls of their orders (`checkout::watch`).
    pub order_watch: Arc<OrderWatch>,
    /// The proxies whose `X-Forwarded-For` names the client (`CORE_TRUSTED_PROXIES`).
    pub trusted_proxies: crate::origin::TrustedProxies,
    /// Partner webhooks, when the core has `CORE_WEBHOOK_KEYS` (else their routes answer 503).
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    /// What buyers' mails link to and are signed with, when the core has `CORE_SIGNING_KEY` (else
    /// sign-in links answer 503).
    pub mail: Option<Arc<crate::notifications::MailSettings>>,
    /// SMS, when the core has the provider's account (`TWILIO_ACCOUNT_SID`…; else checkout refuses
    /// a phone number and the provider's routes answer 404).
    pub sms: Option<Arc<crate::sms::Sms>>,
}

impl AppState {
    /// State without checkout (admin and catalog only).
    pub fn new(db: PgPool, health_timeout: Duration) -> Self {
        let draining = Arc::<AtomicBool>::default();
        Self {
            read_db: db.clone(),
            background_db: db.clone(),
            db,
            health_timeout,
            checkout: None,
            commission_bps: crate::config::DEFAULT_COMMISSION_BPS,
            edge: EdgeStats::disabled(),
            order_watch: OrderWatch::new(draining.clone()),
            draining,
            request_timeout: crate::limits::DEFAULT_TIMEOUT,
            trusted_proxies: crate::origin::TrustedProxies::default(),
            webhooks: None,
            mail: None,
            sms: None,
        }
    }

    /// Checkout, or the 503 its routes answer on a core without its keys.
    pub fn checkout(&self) -> Result<Arc<Checkout>> {
        self.checkout.clone().ok_or_else(|| {
            ApiError::Unavailable(
                "checkout is not configured on this core (CORE_SIGNING_KEY, EDGE_VERIFYING_KEYS)".into(),
            )
        })
    }
}

/// The primary pool, for extractors that need only the database (see [`crate::auth`]).
impl FromRef<AppState> for PgPool {
    fn from_ref(state: &AppState) -> PgPool {
        state.db.clone()
    }
}
