//! The remediator's web pages after a real run of a real cluster, over HTTP as a browser
//! sends it: a login form that takes the bearer token and sets an HttpOnly, SameSite=Strict
//! session cookie (a form from another site is refused, a wrong token too); the overview with
//! the live members; the runs with filters; the run's page with its steps, sizes, snapshot
//! sha256 and the alert's link back to Prometheus; every link on the pages answers; logging
//! out ends the session.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::{EtcdCluster, EtcdVersion, RemediatorService};
use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::readme::{documentation, structure};
use crate::service::{fragmented_cluster, now_rfc3339, payload, ServiceFiles, RUN_TIMEOUT, TOKEN};
use crate::support::series_labels;

/// A client that shows redirects instead of following them, as a test must see them.
fn browser() -> Result<reqwest::Client> {
    Ok(etcdmedic_tests::http_client_builder()
        .redirect(Policy::none())
        .build()?)
}

/// Every `href="/..."` on a page.
fn local_links(page: &str) -> BTreeSet<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|link| link.starts_with('/'))
        .map(|link| link.replace("&amp;", "&"))
        .collect()
}

/// A real cluster remediated by the service from an alert: everything the pages show.
pub(crate) struct ServedRun {
    pub(crate) cluster: EtcdCluster,
    pub(crate) service: RemediatorService,
    pub(crate) id: i64,
    pub(crate) run: Value,
    /// What the webhook answered the alert.
    pub(crate) answer: Value,
    _files: ServiceFiles,
}

pub(crate) async fn served_run() -> Result<ServedRun> {
    let cluster = fragmented_cluster(EtcdVersion::V3_5).await?;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&cluster.config_entry("prod-a"), "")?;
    let service = RemediatorService::start(&config, Some(TOKEN)).await?;
    let (status, accepted) = service
        .post_webhook(&payload(
            "EtcdmedicDatabaseHighFragmentation",
            "prod-a",
            "firing",
            &now_rfc3339(),
        ))
        .await?;
    ensure!(status == 202, "{accepted}");
    let id = accepted["alerts"][0]["run_id"]
        .as_i64()
        .with_context(|| format!("no run queued: {accepted}"))?;
    let run = service.wait_for_run(id, RUN_TIMEOUT).await?;
    ensure!(run["outcome"] == "succeeded", "{run}");
    Ok(ServedRun {
        cluster,
        service,
        id,
        run,
        answer: accepted,
        _files: files,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_a_real_run_behind_a_login() -> Result<()> {
    let ServedRun {
        cluster,
        service,
        id,
        run,
        answer,
        ..
    } = served_run().await?;
    readme_shows_the_api(&service, &answer).await?;
    let sha256 = run["report"]["snapshot"]["sha256"]
        .as_str()
        .context("no snapshot")?;

    let http = browser()?;
    let base = &service.base_url;
    let get = |path: &str, cookie: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request.send()
    };

    // Without credentials: to the login form, which asks for the token.
    let response = get("/ui/runs?cluster=prod-a", None).await?;
    ensure!(response.status() == 303, "{}", response.status());
    let location = response.headers()[header::LOCATION].to_str()?.to_string();
    ensure!(
        location == "/ui/login?next=%2Fui%2Fruns%3Fcluster%3Dprod-a",
        "{location}"
    );
    let form = get(&location, None).await?.text().await?;
    ensure!(
        form.contains("name=\"token\"") && form.contains("value=\"/ui/runs?cluster=prod-a\""),
        "{form}"
    );

    let login = |token: &str, origin: &str| {
        http.post(format!("{base}/ui/login"))
            .header(header::ORIGIN, origin)
            .form(&[("token", token), ("next", "/ui/runs?cluster=prod-a")])
            .send()
    };
    let refused = login("not-the-token", base).await?;
    ensure!(refused.status() == 401, "{}", refused.status());
    ensure!(
        refused.headers().get(header::SET_COOKIE).is_none(),
        "a cookie for a wrong token"
    );
    let foreign = login(TOKEN, "https://evil.example").await?;
    ensure!(foreign.status() == 403, "{}", foreign.status());
    let accepted = login(TOKEN, base).await?;
    ensure!(accepted.status() == 303, "{}", accepted.status());
    ensure!(accepted.headers()[header::LOCATION] == "/ui/runs?cluster=prod-a");
    let set_cookie = accepted.headers()[header::SET_COOKIE].to_str()?.to_string();
    ensure!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().context("cookie")?.to_string();

    // The overview: the cluster, its members as they answer now, the last run.
    let overview = get("/", Some(&cookie)).await?;
    ensure!(overview.status() == 200);
    let csp = overview.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()?
        .to_string();
    ensure!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let overview = overview.text().await?;
    for expected in [
        "prod-a",
        "ENDPOINT",
        "IN USE",
        &format!("/ui/runs/{id}"),
        "succeeded",
    ] {
        ensure!(
            overview.contains(expected),
            "{expected:?} not on the overview:\n{overview}"
        );
    }
    for endpoint in cluster.endpoints() {
        ensure!(
            overview.contains(&endpoint),
            "{endpoint} not on the overview"
        );
    }

    // The runs, filtered.
    let runs = get("/ui/runs?cluster=prod-a", Some(&cookie))
        .await?
        .text()
        .await?;
    ensure!(runs.contains(&format!("href=\"/ui/runs/{id}\"")), "{runs}");
    let none = get("/ui/runs?outcome=failed", Some(&cookie))
        .await?
        .text()
        .await?;
    ensure!(none.contains("No run matches."), "{none}");
    ensure!(get("/ui/runs?cluster=nope", Some(&cookie)).await?.status() == 404);
    ensure!(get("/ui/runs?outcome=nope", Some(&cookie)).await?.status() == 400);

    // The run: steps, sizes before and after, the snapshot, the alert and its link.
    let page = get(&format!("/ui/runs/{id}"), Some(&cookie))
        .await?
        .text()
        .await?;
    for expected in [
        "snapshot",
        "defragment",
        "Keyspace check",
        "<svg class=\"sizes\"",
        sha256,
        "EtcdmedicDatabaseHighFragmentation",
        "href=\"http://127.0.0.1:9090/graph\"",
    ] {
        ensure!(
            page.contains(expected),
            "{expected:?} not on the run's page:\n{page}"
        );
    }
    for member in run["report"]["members"].as_array().context("members")? {
        let name = member["member"]["name"].as_str().context("name")?;
        ensure!(page.contains(name), "{name} not on the run's page");
    }
    ensure!(get("/ui/runs/999", Some(&cookie)).await?.status() == 404);
    ensure!(get("/ui/runs/x", Some(&cookie)).await?.status() == 400);

    // Every link on the pages answers.
    let links: BTreeSet<String> = [&overview, &runs, &page]
        .iter()
        .flat_map(|p| local_links(p))
        .collect();
    ensure!(links.len() >= 3, "{links:?}");
    for link in &links {
        let status = get(link, Some(&cookie)).await?.status();
        ensure!(status == 200, "{link}: {status}");
    }

    // The API's credentials open the pages too (curl, scripts).
    let with_token = http
        .get(format!("{base}/ui/runs"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    ensure!(with_token.status() == 200, "{}", with_token.status());

    // Logging out ends the session.
    let out = http
        .post(format!("{base}/ui/logout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, base.as_str())
        .send()
        .await?;
    ensure!(out.status() == 303, "{}", out.status());
    ensure!(out.headers()[header::SET_COOKIE]
        .to_str()?
        .contains("Max-Age=0"));
    ensure!(
        get("/", Some(&cookie)).await?.status() == 303,
        "the session outlived its logout"
    );
    Ok(())
}

/// The README's webhook answer, runs list and metrics lines ("What happens to an alert") are
/// what the service answers now: the same JSON structure, the same series and labels.
async fn readme_shows_the_api(service: &RemediatorService, answer: &Value) -> Result<()> {
    let readme = documentation()?;
    let shown = |prefix: &str| -> Result<Value> {
        let line = readme
            .lines()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no README line starting {prefix}"))?;
        Ok(serde_json::from_str(line)?)
    };
    ensure!(
        structure(&shown("{\"alerts\":[{")?) == structure(answer),
        "the README's webhook answer is not the service's now: {answer}"
    );
    let (_, runs) = service.get("/api/v1/runs").await?;
    ensure!(
        structure(&shown("{\"runs\":[{")?) == structure(&runs),
        "the README's runs list is not the service's now: {runs}"
    );
    let metrics = service.metrics().await?;
    let live: Vec<_> = metrics.lines().filter_map(series_labels).collect();
    for line in readme.lines().filter(|l| {
        l.starts_with("etcdmedic_remediation_runs_total{")
            || l.starts_with("etcdmedic_defrag_reclaimed_bytes_total{")
    }) {
        let series = series_labels(line).context("not a series")?;
        ensure!(
            live.contains(&series),
            "the README shows {line}; not exposed now"
        );
    }
    Ok(())
}
