//! The core's configuration: flags and environment, validated at start-up, with local defaults so
//! that `regional-core` alone runs against the local PostgreSQL. Secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `regional-core [serve|migrate]`.
#[derive(Debug, Parser)]
#[command(name = "regional-core", version, about = "The ticketing platform's regional core")]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Used when no subcommand is given: `regional-core` alone means `regional-core serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Create the database if it does not exist, apply pending migrations, and exit.
    Migrate(DatabaseArgs),
    /// Create a platform admin (and the platform organization, the first time) and print their
    /// API key once.
    CreateAdmin(CreateAdminArgs),
    /// Seed the demo organization, venue and event (idempotent) and print the buyer's event id and
    /// a fresh organizer key, as JSON.
    SeedDemo(DatabaseArgs),
    /// Queue a push to the edge of one event (`--event ID`) or of every published one (`--all`),
    /// even when the core records them as synced: after the edge lost its storage or moved to
    /// another account. Events with orders are left alone (docs/runbook.md). A running core
    /// pushes them.
    Republish(RepublishArgs),
    /// Mark the outbox's messages from a point as unsent, so that the relay sends them to Kafka
    /// again (for downstream readers that lost them). The core's own consumers apply each message
    /// once whatever is sent again. Prints how many were marked.
    ReplayOutbox(ReplayOutboxArgs),
    /// Exit 0 when the URL answers 200 within two seconds, 1 otherwise: the image's health check
    /// (it has no shell and no curl). Only `http://`.
    Probe(ProbeArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("from").required(true).args(["from_id", "since"])))]
pub struct ReplayOutboxArgs {
    /// The first message to send again (its id: the `message-id` header of Kafka's copy).
    #[arg(long)]
    pub from_id: Option<i64>,
    /// Every message written at or after this time (RFC 3339, e.g. `2026-12-02T18:00:00Z`).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The last message to send again (its id); without it, up to the newest.
    #[arg(long)]
    pub until_id: Option<i64>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// What to ask, e.g. `http://127.0.0.1:8080/readyz`.
    #[arg(default_value = "http://127.0.0.1:8080/readyz")]
    pub url: String,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["event", "all"])))]
pub struct RepublishArgs {
    /// The event to push again.
    #[arg(long)]
    pub event: Option<uuid::Uuid>,
    /// Every event the edge should know (published, on sale, sold out or cancelled).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct CreateAdminArgs {
    /// The admin's e-mail address (unique).
    #[arg(long)]
    pub email: String,
    /// The admin's name.
    #[arg(long, default_value = "")]
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Development mode: allows what must never run in production (the test payment provider, its
    /// pages that mark any order paid, fault injection). The run command and the tests ask for it;
    /// without it the core refuses to start with any of them (docs/security.md).
    #[arg(long, env = "CORE_DEV_MODE", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_mode: bool,
    /// Where `/metrics` is served: its own listener, for operators and Prometheus only (it shows
    /// every tenant's figures). Never on the public listener.
    #[arg(long, env = "CORE_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Longest time any HTTP request may take before it is answered `503` (seconds).
    #[arg(long, env = "CORE_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_secs: u64,
    /// Apply pending migrations (creating the database if needed) before serving.
    #[arg(long, env = "CORE_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
    /// How long `/healthz` waits for the database before calling it down, in milliseconds.
    #[arg(long, env = "CORE_HEALTH_TIMEOUT_MS", default_value_t = 1000)]
    pub health_timeout_ms: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Most connections the background work's own pool opens (the outbox relay and its consumers,
    /// mail, reminders, publishing, pruning), so that a backlog never takes checkout's connections.
    /// At least 4; each replica opens up to this plus `DATABASE_MAX_CONNECTIONS` (docs/configuration.md,
    /// "Connections").
    #[arg(long, env = "DATABASE_BACKGROUND_CONNECTIONS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(4..=64))]
    pub background_connections: u32,
    /// The edge's base URL, for publishing events to it.
    #[arg(long, env = "EDGE_URL", default_value = "http://127.0.0.1:8787")]
    pub edge_url: String,
    /// The core's signing key (`<kid>:<base64url seed>`), for its calls to the edge. Without it
    /// nothing is published (events wait, pending).
    #[arg(long, env = "CORE_SIGNING_KEY", hide_env_values = true, value_parser = Secret::<SecretKey>::new())]
    pub core_signing_key: Option<SecretKey>,
    #[command(flatten)]
    pub checkout: CheckoutArgs,
    #[command(flatten)]
    pub fulfillment: FulfillmentArgs,
    /// The platform's commission on an organizer's ticket money (after fees and refunds), in basis
    /// points: 500 is 5 %. Used by the settlement report.
    #[arg(long, env = "PLATFORM_COMMISSION_BPS", default_value_t = DEFAULT_COMMISSION_BPS as u32,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub commission_bps: u32,
    #[command(flatten)]
    pub operations: OperationsArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub sms: SmsArgs,
}

/// SMS (docs/sms.md): on when the account SID, the auth token and the sender are all set.
#[derive(Debug, Clone, Args)]
pub struct SmsArgs {
    /// The provider's Messages API (Twilio's, or a provider speaking it; `http://` only with
    /// `CORE_DEV_MODE`, for a local stand-in).
    #[arg(long, env = "SMS_API_BASE", default_value = "https://api.twilio.com")]
    pub sms_api_base: String,
    /// The provider's account SID (`AC…`).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// The provider's auth token: authenticates the core's requests and signs the provider's.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true, value_parser = Secret::<crate::sms::twilio::AuthToken>::new())]
    pub twilio_auth_token: Option<crate::sms::twilio::AuthToken>,
    /// Who texts come from: a number in international form (`+44…`) or a Messaging Service (`MG…`).
    #[arg(long, env = "SMS_FROM")]
    pub sms_from: Option<String>,
    /// Country calling codes numbers must start with, comma-separated (`+44,+353`), or `any`.
    /// Texts cost money per country and some ranges are premium (SMS pumping): with SMS on, a core
    /// outside development mode needs the list (or `any`, asked for explicitly).
    #[arg(long, env = "SMS_ALLOWED_PREFIXES", default_value = "")]
    pub sms_allowed_prefixes: String,
    /// Most texts to one number in 24 hours (the rest wait).
    #[arg(long, env = "SMS_PER_NUMBER_PER_DAY", default_value_t = 6,
          value_parser = clap::value_parser!(i64).range(1..=100))]
    pub sms_per_number_per_day: i64,
    /// Failed attempts before a text fails for good (retried after `NOTIFY_RETRY_BASE_MS`,
    /// doubled each time, at most an hour apart: 12 is about five hours).
    #[arg(long, env = "SMS_MAX_ATTEMPTS", default_value_t = 12,
          value_parser = clap::value_parser!(i32).range(1..=30))]
    pub sms_max_attempts: i32,
}

impl SmsArgs {
    /// SMS as configured (with the core's public URL, where the provider calls): `None` when off,
    /// or why the settings cannot be served.
    pub fn settings(&self, public_url: &str, dev_mode: bool) -> Result<Option<crate::sms::Sms>, String> {
        let (sid, token, from) = match (&self.twilio_account_sid, &self.twilio_auth_token, &self.sms_from) {
            (None, None, None) => return Ok(None),
            (Some(sid), Some(token), Some(from)) => (sid, token, from),
            _ => return Err("SMS needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and SMS_FROM together".into()),
        };
        if !dev_mode && !self.sms_api_base.starts_with("https://") {
            return Err(format!(
                "SMS_API_BASE={} is not https: the auth token would cross the network in the clear \
                 (a local stand-in needs CORE_DEV_MODE=true)",
                self.sms_api_base
            ));
        }
        if !dev_mode && !public_url.starts_with("https://") {
            return Err(format!(
                "CORE_PUBLIC_URL={public_url} is not https: the SMS provider's reports and STOPs are \
                 signed over the URL it calls, which must be the core's public https address \
                 (CORE_DEV_MODE=true for a local stand-in)"
            ));
        }
        let any = crate::sms::Reach::default();
        if !from.starts_with("MG") {
            any.phone(from).map_err(|why| format!("SMS_FROM: {why}, or a Messaging Service SID (MG…)"))?;
        }
        let prefixes = self.sms_allowed_prefixes.trim();
        if prefixes.is_empty() && !dev_mode {
            return Err(
                "SMS_ALLOWED_PREFIXES is not set: list the country calling codes texted (+44,+353), \
                 or `any` (every country, premium ranges too: docs/sms.md)"
                    .into(),
            );
        }
        let mut allowed = Vec::new();
        let listed = if prefixes.eq_ignore_ascii_case("any") { "" } else { prefixes };
        for p in listed.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let digits = p.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("SMS_ALLOWED_PREFIXES: {p} is not a country calling code such as +44"));
            }
            allowed.push(p.to_owned());
        }
        Ok(Some(crate::sms::Sms {
            provider: crate::sms::twilio::TwilioSettings {
                api_base: self.sms_api_base.clone(),
                account_sid: sid.clone(),
                auth_token: token.0.clone(),
                from: from.clone(),
                public_url: public_url.to_owned(),
            },
            reach: crate::sms::Reach { allowed_prefixes: allowed },
        }))
    }
}

/// Partner webhooks (docs/webhooks.md).
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// The keys that seal the endpoints' signing secrets at rest (AES-256-GCM): `<kid>:<base64 of
    /// 32 bytes>`, comma-separated; the first seals, all open (a rotation). Without them the
    /// webhook routes answer 503 and nothing is delivered. Make one with `openssl rand -base64 32`.
    #[arg(long, env = "CORE_WEBHOOK_KEYS", hide_env_values = true, value_parser = Secret::<crate::webhooks::settings::SealingKeys>::new())]
    pub webhook_keys: Option<crate::webhooks::settings::SealingKeys>,
    /// Endpoints may be `http://` and private, loopback or link-local addresses: local
    /// receivers in development and tests. Needs `CORE_DEV_MODE` (in production it lets an
    /// organizer make the core call inside the operator's network).
    #[arg(long, env = "CORE_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// The delays before each retry of a failed delivery, in seconds, comma-separated.
    #[arg(long, env = "CORE_WEBHOOK_RETRY_SCHEDULE", default_value = crate::webhooks::settings::DEFAULT_RETRY_SCHEDULE)]
    pub webhook_retry_schedule: crate::webhooks::settings::RetrySchedule,
    /// An endpoint whose every attempt failed for this long is disabled and its organization's
    /// admins mailed (seconds; five days by default).
    #[arg(long, env = "CORE_WEBHOOK_DISABLE_AFTER_SECS", default_value_t = crate::webhooks::settings::DEFAULT_DISABLE_AFTER_SECS,
          value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600))]
    pub webhook_disable_after_secs: u64,
    /// The longest one attempt may take, in seconds.
    #[arg(long, env = "CORE_WEBHOOK_TIMEOUT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub webhook_timeout_secs: u64,
    /// How often the dispatcher looks for due deliveries, in milliseconds.
    #[arg(long, env = "CORE_WEBHOOK_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub webhook_poll_ms: u64,
}

impl WebhookArgs {
    /// The webhooks' settings, when the keys are set.
    pub fn settings(&self) -> Option<crate::webhooks::settings::Settings> {
        Some(crate::webhooks::settings::Settings {
            keys: self.webhook_keys.clone()?,
            allow_private: self.webhook_allow_private,
            retries: self.webhook_retry_schedule.clone(),
            disable_after: Duration::from_secs(self.webhook_disable_after_secs),
            timeout: Duration::from_secs(self.webhook_timeout_secs),
            poll: Duration::from_millis(self.webhook_poll_ms),
        })
    }
}

/// Reading, scraping and shutting down (docs/reporting.md).
#[derive(Debug, Clone, Args)]
pub struct OperationsArgs {
    /// A read replica's URL for reports, exports and the dashboard (they may lag the primary by
    /// the replication delay). Unset: they read the primary.
    #[arg(long, env = "DATABASE_REPLICA_URL", hide_env_values = true, value_parser = Secret::<DatabaseUrl>::new())]
    pub replica_url: Option<DatabaseUrl>,
    /// How often the edge's figures of the events on sale are scraped into `/metrics`.
    #[arg(long, env = "EDGE_SCRAPE_SECS", default_value_t = 15)]
    pub edge_scrape_secs: u64,
    /// How often the publisher asks the edge whether it still holds each synced event (and pushes
    /// again any it lost).
    #[arg(long, env = "EDGE_CHECK_SECS", default_value_t = 60)]
    pub edge_check_secs: u64,
    /// On SIGTERM, how long `/readyz` answers 503 while requests are still served, so that the
    /// load balancer stops sending new ones before the listener closes.
    #[arg(long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = 5)]
    pub shutdown_drain_secs: u64,
    /// After the drain, how long the background tasks (checkout's driver, the relay, consumers,
    /// mail, publishing) and check-in's calls in flight get to finish their step before they are
    /// cut short (nothing is lost then: another replica resumes what was recorded).
    #[arg(long, env = "SHUTDOWN_TASKS_SECS", default_value_t = 10)]
    pub shutdown_tasks_secs: u64,
    /// The load balancers and proxies in front of the core whose `X-Forwarded-For` names the
    /// client for the audit log (comma-separated addresses or networks, `10.0.0.0/8,192.0.2.1`).
    /// Empty: the connection's peer is the client, whatever a header says (docs/audit.md).
    #[arg(long, env = "CORE_TRUSTED_PROXIES", default_value = "", value_parser = crate::origin::TrustedProxies::parse)]
    pub trusted_proxies: crate::origin::TrustedProxies,
    /// How many days the audit log keeps a row before the retention job deletes it (docs/audit.md,
    /// docs/privacy.md).
    #[arg(long, env = "CORE_AUDIT_RETENTION_DAYS", default_value_t = DEFAULT_AUDIT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(30..=3650))]
    pub audit_retention_days: u32,
    /// How many days after an event ended its buyers' addresses are kept (orders, tickets,
    /// transfers, mails) before the retention job makes them anonymous; the amounts stay
    /// (docs/privacy.md).
    #[arg(long, env = "CORE_PERSONAL_DATA_RETENTION_DAYS", default_value_t = DEFAULT_PERSONAL_DATA_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(30..=3650))]
    pub personal_data_retention_days: u32,
}

/// How long after an event its buyers' addresses are kept by default
/// (`CORE_PERSONAL_DATA_RETENTION_DAYS`): two years, the usual time for a buyer's claim about
/// their purchase (docs/privacy.md).
pub const DEFAULT_PERSONAL_DATA_RETENTION_DAYS: u32 = 730;

/// How long the audit log keeps a row by default (`CORE_AUDIT_RETENTION_DAYS`): 400 days, a year of
/// questions about the last season and a month to ask them (docs/audit.md).
pub const DEFAULT_AUDIT_RETENTION_DAYS: u32 = 400;

/// The settlement's commission when `PLATFORM_COMMISSION_BPS` is not set (5 %).
pub const DEFAULT_COMMISSION_BPS: i64 = 500;

/// Domain events (the outbox relay) and notifications.
#[derive(Debug, Clone, Args)]
pub struct FulfillmentArgs {
    /// The Kafka-protocol broker (`host:port`, comma-separated). Without it the outbox is delivered
    /// to the consumers in this process.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<String>,
    /// Prepended to the topic names (`ticketing.` gives `ticketing.orders.v1`).
    #[arg(long, env = "KAFKA_TOPIC_PREFIX", default_value = "ticketing.")]
    pub kafka_topic_prefix: String,
    /// Partitions of the topics the relay creates (one event's messages always share one).
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 3)]
    pub kafka_partitions: i32,
    /// Replicas of each partition of the topics the relay creates: 3 survives a broker's loss
    /// with `min.insync.replicas=2`; a single local broker needs 1.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 3)]
    pub kafka_replication_factor: i32,
    /// How often the relay looks for unsent outbox rows, in milliseconds (the delay before a
    /// message reaches its consumers).
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 100)]
    pub outbox_poll_ms: u64,
    /// The SMTP server (`smtp://host:port`, `smtp://user:pass@host:587?tls=required`,
    /// `smtps://…`). Without it mails are queued but not sent.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The mails' sender.
    #[arg(long, env = "MAIL_FROM", default_value = "Tickets <tickets@localhost>")]
    pub mail_from: String,
    /// Where buyers open their pages (the edge's public URL), for links in mails; `EDGE_URL` when unset.
    #[arg(long, env = "BUYER_URL")]
    pub buyer_url: Option<String>,
    /// Failed attempts before a mail is parked.
    #[arg(long, env = "NOTIFY_MAX_ATTEMPTS", default_value_t = 8)]
    pub notify_max_attempts: i32,
    /// The first retry's delay in milliseconds (doubled at each attempt, at most an hour).
    #[arg(long, env = "NOTIFY_RETRY_BASE_MS", default_value_t = 5000)]
    pub notify_retry_base_ms: u64,
    /// Most mails to one recipient per hour (the rest wait).
    #[arg(long, env = "NOTIFY_PER_HOUR", default_value_t = 20)]
    pub notify_per_hour: i64,
    /// How long before an event its reminders go out, in hours.
    #[arg(long, env = "REMINDER_LEAD_HOURS", default_value_t = 24)]
    pub reminder_lead_hours: i64,
    /// How often events are looked at for reminders that are due, in seconds.
    #[arg(long, env = "REMINDER_CHECK_SECS", default_value_t = 60)]
    pub reminder_check_secs: u64,
    /// How often the edge's waiting lists are read for new offers to mail, in seconds.
    #[arg(long, env = "WAITLIST_POLL_SECS", default_value_t = 5)]
    pub waitlist_poll_secs: u64,
}

/// Checkout and payments.
#[derive(Debug, Clone, Args)]
pub struct CheckoutArgs {
    /// The edge's public keys (`<kid>:<base64url>`, comma-separated; several during a rotation),
    /// to verify hold tokens offline. Without them (or `CORE_SIGNING_KEY`) checkout answers 503.
    #[arg(long, env = "EDGE_VERIFYING_KEYS")]
    pub edge_verifying_keys: Option<String>,
    /// The core's earlier public keys (`<kid>:<base64url>`, comma-separated) during a rotation of
    /// `CORE_SIGNING_KEY`: codes and links they signed stay valid, and `/api/v1/keys` publishes them.
    #[arg(long, env = "CORE_PREVIOUS_VERIFYING_KEYS")]
    pub core_previous_verifying_keys: Option<String>,
    /// Where buyers and providers reach this core (test provider pages and its webhooks).
    #[arg(long, env = "CORE_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// `stripe`, or `testpay` (the built-in test provider, development mode only). Unset: `testpay`
    /// in development mode; otherwise required whenever checkout is configured.
    #[arg(long, env = "PAYMENT_PROVIDER", value_parser = ["testpay", "stripe"])]
    pub payment_provider: Option<String>,
    /// The test provider's webhook secret; a random one per start when unset.
    #[arg(long, env = "TESTPAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub testpay_webhook_secret: Option<String>,
    /// Stripe's API (another base only for a Stripe-compatible test double; `http://` only with
    /// `CORE_DEV_MODE`).
    #[arg(long, env = "STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,
    /// Stripe's secret API key (`sk_live_...`), with `PAYMENT_PROVIDER=stripe`.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Webhook endpoint secrets (`whsec_...`, comma-separated: several during a rotation).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRETS", hide_env_values = true)]
    pub stripe_webhook_secrets: Option<String>,
    /// How long after the hold's expiry a payment may still arrive before it is cancelled at the
    /// provider (a buyer who pays in the last second still gets the seats if nobody took them).
    #[arg(long, env = "PAYMENT_GRACE_SECS", default_value_t = 30)]
    pub payment_grace_secs: u32,
    /// Where the check-in gRPC service listens (scanners, box office).
    #[arg(long, env = "CORE_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// The check-in service's TLS certificate chain (PEM file). With `CORE_GRPC_TLS_KEY`, scanners
    /// connect over TLS (their API keys travel in the metadata).
    #[arg(long, env = "CORE_GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<std::path::PathBuf>,
    /// The check-in service's TLS private key (PEM file).
    #[arg(long, env = "CORE_GRPC_TLS_KEY", hide_env_values = true)]
    pub grpc_tls_key: Option<std::path::PathBuf>,
    /// Serve check-in without TLS on a non-loopback address (TLS ends before the core, at a mesh
    /// or a load balancer). Without TLS and without this, the core serves check-in on loopback only.
    #[arg(long, env = "CORE_GRPC_PLAINTEXT", default_value_t = false, action = clap::ArgAction::Set)]
    pub grpc_plaintext: bool,
    /// How often the reconciler looks for unfinished orders, in milliseconds.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 500)]
    pub reconcile_interval_ms: u64,
    /// Test only: a crash point (`crash-before-confirm`, `crash-after-confirm`). Never in production.
    #[arg(long, env = "CORE_FAULT_INJECT", hide = true)]
    pub fault_inject: Option<String>,
}

/// Parses a secret setting without ever repeating it: clap's own parsers quote the value they
/// refuse in their error, which would put a key or a password in the start-up logs.
#[derive(Clone)]
pub struct Secret<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Secret<T> {
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Default for Secret<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> clap::builder::TypedValueParser for Secret<T>
where
    T: FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .or_else(|| arg.and_then(|a| a.get_long().map(|l| format!("--{l}"))))
            .unwrap_or_else(|| "a secret setting".into());
        let refused = |why: &str| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{name}: {why} (the value is a secret: it is not shown)\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| refused("not UTF-8"))?;
        text.parse().map_err(|e: String| refused(&e))
    }
}

/// A signing key read from configuration: parsed at start-up, never printed.
#[derive(Clone)]
pub struct SecretKey(pub shared_types::token::TokenSigner);

impl FromStr for SecretKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        shared_types::token::TokenSigner::parse(s).map(Self).map_err(|e| e.to_string())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, ***)", self.0.kid())
    }
}

/// The payment provider a core serves with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// None: checkout is not configured (no keys), so nothing is charged and no provider exists.
    None,
    Stripe,
    /// The built-in test provider: development mode only.
    Test,
}

impl ServeArgs {
    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }

    /// True when checkout has what it needs (the core's key and the edge's keys).
    pub fn checkout_configured(&self) -> bool {
        self.core_signing_key.is_some() && self.checkout.edge_verifying_keys.is_some()
    }

    /// Every start-up rule of a configuration, and the payment provider to serve with; or why it may
    /// not start. Safe by default: the test provider (whose pages mark any order paid) and fault
    /// injection need development mode, and check-in leaves loopback only over TLS or when told.
    pub fn validate(&self) -> Result<ProviderChoice, String> {
        let c = &self.checkout;
        self.sms.settings(&c.public_url, self.dev_mode)?;
        if self.webhooks.webhook_allow_private && !self.dev_mode {
            return Err(
                "CORE_WEBHOOK_ALLOW_PRIVATE lets organizers make the core call private addresses: it \
                 needs CORE_DEV_MODE=true (never in production)"
                    .into(),
            );
        }
        if c.fault_inject.is_some() && !self.dev_mode {
            return Err("CORE_FAULT_INJECT crashes the core on purpose: it needs CORE_DEV_MODE=true".into());
        }
        match (&c.grpc_tls_cert, &c.grpc_tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err("CORE_GRPC_TLS_CERT and CORE_GRPC_TLS_KEY go together".into())
            }
            (None, None) if !c.grpc_listen.ip().is_loopback() && !c.grpc_plaintext => {
                return Err(format!(
                    "CORE_GRPC_LISTEN={} is not loopback: set CORE_GRPC_TLS_CERT and CORE_GRPC_TLS_KEY \
                     (scanners' API keys would cross the network in the clear), or CORE_GRPC_PLAINTEXT=true \
                     when TLS ends before the core",
                    c.grpc_listen
                ))
            }
            _ => {}
        }
        match (c.payment_provider.as_deref(), self.dev_mode) {
            (Some("stripe"), false) if !c.stripe_api_base.starts_with("https://") => Err(format!(
                "STRIPE_API_BASE={} is not https: the secret key would cross the network in the clear \
                 (a local Stripe stand-in needs CORE_DEV_MODE=true)",
                c.stripe_api_base
            )),
            (Some("stripe"), _) => Ok(ProviderChoice::Stripe),
            (Some(_), true) | (None, true) => Ok(ProviderChoice::Test),
            (Some(_), false) => Err("PAYMENT_PROVIDER=testpay lets anyone mark an order paid: it needs \
                 CORE_DEV_MODE=true (never in production)"
                .into()),
            (None, false) if self.checkout_configured() => Err("PAYMENT_PROVIDER is not set: set it to \
                 stripe (or CORE_DEV_MODE=true for the test provider, never in production)"
                .into()),
            (None, false) => Ok(ProviderChoice::None),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (may carry a password: it is never printed). TLS by its `sslmode`:
    /// `verify-full` with `sslrootcert=/path/ca.pem` (the provider's CA; Mozilla's roots are built
    /// in) for a managed database. `prefer` (the default) and `require` encrypt without checking
    /// who answers; `verify-ca` is refused.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ticketing",
        hide_env_values = true,
        value_parser = Secret::<DatabaseUrl>::new()
    )]
    pub database_url: DatabaseUrl,
    /// Most connections the pool for requests (and checkout's saga) opens.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub max_connections: u32,
}

/// A PostgreSQL URL whose `Debug` and `Display` hide the password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The full URL, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else { return "***".into() };
        match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains("sslmode=verify-ca") {
            // The driver (sqlx with rustls) trusts Mozilla's roots besides `sslrootcert`, so a
            // chain check without the name check would accept any public certificate.
            Err("sslmode=verify-ca is refused: use verify-full (the name is checked too)".into())
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self(s.to_owned()))
        } else {
            Err("must be a postgres:// URL".into())
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Read by `main.rs` before the configuration is parsed: (name, default, what).
const LOGGING_ENV: [(&str, &str, &str); 6] = [
    ("RUST_LOG", "info,sqlx=warn", "What is logged (tracing-subscriber's `EnvFilter` syntax)."),
    ("LOG_FORMAT", "text", "`json` for one JSON object per log line."),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "Where traces go over OTLP/HTTP (protobuf), e.g. `http://otel-collector:4318` (`/v1/traces` is added); unset: nothing is exported, `traceparent` is still carried. `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` gives the full URL instead.",
    ),
    (
        "OTEL_SERVICE_NAME",
        "ticketing-core",
        "The service name on exported spans. The SDK's other standard variables apply too (`OTEL_EXPORTER_OTLP_HEADERS` for a collector's credentials (secret), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_RESOURCE_ATTRIBUTES`).",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "",
        "Headers sent with each export (`key=value,…`), e.g. the collector's API key: a secret (never logged). `OTEL_EXPORTER_OTLP_TRACES_HEADERS` likewise, for traces only.",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "",
        "As `OTEL_EXPORTER_OTLP_HEADERS`, for traces only: a secret.",
    ),
];

/// The prefix of the environment variables that set any librdkafka property.
pub const KAFKA_CONF_PREFIX: &str = "KAFKA_CONF_";

/// Properties the core sets itself, or whose default it relies on, because its guarantees rest on
/// them (the producer never drops a message, offsets are stored only after a message is handled,
/// the consumer's stream never yields end-of-partition): setting one, or one of its aliases
/// ([`KAFKA_ALIASES`]), is refused.
const KAFKA_RESERVED: [&str; 9] = [
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "message.timeout.ms",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// librdkafka's other names for a property (its CONFIGURATION.md): checked as the property itself.
const KAFKA_ALIASES: [(&str, &str); 4] = [
    ("metadata.broker.list", "bootstrap.servers"),
    ("request.required.acks", "acks"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("auto.commit.enable", "enable.auto.commit"),
];

/// Properties that weaken TLS, send a password in the clear, break the core's ordering (one event's
/// messages on one partition) or make replicas fence each other, or load or run code: refused
/// unless `CORE_DEV_MODE=true`.
const KAFKA_UNSAFE: [&str; 12] = [
    "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm",
    "ssl.cipher.suites",
    "ssl.providers",
    "ssl.engine.id",
    "enable.sasl.oauthbearer.unsecure.jwt",
    "partitioner",
    "group.instance.id",
    "transactional.id",
    "plugin.library.paths",
    "ssl.engine.location",
    "sasl.kerberos.kinit.cmd",
];

/// The librdkafka properties given in the environment: `KAFKA_CONF_SASL_MECHANISMS=SCRAM-SHA-512`
/// sets `sasl.mechanisms` (the rest of the name lower-cased, `_` read as `.`). Values may be secret
/// (`KAFKA_CONF_SASL_PASSWORD`) and are never logged or echoed. Refused: an empty name, the
/// properties the core's guarantees rest on, and, outside development mode, the unsafe ones
/// ([`KAFKA_UNSAFE`], and `security.protocol=SASL_PLAINTEXT`, a password in the clear).
pub fn kafka_properties(
    vars: impl Iterator<Item = (String, String)>,
    dev_mode: bool,
) -> Result<Vec<(String, String)>, String> {
    let mut props: Vec<(String, String)> = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(KAFKA_CONF_PREFIX) else { continue };
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{name}: not a librdkafka property name"));
        }
        let key = rest.to_ascii_lowercase().replace('_', ".");
        // librdkafka hands a property it does not know globally to the default topic
        // configuration, which drops a leading `topic.`: `topic.auto.offset.reset` is
        // `auto.offset.reset`. Checked as what it sets.
        let bare = key.strip_prefix("topic.").unwrap_or(&key);
        let canonical = KAFKA_ALIASES.iter().find(|(alias, _)| *alias == bare).map_or(bare, |(_, k)| k);
        if KAFKA_RESERVED.contains(&canonical) {
            return Err(format!(
                "{name} would set {key}, which the core sets itself (docs/configuration.md)"
            ));
        }
        let clear_password = key == "security.protocol" && value.eq_ignore_ascii_case("sasl_plaintext");
        if !dev_mode && (KAFKA_UNSAFE.contains(&canonical) || clear_password) {
            return Err(format!(
                "{name} would weaken TLS or the core's guarantees (docs/configuration.md): only with CORE_DEV_MODE=true"
            ));
        }
        props.push((key, value));
    }
    props.sort();
    Ok(props)
}

/// The core's part of docs/configuration.md, made from the command-line definitions above: one
/// table per subcommand, every setting with its environment variable, flag, default and whether it
/// is a secret (its value is never shown in `--help` or logs). A test keeps the document current.
pub fn reference_markdown() -> String {
    use clap::CommandFactory;
    let root = Config::command();
    let mut out = String::new();
    for cmd in root.get_subcommands().filter(|c| c.get_name() != "help") {
        let about = one_line(cmd.get_about().map(|a| a.to_string()).unwrap_or_default());
        out.push_str(&format!("### `regional-core {}`\n\n{about}\n\n", cmd.get_name()));
        out.push_str("| variable | flag | secret | default | what |\n| --- | --- | --- | --- | --- |\n");
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != "help") {
            let env = arg.get_env().map_or("—".to_owned(), |e| format!("`{}`", e.to_string_lossy()));
            let flag = arg.get_long().map_or("—".to_owned(), |l| format!("`--{l}`"));
            let secret = if arg.is_hide_env_values_set() { "yes" } else { "no" };
            let defaults: Vec<String> =
                arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
            let default = match defaults.join(",") {
                d if d.is_empty() => "—".to_owned(),
                d => format!("`{d}`"),
            };
            let help =
                one_line(arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default());
            out.push_str(&format!("| {env} | {flag} | {secret} | {default} | {help} |\n"));
        }
        out.push('\n');
    }
    out.push_str(
        "### Every subcommand\n\n| variable | secret | default | what |\n| --- | --- | --- | --- |\n",
    );
    for (name, default, what) in LOGGING_ENV {
        let secret = if name.ends_with("_HEADERS") { "yes" } else { "no" };
        let default = if default.is_empty() { "—".to_owned() } else { format!("`{default}`") };
        out.push_str(&format!("| `{name}` | {secret} | {default} | {what} |\n"));
    }
    out.push_str(&format!(
        "\n`{KAFKA_CONF_PREFIX}<PROPERTY>` (`serve`; may be secret, never logged): any librdkafka property, \
         the rest of the name lower-cased with `_` read as `.`, e.g. `KAFKA_CONF_SECURITY_PROTOCOL=SASL_SSL`, \
         `KAFKA_CONF_SASL_MECHANISMS=SCRAM-SHA-512`, `KAFKA_CONF_SASL_USERNAME`, `KAFKA_CONF_SASL_PASSWORD`, \
         `KAFKA_CONF_SSL_CA_LOCATION=/etc/kafka/ca.pem`. Over TLS without `ssl.ca.location` the system's CA \
         certificates are used (`probe`). Refused, because the core's guarantees rest on them: {} (and their aliases {}). \
         Refused unless `CORE_DEV_MODE=true`, because they weaken TLS, run code or break ordering: {}, \
         and `security.protocol=SASL_PLAINTEXT`.\n",
        KAFKA_RESERVED.map(|k| format!("`{k}`")).join(", "),
        KAFKA_ALIASES.map(|(a, _)| format!("`{a}`")).join(", "),
        KAFKA_UNSAFE.map(|k| format!("`{k}`")).join(", ")
    ));
    out
}

fn one_line(text: String) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let url: DatabaseUrl = "postgres://core:s3cret@db.internal:5432/ticketing".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://core:***@db.internal:5432/ticketing");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
    }

    #[test]
    fn urls_without_password_print_as_is() {
        let url: DatabaseUrl = "postgres://postgres@127.0.0.1/ticketing".parse().unwrap();
        assert_eq!(url.to_string(), "postgres://postgres@127.0.0.1/ticketing");
    }

    #[test]
    fn non_postgres_urls_are_refused() {
        assert!("mysql://x@y/z".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn no_subcommand_means_serve_with_local_defaults() {
        let config = Config::try_parse_from(["regional-core"]).unwrap();
        assert!(config.command.is_none());
        assert_eq!(config.serve.listen.to_string(), "127.0.0.1:8080");
        assert!(config.serve.migrate);
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut all = vec!["regional-core", "serve"];
        all.extend_from_slice(args);
        let Some(Command::Serve(args)) = Config::try_parse_from(all).unwrap().command else {
            panic!("serve")
        };
        args
    }

    const KEYS: [&str; 4] = [
        "--core-signing-key",
        "core-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "--edge-verifying-keys",
        "edge-1:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik",
    ];

    #[test]
    fn the_test_provider_needs_development_mode() {
        // No provider named, checkout configured, no development mode: refused (it was testpay).
        let refused = serve_args(&KEYS).validate().unwrap_err();
        assert!(refused.contains("PAYMENT_PROVIDER"), "{refused}");
        let mut named = KEYS.to_vec();
        named.extend(["--payment-provider", "testpay"]);
        assert!(serve_args(&named).validate().unwrap_err().contains("CORE_DEV_MODE"));
        // Asked for explicitly: the test provider.
        named.extend(["--dev-mode", "true"]);
        assert_eq!(serve_args(&named).validate(), Ok(ProviderChoice::Test));
        let mut stripe = KEYS.to_vec();
        stripe.extend(["--payment-provider", "stripe"]);
        assert_eq!(serve_args(&stripe).validate(), Ok(ProviderChoice::Stripe));
        // Stripe over plain HTTP (a local stand-in) only in development mode.
        stripe.extend(["--stripe-api-base", "http://127.0.0.1:12111"]);
        assert!(serve_args(&stripe).validate().unwrap_err().contains("STRIPE_API_BASE"));
        stripe.extend(["--dev-mode", "true"]);
        assert_eq!(serve_args(&stripe).validate(), Ok(ProviderChoice::Stripe));
        // No checkout, no provider: nothing to charge with, nothing mounted.
        assert_eq!(serve_args(&[]).validate(), Ok(ProviderChoice::None));
        assert!(!serve_args(&[]).dev_mode, "development mode is never the default");
    }

    #[test]
    fn check_in_leaves_loopback_only_with_tls_or_when_told() {
        assert!(serve_args(&["--grpc-listen", "0.0.0.0:50051"]).validate().unwrap_err().contains("TLS"));
        let told = serve_args(&["--grpc-listen", "0.0.0.0:50051", "--grpc-plaintext", "true"]);
        assert!(told.validate().is_ok());
        let tls = ["--grpc-listen", "0.0.0.0:50051", "--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem"];
        assert!(serve_args(&tls).validate().is_ok());
        assert!(serve_args(&["--grpc-tls-cert", "c.pem"]).validate().is_err(), "a certificate needs its key");
        assert!(serve_args(&[]).validate().is_ok(), "loopback needs neither");
    }

    #[test]
    fn fault_injection_needs_development_mode() {
        assert!(serve_args(&["--fault-inject", "crash-before-confirm"]).validate().is_err());
        let ok = serve_args(&["--fault-inject", "crash-before-confirm", "--dev-mode", "true"]);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn a_refused_secret_is_never_repeated_in_the_error() {
        for (flag, value) in [
            ("--webhook-keys", "k1:c2VjcmV0LWJ1dC10b28tc2hvcnQ"),
            ("--core-signing-key", "core-1:c2VjcmV0LWJ1dC10b28tc2hvcnQ"),
            ("--database-url", "mysql://user:hunter2@db/x"),
            ("--replica-url", "mysql://user:hunter2@db/x"),
        ] {
            let refused =
                Config::try_parse_from(["regional-core", "serve", flag, value]).unwrap_err().to_string();
            assert!(!refused.contains("c2VjcmV0") && !refused.contains("hunter2"), "{flag}: {refused}");
            assert!(refused.contains("not shown"), "{flag}: {refused}");
        }
    }

    #[test]
    fn sms_is_all_or_nothing_over_https_to_the_countries_listed() {
        const SMS: [&str; 6] = [
            "--twilio-account-sid",
            "AC00000000000000000000000000000001",
            "--twilio-auth-token",
            "secret-token-0123456789",
            "--sms-from",
            "+15005550006",
        ];
        let with = |more: &[&str]| {
            let mut all = SMS.to_vec();
            all.extend_from_slice(more);
            serve_args(&all)
        };
        let https = ["--public-url", "https://core.example"];
        assert!(serve_args(&[]).sms.settings("http://x", false).unwrap().is_none(), "off by default");
        let partial = serve_args(&SMS[..4]).validate().unwrap_err();
        assert!(partial.contains("together"), "{partial}");
        let unlisted = with(&https).validate().unwrap_err();
        assert!(unlisted.contains("SMS_ALLOWED_PREFIXES"), "{unlisted}");
        let plain = with(&["--sms-allowed-prefixes", "+44"]).validate().unwrap_err();
        assert!(plain.contains("CORE_PUBLIC_URL"), "{plain}");
        let api = with(&[
            "--sms-allowed-prefixes",
            "+44",
            "--sms-api-base",
            "http://127.0.0.1:1",
            "--public-url",
            "https://c.example",
        ]);
        assert!(api.validate().unwrap_err().contains("SMS_API_BASE"));
        let bad = with(&["--sms-allowed-prefixes", "+44,44", "--public-url", "https://c.example"]);
        assert!(bad.validate().unwrap_err().contains("44 is not a country calling code"));
        let ok = with(&["--sms-allowed-prefixes", " +44, +353 ", "--public-url", "https://c.example"]);
        let sms = ok.sms.settings("https://c.example", false).unwrap().expect("on");
        assert_eq!(sms.reach.allowed_prefixes, ["+44", "+353"]);
        assert!(!format!("{ok:?} {:?}", sms.provider).contains("secret-token"), "the token is never printed");
        let any = with(&["--sms-allowed-prefixes", "any", "--public-url", "https://c.example"]);
        assert!(any
            .sms
            .settings("https://c.example", false)
            .unwrap()
            .unwrap()
            .reach
            .allowed_prefixes
            .is_empty());
        // Development mode: a local stand-in over http, any country.
        let local = with(&["--sms-api-base", "http://127.0.0.1:1", "--dev-mode", "true"]);
        assert!(local.validate().is_ok());
        let refused =
            Config::try_parse_from(["regional-core", "serve", "--twilio-auth-token", "short"]).unwrap_err();
        assert!(!refused.to_string().contains("short"), "{refused}");
    }

    #[test]
    fn private_webhook_endpoints_need_development_mode() {
        let asked = serve_args(&["--webhook-allow-private", "true"]);
        assert!(asked.validate().unwrap_err().contains("CORE_WEBHOOK_ALLOW_PRIVATE"));
        assert!(serve_args(&["--webhook-allow-private", "true", "--dev-mode", "true"]).validate().is_ok());
        let default = serve_args(&[]);
        assert!(!default.webhooks.webhook_allow_private && default.webhooks.settings().is_none());
        let keyed = serve_args(&["--webhook-keys", "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"]);
        let settings = keyed.webhooks.settings().expect("keys make the settings");
        assert_eq!(settings.retries.0.len(), 7, "the default schedule");
        assert!(!format!("{keyed:?}").contains("AAECAwQF"), "the key is never printed");
    }

    /// docs/configuration.md's core tables are [`reference_markdown`]'s (`UPDATE_CONFIG_DOCS=1`
    /// rewrites them: `scripts/config-docs.sh`).
    #[test]
    fn the_configuration_reference_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (head, rest) = doc.split_once("<!-- core:begin -->\n").expect("the core's begin marker");
        let (current, tail) = rest.split_once("<!-- core:end -->").expect("the core's end marker");
        let generated = reference_markdown();
        assert!(!generated.contains("|  |"), "every setting says what it does (a doc comment)");
        if std::env::var_os("UPDATE_CONFIG_DOCS").is_some() {
            std::fs::write(path, format!("{head}<!-- core:begin -->\n{generated}<!-- core:end -->{tail}"))
                .unwrap();
        } else {
            assert!(current == generated, "docs/configuration.md is stale: run scripts/config-docs.sh");
        }
    }

    fn props(vars: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        kafka_properties(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())), false)
    }

    #[test]
    fn kafka_properties_come_from_prefixed_variables() {
        let got = props(&[
            ("KAFKA_CONF_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_CONF_SASL_PASSWORD", "s3cret"),
            ("KAFKA_BOOTSTRAP", "b:9092"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("sasl.password".to_owned(), "s3cret".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned())
            ]
        );
    }

    #[test]
    fn kafka_properties_the_core_relies_on_cannot_be_set() {
        for name in [
            "KAFKA_CONF_ENABLE_IDEMPOTENCE",
            "KAFKA_CONF_ACKS",
            "KAFKA_CONF_ENABLE_AUTO_OFFSET_STORE",
            // librdkafka's aliases of reserved properties
            "KAFKA_CONF_METADATA_BROKER_LIST",
            "KAFKA_CONF_REQUEST_REQUIRED_ACKS",
            "KAFKA_CONF_DELIVERY_TIMEOUT_MS",
            "KAFKA_CONF_AUTO_COMMIT_ENABLE",
            // a topic property under librdkafka's `topic.` prefix
            "KAFKA_CONF_TOPIC_AUTO_OFFSET_RESET",
            "KAFKA_CONF_TOPIC_MESSAGE_TIMEOUT_MS",
            "KAFKA_CONF_TOPIC_DELIVERY_TIMEOUT_MS",
        ] {
            let e = props(&[(name, "x")]).unwrap_err();
            assert!(e.contains("sets itself"), "{name}: {e}");
            assert!(!e.contains("x\""), "the value is not echoed");
        }
        assert!(props(&[("KAFKA_CONF_", "x")]).is_err());
        // What would weaken TLS or send the password in the clear needs development mode.
        for (name, value) in [
            ("KAFKA_CONF_ENABLE_SSL_CERTIFICATE_VERIFICATION", "false"),
            ("KAFKA_CONF_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "none"),
            ("KAFKA_CONF_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("KAFKA_CONF_PLUGIN_LIBRARY_PATHS", "/tmp/evil.so"),
            ("KAFKA_CONF_PARTITIONER", "random"),
            ("KAFKA_CONF_TOPIC_PARTITIONER", "random"),
            ("KAFKA_CONF_SSL_CIPHER_SUITES", "NULL"),
            ("KAFKA_CONF_SSL_PROVIDERS", "legacy"),
            ("KAFKA_CONF_ENABLE_SASL_OAUTHBEARER_UNSECURE_JWT", "yes"),
        ] {
            let e = props(&[(name, value)]).unwrap_err();
            assert!(e.contains("CORE_DEV_MODE") && !e.contains(value), "{name}: {e}");
            let dev = kafka_properties([(name.to_owned(), value.to_owned())].into_iter(), true);
            assert!(dev.is_ok(), "{name} in development mode");
        }
        assert!(props(&[("KAFKA_CONF_SECURITY_PROTOCOL", "SASL_SSL")]).is_ok());
        assert!(props(&[("KAFKA_CONF_SASL-PASSWORD", "x")]).is_err());
    }

    #[test]
    fn database_urls_refuse_a_tls_mode_that_would_trust_any_public_certificate() {
        assert!("postgres://db/x?sslmode=verify-ca"
            .parse::<DatabaseUrl>()
            .unwrap_err()
            .contains("verify-full"));
        assert!("postgres://db/x?sslmode=verify-full&sslrootcert=/ca.pem".parse::<DatabaseUrl>().is_ok());
    }

    #[test]
    fn republish_takes_one_event_or_all() {
        let parse = |args: &[&str]| Config::try_parse_from([&["regional-core", "republish"], args].concat());
        let id = "7f0c1f6e-8a5e-4c55-9d38-0d0a3bd6e0b1";
        let Some(Command::Republish(one)) = parse(&["--event", id]).unwrap().command else { panic!() };
        assert_eq!(one.event.map(|e| e.to_string()).as_deref(), Some(id));
        let Some(Command::Republish(all)) = parse(&["--all"]).unwrap().command else { panic!() };
        assert!(all.all && all.event.is_none());
        assert!(parse(&[]).is_err(), "one of them is needed");
        assert!(parse(&["--all", "--event", id]).is_err(), "not both");
    }

    #[test]
    fn replay_outbox_takes_a_starting_point() {
        let parse =
            |args: &[&str]| Config::try_parse_from([&["regional-core", "replay-outbox"], args].concat());
        let Some(Command::ReplayOutbox(a)) = parse(&["--from-id", "42", "--until-id", "50"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((a.from_id, a.until_id, a.since), (Some(42), Some(50), None));
        let Some(Command::ReplayOutbox(b)) = parse(&["--since", "2026-12-02T18:00:00Z"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(b.since.map(|t| t.timestamp()), Some(1_796_234_400));
        assert!(parse(&[]).is_err(), "a starting point is needed");
        assert!(parse(&["--since", "yesterday"]).is_err(), "a time is RFC 3339");
    }

    #[test]
    fn migrate_can_be_turned_off() {
        let config = Config::try_parse_from(["regional-core", "serve", "--migrate", "false"]).unwrap();
        let Some(Command::Serve(args)) = config.command else { panic!("expected serve") };
        assert!(!args.migrate);
    }
}
