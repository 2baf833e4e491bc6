//! TLS to PostgreSQL, as a managed database asks for it: the core connects through its own pool
//! (`db::pool`, the `DATABASE_URL` an operator gives) with `sslmode=verify-full` to a PostgreSQL
//! started here with a certificate made at test time, and refuses a server it cannot verify.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use regional_core::config::DatabaseUrl;
use regional_core::{db, DatabaseArgs};
use uuid::Uuid;

/// PostgreSQL's server programs: the newest version under /usr/lib/postgresql (Debian's layout,
/// which the bootstrap installs) that has them.
fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs under /usr/lib/postgresql (scripts/bootstrap.sh)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version with initdb").1.join(name)
}

/// Runs a PostgreSQL program as the `postgres` user when this is root (initdb refuses root).
fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if root { Command::new("runuser") } else { Command::new(pg_bin(program)) };
    if root {
        cmd.args(["-u", "postgres", "--"]).arg(pg_bin(program));
    }
    cmd.args(args).output().unwrap()
}

/// A PostgreSQL cluster of its own, serving TLS with `cert.pem` / `key.pem` from `dir`, with a
/// password of its own over TCP; stopped and removed (with `dir`) when dropped, even when starting
/// it failed half-way.
struct TlsPostgres {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    password: String,
}

impl TlsPostgres {
    fn start(dir: &Path) -> Self {
        let data = dir.join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let password = Uuid::new_v4().simple().to_string();
        let pg = Self { dir: dir.to_owned(), data: data.clone(), port, password };
        std::fs::write(dir.join("password"), &pg.password).unwrap();
        let chown = |path: &Path| {
            let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(path).status();
        };
        std::fs::set_permissions(dir.join("key.pem"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        chown(dir);
        let pwfile = format!("--pwfile={}", dir.join("password").display());
        let init = as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-N",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &pwfile,
            ],
        );
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
             -c ssl_cert_file={dir}/cert.pem -c ssl_key_file={dir}/key.pem",
            dir = dir.display()
        );
        let log = dir.join("postgres.log");
        let started = as_postgres(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-o", &options, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        assert!(
            started.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pg
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        as_postgres("pg_ctl", &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn connect(url: &str) -> Result<bool, sqlx::Error> {
    let args = DatabaseArgs { database_url: url.parse::<DatabaseUrl>().unwrap(), max_connections: 1 };
    let pool = db::pool(&args)?;
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetch_one(&pool).await
}

#[tokio::test]
async fn the_core_reaches_postgresql_over_verified_tls_and_refuses_a_server_it_cannot_verify() {
    let dir = std::env::temp_dir().join(format!("pg-tls-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    common::test_pki(&dir);
    // Another CA, which did not sign the server's certificate.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    common::test_pki(&other);
    let pg = TlsPostgres::start(&dir);
    let base = format!("postgres://postgres:{}@localhost:{}/postgres", pg.password, pg.port);
    let ca = dir.join("ca.pem");

    // verify-full: the chain to the operator's CA and the host name both checked (verify-ca is
    // refused when the URL is read: config::DatabaseUrl).
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    assert!(connect(&url).await.unwrap(), "the connection is encrypted");
    // A server whose certificate another CA signed is refused; so is a name the certificate does
    // not carry (127.0.0.1).
    let url = format!("{base}?sslmode=verify-full&sslrootcert={}", other.join("ca.pem").display());
    assert!(connect(&url).await.is_err(), "a certificate of another CA is refused");
    let by_address = format!("postgres://postgres:{}@127.0.0.1:{}/postgres", pg.password, pg.port);
    let url = format!("{by_address}?sslmode=verify-full&sslrootcert={}", ca.display());
    assert!(connect(&url).await.is_err(), "a name the certificate does not carry is refused");
    // Without TLS asked for, the default (`prefer`) still encrypts with a server that offers it.
    assert!(connect(&base).await.unwrap());

    drop(pg);
}
