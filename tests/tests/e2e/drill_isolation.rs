//! The restore drill keeps to itself: its etcd and etcdutl get none of the remediator's
//! environment (its cloud credentials, an `ETCD_*` variable meant for something else), and
//! what a killed drill left in the snapshot directory (the restored keyspace among it) is
//! removed by the next backup. What a backup writes is its owner's alone (files 0600,
//! directories 0700) whatever the umask.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::support::{stderr, stdout, write_file};

/// `name` in `dir`: writes its environment, working directory and arguments to
/// `<name>.env`, `<name>.cwd` and `<name>.args` beside it, then runs the real one.
fn recording_wrapper(dir: &Path, name: &str, real: &Path) -> Result<()> {
    let record = |what: &str| dir.join(format!("{name}.{what}")).display().to_string();
    let script = format!(
        "#!/bin/sh\nenv > {}\npwd > {}\nprintf '%s\\n' \"$@\" > {}\nexec {} \"$@\"\n",
        record("env"),
        record("cwd"),
        record("args"),
        real.display()
    );
    let path = write_file(dir, name, &script)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_keeps_to_itself_and_a_backup_is_its_owners_alone() -> Result<()> {
    let version = EtcdVersion::V3_5;
    let cluster = EtcdCluster::builder(version).members(1).start().await?;
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    for tool in ["etcd", "etcdutl"] {
        recording_wrapper(&bin, tool, &version.bin_dir()?.join(tool))?;
    }
    let snapshots = dir.path().join("snapshots");
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        snapshots.display(),
        dir.path().join("near").display(),
        bin.display(),
        cluster.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "c.yaml", &yaml)?;

    // What a drill killed mid-way leaves: its throwaway member's data, a download (in
    // directories made as etcdmedic makes them, which the end checks).
    let cluster_dir = snapshots.join("prod-a");
    let scratch = cluster_dir.join(".restore-drill-k1lled");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(scratch.join("data/member/snap"))?;
    std::fs::write(scratch.join("data/member/snap/db"), b"a restored keyspace")?;
    let download = write_file(&cluster_dir, ".drill-download-prod-a-x.db", "x")?;

    let run = tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
        .args(["backup", "--cluster", "prod-a", "-o", "json", "--config"])
        .arg(&config)
        .env("AWS_SECRET_ACCESS_KEY", "not-the-drills")
        .env("AZURE_STORAGE_KEY", "not-the-drills")
        // etcd refuses a flag given twice, by its command line and by its environment.
        .env("ETCD_NAME", "not-the-drills")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("backup did not finish within 120s")??;
    ensure!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let drill = &report["manifest"]["restore_drill"];
    ensure!(drill["passed"] == true, "{drill}");
    for tool in ["etcd", "etcdutl"] {
        let env = std::fs::read_to_string(bin.join(format!("{tool}.env")))
            .with_context(|| format!("{tool} was not run by the drill"))?;
        ensure!(
            !env.contains("not-the-drills"),
            "{tool} was given the remediator's environment:\n{env}"
        );
    }
    // The throwaway member listened on Unix sockets in its own scratch directory (0700,
    // checked below with the rest), never on a TCP port another user could reach or take.
    let args = std::fs::read_to_string(bin.join("etcd.args"))?;
    let cwd = std::fs::read_to_string(bin.join("etcd.cwd"))?;
    for flag in ["--listen-client-urls", "--listen-peer-urls"] {
        let url = args
            .lines()
            .skip_while(|arg| *arg != flag)
            .nth(1)
            .with_context(|| format!("no {flag} in {args}"))?;
        ensure!(url.starts_with("unix://"), "{flag} {url}");
    }
    ensure!(
        !args.contains("http://") && !args.contains("127.0.0.1"),
        "the drill's etcd was given a TCP address: {args}"
    );
    ensure!(
        Path::new(cwd.trim()).starts_with(&cluster_dir) && cwd.contains(".restore-drill-"),
        "the drill's etcd ran in {cwd}, not its scratch directory"
    );
    ensure!(
        !scratch.exists() && !download.exists(),
        "a killed drill's scratch is still there"
    );
    // The test runs with the usual umask (0022): every file would be 0644 without asking.
    for top in [snapshots, dir.path().join("near")] {
        ensure_private(&top)?;
    }
    Ok(())
}

/// `path` and everything under it: directories 0700, files 0600 (the run lock's too).
fn ensure_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
    ensure!(
        mode == wanted,
        "{} is {mode:o}, not {wanted:o}",
        path.display()
    );
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            ensure_private(&entry?.path())?;
        }
    }
    Ok(())
}
