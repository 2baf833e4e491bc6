//! The end-to-end harness: starts the real regional core binary and the real edge Worker in
//! workerd (wrangler dev) on free loopback ports, against the local PostgreSQL, and stops them
//! (whole process groups) when dropped. `scripts/test.sh` builds everything first and sets:
//!
//! - `E2E_CORE_BIN`: the `regional-core` binary;
//! - `E2E_DATABASE_SERVER`: a PostgreSQL URL without database name (`postgres://postgres@127.0.0.1:5432`).
//!
//! `wrangler` must be on `PATH` (scripts/lib.sh puts it there) and the Worker built in
//! `edge-worker/build/`.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod stack;

/// How long the tests' HTTP clients keep an idle connection: below workerd's 5-second
/// `pipelineTimeout` (KJ's `HttpServerSettings`), after which workerd closes a kept-alive
/// connection. A client that reuses a connection at the moment workerd closes it gets
/// `IncompleteMessage` for a request the server never read.
pub const IDLE_CONNECTION: Duration = Duration::from_secs(3);

/// The tests' HTTP client builder: idle connections dropped before workerd drops them.
pub fn http_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().pool_idle_timeout(IDLE_CONNECTION)
}

/// The tests' HTTP client (see [`http_builder`]).
pub fn http() -> reqwest::Client {
    http_builder().build().expect("an HTTP client")
}

/// `GET url` (with a bearer token if given), answered as JSON.
pub async fn get_json(url: &str, bearer: Option<&str>) -> serde_json::Value {
    let mut req = http().get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("an answer").json().await.expect("a JSON answer")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the end-to-end tests through scripts/test.sh"))
}

/// A loopback port that nothing listens on right now, and that this process has not handed out
/// before: the kernel may give the same free port to two binds in a row, and a port handed out is
/// bound only later by the service it was for (the core's listener and its metrics listener once
/// got the same one, and the core failed with "address already in use").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A process group started by the harness; dropping it stops the whole group.
pub struct Service {
    name: &'static str,
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Service {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines of the service's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends SIGTERM (as an orchestrator does) without waiting.
    pub fn terminate(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Waits up to `within` for the process to exit by itself: its exit status, or `None` while
    /// it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first process under this one (children, then theirs) whose name is `name`: the
    /// workerd that miniflare starts under node, say. From `/proc/<pid>/stat` (name, parent).
    pub fn descendant(&self, name: &str) -> Option<u32> {
        let processes: Vec<(u32, u32, String)> = std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // `pid (comm) state ppid …`: the name may hold spaces and parentheses.
                let (open, close) = (stat.find('(')?, stat.rfind(')')?);
                let ppid = stat[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
                Some((pid, ppid, stat[open + 1..close].to_owned()))
            })
            .collect();
        let mut todo = vec![self.child.id()];
        while let Some(parent) = todo.pop() {
            for (pid, _, comm) in processes.iter().filter(|p| p.1 == parent) {
                if comm == name {
                    return Some(*pid);
                }
                todo.push(*pid);
            }
        }
        None
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Kills the whole process group at once (SIGKILL: no drain, no cleanup, as a crash or an
    /// out-of-memory kill would) and waits for it to be gone.
    pub fn crash(mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }

    /// Stops the service and waits for it to exit.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }

    /// Waits until `path` answers HTTP (any status), or fails with the service's log.
    pub async fn wait_ready(&self, path: &str, within: Duration) {
        let client = http();
        let url = format!("{}{path}", self.url());
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if client.get(&url).timeout(Duration::from_secs(3)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{} did not answer on {url} within {within:?}; its log:\n{}", self.name, self.log_tail());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `cmd` as a service of the harness (its log under `log_dir`) and waits until it listens on
/// `port`.
pub fn spawn_service(name: &'static str, cmd: Command, port: u16, log_dir: &std::path::Path) -> Service {
    let service = spawn(name, cmd, port, log_dir);
    wait_listening(&service, Duration::from_secs(20));
    service
}

fn spawn(name: &'static str, mut cmd: Command, port: u16, log_dir: &std::path::Path) -> Service {
    std::fs::create_dir_all(log_dir).expect("log dir");
    let log = log_dir.join(format!("{name}-{port}.log"));
    // Appended to: a service restarted on its port (the fault campaign) keeps one log.
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Service { name, child, port, log }
}

/// A scratch directory for one test's logs and state, under the target directory.
pub fn scratch_dir(test: &str) -> PathBuf {
    let base =
        std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    let dir = base.join("e2e").join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A database name of its own for one test, dropped by [`drop_database`].
pub fn database_url(name: &str) -> String {
    format!("{}/{name}", required_env("E2E_DATABASE_SERVER").trim_end_matches('/'))
}

/// Drops a test database (best effort: the server may be gone in a fault test).
pub fn drop_database(name: &str) {
    let server = required_env("E2E_DATABASE_SERVER");
    let _ = Command::new("psql")
        .args([
            &format!("{server}/postgres"),
            "-qc",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A fresh, migrated database `name` (dropped first if a previous run left it) and a pool on it.
pub async fn fresh_database(name: &str) -> sqlx::PgPool {
    drop_database(name);
    let args = regional_core::DatabaseArgs {
        database_url: database_url(name).parse().expect("database url"),
        max_connections: 16,
    };
    regional_core::db::migrate(&args).await.expect("migrate");
    regional_core::db::pool(&args).expect("pool")
}

/// Starts the Kafka-protocol broker (tansu, `TANSU`) on `port` with its SQLite store in `dir`
/// (kept across restarts: stop it and start it again on the same `dir` to bring it back).
pub fn start_tansu(port: u16, dir: &std::path::Path) -> Service {
    start_tansu_with(port, dir, &format!("tcp://127.0.0.1:{port}"), &[])
}

/// Starts tansu on `127.0.0.1:port` with its data in `dir`, telling clients to come back at
/// `advertised` (a TLS listener in front of it, say), with `extra` arguments (`--authentication`).
pub fn start_tansu_with(port: u16, dir: &std::path::Path, advertised: &str, extra: &[&str]) -> Service {
    std::fs::create_dir_all(dir).expect("broker dir");
    let listener = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(required_env("TANSU"));
    cmd.args(["broker", "--listener-url", &listener, "--advertised-listener-url", advertised])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .args(extra)
        .current_dir(dir)
        .env("RUST_LOG", "warn");
    let service = spawn("tansu", cmd, port, dir);
    wait_listening(&service, Duration::from_secs(10));
    service
}

/// Waits until something accepts connections on the service's port.
fn wait_listening(service: &Service, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", service.port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {}:\n{}",
            service.name,
            service.port,
            service.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private CA and a certificate for `localhost` in `dir` (`scripts/test-pki.sh`): `ca.pem`,
/// `cert.pem`, `key.pem`.
pub fn test_pki(dir: &std::path::Path) {
    let made = Command::new("sh").arg(repo_root().join("scripts/test-pki.sh")).arg(dir).output().expect("sh");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
}

/// Starts Debian's stunnel4 on `127.0.0.1:accept`: TLS with `dir`'s `cert.pem` and `key.pem`
/// ([`test_pki`]), passed on in plaintext to `127.0.0.1:connect`.
pub fn start_stunnel(accept: u16, connect: u16, dir: &std::path::Path) -> Service {
    let conf = dir.join(format!("stunnel-{accept}.conf"));
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[tls]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n\
             cert = {d}/cert.pem\nkey = {d}/key.pem\n"
        ),
    )
    .expect("stunnel.conf");
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&conf);
    let service = spawn("stunnel", cmd, accept, dir);
    wait_listening(&service, Duration::from_secs(10));
    service
}

/// Starts a real SMTP server (`scripts/smtp-sink.mjs`, nodemailer's smtp-server) on `port`,
/// keeping every message it accepts as a `.eml` file in `dir`.
pub fn start_smtp_sink(port: u16, dir: &std::path::Path) -> Service {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("scripts/smtp-sink.mjs")).args(["--port", &port.to_string(), "--dir"]).arg(dir);
    let service = spawn("smtp-sink", cmd, port, dir.parent().unwrap_or(dir));
    wait_listening(&service, Duration::from_secs(20));
    service
}

/// A partner's webhook receiver (`tests/fakes/webhook-receiver.mjs`) on `port`: it verifies every
/// delivery with the Standard Webhooks' own library (npm `standardwebhooks`). Tell it the secret
/// with [`webhook_receiver_control`]; read what it got with [`webhooks_received`].
pub fn start_webhook_receiver(port: u16, log_dir: &std::path::Path) -> Service {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("tests/fakes/webhook-receiver.mjs")).arg(port.to_string());
    spawn_service("webhook-receiver", cmd, port, log_dir)
}

/// Tells the receiver on `port` what to verify with and how to answer (`{"secret": "whsec_…"}`).
pub async fn webhook_receiver_control(port: u16, control: Value) {
    let resp = http().put(format!("http://127.0.0.1:{port}/control")).json(&control).send().await.unwrap();
    assert!(resp.status().is_success());
}

/// Every delivery the receiver on `port` got: `{id, type, verified, answered, body, …}`.
pub async fn webhooks_received(port: u16) -> Vec<Value> {
    get_json(&format!("http://127.0.0.1:{port}/received"), None).await.as_array().cloned().unwrap_or_default()
}

/// The local Stripe (`scripts/fake-stripe.mjs`) on `port`, taking `key` and sending its events to
/// `webhook` signed with `webhook_secret`.
pub fn start_fake_stripe(
    port: u16,
    dir: &std::path::Path,
    key: &str,
    webhook: &str,
    webhook_secret: &str,
) -> Service {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("scripts/fake-stripe.mjs")).args([
        "--port",
        &port.to_string(),
        "--key",
        key,
        "--webhook",
        webhook,
        "--webhook-secret",
        webhook_secret,
    ]);
    spawn_service("fake-stripe", cmd, port, dir)
}

/// The local Twilio (`scripts/fake-twilio.mjs`) on `port`, for account `sid` with auth `token`,
/// posting the texts people send back to `incoming`.
pub fn start_fake_twilio(
    port: u16,
    dir: &std::path::Path,
    sid: &str,
    token: &str,
    incoming: &str,
) -> Service {
    let mut cmd = Command::new("node");
    cmd.arg(repo_root().join("scripts/fake-twilio.mjs")).args([
        "--port",
        &port.to_string(),
        "--sid",
        sid,
        "--token",
        token,
        "--incoming",
        incoming,
    ]);
    spawn_service("fake-twilio", cmd, port, dir)
}

/// The subjects of the mails an SMTP sink kept in `dir`, oldest first.
pub fn mail_subjects(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let line = text.lines().find(|l| l.to_ascii_lowercase().starts_with("subject:"))?;
            Some(line["subject:".len()..].trim().to_owned())
        })
        .collect()
}

/// The first link starting with `prefix` in the mail whose subject starts with `subject` (the
/// quoted-printable text body unfolded), if that mail has arrived in `dir`.
pub fn mail_link(dir: &std::path::Path, subject: &str, prefix: &str) -> Option<String> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files.iter().find_map(|f| {
        let raw = std::fs::read_to_string(f).ok()?;
        let subject_line = raw.lines().find(|l| l.to_ascii_lowercase().starts_with("subject:"))?;
        if !subject_line["subject:".len()..].trim().starts_with(subject) {
            return None;
        }
        let text = raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
        let start = text.find(prefix)?;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
            .map_or(text.len(), |e| start + e);
        Some(text[start..end].to_owned())
    })
}

/// Starts the regional core on `port` against `database_url`, applying migrations first when
/// `migrate` is true.
pub fn start_core(port: u16, database_url: &str, migrate: bool, log_dir: &std::path::Path) -> Service {
    start_core_with(port, database_url, migrate, log_dir, &[])
}

/// [`start_core`] with more environment (keys, the edge's URL).
pub fn start_core_with(
    port: u16,
    database_url: &str,
    migrate: bool,
    log_dir: &std::path::Path,
    env: &[(&str, String)],
) -> Service {
    let mut cmd = Command::new(required_env("E2E_CORE_BIN"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--migrate", &migrate.to_string()])
        .env("DATABASE_URL", database_url)
        .env("CORE_HEALTH_TIMEOUT_MS", "1000")
        .env("CORE_GRPC_LISTEN", format!("127.0.0.1:{}", free_port()))
        // Operators' /metrics listener; a test that scrapes it sets its own port.
        .env("CORE_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()))
        // The test provider and fault injection exist only when asked for.
        .env("CORE_DEV_MODE", "true")
        .env("RUST_LOG", "info")
        // Stop at once when a test stops the core (its own test sets a drain).
        .env("SHUTDOWN_DRAIN_SECS", "0")
        // Tests share one broker: a core uses it only when its test says so.
        .env_remove("KAFKA_BOOTSTRAP")
        .env_remove("SMTP_URL")
        .env_remove("CORE_SIGNING_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn("core", cmd, port, log_dir)
}

/// Runs `regional-core create-admin` against `database_url` and returns the admin's API key.
pub fn create_admin(database_url: &str, email: &str) -> String {
    let out = Command::new(required_env("E2E_CORE_BIN"))
        .args(["create-admin", "--email", email])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("regional-core create-admin");
    assert!(out.status.success(), "create-admin failed: {}", String::from_utf8_lossy(&out.stderr));
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("create-admin prints JSON");
    made["key"].as_str().expect("a key").to_owned()
}

/// Runs `regional-core <args>` against `database_url`: its exit status and standard output.
pub fn core_command(database_url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(required_env("E2E_CORE_BIN"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("regional-core runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh pair of signing keys for one test: the edge's and the core's, as configuration strings.
pub struct TestKeys {
    pub edge: shared_types::token::TokenSigner,
    pub core: shared_types::token::TokenSigner,
}

impl TestKeys {
    pub fn new() -> Self {
        let seed = |_: u8| {
            let mut s = [0u8; 32];
            getrandom::getrandom(&mut s).expect("randomness");
            s
        };
        Self {
            edge: shared_types::token::TokenSigner::from_seed("edge-e2e", seed(1)).expect("key"),
            core: shared_types::token::TokenSigner::from_seed("core-e2e", seed(2)).expect("key"),
        }
    }

    /// The core's `CORE_SIGNING_KEY`.
    pub fn core_signing_key(&self) -> String {
        self.core.secret_config()
    }

    /// Writes the edge's env file (`--env-file`) into `dir`.
    pub fn edge_env_file(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("edge.env");
        let text = format!(
            "EDGE_SIGNING_KEY={}\nCORE_VERIFYING_KEYS={}\n",
            self.edge.secret_config(),
            self.core.public_config()
        );
        std::fs::write(&path, text).expect("edge env file");
        path
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// What a full-stack test sets up first: a scratch directory, a database of its own (dropped by
/// the test at its end), fresh keys, and free ports for the core and the edge.
pub struct Setup {
    pub dir: PathBuf,
    pub db_name: String,
    pub db_url: String,
    pub keys: TestKeys,
    pub core_port: u16,
    pub edge_port: u16,
    pub core_url: String,
    pub edge_url: String,
}

impl Setup {
    pub fn new(test: &str) -> Self {
        let db_name = format!("e2e_{}_{}", test.replace('-', "_"), std::process::id());
        let (core_port, edge_port) = (free_port(), free_port());
        Self {
            dir: scratch_dir(test),
            db_url: database_url(&db_name),
            db_name,
            keys: TestKeys::new(),
            core_port,
            edge_port,
            core_url: format!("http://127.0.0.1:{core_port}"),
            edge_url: format!("http://127.0.0.1:{edge_port}"),
        }
    }
}

/// Starts the edge Worker and its Durable Objects in workerd (wrangler dev) on `port`, talking to
/// the core at `core_url`, keeping Durable Object storage under `state_dir`.
pub fn start_edge(
    port: u16,
    core_url: &str,
    state_dir: &std::path::Path,
    log_dir: &std::path::Path,
) -> Service {
    start_wrangler(port, core_url, state_dir, log_dir, None)
}

/// [`start_edge`] with its keys (an env file, as `scripts/dev.sh` passes them).
pub fn start_edge_with_keys(
    port: u16,
    core_url: &str,
    state_dir: &std::path::Path,
    log_dir: &std::path::Path,
    env_file: &std::path::Path,
) -> Service {
    start_wrangler(port, core_url, state_dir, log_dir, Some(env_file))
}

fn start_wrangler(
    port: u16,
    core_url: &str,
    state_dir: &std::path::Path,
    log_dir: &std::path::Path,
    env_file: Option<&std::path::Path>,
) -> Service {
    let mut cmd = Command::new("wrangler");
    cmd.current_dir(repo_root())
        .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string(), "--inspector-port", "0"])
        .args(["--show-interactive-dev-session=false", "--log-level", "info"])
        .arg("--persist-to")
        .arg(state_dir)
        .args(["--var", &format!("CORE_URL:{core_url}"), "--var", "HEALTH_TIMEOUT_MS:1500"])
        .env("WRANGLER_SEND_METRICS", "false");
    if let Some(env_file) = env_file {
        cmd.arg("--env-file").arg(env_file);
    }
    spawn("edge", cmd, port, log_dir)
}

/// A loopback TCP relay that can be opened and closed: the way a test makes a dependency
/// unreachable and reachable again without restarting it. While closed, new connections are
/// dropped at once (connection reset) and open ones are cut.
pub struct Gate {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Gate {
    /// Relays `127.0.0.1:<port>` to `127.0.0.1:<target>`, open at first.
    pub async fn start(target: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gate port");
        let port = listener.local_addr().expect("gate address").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let born = g.load(Ordering::SeqCst);
                let g = g.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let cut = async {
                        while g.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Self { port, open, generation }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Refuses new connections and cuts the open ones; returns once they are cut (each relay checks
    /// every 20 ms), so that no request sent afterwards can slip through a pooled connection.
    pub async fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The `message-id` header of every message in the topics under `prefix`, read from the start by
/// a group of its own, until no more come for a while.
pub async fn relayed_ids(bootstrap: &str, prefix: &str, expected: usize) -> Vec<i64> {
    use rdkafka::consumer::Consumer as _;
    use rdkafka::message::{Headers as _, Message as _};
    let raw: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{prefix}audit"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics: Vec<String> = regional_core::bus::TOPICS
        .iter()
        .map(|t| format!("{prefix}{t}.v{}", regional_core::bus::SCHEMA_VERSION))
        .collect();
    raw.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Past the expected number, a quiet spell shows whether duplicates follow.
        let wait = if ids.len() >= expected { Duration::from_secs(3).min(left) } else { left };
        match tokio::time::timeout(wait, raw.recv()).await {
            Ok(Ok(m)) => {
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "message-id").and_then(|h| h.value))
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .expect("every relayed message carries its message-id");
                ids.push(id);
            }
            Ok(Err(e)) => panic!("reading the topics: {e}"),
            Err(_) => return ids,
        }
    }
}

/// A loopback TCP balancer in front of several replicas, as a deployment's load balancer: each new
/// connection goes to the next target in turn, and to the one after it when that one refuses (a
/// replica that is gone costs a refused connect, not a failed request). Connections already relayed
/// to a replica that dies are cut, as a real balancer's are.
pub struct Balancer {
    pub port: u16,
}

impl Balancer {
    pub async fn start(targets: Vec<u16>) -> Self {
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("balancer port");
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let first = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let targets = targets.clone();
                tokio::spawn(async move {
                    for i in 0..targets.len() {
                        let target = targets[(first + i) % targets.len()];
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A PostgreSQL cluster of its own (initdb under /tmp, on its own port), for a test that restarts
/// the database: the machine's shared server is never touched. Other users of the machine cannot
/// get in: a password of its own (SCRAM) on loopback TCP, and its socket in a 0700 directory made
/// afresh under a random name. Run as the `postgres` user when
/// the tests run as root (PostgreSQL refuses to run as root). Its log is copied to the test's
/// scratch directory when it goes.
pub struct Postgres {
    pub port: u16,
    password: String,
    data: PathBuf,
    log: PathBuf,
    /// Where the log is copied when the cluster goes (the scratch directory under /root is out of
    /// the `postgres` user's reach).
    keep: PathBuf,
}

impl Postgres {
    /// The newest PostgreSQL installed (Debian's `/usr/lib/postgresql/<version>/bin`).
    fn bin() -> PathBuf {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort();
        versions.pop().expect("a PostgreSQL version").1
    }

    fn run(args: &[&str]) -> std::process::Output {
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new("env")
        };
        cmd.arg(Self::bin().join(args[0])).args(&args[1..]).output().expect("PostgreSQL's tools run")
    }

    /// A new cluster on a free port, started (loopback only, its own password), logging into
    /// `log_dir`.
    pub fn start(name: &str, log_dir: &std::path::Path) -> Self {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let mut secret = [0u8; 24];
        getrandom::getrandom(&mut secret).expect("randomness");
        let (nonce, password) = (hex::encode(&secret[..8]), hex::encode(&secret[8..]));
        // Not there before (never one another user made), and only its owner's.
        let base = PathBuf::from(format!("/tmp/ticketing-pg-{name}-{}-{nonce}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&base).expect("a new cluster dir");
        let pwfile = base.join("pwfile");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .expect("password file");
        std::io::Write::write_all(&mut file, password.as_bytes()).expect("password file");
        drop(file);
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&base).status();
        let data = base.join("data");
        let out = Self::run(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            "--pwfile",
            pwfile.to_str().unwrap(),
            "--no-sync",
        ]);
        let _ = std::fs::remove_file(&pwfile);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self {
            port: free_port(),
            password,
            data,
            log: base.join("postgres.log"),
            keep: log_dir.join("postgres.log"),
        };
        pg.up();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/postgres", self.password, self.port)
    }

    /// Starts the server and waits until it takes connections.
    pub fn up(&self) {
        let socket_dir = self.data.parent().expect("the cluster's directory").display().to_string();
        let opts =
            format!("-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=200", self.port);
        let out = Self::run(&[
            "pg_ctl",
            "-D",
            self.data.to_str().unwrap(),
            "-l",
            self.log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "start",
        ]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server at once, as a crash would (`-m immediate`: no checkpoint, recovery from the
    /// WAL at the next start).
    pub fn crash(&self) {
        let _ = Self::run(&["pg_ctl", "-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.crash();
        let _ = std::fs::copy(&self.log, &self.keep);
        if let Some(base) = self.data.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// The edge Worker and its objects in one workerd process through miniflare, without wrangler's
/// dev proxy (`loadtest/workerd-server.mjs`, as the benchmarks run it): for load, where the proxy
/// is not what is measured.
pub fn start_workerd_edge(
    port: u16,
    core_url: &str,
    state_dir: &std::path::Path,
    log_dir: &std::path::Path,
    keys: &TestKeys,
) -> Service {
    start_workerd_edge_inspected(port, core_url, state_dir, log_dir, keys, None, &[])
}

/// [`start_workerd_edge`] with workerd's V8 inspector on loopback port `inspector` (the soak reads
/// its isolates' heaps there) and the Worker's test settings `vars` (those
/// `loadtest/workerd-server.mjs` passes on).
pub fn start_workerd_edge_inspected(
    port: u16,
    core_url: &str,
    state_dir: &std::path::Path,
    log_dir: &std::path::Path,
    keys: &TestKeys,
    inspector: Option<u16>,
    vars: &[(&str, String)],
) -> Service {
    let mut cmd = Command::new("node");
    cmd.current_dir(repo_root())
        .arg("loadtest/workerd-server.mjs")
        .arg(port.to_string())
        .arg(state_dir)
        .env("EDGE_SIGNING_KEY", keys.edge.secret_config())
        .env("CORE_VERIFYING_KEYS", keys.core.public_config())
        .env("CORE_URL", core_url);
    if let Some(inspector) = inspector {
        cmd.env("WORKERD_INSPECTOR_PORT", inspector.to_string());
    }
    // The Worker's test settings only as given here, never from the shell that runs the tests.
    for name in ["HOLD_RECORDS_RETENTION_SECONDS", "HOLDS_PER_VISITOR_PER_MINUTE"] {
        cmd.env_remove(name);
    }
    cmd.envs(vars.iter().map(|(k, v)| (k, v)));
    spawn("edge", cmd, port, log_dir)
}

/// Runs `loadtest sale` (next to `E2E_CORE_BIN`) against the edge at `edge_url` and the core at
/// `core_url` with the plan in `plan` (its arguments, separated by white space), writing its
/// results under `out_dir`; answers its output.
pub async fn run_sale(
    edge_url: &str,
    core_url: &str,
    db_url: &str,
    keys: &TestKeys,
    admin_key: &str,
    out_dir: &std::path::Path,
    plan: &str,
) -> std::process::Output {
    let loadtest = PathBuf::from(required_env("E2E_CORE_BIN")).with_file_name("loadtest");
    // Killed if the test stops waiting for it (a failed assertion drops the future): a load
    // generator must not go on sending requests after its test.
    tokio::process::Command::new(loadtest)
        .args(["sale", "--edge", edge_url, "--core", core_url])
        .args(plan.split_whitespace())
        .arg("--out")
        .arg(out_dir)
        .env("PLATFORM_ADMIN_KEY", admin_key)
        .env("DATABASE_URL", db_url)
        .env("CORE_SIGNING_KEY", keys.core_signing_key())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the load generator runs")
}

/// A new buyer, admitted through the line (at once when it is passthrough), holding `seats`:
/// (hold id, hold token).
pub async fn hold(edge: &str, event: &str, seats: &[&str]) -> (String, String) {
    let buyer = http_builder().user_agent("e2e-buyer/1").build().unwrap();
    let queue = format!("{edge}/api/v1/events/{event}/queue");
    let joined: Value = buyer.post(&queue).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let ticket = joined["ticket"].as_str().unwrap_or_else(|| panic!("join: {joined}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let admitted = loop {
        let polled: Value = buyer.get(&queue).bearer_auth(ticket).send().await.unwrap().json().await.unwrap();
        if polled["admission_token"].is_string() {
            break polled;
        }
        assert!(Instant::now() < deadline, "never admitted: {polled}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let admission = admitted["admission_token"].as_str().unwrap();
    let resp = buyer
        .post(format!("{edge}/api/v1/events/{event}/holds"))
        .bearer_auth(admission)
        .json(&json!({ "kind": "seats", "seats": seats }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let held: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "hold {seats:?}: {held}");
    (held["hold"]["id"].as_str().unwrap().to_owned(), held["hold_token"].as_str().unwrap().to_owned())
}

/// A caller of the core's admin API with one API key.
pub struct Admin {
    pub base: String,
    pub key: String,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(base: &str, key: &str) -> Self {
        Self { base: base.to_owned(), key: key.to_owned(), http: http() }
    }

    /// The platform admin of a fresh database (`regional-core create-admin`).
    pub fn root(base: &str, database_url: &str) -> Self {
        Self::new(base, &create_admin(database_url, "root@e2e.test"))
    }

    /// An organization (`name`, `slug`) made by this platform admin, and its organizer admin.
    pub async fn organization(&self, name: &str, slug: &str) -> Admin {
        let org = self
            .ok(reqwest::Method::POST, "/api/v1/organizations", json!({ "name": name, "slug": slug }))
            .await;
        let user = self
            .ok(
                reqwest::Method::POST,
                "/api/v1/users",
                json!({ "email": format!("admin@{slug}.test"), "role": "organizer_admin", "organization_id": org["id"] }),
            )
            .await;
        let path = format!("/api/v1/users/{}/api-keys", user["id"].as_str().unwrap());
        let key = self.ok(reqwest::Method::POST, &path, json!({})).await;
        Admin::new(&self.base, key["key"].as_str().unwrap())
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("core answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A call that must succeed (2xx): its answer.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, path, Some(body)).await;
        assert!((200..300).contains(&status), "{path}: {status} {answer}");
        answer
    }

    /// Puts `event` on sale as the checkout tests want it: these sale settings, a line that admits
    /// everyone at once without a bot check, a full refund until a day before; then publishes it.
    pub async fn publish_open(&self, event: &str, sale_settings: Value) {
        let put = reqwest::Method::PUT;
        self.ok(put.clone(), &format!("/api/v1/events/{event}/sale-settings"), sale_settings).await;
        let room = json!({ "mode": "passthrough", "bot": { "check": { "kind": "off" } } });
        self.ok(put.clone(), &format!("/api/v1/events/{event}/waiting-room"), room).await;
        let policy = json!([{ "hours_before": 24, "percent": 100 }]);
        self.ok(put, &format!("/api/v1/events/{event}/refund-policy"), policy).await;
        let published = json!({ "state": "published" });
        self.ok(reqwest::Method::POST, &format!("/api/v1/events/{event}/state"), published).await;
    }

    /// Polls the event's sync state until `done` holds (or fails after `within`).
    pub async fn sync_until(&self, event: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, sync) =
                self.call(reqwest::Method::GET, &format!("/api/v1/events/{event}/sync"), None).await;
            if done(&sync) {
                return sync;
            }
            assert!(Instant::now() < deadline, "sync state never reached: {sync}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
