//! The PostgreSQL the harness starts for the state-store tests: its own cluster, unprivileged,
//! on loopback, with password authentication, and nothing left after it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::eventually;
use etcdmedic_tests::postgres::{bin_dir, Postgres, USER};

/// The real user id of process `pid`.
fn uid_of(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .context("no Uid line")?
        .parse()
        .context("Uid")
}

#[tokio::test]
async fn postgres_runs_unprivileged_on_loopback_behind_a_password_and_leaves_nothing() -> Result<()>
{
    let postgres = Postgres::start().await?;
    ensure!(postgres.url.contains("@127.0.0.1:"), "{}", postgres.url);
    ensure!(postgres.psql("SELECT current_user, current_database()")? == format!("{USER}|{USER}"));
    postgres.psql("CREATE TABLE t (k text PRIMARY KEY); INSERT INTO t VALUES ('a')")?;
    ensure!(postgres.psql("SELECT count(*) FROM t")? == "1");

    let pid = postgres.pid().context("no pid")?;
    ensure!(uid_of(pid)? != 0, "PostgreSQL runs as root");

    let wrong = std::process::Command::new(bin_dir()?.join("psql"))
        .args(["--no-psqlrc", "--host=127.0.0.1", "--command", "SELECT 1"])
        .arg(format!("--port={}", postgres.port))
        .arg(format!("--username={USER}"))
        .env("PGPASSWORD", "not-the-password")
        .output()?;
    ensure!(
        !wrong.status.success()
            && String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
        "a wrong password was not refused: {wrong:?}"
    );

    // Its shared memory is in its directory (mmap), not in /dev/shm where a server killed
    // at the end of a test would leave its segments behind.
    // (Only those of its user count: a system PostgreSQL has its own.)
    let user = uid_of(pid)?;
    let segments = std::fs::read_dir("/dev/shm")?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("PostgreSQL.")
        })
        .filter(|entry| {
            entry
                .metadata()
                .is_ok_and(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == user)
        })
        .count();
    ensure!(
        segments == 0,
        "{segments} PostgreSQL segments of uid {user} in /dev/shm"
    );
    let dir = postgres.dir().to_path_buf();
    drop(postgres);
    eventually(
        "PostgreSQL is gone with its directory",
        Duration::from_secs(30),
        || async {
            ensure!(!dir.exists(), "{} left behind", dir.display());
            ensure!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "process {pid} still runs"
            );
            Ok(())
        },
    )
    .await
}
