//! Two `serve` replicas on one real PostgreSQL: one active, one standby (503 on `/readyz`,
//! the webhook and the API, naming the active one). Twenty deliveries of one alert spread
//! over both give one run; the active replica SIGKILLed mid-defragmentation is taken over by
//! the standby, which records the run interrupted and waits for the member before anything
//! else; PostgreSQL restarted mid-run never gives two defragmentations at once. Overlap is
//! judged from etcd's own logs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use etcdmedic_tests::postgres::Postgres;
use etcdmedic_tests::{eventually, EtcdCluster, EtcdVersion, RemediatorService};

use crate::service::{
    fragmented_cluster, holds_for, now_rfc3339, payload, queue_run, ServiceFiles, RUN_TIMEOUT,
    TOKEN,
};
use crate::state_postgres::postgres_state;
use crate::support::{assert_cluster_serves, SETTLE};

/// A standby takes over within this long of the active replica's death (it asks every second).
const TAKEOVER: Duration = Duration::from_secs(20);

/// Every member's defragmentations, from etcd's logs, checked pairwise: none overlaps
/// another, and every one ended.
fn no_two_defragmentations_at_once(cluster: &EtcdCluster) -> Result<usize> {
    let mut all = Vec::new();
    for index in 0..cluster.len() {
        for (start, end) in cluster.defrag_intervals(index)? {
            let end = end.with_context(|| format!("{} never finished", cluster.name(index)))?;
            all.push((start, end, index));
        }
    }
    all.sort();
    for pair in all.windows(2) {
        ensure!(
            pair[1].0 >= pair[0].1,
            "{} started defragmenting before {} finished: {pair:?}",
            cluster.name(pair[1].2),
            cluster.name(pair[0].2)
        );
    }
    Ok(all.len())
}

/// The first member whose defragmentation started, once one has. A small member's takes a
/// fraction of a second, so it may be over (and the run at the next member) by the time the
/// caller acts: the tests' claims do not depend on catching it under way.
async fn first_defragmenting(cluster: &EtcdCluster) -> Result<usize> {
    eventually("a member starts defragmenting", RUN_TIMEOUT, || async {
        (0..cluster.len())
            .find(|&i| cluster.defrag_intervals(i).is_ok_and(|d| !d.is_empty()))
            .context("no defragmentation yet")
    })
    .await
}

/// Pauses a member while its defragmentation is under way and returns it: its start is
/// logged and its end is not, still so once it is paused and its log read to the end (a
/// "finished" line may have been written just before the pause). A member caught too late is
/// resumed and the next one tried, so that the run is certainly held at the paused member.
async fn pause_mid_defragmentation(cluster: &EtcdCluster) -> Result<usize> {
    let under_way = |index: usize| {
        cluster
            .defrag_intervals(index)
            .is_ok_and(|d| d.last().is_some_and(|(_, end)| end.is_none()))
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    while Instant::now() < deadline {
        let Some(member) = (0..cluster.len()).find(|&index| under_way(index)) else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        cluster.pause(member)?;
        let held = holds_for(
            "the paused member is still defragmenting",
            Duration::from_millis(500),
            || async {
                ensure!(under_way(member));
                Ok(())
            },
        )
        .await;
        if held.is_ok() {
            return Ok(member);
        }
        cluster.resume(member)?;
    }
    bail!("no member was caught defragmenting within {RUN_TIMEOUT:?}")
}

/// Waits until `service` is the active replica (its `/readyz` says `ready`, not `standby`).
async fn wait_active(service: &RemediatorService, within: Duration) -> Result<()> {
    eventually("the replica is active", within, || async {
        let (status, body) = service.readiness().await?;
        ensure!(status == 200 && body == "ready\n", "{status} {body}");
        Ok(())
    })
    .await
    .with_context(|| service.output())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_for_deliveries_to_both_and_a_killed_active_replica_is_taken_over() -> Result<()> {
    let postgres = Postgres::start().await?;
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let state = postgres_state(&files, &postgres)?;
    let config = files.write_config_with_state(&cluster.config_entry("prod-a"), &state, "")?;
    let mut active = RemediatorService::start(&config, Some(TOKEN)).await?;
    let standby = RemediatorService::start_standby(&config, Some(TOKEN)).await?;

    // The standby is ready once it knows where to forward: to the active one.
    let readiness = eventually(
        "the standby forwards to the active replica",
        SETTLE,
        || async {
            let (status, body) = standby.readiness().await?;
            ensure!(
                status == 200
                    && body["status"] == "standby"
                    && body["forwarding_to"] == active.base_url.as_str()
                    && body["active"].as_str().is_some_and(
                        |a| a.contains(&format!("(pid {})", active.pid().unwrap_or(0)))
                    ),
                "{status} {body}"
            );
            Ok(body)
        },
    )
    .await?;
    // A standby authenticates and limits a request from its head, before it reads or
    // forwards anything: no credentials, or too large a login form, and it answers at once.
    for (path, auth, length, status) in [
        ("/webhook/alertmanager", String::new(), 10 << 20, " 401 "),
        (
            "/api/v1/pause",
            "Authorization: Bearer wrong\r\n".to_string(),
            10 << 20,
            " 401 ",
        ),
        ("/ui/login", String::new(), 100_000, " 413 "),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        );
        let line = tokio::time::timeout(
            Duration::from_secs(5),
            crate::service::raw_request(standby.port, &head),
        )
        .await
        .with_context(|| format!("the standby did not answer {path} before its body"))??;
        ensure!(line.contains(status), "the standby, {path}: {line}");
    }
    // Through the standby the pages are the active one's, with the headers that protect
    // them, and a login posted from the page the standby served is this site's own.
    let pages = etcdmedic_tests::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = pages
        .get(format!("{}/ui/login", standby.base_url))
        .send()
        .await?;
    for name in [
        "content-security-policy",
        "x-frame-options",
        "referrer-policy",
    ] {
        ensure!(
            form.headers().contains_key(name),
            "the standby's login page lost {name}: {:?}",
            form.headers()
        );
    }
    let login = pages
        .post(format!("{}/ui/login", standby.base_url))
        .header(reqwest::header::ORIGIN, standby.base_url.as_str())
        .form(&[("token", TOKEN), ("next", "/")])
        .send()
        .await?;
    ensure!(
        login.status() == 303,
        "a login through the standby: {}",
        login.status()
    );
    let cookie = login.headers()[reqwest::header::SET_COOKIE].to_str()?;
    let cookie = cookie.split(';').next().context("cookie")?.to_string();
    let logout = pages
        .post(format!("{}/ui/logout", standby.base_url))
        .header(reqwest::header::ORIGIN, standby.base_url.as_str())
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await?;
    ensure!(
        logout.status() == 303,
        "a logout through the standby: {}",
        logout.status()
    );
    // Someone who can write to the database but holds none of the service's credentials
    // points the standby at a server of their own: the standby forwards nothing there (the
    // address is not sealed with the service's key) and answers 503 instead.
    let trap = std::net::TcpListener::bind("127.0.0.1:0")?;
    trap.set_nonblocking(true)?;
    let sealed = postgres.psql("SELECT url FROM replicas")?;
    ensure!(
        sealed.starts_with(&format!("{}#seal=", active.base_url)),
        "the active replica announced {sealed:?}"
    );
    let trap_url = format!("http://{}", trap.local_addr()?);
    postgres.psql(&format!("UPDATE replicas SET url = '{trap_url}'"))?;
    eventually("the standby stops forwarding", SETTLE, || async {
        let (status, body) = standby.readiness().await?;
        ensure!(
            status == 503 && body["forwarding_to"].is_null(),
            "{status} {body}"
        );
        Ok(())
    })
    .await?;
    let (status, body) = standby.post("/api/v1/pause").await?;
    ensure!(status == 503, "a request to the standby: {status} {body}");
    ensure!(
        trap.accept().is_err(),
        "the standby connected to the address written in the database"
    );
    postgres.psql(&format!("UPDATE replicas SET url = '{sealed}'"))?;
    eventually("the standby forwards again", SETTLE, || async {
        let (status, body) = standby.readiness().await?;
        ensure!(
            status == 200 && body["forwarding_to"] == active.base_url.as_str(),
            "{status} {body}"
        );
        Ok(())
    })
    .await?;
    // What the README shows of a standby's /readyz: the same structure.
    let printed = serde_json::to_string_pretty(&readiness)?;
    println!(
        "{}/readyz:\n{}",
        standby.base_url,
        serde_json::to_string(&readiness)?
    );
    let readme = crate::readme::documentation()?;
    let block = crate::readme::block(&readme, "$ curl -s http://127.0.0.1:")?;
    let step = crate::readme::session(block)
        .into_iter()
        .next()
        .context("no command in the README's /readyz block")?;
    crate::readme::ensure_same_output("a standby's /readyz", &step.shown, &printed)?;

    // Twenty copies of one alert, half to each replica, at once: the standby forwards its
    // half, and the active one makes one run of all twenty.
    let body = payload(
        "EtcdmedicDatabaseHighFragmentation",
        "prod-a",
        "firing",
        &now_rfc3339(),
    );
    let answers = futures::future::join_all((0..20).map(|i| {
        let replica = if i % 2 == 0 { &active } else { &standby };
        replica.post_webhook(&body)
    }))
    .await;
    let mut run_ids = BTreeSet::new();
    for answer in answers {
        let (status, body) = answer?;
        ensure!(status == 202, "status {status}: {body}");
        run_ids.extend(body["alerts"][0]["run_id"].as_i64());
    }
    ensure!(run_ids.len() == 1, "run ids: {run_ids:?}");
    let id = *run_ids.first().context("no run")?;
    ensure!(postgres.psql("SELECT count(*) FROM runs")? == "1");

    // The active replica dies with a member frozen mid-defragmentation.
    let frozen = first_defragmenting(&cluster).await?;
    cluster.pause(frozen)?;
    active.kill().await?;
    let killed = Instant::now();
    wait_active(&standby, TAKEOVER).await?;
    let takeover = killed.elapsed();
    println!("takeover after SIGKILL: {takeover:?}");

    let (_, run) = standby.get(&format!("/api/v1/runs/{id}")).await?;
    ensure!(run["outcome"] == "interrupted", "{run}");
    eventually(
        "the new active replica waits for the frozen member",
        SETTLE,
        || async {
            let (_, status) = standby.get("/api/v1/status").await?;
            ensure!(status["clusters"][0]["recovering"] == true, "{status}");
            Ok(())
        },
    )
    .await?;
    cluster.resume(frozen)?;
    standby.recovery_recorded(id, SETTLE).await?;

    // The killed replica comes back as the standby of the new active one, and forwards
    // the API there.
    active.restart_standby().await?;
    eventually(
        "the restarted replica forwards to the new active one",
        SETTLE,
        || async {
            let (status, body) = active.readiness().await?;
            ensure!(
                status == 200 && body["forwarding_to"] == standby.base_url.as_str(),
                "{status} {body}"
            );
            Ok(())
        },
    )
    .await?;
    let (status, run) = active.get(&format!("/api/v1/runs/{id}")).await?;
    ensure!(
        status == 200 && run["outcome"] == "interrupted",
        "{status} {run}"
    );
    ensure!(no_two_defragmentations_at_once(&cluster)? >= 1);
    assert_cluster_serves(&cluster).await?;
    ensure!(postgres.psql("SELECT count(*) FROM runs")? == "1");
    drop(standby);
    Ok(())
}

/// PostgreSQL, a fragmented cluster, an active replica and a standby, and a run the active
/// one started from an alert.
struct Replicas {
    postgres: Postgres,
    cluster: EtcdCluster,
    active: RemediatorService,
    standby: RemediatorService,
    run: i64,
    /// Kept for the files' lifetime.
    _files: ServiceFiles,
}

async fn two_replicas_and_a_run() -> Result<Replicas> {
    let postgres = Postgres::start().await?;
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let state = postgres_state(&files, &postgres)?;
    let config = files.write_config_with_state(&cluster.config_entry("prod-a"), &state, "")?;
    let active = RemediatorService::start(&config, Some(TOKEN)).await?;
    let standby = RemediatorService::start_standby(&config, Some(TOKEN)).await?;
    let run = queue_run(
        &active,
        "EtcdmedicDatabaseHighFragmentation",
        &now_rfc3339(),
    )
    .await?;
    Ok(Replicas {
        postgres,
        cluster,
        active,
        standby,
        run,
        _files: files,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_never_gives_two_defragmentations_at_once() -> Result<()> {
    let Replicas {
        mut postgres,
        cluster,
        active: mut first,
        standby: second,
        run: id,
        ..
    } = two_replicas_and_a_run().await?;

    // PostgreSQL restarts (every session ends) while a member is held mid-defragmentation:
    // either replica may hold the store afterwards.
    let frozen = first_defragmenting(&cluster).await?;
    cluster.pause(frozen)?;
    postgres.restart().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.resume(frozen)?;

    // Whoever is active now finishes the story: the run succeeded (its replica kept the
    // store) or was recorded interrupted by the one that took over; either way, one run.
    let run = eventually("the run is finished", RUN_TIMEOUT, || async {
        for replica in [&first, &second] {
            if let Ok((200, run)) = replica.get(&format!("/api/v1/runs/{id}")).await {
                if run["state"] == "finished" {
                    return Ok(run);
                }
            }
        }
        bail!("not finished")
    })
    .await
    .with_context(|| format!("first:\n{}\nsecond:\n{}", first.output(), second.output()))?;
    let outcome = run["outcome"].as_str().unwrap_or_default().to_string();
    ensure!(
        outcome == "succeeded" || outcome == "interrupted",
        "{run}\nfirst:\n{}\nsecond:\n{}",
        first.output(),
        second.output()
    );
    println!("after the restart: run {id} {outcome}");
    let took_over = outcome == "interrupted";
    if took_over {
        // The first replica saw another hold the store, stopped and exited.
        let exit = first.wait_exit(Duration::from_secs(60)).await?;
        ensure!(!exit.success(), "{exit:?}");
        ensure!(
            first
                .output()
                .contains("another replica holds the state store"),
            "{}",
            first.output()
        );
    }
    // Settle: nothing more is under way, then judge from etcd's logs.
    eventually("no member is defragmenting", SETTLE, || async {
        for index in 0..cluster.len() {
            ensure!(cluster
                .defrag_intervals(index)?
                .iter()
                .all(|(_, end)| end.is_some()));
        }
        Ok(())
    })
    .await?;
    no_two_defragmentations_at_once(&cluster)?;
    ensure!(postgres.psql("SELECT count(*) FROM runs")? == "1");
    assert_cluster_serves(&cluster).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_replica_cut_off_through_a_database_restart_stops_when_another_took_over(
) -> Result<()> {
    use nix::sys::signal::Signal;

    let Replicas {
        mut postgres,
        cluster,
        active: mut cut_off,
        standby: other,
        run: id,
        ..
    } = two_replicas_and_a_run().await?;

    // A member held mid-defragmentation; the replica carrying the run frozen while
    // PostgreSQL restarts, so that the other takes the store over first.
    let frozen = pause_mid_defragmentation(&cluster).await?;
    cut_off.signal(Signal::SIGSTOP)?;
    let cut_at = std::time::SystemTime::now();
    postgres.restart().await?;
    wait_active(&other, TAKEOVER).await?;
    let (_, run) = other.get(&format!("/api/v1/runs/{id}")).await?;
    ensure!(run["outcome"] == "interrupted", "{run}");

    // Thawed, the cut-off replica finds the store held by the other: it starts nothing more,
    // lets the member under way finish, and exits.
    cut_off.signal(Signal::SIGCONT)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.resume(frozen)?;
    let exit = cut_off.wait_exit(Duration::from_secs(60)).await?;
    ensure!(!exit.success(), "{exit:?}");
    let output = cut_off.output();
    ensure!(
        output.contains("another replica holds the state store"),
        "{output}"
    );
    other.recovery_recorded(id, SETTLE).await?;
    // Nothing started after the replica was cut off: the other had no run to start, and
    // the cut-off one, once thawed, started nothing.
    no_two_defragmentations_at_once(&cluster)?;
    for index in 0..cluster.len() {
        let late: Vec<_> = cluster
            .defrag_intervals(index)?
            .into_iter()
            .filter(|(start, _)| *start > cut_at)
            .collect();
        ensure!(
            late.is_empty(),
            "{} started defragmenting after the replica was cut off: {late:?}\ncut off:\n{output}",
            cluster.name(index)
        );
    }
    ensure!(postgres.psql("SELECT count(*) FROM runs")? == "1");
    assert_cluster_serves(&cluster).await?;
    Ok(())
}
