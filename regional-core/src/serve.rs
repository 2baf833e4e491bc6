//! Start-up: the rules of the configuration, the pools, the background tasks (publishing,
//! checkout's driver, check-in, the outbox relay and its consumers, mail, pruning), both
//! listeners, and a graceful shutdown that drains first.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::checkout::Checkout;
use crate::config::{DatabaseArgs, ProviderChoice, ServeArgs};
use crate::edge_client::EdgeClient;
use crate::payments::provider::Provider;
use crate::payments::{stripe::Stripe, testpay::TestPay, PaymentProvider as _};
use crate::router::{metrics_router, router_with};
use crate::shutdown::Tasks;
use crate::state::AppState;
use crate::{checkout, db, publishing};

/// Migrates (when asked), binds and serves until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Every start-up rule first: a configuration that may not run changes nothing.
    let choice = args.validate()?;
    if args.migrate {
        db::migrate(&args.database).await?;
    }
    let mut state = AppState::new(db::pool(&args.database)?, args.health_timeout());
    state.background_db = db::background_pool(&args.database, args.background_connections)?;
    state.commission_bps = i64::from(args.commission_bps);
    state.request_timeout = Duration::from_secs(args.request_timeout_secs);
    let ops = &args.operations;
    state.trusted_proxies = ops.trusted_proxies.clone();
    if let Some(replica) = &ops.replica_url {
        let replica = DatabaseArgs { database_url: replica.clone(), ..args.database.clone() };
        state.read_db = db::pool(&replica)?;
        tracing::info!(replica = %replica.database_url.redacted(), "reports read from the replica");
    }
    let mut extra = Router::<AppState>::new();
    // Every task started here stops with the process, after HTTP has drained (shutdown.rs).
    let mut tasks = Tasks::new();
    match &args.core_signing_key {
        Some(key) => {
            let edge = EdgeClient::new(&args.edge_url, key.0.clone());
            let check_every = Duration::from_secs(ops.edge_check_secs.max(1));
            let (db, e) = (state.background_db.clone(), edge.clone());
            tasks.spawn("publisher", |stop| publishing::run(db, e, stop));
            let db = state.background_db.clone();
            tasks.spawn("edge-check", move |stop| publishing::run_checks(db, edge, check_every, stop));
            state.edge =
                crate::reporting::edge::EdgeStats::new(EdgeClient::new(&args.edge_url, key.0.clone()));
            let every = Duration::from_secs(ops.edge_scrape_secs.max(1));
            let (stats, db) = (state.edge.clone(), state.background_db.clone());
            tasks.spawn("edge-scraper", move |stop| stats.run_scraper(db, every, stop));
            tracing::info!(edge = %args.edge_url, "publishing events to the edge");
        }
        None => tracing::warn!("CORE_SIGNING_KEY is not set: events will not be published to the edge"),
    }
    let c = &args.checkout;
    let provider = match choice {
        ProviderChoice::Stripe => {
            let key = c.stripe_secret_key.clone().ok_or("PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY")?;
            let secrets: Vec<String> = c
                .stripe_webhook_secrets
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if secrets.is_empty() {
                return Err("PAYMENT_PROVIDER=stripe needs STRIPE_WEBHOOK_SECRETS".into());
            }
            let buyer_url = args.fulfillment.buyer_url.as_deref().unwrap_or(&args.edge_url);
            Some(Provider::Stripe(Stripe::new(&c.stripe_api_base, key, secrets, buyer_url)))
        }
        ProviderChoice::Test => {
            tracing::warn!("development mode: the test payment provider is mounted (never in production)");
            let secret = match c.testpay_webhook_secret.clone() {
                Some(secret) => secret,
                None => crate::payments::testpay::random_secret()?,
            };
            let testpay = TestPay::new(state.db.clone(), &c.public_url, secret);
            let deliveries = testpay.clone();
            tasks.spawn("testpay-deliveries", |stop| deliveries.run_deliveries(stop));
            extra = extra.merge(testpay.clone().routes());
            Some(Provider::Test(testpay))
        }
        ProviderChoice::None => None,
    };
    match (&args.core_signing_key, c.edge_verifying_keys.as_deref(), provider) {
        (Some(key), Some(edge_keys), Some(provider)) => {
            let edge_keys = shared_types::token::KeyRing::parse(edge_keys)
                .map_err(|e| format!("EDGE_VERIFYING_KEYS: {e}"))?;
            let previous_keys =
                shared_types::token::KeyRing::parse(c.core_previous_verifying_keys.as_deref().unwrap_or(""))
                    .map_err(|e| format!("CORE_PREVIOUS_VERIFYING_KEYS: {e}"))?;
            if previous_keys.kids().any(|kid| kid == key.0.kid()) {
                return Err(format!(
                    "CORE_PREVIOUS_VERIFYING_KEYS: {} is the signing key's id; list only earlier keys",
                    key.0.kid()
                )
                .into());
            }
            let checkout = Arc::new(Checkout {
                db: state.db.clone(),
                edge: EdgeClient::new(&args.edge_url, key.0.clone()),
                provider,
                edge_keys,
                signer: key.0.clone(),
                previous_keys,
                fault: c.fault_inject.clone(),
                grace: chrono::Duration::seconds(i64::from(c.payment_grace_secs)),
            });
            if let Some(point) = &c.fault_inject {
                tracing::warn!(
                    point,
                    "CORE_FAULT_INJECT is set: this core will crash on purpose (tests only)"
                );
            }
            let (driven, every) = (checkout.clone(), Duration::from_millis(c.reconcile_interval_ms));
            tasks.spawn("checkout-driver", move |stop| checkout::driver::run(driven, every, stop));
            tracing::info!(provider = checkout.provider.name(), "checkout enabled");
            let gates = crate::fulfillment::checkin::Gates::server(checkout.clone());
            let grpc = c.grpc_listen;
            let tls = match (&c.grpc_tls_cert, &c.grpc_tls_key) {
                (Some(cert), Some(key)) => Some((
                    std::fs::read(cert).map_err(|e| format!("CORE_GRPC_TLS_CERT {}: {e}", cert.display()))?,
                    std::fs::read(key).map_err(|e| format!("CORE_GRPC_TLS_KEY {}: {e}", key.display()))?,
                )),
                _ => None,
            };
            let secure = tls.is_some();
            tasks.spawn("check-in", move |stop| async move {
                if let Err(e) = crate::fulfillment::checkin::serve(gates, grpc, tls, stop).await {
                    tracing::error!(error = %e, addr = %grpc, "the check-in service stopped");
                }
            });
            tracing::info!(addr = %grpc, tls = secure, "check-in (gRPC) listening");
            state.checkout = Some(checkout);
        }
        _ => tracing::warn!("CORE_SIGNING_KEY or EDGE_VERIFYING_KEYS is not set: checkout answers 503"),
    }
    match args.webhooks.settings() {
        Some(settings) => {
            let hooks = crate::webhooks::Webhooks::new(settings);
            state.webhooks = Some(hooks.clone());
            let dispatcher =
                Arc::new(crate::webhooks::dispatch::Dispatcher::new(state.background_db.clone(), hooks)?);
            let every = Duration::from_millis(args.webhooks.webhook_poll_ms);
            tasks.spawn("webhooks", move |stop| dispatcher.run(every, stop));
            if args.webhooks.webhook_allow_private {
                tracing::warn!("CORE_WEBHOOK_ALLOW_PRIVATE: webhook endpoints may be http and private (never in production)");
            }
        }
        None => tracing::warn!("CORE_WEBHOOK_KEYS is not set: partner webhooks are off (nothing is delivered; registering answers 503)"),
    }
    match args.sms.settings(&args.checkout.public_url, args.dev_mode)? {
        Some(sms) => {
            use crate::sms::sender::{SmsSender, SmsSenderSettings};
            let provider = crate::sms::twilio::Twilio::new(sms.provider.clone(), Duration::from_secs(15));
            let settings = SmsSenderSettings {
                max_attempts: args.sms.sms_max_attempts,
                retry_base: Duration::from_millis(args.fulfillment.notify_retry_base_ms),
                per_day: args.sms.sms_per_number_per_day,
            };
            let sender = Arc::new(SmsSender::new(state.background_db.clone(), provider, settings));
            tasks.spawn("sms-sender", move |stop| sender.run(Duration::from_millis(500), stop));
            tracing::info!(api = %sms.provider.api_base, "sms: texts sent through the provider");
            state.sms = Some(Arc::new(sms));
        }
        None => tracing::info!("TWILIO_ACCOUNT_SID is not set: SMS is off (checkout takes no phone number)"),
    }
    state.mail = start_fulfillment(&args, &state.background_db, state.webhooks.clone(), &mut tasks).await?;
    let db = state.background_db.clone();
    let retention_days = ops.audit_retention_days;
    let personal =
        crate::privacy::retention::Retention { after_event_days: ops.personal_data_retention_days };
    tasks.spawn("pruner", move |stop| {
        run_pruner(db, retention_days, personal, Duration::from_secs(600), stop)
    });
    let metrics_listener = TcpListener::bind(args.metrics_listen).await?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening (operators only)");
    let metrics_app = metrics_router(state.clone());
    tasks.spawn("metrics", |stop| async move {
        let stopped = async move { stop.wait().await };
        if let Err(e) = axum::serve(metrics_listener, metrics_app).with_graceful_shutdown(stopped).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    let listener = TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, database = %args.database.database_url, "core listening");
    let (draining, drain_for) = (state.draining.clone(), Duration::from_secs(ops.shutdown_drain_secs));
    let stop_tasks = tasks.trigger();
    let shutdown = async move {
        shutdown_signal().await;
        // Not ready any more, still serving: the load balancer sees /readyz fail and stops
        // sending new requests; those in flight and arriving meanwhile are answered.
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::info!(seconds = drain_for.as_secs(), "shutting down: draining");
        tokio::time::sleep(drain_for).await;
        // The listener closes now; check-in and the background tasks stop with it, finishing
        // the step each is in while HTTP finishes its requests in flight.
        stop_tasks();
    };
    // With each connection's peer address: the audit log's client (`audit::origin`).
    let app = router_with(state, extra).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    let total = tasks.len();
    let stopped = tasks.stop_all(Duration::from_secs(ops.shutdown_tasks_secs)).await;
    tracing::info!(tasks = total, stopped, "core stopped");
    Ok(())
}

/// The outbox relay (to Kafka, or to the consumers in this process), the consumers, the mail
/// sender and the reminders, all on `db`: the background pool.
async fn start_fulfillment(
    args: &ServeArgs,
    db: &sqlx::PgPool,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    tasks: &mut Tasks,
) -> Result<Option<Arc<crate::notifications::MailSettings>>, Box<dyn std::error::Error>> {
    use crate::bus::{kafka, relay};
    use crate::notifications::{reminders, sender, waitlist, MailSettings, Notifier};
    let f = &args.fulfillment;
    let mut consumers: Vec<Arc<dyn crate::bus::Consumer>> =
        vec![Arc::new(crate::reporting::projector::Projector)];
    if let Some(hooks) = webhooks {
        consumers.push(Arc::new(crate::webhooks::Fanout::new(hooks)));
    }
    let mail = args.core_signing_key.as_ref().map(|key| {
        Arc::new(MailSettings {
            buyer_url: f.buyer_url.clone().unwrap_or_else(|| args.edge_url.clone()),
            signer: key.0.clone(),
        })
    });
    if let (Some(key), Some(mail)) = (&args.core_signing_key, &mail) {
        consumers.push(Arc::new(Notifier::new(mail.clone())));
        let lead = chrono::Duration::hours(f.reminder_lead_hours);
        let (pool, settings, every) =
            (db.clone(), mail.clone(), Duration::from_secs(f.reminder_check_secs.max(1)));
        tasks.spawn("reminders", move |stop| reminders::run(pool, settings, lead, every, stop));
        let edge = crate::edge_client::EdgeClient::new(&args.edge_url, key.0.clone());
        let (pool, settings, every) =
            (db.clone(), mail.clone(), Duration::from_secs(f.waitlist_poll_secs.max(1)));
        tasks.spawn("waitlist-offers", move |stop| waitlist::run(pool, edge, settings, every, stop));
        match &f.smtp_url {
            Some(url) => {
                let from: lettre::message::Mailbox =
                    f.mail_from.parse().map_err(|e| format!("MAIL_FROM: {e}"))?;
                // Message-IDs in the sender's own domain (RFC 5322 wants them globally unique).
                let domain = from.email.domain().to_owned();
                let settings = sender::SenderSettings {
                    from,
                    max_attempts: f.notify_max_attempts.max(1),
                    retry_base: Duration::from_millis(f.notify_retry_base_ms),
                    per_hour: f.notify_per_hour.max(1),
                    domain,
                    lease: sender::LEASE,
                    smtp_timeout: sender::SMTP_TIMEOUT,
                };
                let s = sender::Sender::new(db.clone(), url, settings, key.0.clone())?;
                tasks.spawn("mail-sender", |stop| Arc::new(s).run(Duration::from_millis(500), stop));
                tracing::info!("notifications: sending mail over SMTP");
            }
            None => tracing::warn!("SMTP_URL is not set: mails are queued, not sent"),
        }
    }
    let poll = Duration::from_millis(f.outbox_poll_ms);
    let sink = match &f.kafka_bootstrap {
        Some(bootstrap) => {
            let settings = kafka::KafkaSettings {
                bootstrap: bootstrap.clone(),
                topic_prefix: f.kafka_topic_prefix.clone(),
                partitions: f.kafka_partitions.max(1),
                replication_factor: f.kafka_replication_factor.max(1),
                properties: kafka::Properties(crate::config::kafka_properties(
                    std::env::vars(),
                    args.dev_mode,
                )?),
            };
            settings.check()?;
            if let Err(e) = settings.create_topics().await {
                // The broker may be down now: the relay waits for it; topics can be made later.
                tracing::warn!(error = %e, "kafka: could not create the topics");
            }
            for c in consumers {
                let (pool, settings) = (db.clone(), settings.clone());
                tasks.spawn(c.name(), move |stop| kafka::run_consumer(pool, settings, c, stop));
            }
            tracing::info!(bootstrap, "outbox: relayed to Kafka");
            relay::Sink::Kafka(kafka::Publisher::new(settings)?)
        }
        None => {
            tracing::info!("outbox: delivered in-process (KAFKA_BOOTSTRAP is not set)");
            consumers.iter().for_each(|c| crate::bus::lag::in_process(c.name()));
            relay::Sink::InProcess(consumers)
        }
    };
    let relay = relay::Relay::new(db.clone(), sink);
    tasks.spawn("relay", move |stop| relay.run(poll, stop));
    Ok(mail)
}

/// Deletes expired idempotent answers ([`crate::api::prune`]), ended promo-attempt windows
/// ([`crate::promotions::prune_attempts`]), webhook deliveries past their retention
/// ([`crate::webhooks::dispatch::prune`]) and audit rows past theirs ([`crate::audit::prune`]),
/// and runs the personal data's retention job ([`crate::privacy::retention`]), every `every`,
/// until asked to stop.
async fn run_pruner(
    db: sqlx::PgPool,
    audit_days: u32,
    personal: crate::privacy::retention::Retention,
    every: Duration,
    stop: crate::shutdown::Stop,
) {
    while !stop.requested() {
        let pruned = async {
            let answers = crate::api::prune(&db).await?;
            let attempts = crate::promotions::prune_attempts(&db).await?;
            let deliveries = crate::webhooks::dispatch::prune(&db).await?;
            let audit = crate::audit::prune(&db, audit_days).await?;
            let personal = crate::privacy::retention::run(&db, personal).await?;
            Ok::<_, sqlx::Error>((answers + attempts + deliveries, audit, personal))
        };
        match pruned.await {
            Ok((n, audit, personal)) if n + audit + personal.total() > 0 => {
                tracing::info!(
                    rows = n,
                    audit_rows = audit,
                    personal_data = ?personal,
                    "pruned expired idempotency answers, attempt windows, webhook deliveries, audit rows and personal data"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; retrying later"),
        }
        if !stop.pause(every).await {
            break;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
