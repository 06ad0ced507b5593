//! The remediation benchmark: on one fragmented 3-member cluster (etcd data on disk), the
//! manual procedure with etcdctl (snapshot save, defragment each member, leader last), then
//! the cluster fragmented again the same way and `etcdmedic-remediator run`. During both,
//! a bounded writer puts through every member and a lease is kept alive through each member;
//! etcd's own logs say when each member was defragmenting.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use etcd_client::{Client, CompactionOptions};
use etcdmedic_tests::load::{Pace, PutLoad, Puts};
use etcdmedic_tests::workload::commit_backends;
use etcdmedic_tests::{project_binary, EtcdCluster, EtcdVersion};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MB: u64 = 1_000_000;
const VALUE_BYTES: usize = 512 * 1024;
/// Bounds on the load: it stops at the end of the procedure, or at these.
const MAX_PUTS_PER_ENDPOINT: usize = 100_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(900);
const PUT_EVERY: Duration = Duration::from_millis(20);
const PUT_TIMEOUT: Duration = Duration::from_secs(60);
const KEEPALIVE_EVERY: Duration = Duration::from_millis(100);
const LEASE_TTL_SECONDS: i64 = 10;
pub const TARGET_RATIO: f64 = 1.2;
pub const TARGET_KEEPALIVE_GAP: Duration = Duration::from_millis(500);
pub const TARGET_OTHER_PUT: Duration = Duration::from_millis(500);

pub struct Settings {
    pub version: EtcdVersion,
    pub in_use_mb: u64,
    pub free_mb: u64,
}

/// What one procedure did to the cluster's clients.
pub struct Availability {
    pub wall: Duration,
    pub puts: usize,
    pub failed_puts: usize,
    pub first_failure: Option<String>,
    /// Per member: (name, max, p99) of puts sent to it.
    pub per_endpoint: Vec<(String, Duration, Duration)>,
    /// The slowest put through a member that was not defragmenting at the time.
    pub max_put_elsewhere: Duration,
    /// The slowest put through the member being defragmented.
    pub max_put_during_own_defrag: Duration,
    /// The longest wait for a keep-alive answer through a member that was not defragmenting.
    pub longest_keepalive_gap: Duration,
    /// The longest through the member being defragmented (its own clients wait).
    pub longest_keepalive_gap_own: Duration,
    pub lease_expired: bool,
    /// Each member's defragmentation time, from its log, in the order they ran.
    pub defrags: Vec<(String, Duration)>,
}

pub struct Outcome {
    pub db_before: Vec<(String, u64, u64)>,
    pub manual: Availability,
    pub etcdmedic: Availability,
    pub etcdmedic_outcome: String,
}

pub async fn run(settings: &Settings) -> Result<Outcome> {
    let quota = 8 * 1024 * MB;
    let cluster = EtcdCluster::builder(settings.version)
        .members(3)
        .quota(quota)
        .data_on_disk()
        .start()
        .await?;
    let clients = cluster.clients().await?;
    let live_keys = (settings.in_use_mb * MB).div_ceil(VALUE_BYTES as u64) as usize;
    let garbage_keys = (settings.free_mb * MB).div_ceil(VALUE_BYTES as u64) as usize;
    eprintln!(
        "bench: writing {} MB live data ({live_keys} keys of {} KiB)",
        settings.in_use_mb,
        VALUE_BYTES / 1024
    );
    write_keys(&clients[0], live_keys, 0).await?;
    eprintln!(
        "bench: fragmenting: {} MB overwritten, then compacted",
        settings.free_mb
    );
    refragment(&clients, garbage_keys, 1).await?;
    let db_before = sizes(&cluster, settings).await?;

    eprintln!("bench: the etcdctl procedure under load");
    let manual = measure(&cluster, manual_procedure).await?;

    eprintln!("bench: fragmenting again the same way");
    refragment(&clients, garbage_keys, 2).await?;
    sizes(&cluster, settings).await?;

    eprintln!("bench: etcdmedic-remediator run under load");
    let config = cluster.dir().join("bench-remediation.yaml");
    std::fs::write(
        &config,
        format!(
            "remediation:\n  snapshot_dir: {}\n  settle_time: 0s\n  defrag_rule: \"dbSizeFree >= {}\"\nclusters:\n{}",
            cluster.dir().join("snapshots").display(),
            settings.free_mb * MB / 2,
            cluster.config_entry("bench")
        ),
    )?;
    let mut etcdmedic_outcome = String::new();
    let etcdmedic = measure(&cluster, |_| {
        let output = Command::new(project_binary("etcdmedic-remediator")?)
            .args(["run", "--cluster", "bench", "-o", "json", "--config"])
            .arg(&config)
            .output()?;
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).with_context(|| {
                format!(
                    "etcdmedic-remediator printed no report: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        etcdmedic_outcome = report["outcome"].as_str().unwrap_or("unknown").to_string();
        ensure!(
            etcdmedic_outcome == "succeeded",
            "the run did not succeed: {}",
            report["reason"]
        );
        Ok(())
    })
    .await?;
    Ok(Outcome {
        db_before,
        manual,
        etcdmedic,
        etcdmedic_outcome,
    })
}

/// What a careful operator types: a snapshot from a follower, then each follower, then the
/// leader, with a command timeout long enough for a big database (etcdctl's default 5 s
/// would give up while etcd carries on).
fn manual_procedure(cluster: &EtcdCluster) -> Result<()> {
    let leader = leader_index(cluster)?;
    let followers: Vec<usize> = (0..cluster.len()).filter(|&i| i != leader).collect();
    let snapshot = cluster.dir().join("manual-snapshot.db");
    etcdctl(
        cluster,
        followers[0],
        &["snapshot", "save", &snapshot.display().to_string()],
    )?;
    for index in followers.into_iter().chain([leader]) {
        etcdctl(cluster, index, &["defrag", "--command-timeout=10m"])?;
    }
    Ok(())
}

fn etcdctl(cluster: &EtcdCluster, index: usize, args: &[&str]) -> Result<()> {
    cluster
        .etcdctl_at(&[cluster.endpoint(index)], args)
        .map(drop)
        .with_context(|| format!("etcdctl {}", args.join(" ")))
}

fn leader_index(cluster: &EtcdCluster) -> Result<usize> {
    let json = cluster.etcdctl(&["endpoint", "status", "-w", "json"])?;
    let statuses: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    let leader = statuses
        .iter()
        .find_map(|s| s["Status"]["leader"].as_u64())
        .context("no leader in etcdctl's answer")?;
    statuses
        .iter()
        .position(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader))
        .context("the leader is not among the endpoints")
}

/// Runs `procedure` (blocking: it waits on child processes) under load and measures.
async fn measure(
    cluster: &EtcdCluster,
    procedure: impl FnOnce(&EtcdCluster) -> Result<()>,
) -> Result<Availability> {
    let before: Vec<usize> = (0..cluster.len())
        .map(|i| cluster.defrag_intervals(i).map(|d| d.len()))
        .collect::<Result<_>>()?;
    let load = Load::start(cluster).await?;
    // Let the writers and the lease settle into their rhythm first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let result = tokio::task::block_in_place(|| procedure(cluster));
    let wall = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (puts, keepalives) = load.stop().await?;
    result?;

    let mut defrags = Vec::new();
    let mut windows: Vec<Vec<(SystemTime, SystemTime)>> = Vec::new();
    for (index, skip) in before.iter().enumerate() {
        let mut member = Vec::new();
        for (start, end) in cluster.defrag_intervals(index)?.into_iter().skip(*skip) {
            let end = end.context("a defragmentation is still running")?;
            member.push((start, end));
            defrags.push((start, index, end.duration_since(start).unwrap_or_default()));
        }
        windows.push(member);
    }
    defrags.sort();

    let mut per_endpoint = Vec::new();
    let mut failed_puts = 0;
    let mut first_failure = None;
    let mut total = 0;
    let mut max_elsewhere = Duration::ZERO;
    let mut max_own = Duration::ZERO;
    for endpoint in &puts {
        total += endpoint.samples.len() + endpoint.failures.len();
        failed_puts += endpoint.failures.len();
        if first_failure.is_none() {
            first_failure = endpoint.failures.first().map(|(_, error)| error.clone());
        }
        let mut latencies: Vec<Duration> = endpoint.samples.iter().map(|(_, d)| *d).collect();
        latencies.sort_unstable();
        let max = latencies.last().copied().unwrap_or_default();
        let p99 = latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * 0.99).round() as usize)
            .copied()
            .unwrap_or_default();
        per_endpoint.push((cluster.name(endpoint.index).to_string(), max, p99));
        for (start, took) in &endpoint.samples {
            let end = *start + *took;
            let own = windows[endpoint.index]
                .iter()
                .any(|(from, to)| *start <= *to && end >= *from);
            if own {
                max_own = max_own.max(*took);
            } else {
                max_elsewhere = max_elsewhere.max(*took);
            }
        }
    }
    Ok(Availability {
        wall,
        puts: total,
        failed_puts,
        first_failure,
        per_endpoint,
        max_put_elsewhere: max_elsewhere,
        max_put_during_own_defrag: max_own,
        longest_keepalive_gap: longest_gap(&keepalives, &windows, false),
        longest_keepalive_gap_own: longest_gap(&keepalives, &windows, true),
        lease_expired: keepalives.iter().any(|k| k.expired),
        defrags: defrags
            .iter()
            .map(|(_, index, took)| (cluster.name(*index).to_string(), *took))
            .collect(),
    })
}

/// The waits between keep-alive answers through one member.
struct KeepAlive {
    index: usize,
    /// (when the wait began, how long it lasted)
    gaps: Vec<(SystemTime, Duration)>,
    expired: bool,
}

/// The longest keep-alive wait through a member that was (`own`) or was not defragmenting
/// during that wait.
fn longest_gap(
    keepalives: &[KeepAlive],
    windows: &[Vec<(SystemTime, SystemTime)>],
    own: bool,
) -> Duration {
    keepalives
        .iter()
        .flat_map(|k| k.gaps.iter().map(move |gap| (k.index, gap)))
        .filter(|(index, (start, took))| {
            let end = *start + *took;
            let overlaps = windows[*index]
                .iter()
                .any(|(from, to)| *start <= *to && end >= *from);
            overlaps == own
        })
        .map(|(_, (_, took))| *took)
        .max()
        .unwrap_or_default()
}

struct Load {
    stop: CancellationToken,
    writers: PutLoad,
    keepalives: Vec<JoinHandle<Result<KeepAlive>>>,
}

impl Load {
    async fn start(cluster: &EtcdCluster) -> Result<Load> {
        let stop = CancellationToken::new();
        let deadline = Instant::now() + MAX_LOAD_TIME;
        let mut writing = Vec::new();
        let mut keepalives = Vec::new();
        for index in 0..cluster.len() {
            writing.push((index, cluster.client(index).await?));
            let client = cluster.client(index).await?;
            keepalives.push(tokio::spawn(keepalive_loop(
                index,
                client,
                stop.clone(),
                deadline,
            )));
        }
        let writers = PutLoad::start(
            writing,
            Pace {
                every: PUT_EVERY,
                timeout: PUT_TIMEOUT,
                max_puts: MAX_PUTS_PER_ENDPOINT,
                max_time: MAX_LOAD_TIME,
            },
        );
        Ok(Load {
            stop,
            writers,
            keepalives,
        })
    }

    async fn stop(self) -> Result<(Vec<Puts>, Vec<KeepAlive>)> {
        self.stop.cancel();
        let puts = self.writers.stop().await?;
        let mut keepalives = Vec::new();
        for keepalive in self.keepalives {
            keepalives.push(keepalive.await??);
        }
        Ok((puts, keepalives))
    }
}

/// Keeps one lease alive through member `index`, recording how long each answer took
/// (the pause between keep-alives not included).
async fn keepalive_loop(
    index: usize,
    mut client: Client,
    stop: CancellationToken,
    deadline: Instant,
) -> Result<KeepAlive> {
    let lease = client.lease_grant(LEASE_TTL_SECONDS, None).await?.id();
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    let mut gaps = Vec::new();
    let mut expired = false;
    while !stop.is_cancelled() && Instant::now() < deadline {
        let (at, sent) = (SystemTime::now(), Instant::now());
        keeper.keep_alive().await?;
        match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
            Ok(Ok(Some(response))) => {
                gaps.push((at, sent.elapsed()));
                if response.ttl() <= 0 {
                    expired = true;
                    break;
                }
            }
            Ok(Ok(None)) => bail!("the keep-alive stream ended"),
            Ok(Err(err)) => bail!("keep-alive failed: {err}"),
            Err(_) => bail!("no keep-alive answer within 60s"),
        }
        tokio::time::sleep(KEEPALIVE_EVERY).await;
    }
    let _ = client.lease_revoke(lease).await;
    Ok(KeepAlive {
        index,
        gaps,
        expired,
    })
}

/// Live keys `/bench/data/NNNNN` of 512 KiB, `round` making each value distinct.
async fn write_keys(client: &Client, keys: usize, round: u8) -> Result<i64> {
    let mut client = client.clone();
    let value = vec![b'a' + round % 26; VALUE_BYTES];
    let mut revision = 0;
    for key in 0..keys {
        let response = client
            .put(format!("/bench/data/{key:05}"), value.clone(), None)
            .await
            .with_context(|| format!("writing key {key}"))?;
        revision = response.header().map_or(revision, |h| h.revision());
    }
    Ok(revision)
}

/// Overwrites the first `keys` keys, then compacts: their old values become free pages.
async fn refragment(clients: &[Client], keys: usize, round: u8) -> Result<()> {
    let revision = write_keys(&clients[0], keys, round).await?;
    clients[0]
        .clone()
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await?;
    commit_backends(clients).await
}

/// (name, db size, in use) per member, after checking the fragmentation reached the sizes
/// the benchmark promises.
async fn sizes(cluster: &EtcdCluster, settings: &Settings) -> Result<Vec<(String, u64, u64)>> {
    let mut rows = Vec::new();
    for index in 0..cluster.len() {
        let status = cluster.client(index).await?.status().await?;
        let (size, in_use) = (status.db_size() as u64, status.raft_used_db_size() as u64);
        ensure!(
            in_use >= settings.in_use_mb * MB && size - in_use >= settings.free_mb * MB,
            "{}: {} MB with {} MB in use, short of {} MB in use and {} MB free",
            cluster.name(index),
            size / MB,
            in_use / MB,
            settings.in_use_mb,
            settings.free_mb
        );
        rows.push((cluster.name(index).to_string(), size, in_use));
    }
    Ok(rows)
}

/// The Markdown section.
pub fn section(
    out: &mut String,
    settings: &Settings,
    outcome: &Outcome,
    etcd_version: &str,
) -> Result<()> {
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    writeln!(
        out,
        "## Remediation: etcdmedic versus the etcdctl procedure\n"
    )?;
    writeln!(
        out,
        "One 3-member etcd {etcd_version} cluster, data on disk, fragmented to at least {} MB in \
         use and {} MB free per member ({} KiB values written, overwritten, compacted):\n",
        settings.in_use_mb,
        settings.free_mb,
        VALUE_BYTES / 1024
    )?;
    writeln!(out, "| member | db size | in use |\n|---|---|---|")?;
    for (name, size, in_use) in &outcome.db_before {
        writeln!(out, "| {name} | {} MB | {} MB |", size / MB, in_use / MB)?;
    }
    writeln!(
        out,
        "\nFirst the manual procedure (`etcdctl snapshot save` from a follower, then `etcdctl \
         defrag --command-timeout=10m` on each follower and the leader last), then the same \
         fragmentation again and `etcdmedic-remediator run` (preflight, verified snapshot, \
         quorum and catch-up checks around every member, leadership moved before the old \
         leader's turn, HashKV on every member; `settle_time: 0s`, the checks standing in for \
         a fixed pause). During each, one writer per member puts 256-byte values through \
         that member's endpoint every {} ms, and one lease (TTL {LEASE_TTL_SECONDS} s) per member is kept \
         alive through every member, each renewed every {} ms. Defragmentation times come from \
         etcd's logs; a put or keep-alive counts as \"through the member being defragmented\" \
         when it overlapped that member's own defragmentation. The etcdctl procedure ran \
         first, so etcdmedic's run found the page cache warmer.\n",
        PUT_EVERY.as_millis(),
        KEEPALIVE_EVERY.as_millis()
    )?;
    writeln!(
        out,
        "| | etcdctl procedure | etcdmedic run |\n|---|---|---|"
    )?;
    let (m, e) = (&outcome.manual, &outcome.etcdmedic);
    writeln!(out, "| wall time | {} | {} |", secs(m.wall), secs(e.wall))?;
    let defrags = |a: &Availability| {
        a.defrags
            .iter()
            .map(|(name, took)| format!("{name} {}", secs(*took)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        out,
        "| defragmentations, in order | {} | {} |",
        defrags(m),
        defrags(e)
    )?;
    writeln!(
        out,
        "| puts sent / failed | {} / {} | {} / {} |",
        m.puts, m.failed_puts, e.puts, e.failed_puts
    )?;
    for ((name, m_max, m_p99), (_, e_max, e_p99)) in m.per_endpoint.iter().zip(&e.per_endpoint) {
        writeln!(
            out,
            "| puts through {name}: max / p99 | {} / {} | {} / {} |",
            secs(*m_max),
            secs(*m_p99),
            secs(*e_max),
            secs(*e_p99)
        )?;
    }
    writeln!(
        out,
        "| slowest put through a member **not** being defragmented | {} | {} |",
        secs(m.max_put_elsewhere),
        secs(e.max_put_elsewhere)
    )?;
    writeln!(
        out,
        "| slowest put through the member being defragmented | {} | {} |",
        secs(m.max_put_during_own_defrag),
        secs(e.max_put_during_own_defrag)
    )?;
    writeln!(
        out,
        "| longest keep-alive wait through a member **not** being defragmented | {}{} | {}{} |",
        secs(m.longest_keepalive_gap),
        if m.lease_expired {
            ", a lease expired"
        } else {
            ""
        },
        secs(e.longest_keepalive_gap),
        if e.lease_expired {
            ", a lease expired"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "| longest keep-alive wait through the member being defragmented | {} | {} |",
        secs(m.longest_keepalive_gap_own),
        secs(e.longest_keepalive_gap_own)
    )?;
    if let Some(failure) = m.first_failure.as_ref().or(e.first_failure.as_ref()) {
        writeln!(out, "\nFirst failed write: `{failure}`")?;
    }
    let ratio = e.wall.as_secs_f64() / m.wall.as_secs_f64();
    writeln!(
        out,
        "\nTargets: wall time within {TARGET_RATIO}x of the manual procedure — {} ({ratio:.2}x); \
         zero failed writes — {}; longest keep-alive wait (through members not being defragmented) during etcdmedic's run under {} — {} \
         ({}, etcdctl procedure: {}); puts through members not being defragmented never above \
         {} — {} ({}). etcdmedic's run: {}.\n",
        super::verdict(ratio <= TARGET_RATIO),
        super::verdict(e.failed_puts == 0),
        secs(TARGET_KEEPALIVE_GAP),
        super::verdict(e.longest_keepalive_gap < TARGET_KEEPALIVE_GAP),
        secs(e.longest_keepalive_gap),
        secs(m.longest_keepalive_gap),
        secs(TARGET_OTHER_PUT),
        super::verdict(e.max_put_elsewhere <= TARGET_OTHER_PUT),
        secs(e.max_put_elsewhere),
        outcome.etcdmedic_outcome
    )?;
    Ok(())
}
