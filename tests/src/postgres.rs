//! PostgreSQL from Debian's package, started by the harness for the state-store tests: a
//! cluster of its own made by `initdb` in a temporary directory, on a free loopback port with
//! password authentication, run as an unprivileged user (PostgreSQL refuses to run as root),
//! killed and removed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::certs::TestPki;
use crate::poll::eventually;
use crate::ports::free_port;
use crate::process::ChildProcess;

/// The role the tests connect as; the database has the same name.
pub const USER: &str = "etcdmedic";

/// Who runs PostgreSQL when the tests run as root: Debian's `nobody`.
const UNPRIVILEGED_ID: u32 = 65534;

pub struct Postgres {
    /// `postgres://etcdmedic:<password>@127.0.0.1:<port>/etcdmedic`
    pub url: String,
    pub port: u16,
    password: String,
    process: ChildProcess,
    /// How it was started, to start it again on the same data and port.
    program: PathBuf,
    args: Vec<String>,
    dir: TempDir,
}

/// The newest installed PostgreSQL's programs (`/usr/lib/postgresql/<version>/bin`).
pub fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL is not installed; run scripts/install-deps.sh (apt package postgresql)",
        )?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb under /usr/lib/postgresql; run scripts/install-deps.sh")
}

/// `program` with `args`, as the unprivileged user when this process is root.
fn unprivileged(program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
    if nix::unistd::geteuid().is_root() {
        let mut wrapped = vec![
            format!("--reuid={UNPRIVILEGED_ID}"),
            format!("--regid={UNPRIVILEGED_ID}"),
            "--clear-groups".to_string(),
            "--".to_string(),
            program.display().to_string(),
        ];
        wrapped.extend_from_slice(args);
        (PathBuf::from("/usr/bin/setpriv"), wrapped)
    } else {
        (program.to_path_buf(), args.to_vec())
    }
}

/// Gives `path` to the unprivileged user when this process is root.
fn hand_over(path: &Path) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(path, Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

impl Postgres {
    pub async fn start() -> Result<Postgres> {
        Postgres::start_with(None).await
    }

    /// Started with TLS (the serving certificate of `pki`, for 127.0.0.1) and refusing TCP
    /// connections without it.
    pub async fn start_tls(pki: &TestPki) -> Result<Postgres> {
        Postgres::start_with(Some(pki)).await
    }

    async fn start_with(tls: Option<&TestPki>) -> Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("etcdmedic-postgres-")
            .tempdir()?;
        hand_over(dir.path())?;
        let data = dir.path().join("data");
        let password: String = format!("pw{:016x}", rand_u64()?);
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, &password)?;
        hand_over(&password_file)?;

        let (program, args) = unprivileged(
            &bin.join("initdb"),
            &[
                format!("--pgdata={}", data.display()),
                format!("--username={USER}"),
                format!("--pwfile={}", password_file.display()),
                "--auth=scram-sha-256".into(),
                "--encoding=UTF8".into(),
                "--no-sync".into(),
            ],
        );
        let output = std::process::Command::new(&program)
            .args(&args)
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        ensure!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::remove_file(&password_file)?;
        let mut tls_args = Vec::new();
        if let Some(pki) = tls {
            tls_args = require_tls(&data, pki)?;
        }

        let port = free_port()?;
        let (program, args) = unprivileged(
            &bin.join("postgres"),
            &[
                "-D".into(),
                data.display().to_string(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                // Its socket in the test's directory, not /var/run/postgresql.
                "-k".into(),
                dir.path().display().to_string(),
                "-c".into(),
                "fsync=off".into(),
                // Its dynamic shared memory in the data directory, removed with it: POSIX
                // segments in /dev/shm outlive a server killed when its test ends.
                "-c".into(),
                "dynamic_shared_memory_type=mmap".into(),
            ]
            .into_iter()
            .chain(tls_args)
            .collect::<Vec<String>>(),
        );
        let process = ChildProcess::spawn("postgres", &program, &args)?;
        let postgres = Postgres {
            url: format!("postgres://{USER}:{password}@127.0.0.1:{port}/{USER}"),
            port,
            password,
            process,
            program,
            args,
            dir,
        };
        postgres.wait_ready().await?;
        postgres.psql_in("postgres", &format!("CREATE DATABASE {USER}"))?;
        Ok(postgres)
    }

    async fn wait_ready(&self) -> Result<()> {
        let ready = eventually(
            "PostgreSQL accepts connections",
            Duration::from_secs(60),
            || async { self.psql_in("postgres", "SELECT 1").map(|_| ()) },
        )
        .await;
        if let Err(err) = ready {
            bail!("{err:#}\nPostgreSQL output:\n{}", self.process.output());
        }
        Ok(())
    }

    /// The URL without the password, as etcdmedic's configuration takes it.
    pub fn url_without_password(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{USER}", self.port)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// Stops PostgreSQL as its "fast" shutdown does (every session ended, as in a restart
    /// or a failover of the database), then starts it again on the same data and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// Stops PostgreSQL as its "fast" shutdown does; [`start_again`](Self::start_again)
    /// starts it on the same data and port.
    pub async fn stop(&mut self) -> Result<()> {
        self.process
            .signal_and_wait(nix::sys::signal::Signal::SIGINT, Duration::from_secs(30))
            .await
            .context("stopping PostgreSQL")?;
        Ok(())
    }

    pub async fn start_again(&mut self) -> Result<()> {
        self.process = ChildProcess::spawn("postgres", &self.program, &self.args)?;
        self.wait_ready().await
    }

    /// `sql` run by psql in the tests' database; its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in(USER, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        let output = std::process::Command::new(bin_dir()?.join("psql"))
            .args([
                "--no-psqlrc",
                "--tuples-only",
                "--no-align",
                "--host=127.0.0.1",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--username={USER}"))
            .arg(format!("--dbname={database}"))
            .args(["--command", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()?;
        ensure!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Gives PostgreSQL `pki`'s serving certificate (its key readable by the server's user
/// alone, as PostgreSQL insists) and makes every TCP connection use TLS; its arguments.
fn require_tls(data: &Path, pki: &TestPki) -> Result<Vec<String>> {
    let cert = data.join("server.crt");
    let key = data.join("server.key");
    std::fs::copy(&pki.server_cert_file, &cert)?;
    std::fs::copy(&pki.server_key_file, &key)?;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    hand_over(&cert)?;
    hand_over(&key)?;
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba)?;
    let rules: String = rules
        .lines()
        .map(|line| match line.strip_prefix("host ") {
            Some(rest) => format!("hostssl {rest}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&hba, rules)?;
    Ok(vec![
        "-c".into(),
        "ssl=on".into(),
        "-c".into(),
        format!("ssl_cert_file={}", cert.display()),
        "-c".into(),
        format!("ssl_key_file={}", key.display()),
    ])
}

fn rand_u64() -> Result<u64> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(u64::from_le_bytes(bytes))
}
