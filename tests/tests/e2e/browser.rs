//! The remediator's web pages in a real browser (Debian's Chromium through chromedriver),
//! after a real run of a real cluster: the login form, then each page loads without a console
//! error and shows what it is for, and its links lead where they say. A screenshot of each
//! page is kept in target/screenshots/; with UPDATE_SCREENSHOTS=1, in docs/screenshots/ for
//! the README.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::browser::Browser;
use etcdmedic_tests::generated::repository_root;
use fantoccini::Locator;

use crate::service::TOKEN;
use crate::web_pages::{served_run, ServedRun};

/// Keeps the page's screenshot as `<name>.png`.
fn keep(name: &str, png: &[u8]) -> Result<()> {
    let mut dirs = vec![repository_root().join("target/screenshots")];
    if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        dirs.push(repository_root().join("docs/screenshots"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        let path: PathBuf = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| path.display().to_string())?;
    }
    Ok(())
}

/// Fills the login form with the token and sends it.
async fn log_in(client: &fantoccini::Client) -> Result<()> {
    client
        .find(Locator::Css("input[name=token]"))
        .await?
        .send_keys(TOKEN)
        .await?;
    client
        .find(Locator::Css("form.login button[type=submit]"))
        .await?
        .click()
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_chromium() -> Result<()> {
    // The cluster is kept: the overview shows its members as they answer now.
    let ServedRun {
        cluster: _cluster,
        service,
        id,
        run,
        ..
    } = served_run().await?;
    let base = service.base_url.clone();
    let browser = Browser::start().await?;
    let client = browser.client()?;

    // A browser without a session lands on the login form, and comes back after it.
    client.goto(&format!("{base}/ui/runs/{id}")).await?;
    browser
        .wait_for_path(&format!("/ui/login?next=%2Fui%2Fruns%2F{id}"))
        .await?;
    keep("login", &client.screenshot().await?)?;
    log_in(client).await?;
    browser.wait_for_path(&format!("/ui/runs/{id}")).await?;

    // The run: its steps, the chart of sizes, each member, the snapshot's sha256.
    let heading = client.find(Locator::Css("h1")).await?.text().await?;
    ensure!(heading == format!("Run {id} · prod-a"), "{heading}");
    let steps = client.find_all(Locator::Css("ol.steps li")).await?;
    let recorded = run["report"]["steps"].as_array().map_or(0, Vec::len);
    ensure!(
        steps.len() == recorded && recorded > 3,
        "{} steps shown, {recorded} recorded",
        steps.len()
    );
    let bars = client.find_all(Locator::Css("svg.sizes rect.file")).await?;
    ensure!(
        bars.len() >= 6,
        "{} bars: before and after of 3 members",
        bars.len()
    );
    let text = client.find(Locator::Css("main")).await?.text().await?;
    let sha256 = run["report"]["snapshot"]["sha256"]
        .as_str()
        .context("sha256")?;
    ensure!(
        text.contains(sha256),
        "the snapshot's sha256 is not shown:\n{text}"
    );
    let errors = browser.console_errors().await?;
    ensure!(
        errors.is_empty(),
        "console errors on the run's page: {errors:?}"
    );
    keep("run", &client.screenshot().await?)?;

    // The overview: the cluster's members, and its last run, whose link leads to it.
    client.goto(&format!("{base}/")).await?;
    let rows = client
        .find_all(Locator::Css("table.members tbody tr"))
        .await?;
    ensure!(rows.len() == 3, "{} member rows", rows.len());
    let table = client
        .find(Locator::Css("table.members"))
        .await?
        .text()
        .await?;
    ensure!(
        !table.contains("unreachable") && table.contains("3.5."),
        "the members do not answer:\n{table}"
    );
    let errors = browser.console_errors().await?;
    ensure!(
        errors.is_empty(),
        "console errors on the overview: {errors:?}"
    );
    keep("overview", &client.screenshot().await?)?;
    client
        .find(Locator::Css(&format!(
            "section.card a[href='/ui/runs/{id}']"
        )))
        .await?
        .click()
        .await?;
    browser.wait_for_path(&format!("/ui/runs/{id}")).await?;

    // The runs, filtered by the form.
    client.goto(&format!("{base}/ui/runs")).await?;
    client
        .find(Locator::Css("select[name=outcome] option[value=succeeded]"))
        .await?
        .click()
        .await?;
    client
        .find(Locator::Css("form.filters button[type=submit]"))
        .await?
        .click()
        .await?;
    browser
        .wait_for_path("/ui/runs?cluster=&outcome=succeeded")
        .await?;
    let links = client
        .find_all(Locator::Css(&format!("td a[href='/ui/runs/{id}']")))
        .await?;
    ensure!(links.len() == 1, "run {id} is not listed as succeeded");
    let errors = browser.console_errors().await?;
    ensure!(errors.is_empty(), "console errors on the runs: {errors:?}");
    keep("runs", &client.screenshot().await?)?;

    // Logging out ends the session: the next page asks for the token again.
    client
        .find(Locator::Css("form.logout button"))
        .await?
        .click()
        .await?;
    browser.wait_for_path("/ui/login").await?;
    client.goto(&format!("{base}/")).await?;
    browser.wait_for_path("/ui/login?next=%2F").await?;

    // A login link whose `next` hides a second slash behind a tab (browsers drop tabs from
    // URLs, so `/\t/evil.example` would be `//evil.example`, another site) leads home.
    client
        .goto(&format!("{base}/ui/login?next=/%09/evil.example"))
        .await?;
    log_in(client).await?;
    browser.wait_for_path("/").await?;
    let landed = client.current_url().await?;
    ensure!(
        landed
            .as_str()
            .starts_with(base.to_string().trim_end_matches('/')),
        "the login led to {landed}, not {base}"
    );
    browser.close().await
}
