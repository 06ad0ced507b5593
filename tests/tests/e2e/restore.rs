//! `etcdmedic-remediator restore` on every etcd version: a 3-member cluster backed up (with
//! its restore drill), written to after the backup, then restored with `restore` into a new
//! 3-member cluster on other ports (`--member`). Every key of the backup is there, the
//! revision is above every revision the old cluster reached, HashKV agrees on every member,
//! and a watch from a revision after the backup is told "compacted" instead of waiting in
//! silence. With `--no-bump` the keyspace starts at the backup's revision. Its refusals
//! change nothing.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use etcd_client::WatchOptions;
use etcdmedic_tests::generated::repository_root;
use etcdmedic_tests::ports::free_ports;
use etcdmedic_tests::process::ChildProcess;
use etcdmedic_tests::{eventually, project_binary, EtcdCluster, EtcdVersion};
use serde_json::Value;

use crate::on_each_etcd_version;
use crate::support::{current_revision, keyspace, stderr, stdout, write_file, write_pods, Kv};

on_each_etcd_version!(a_backup_restores_above_every_revision_of_the_old_cluster,);

const NAMES: [&str; 3] = ["r1", "r2", "r3"];

/// `restore` of prod-a with `config` into `into`, before any option of its own.
fn restore_command(config: &str, into: &str) -> Vec<String> {
    [
        "restore",
        "--cluster",
        "prod-a",
        "--config",
        config,
        "--into",
        into,
    ]
    .map(str::to_string)
    .to_vec()
}

async fn remediator(args: &[&str]) -> Result<Output> {
    Ok(
        tokio::process::Command::new(project_binary("etcdmedic-remediator")?)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await?,
    )
}

/// A cluster with 100 keys, backed up to a local destination (drilled with `bin_dir`'s
/// release), and written to after the backup. The config, the backup's manifest, and the
/// keys and values as the backup holds them.
struct BackedUp {
    original: EtcdCluster,
    dir: tempfile::TempDir,
    config: PathBuf,
    manifest: Value,
    backup: PathBuf,
    /// Every key as the backup holds it, with its value and revisions.
    expected: Vec<Kv>,
    old_highest: i64,
}

async fn backed_up(version: EtcdVersion) -> Result<BackedUp> {
    let original = EtcdCluster::builder(version).members(3).start().await?;
    let mut client = original.client(0).await?;
    write_pods(&mut client, 0..100, "v1").await?;
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "remediation: {{snapshot_dir: {}}}\nbackup:\n  destinations: [{{name: near, kind: local, \
         path: {}}}]\n  restore_drill: {{bin_dir: {}}}\nclusters:\n{}",
        dir.path().join("snapshots").display(),
        dir.path().join("backups").display(),
        version.bin_dir()?.display(),
        original.config_entry("prod-a")
    );
    let config = write_file(dir.path(), "etcdmedic.yaml", &yaml)?;
    let config_arg = config.display().to_string();
    let output = remediator(&[
        "backup",
        "--cluster",
        "prod-a",
        "-o",
        "json",
        "--config",
        &config_arg,
    ])
    .await?;
    ensure!(output.status.success(), "backup: {}", stderr(&output));
    let report: Value = serde_json::from_str(&stdout(&output))?;
    let manifest = report["manifest"].clone();
    ensure!(
        manifest["members"].as_array().map(Vec::len) == Some(3),
        "the manifest records the members: {manifest:#}"
    );
    let backup = PathBuf::from(
        report["destinations"][0]["location"]
            .as_str()
            .context("location")?,
    );
    let revision = manifest["revision"].as_i64().context("revision")?;
    let expected = keyspace(&mut client, Some(revision)).await?;
    ensure!(
        expected.len() == 100,
        "{} keys in the backup",
        expected.len()
    );
    // Written after the backup: what a restore loses, and revisions clients may have seen.
    write_pods(&mut client, 0..50, "v2").await?;
    let old_highest = current_revision(&mut client).await?;
    Ok(BackedUp {
        original,
        dir,
        config,
        manifest,
        backup,
        expected,
        old_highest,
    })
}

/// A restored cluster: its members' processes and a client.
struct Restored {
    _members: Vec<ChildProcess>,
    client: etcd_client::Client,
    endpoints: Vec<String>,
}

/// Restores into `into` for three members on new ports and starts them with `version`'s
/// etcd. A port handed out free can be taken before a member binds it: then the whole
/// restore is done again on other ports, into a fresh directory.
async fn restore_and_start(
    version: EtcdVersion,
    setup: &BackedUp,
    label: &str,
    extra: &[&str],
) -> Result<Restored> {
    let mut last = None;
    for attempt in 1..=3 {
        let into = setup.dir.path().join(format!("{label}-{attempt}"));
        match try_restore_and_start(version, setup, &into, extra).await {
            Ok(restored) => return Ok(restored),
            Err(err) => {
                eprintln!("restore attempt {attempt}: {err:#}");
                last = Some(err);
            }
        }
    }
    Err(last.context("no attempt")?)
}

async fn try_restore_and_start(
    version: EtcdVersion,
    setup: &BackedUp,
    into: &Path,
    extra: &[&str],
) -> Result<Restored> {
    let ports = free_ports(6)?;
    let members: Vec<String> = NAMES
        .iter()
        .zip(&ports[..3])
        .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
        .collect();
    let (config, into_arg) = (
        setup.config.display().to_string(),
        into.display().to_string(),
    );
    let command = restore_command(&config, &into_arg);
    let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
    for member in &members {
        args.extend(["--member", member.as_str()]);
    }
    // etcd 3.4's etcdctl cannot bump revisions; 3.5's etcdutl restores its backups.
    let etcdutl = EtcdVersion::V3_5
        .bin_dir()?
        .join("etcdutl")
        .display()
        .to_string();
    if version == EtcdVersion::V3_4 && !extra.contains(&"--no-bump") {
        args.extend(["--etcdutl", &etcdutl]);
    }
    args.extend(extra);
    let output = remediator(&args).await?;
    ensure!(
        output.status.success(),
        "restore: {}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    ensure!(
        text.starts_with("Restored backup") && text.contains("bootstrap --recover-from="),
        "{text}"
    );
    let initial_cluster = members.join(",");
    let token = text
        .split("--initial-cluster-token ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .context("no token in the next steps")?
        .to_string();
    let mut processes = Vec::new();
    let mut endpoints = Vec::new();
    for (index, name) in NAMES.iter().enumerate() {
        let peer = format!("http://127.0.0.1:{}", ports[index]);
        let client = format!("http://127.0.0.1:{}", ports[index + 3]);
        let data_dir = into.join(name);
        ensure!(
            data_dir.join("member").is_dir(),
            "{} has no member data",
            data_dir.display()
        );
        let args: Vec<String> = [
            "--name",
            name,
            "--data-dir",
            &data_dir.display().to_string(),
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-token",
            &token,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        processes.push(ChildProcess::spawn(name, &version.etcd()?, &args)?);
        endpoints.push(client);
    }
    // Every member, each on its own: a client of all three may be answered by the first up
    // while another is still starting, and later calls balanced to that one are refused.
    let client = eventually(
        "every member of the restored cluster serves reads",
        Duration::from_secs(60),
        || {
            let endpoints = endpoints.clone();
            async move {
                for endpoint in &endpoints {
                    let mut member = etcd_client::Client::connect([endpoint], None).await?;
                    member.get("/registry/pods/000", None).await?;
                }
                Ok(etcd_client::Client::connect(&endpoints, None).await?)
            }
        },
    )
    .await
    .with_context(|| {
        processes
            .iter()
            .map(|p| {
                p.output()
                    .lines()
                    .rev()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    })?;
    Ok(Restored {
        _members: processes,
        client,
        endpoints,
    })
}

async fn a_backup_restores_above_every_revision_of_the_old_cluster(
    version: EtcdVersion,
) -> Result<()> {
    let setup = backed_up(version).await?;
    let backup_revision = setup.manifest["revision"].as_i64().context("revision")?;
    let mut restored = restore_and_start(version, &setup, "bumped", &[]).await?;
    let client = &mut restored.client;

    let found = keyspace(client, None).await?;
    let revision = current_revision(client).await?;
    ensure!(
        found == setup.expected,
        "the restored keys differ from the backup's"
    );
    ensure!(
        revision > setup.old_highest,
        "the restored revision {revision} is not above the old cluster's {}",
        setup.old_highest
    );

    // HashKV at a revision after the restore (etcd 3.4 answers none at the compacted one).
    let written = client
        .put("/restored/probe", "1", None)
        .await?
        .header()
        .context("header")?
        .revision();
    let endpoints = restored.endpoints.clone();
    eventually(
        "every member has the same HashKV",
        Duration::from_secs(30),
        || {
            let endpoints = endpoints.clone();
            async move {
                let mut hashes = Vec::new();
                for endpoint in &endpoints {
                    let mut member = etcd_client::Client::connect([endpoint], None).await?;
                    hashes.push(member.hash_kv(written).await?.hash());
                }
                ensure!(
                    hashes.windows(2).all(|w| w[0] == w[1]),
                    "HashKV differs between members: {hashes:?}"
                );
                Ok(())
            }
        },
    )
    .await?;

    // A client that saw the old cluster past the backup resumes its watch from there.
    let watched = watch_from(client, backup_revision + 1).await?;
    ensure!(
        watched.contains("compacted"),
        "a watch from revision {} got: {watched}",
        backup_revision + 1
    );
    drop(setup.original);

    if version == EtcdVersion::NEWEST {
        let setup = backed_up(version).await?;
        let backup_revision = setup.manifest["revision"].as_i64().context("revision")?;
        let mut plain = restore_and_start(version, &setup, "plain", &["--no-bump"]).await?;
        let revision = current_revision(&mut plain.client).await?;
        ensure!(
            revision == backup_revision,
            "--no-bump starts at {revision}, the backup is at {backup_revision}"
        );
    }
    Ok(())
}

/// What a watch of the whole keyspace from `revision` is told first: "compacted (at N)",
/// an event, or nothing within a few seconds.
async fn watch_from(client: &mut etcd_client::Client, revision: i64) -> Result<String> {
    let options = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(revision);
    let mut stream = match client.watch("", Some(options)).await {
        Ok(watch) => watch,
        Err(err) => return Ok(err.to_string()),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => return Ok("nothing".into()),
            Ok(Err(err)) => return Ok(err.to_string()),
            Ok(Ok(None)) => return Ok("the end of the stream".into()),
            Ok(Ok(Some(message))) => message,
        };
        if message.compact_revision() > 0 {
            return Ok(format!("compacted (at {})", message.compact_revision()));
        }
        if !message.events().is_empty() {
            return Ok(format!("{} events", message.events().len()));
        }
    }
}

/// The refusals: each exits 2 with its reason, and leaves the target as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_what_it_cannot_restore_safely_and_changes_nothing() -> Result<()> {
    let setup = backed_up(EtcdVersion::NEWEST).await?;
    let config = setup.config.display().to_string();
    let into = setup.dir.path().join("target");
    let into_arg = into.display().to_string();
    let refused = |output: &Output, reason: &str| -> Result<()> {
        ensure!(
            output.status.code() == Some(2) && stderr(output).contains(reason),
            "wanted exit 2 with {reason:?}: {:?} {}",
            output.status.code(),
            stderr(output)
        );
        Ok(())
    };
    let base_command = restore_command(&config, &into_arg);
    let base: Vec<&str> = base_command.iter().map(String::as_str).collect();

    // A dry run shows the plan and writes nothing.
    let output = remediator(&[&base[..], &["--dry-run"]].concat()).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    ensure!(
        stdout(&output).starts_with("Would restore backup"),
        "{}",
        stdout(&output)
    );
    ensure!(!into.exists(), "a dry run wrote {}", into.display());

    // A target that holds something.
    std::fs::create_dir(&into)?;
    std::fs::write(into.join("keep-me"), "x")?;
    refused(&remediator(&base).await?, "is not empty")?;
    ensure!(std::fs::read_dir(&into)?.count() == 1, "the target changed");
    std::fs::remove_dir_all(&into)?;

    // A backup whose drill failed, unless accepted.
    let file = setup.manifest["file"].as_str().context("file")?.to_string();
    let manifest_path = setup.backup.with_extension("json");
    let original_manifest = std::fs::read_to_string(&manifest_path)?;
    let mut failed: Value = serde_json::from_str(&original_manifest)?;
    failed["restore_drill"]["passed"] = false.into();
    failed["restore_drill"]["reason"] = "the hash differs".into();
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&failed)?)?;
    refused(
        &remediator(&[&base[..], &["--backup", &file]].concat()).await?,
        "the hash differs",
    )?;
    let accepted = remediator(
        &[
            &base[..],
            &["--backup", &file, "--accept-unproven", "--dry-run"],
        ]
        .concat(),
    )
    .await?;
    ensure!(accepted.status.success(), "{}", stderr(&accepted));
    ensure!(!into.exists(), "a refusal wrote {}", into.display());

    // A manifest of another cluster.
    let mut other: Value = serde_json::from_str(&original_manifest)?;
    other["cluster"] = "prod-b".into();
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&other)?)?;
    refused(&remediator(&base).await?, "is cluster prod-b's")?;
    std::fs::write(&manifest_path, &original_manifest)?;

    // A damaged copy: a byte flipped in the stored file.
    let intact = std::fs::read(&setup.backup)?;
    let mut damaged = intact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&setup.backup, &damaged)?;
    refused(&remediator(&base).await?, "is damaged")?;
    ensure!(!into.exists(), "a damaged backup left {}", into.display());
    std::fs::write(&setup.backup, &intact)?;

    // An unusable member, and etcd 3.4's etcdctl asked to bump.
    refused(
        &remediator(&[&base[..], &["--member", "../r1=http://127.0.0.1:1"]].concat()).await?,
        "--member",
    )?;
    let etcd34 = setup.dir.path().join("etcd34.yaml");
    std::fs::write(
        &etcd34,
        std::fs::read_to_string(&setup.config)?.replace(
            &EtcdVersion::NEWEST.bin_dir()?.display().to_string(),
            &EtcdVersion::V3_4.bin_dir()?.display().to_string(),
        ),
    )?;
    let etcd34 = restore_command(&etcd34.display().to_string(), &into_arg);
    let etcd34: Vec<&str> = etcd34.iter().map(String::as_str).collect();
    refused(&remediator(&etcd34).await?, "cannot --bump-revision")?;
    ensure!(!into.exists(), "a refusal wrote {}", into.display());

    // Refusals aside, the restore docs/disaster-recovery.md shows, with the members the
    // backup recorded: it prints what the document shows, and the README its first lines.
    let output = remediator(&base).await?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let printed = stdout(&output);
    for (document, path) in [
        ("README.md", "README.md"),
        ("disaster-recovery.md", "docs/disaster-recovery.md"),
    ] {
        let text = std::fs::read_to_string(repository_root().join(path))?;
        let block = crate::readme::block(&text, "$ etcdmedic-remediator restore --config")?;
        let step = crate::readme::session(block)
            .into_iter()
            .next()
            .with_context(|| format!("no command in {document}'s restore block"))?;
        let lines = step.shown.lines().count();
        let first: String = printed
            .lines()
            .take(lines)
            .map(|l| format!("{l}\n"))
            .collect();
        ensure!(
            lines >= 5,
            "{document} shows {lines} lines of restore's output"
        );
        crate::readme::ensure_same_output(document, &step.shown, &first)?;
    }
    for name in ["m0", "m1", "m2"] {
        ensure!(
            into.join(name).join("member").is_dir(),
            "no data directory for {name}"
        );
    }
    Ok(())
}
