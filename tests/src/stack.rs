//! The whole stack as a deployment runs it, for the fault campaign (`tests/tests/faults.rs`) and
//! the soak (`tests/tests/soak.rs`): two core replicas behind a loopback balancer, the edge in
//! workerd, a PostgreSQL cluster of the run's own, the Kafka-protocol broker (tansu) and an SMTP
//! server. Every part is a [`Service`] the run may crash and start again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{
    free_port, start_core_with, start_smtp_sink, start_tansu, start_workerd_edge_inspected, Balancer,
    Postgres, Service, Setup, TestKeys,
};

pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub keys: Arc<TestKeys>,
    pub pg: Postgres,
    core_env: Vec<(&'static str, String)>,
    core_ports: [u16; 2],
    /// Each replica's operators' `/metrics` listener.
    pub metrics_ports: [u16; 2],
    pub cores: [Option<Service>; 2],
    pub balancer: Balancer,
    pub edge_port: u16,
    pub edge: Option<Service>,
    /// workerd's V8 inspector (loopback), where the soak reads the isolates' heaps.
    pub inspector_port: u16,
    pub kafka_port: u16,
    pub kafka: Option<Service>,
    pub smtp_port: u16,
    pub mail_dir: PathBuf,
    pub smtp: Option<Service>,
    /// The edge Worker's test settings (`loadtest/workerd-server.mjs` passes them on).
    edge_vars: Vec<(&'static str, String)>,
}

impl Stack {
    /// Starts everything; `name` names the scratch directory, the database cluster's and the
    /// topics' prefix.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Vec::new()).await
    }

    /// [`Stack::start`] with the edge Worker's test settings `edge_vars`.
    pub async fn start_with(name: &str, edge_vars: Vec<(&'static str, String)>) -> Self {
        let Setup { dir, keys, core_port, edge_port, edge_url, .. } = Setup::new(name);
        let pg = tokio::task::block_in_place(|| Postgres::start(name, &dir));
        let (kafka_port, smtp_port, other_port) = (free_port(), free_port(), free_port());
        let kafka = tokio::task::block_in_place(|| start_tansu(kafka_port, &dir.join("kafka")));
        let mail_dir = dir.join("mail");
        let smtp = tokio::task::block_in_place(|| start_smtp_sink(smtp_port, &mail_dir));
        let balancer = Balancer::start(vec![core_port, other_port]).await;
        let core_env = vec![
            ("CORE_SIGNING_KEY", keys.core_signing_key()),
            ("EDGE_VERIFYING_KEYS", keys.edge.public_config()),
            ("EDGE_URL", edge_url.clone()),
            ("CORE_PUBLIC_URL", balancer.url()),
            ("KAFKA_BOOTSTRAP", format!("127.0.0.1:{kafka_port}")),
            ("KAFKA_TOPIC_PREFIX", format!("{name}.")),
            ("SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}")),
            // One secret for both replicas: the test provider's webhook, sent by one, may reach the other.
            ("TESTPAY_WEBHOOK_SECRET", format!("whsec_faults_{name}")),
            ("PAYMENT_GRACE_SECS", "5".to_owned()),
            ("RECONCILE_INTERVAL_MS", "300".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn,regional_core::bus=info".to_owned()),
        ];
        let mut stack = Stack {
            name: name.to_owned(),
            dir,
            keys: Arc::new(keys),
            pg,
            core_env,
            core_ports: [core_port, other_port],
            metrics_ports: [free_port(), free_port()],
            cores: [None, None],
            balancer,
            edge_port,
            edge: None,
            inspector_port: free_port(),
            kafka_port,
            kafka: Some(kafka),
            smtp_port,
            mail_dir,
            smtp: Some(smtp),
            edge_vars,
        };
        stack.start_core(0).await;
        stack.start_core(1).await;
        stack.start_edge().await;
        stack
    }

    /// Starts replica `i` (0 or 1) and waits until it is ready.
    pub async fn start_core(&mut self, i: usize) {
        let mut env = self.core_env.clone();
        env.push(("CORE_METRICS_LISTEN", format!("127.0.0.1:{}", self.metrics_ports[i])));
        let core = start_core_with(self.core_ports[i], &self.pg.url(), true, &self.dir, &env);
        core.wait_ready("/readyz", Duration::from_secs(90)).await;
        self.cores[i] = Some(core);
    }

    /// Starts the edge (its objects' storage kept from any earlier run) and waits until it is up.
    pub async fn start_edge(&mut self) {
        let edge = start_workerd_edge_inspected(
            self.edge_port,
            &self.balancer.url(),
            &self.dir.join("do-state"),
            &self.dir,
            &self.keys,
            Some(self.inspector_port),
            &self.edge_vars,
        );
        edge.wait_ready("/healthz", Duration::from_secs(120)).await;
        self.edge = Some(edge);
    }

    pub fn edge_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.edge_port)
    }

    /// Waits until the edge's health chain (edge, objects, core, database) is green.
    pub async fn healthy(&self) {
        let http = crate::http();
        let url = format!("{}/healthz", self.edge_url());
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ok =
                http.get(&url).timeout(Duration::from_secs(3)).send().await.is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the stack never became healthy again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Orders paid more than 5 s ago without their confirmation mail queued: what the consumers owe.
/// (The load generator's sampler counts the same, `loadtest/src/sample.rs`: keep the two equal.)
pub const UNCONFIRMED_5S: &str =
    "SELECT count(*) FROM orders o WHERE o.state = 'paid' AND o.updated_at < now() - interval '5 seconds'
    AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.order_id = o.id AND n.kind = 'order_confirmation')";

/// The count `sql` answers.
pub async fn count(db: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Waits until `sql` counts nothing (a backlog drained), within three minutes. The pool reconnects
/// by itself after the database restarts.
pub async fn drained(db: &sqlx::PgPool, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if sqlx::query_scalar::<_, i64>(sql).fetch_one(db).await.is_ok_and(|n| n == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "never drained: {sql}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
