//! The state store's suite (`remediator/src/service/store/suite.rs`) on PostgreSQL as well as
//! SQLite: the harness's PostgreSQL is started, and the remediator's unit tests of the suite
//! run again with `ETCDMEDIC_TEST_POSTGRES` naming it, each on a database of its own.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::postgres::Postgres;

use crate::support::cargo;

/// The suite's module path inside the remediator's library.
const SUITE: &str = "service::store::suite::";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stores_suite_passes_on_postgresql_as_on_sqlite() -> Result<()> {
    let postgres = Postgres::start().await?;
    let output = cargo()
        .args([
            "test",
            "--locked",
            "-p",
            "etcdmedic-remediator",
            "--lib",
            "--",
        ])
        .args([SUITE, "--nocapture", "--test-threads=1"])
        .env("ETCDMEDIC_TEST_POSTGRES", &postgres.url)
        .current_dir(repository_root())
        .output()
        .context("running the store suite")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "the store suite failed on PostgreSQL:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The suite's lines and the test harness's share stdout, and may share a line.
    let passed: usize = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    let on_postgres = stdout.matches("store suite on PostgreSQL: ").count();
    ensure!(
        passed >= 8,
        "only {passed} tests of the suite passed:\n{stdout}"
    );
    ensure!(
        on_postgres == passed,
        "{on_postgres} of {passed} tests ran on PostgreSQL:\n{stdout}"
    );
    Ok(())
}
