//! `remediator.auth` with one credential per role, against the real service: Alertmanager's
//! token delivers alerts and nothing else, a viewer reads, an operator acts and reads, the
//! web page logs in the viewer and the operator only, and a listener beyond loopback does
//! not start without credentials unless the file says `auth: none`.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::RemediatorService;
use reqwest::header;

use crate::service::{now_rfc3339, payload, unreachable_cluster, ServiceFiles};

const WEBHOOK: &str = "role-webhook-token";
const VIEWER: &str = "role-viewer-token";
const OPERATOR: (&str, &str) = ("sre", "role-operator-password");

/// Who sends a request: nobody, or one role's credential.
#[derive(Debug, Clone, Copy)]
enum As {
    Nobody,
    Webhook,
    Viewer,
    Operator,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_its_own_work_and_no_other() -> Result<()> {
    let files = ServiceFiles::new()?;
    std::fs::write(files.path("webhook-token"), format!("{WEBHOOK}\n"))?;
    std::fs::write(files.path("viewer-token"), format!("{VIEWER}\n"))?;
    std::fs::write(files.path("operator-password"), format!("{}\n", OPERATOR.1))?;
    let config = files.write_config(&unreachable_cluster(), "")?;
    let roles = format!(
        "auth:\n    webhook: {{bearer_token_file: {}}}\n    operator: {{basic_auth: {{username: {}, password_file: {}}}}}\n    viewer: {{bearer_token_file: {}}}",
        files.path("webhook-token").display(),
        OPERATOR.0,
        files.path("operator-password").display(),
        files.path("viewer-token").display(),
    );
    let text = std::fs::read_to_string(&config)?.replace(
        &format!(
            "auth: {{bearer_token_file: {}}}",
            files.path("token").display()
        ),
        &roles,
    );
    std::fs::write(&config, text)?;
    let service = RemediatorService::start(&config, None).await?;
    let base = service.base_url.clone();
    let http = etcdmedic_tests::http_client();
    let send = |who: As, method: reqwest::Method, path: &str| {
        let mut request = http.request(method, format!("{base}{path}"));
        request = match who {
            As::Nobody => request,
            As::Webhook => request.bearer_auth(WEBHOOK),
            As::Viewer => request.bearer_auth(VIEWER),
            As::Operator => request.basic_auth(OPERATOR.0, Some(OPERATOR.1)),
        };
        if path.starts_with("/webhook") {
            request = request.json(&payload(
                "EtcdmedicDatabaseHighFragmentation",
                "prod-a",
                "firing",
                &now_rfc3339(),
            ));
        }
        async move {
            let response = request.send().await?;
            anyhow::Ok((response.status().as_u16(), response.text().await?))
        }
    };
    use reqwest::Method as M;
    // Who may do what: 401 without a good credential, 403 with another role's.
    let expected = [
        (M::POST, "/webhook/alertmanager", [401, 202, 403, 403]),
        (M::GET, "/api/v1/status", [401, 403, 200, 200]),
        (M::GET, "/api/v1/runs", [401, 403, 200, 200]),
        (M::GET, "/api/v1/backups", [401, 403, 200, 200]),
        (M::POST, "/api/v1/pause", [401, 403, 403, 200]),
        (M::POST, "/api/v1/resume", [401, 403, 403, 200]),
        (
            M::POST,
            "/api/v1/clusters/prod-a/remediate?dry_run=true",
            [401, 403, 403, 202],
        ),
    ];
    for (method, path, statuses) in expected {
        for (who, status) in [As::Nobody, As::Webhook, As::Viewer, As::Operator]
            .into_iter()
            .zip(statuses)
        {
            let (got, body) = send(who, method.clone(), path).await?;
            ensure!(
                got == status,
                "{method} {path} as {who:?}: {got}, not {status}: {body}"
            );
            if got == 403 {
                ensure!(
                    body.contains("needs the") && body.contains("remediator.auth."),
                    "{method} {path} as {who:?}: {body}"
                );
            }
        }
    }
    // The viewer's pause was refused and changed nothing; the operator's took.
    let (_, paused) = send(As::Operator, M::POST, "/api/v1/pause").await?;
    ensure!(paused.contains("\"paused\":true"), "{paused}");
    send(As::Viewer, M::POST, "/api/v1/resume").await?;
    let (_, status) = send(As::Viewer, M::GET, "/api/v1/status").await?;
    ensure!(status.contains("\"paused\":true"), "{status}");

    // A call that changes something, with the operator's credential cached in a browser:
    // refused when another site's page sent it (its Origin, or a form's content type).
    let operator_post = |origin: Option<&str>, content_type: Option<&str>| {
        let mut request = http
            .post(format!("{base}/api/v1/resume"))
            .basic_auth(OPERATOR.0, Some(OPERATOR.1));
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        if let Some(content_type) = content_type {
            request = request
                .header(header::CONTENT_TYPE, content_type)
                .body("paused=false");
        }
        async move { anyhow::Ok(request.send().await?.status().as_u16()) }
    };
    for (origin, content_type) in [
        (Some("https://evil.example"), None),
        (None, Some("application/x-www-form-urlencoded")),
        (None, Some("text/plain")),
        (Some(base.as_str()), Some("multipart/form-data; boundary=x")),
    ] {
        let status = operator_post(origin, content_type).await?;
        ensure!(status == 403, "{origin:?} {content_type:?}: {status}");
    }
    let (_, status) = send(As::Viewer, M::GET, "/api/v1/status").await?;
    ensure!(
        status.contains("\"paused\":true"),
        "a forged resume took: {status}"
    );
    ensure!(operator_post(Some(base.as_str()), None).await? == 200);
    ensure!(operator_post(None, Some("application/json")).await? == 200);

    // The web pages: a viewer's or an operator's credential logs in; Alertmanager's does not.
    let pages = etcdmedic_tests::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = pages
        .get(format!("{base}/ui/login"))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        form.contains("name=\"token\"") && form.contains("name=\"username\""),
        "the login form asks for a token or a username and password: {form}"
    );
    let login = |fields: [(&'static str, &'static str); 3]| {
        pages
            .post(format!("{base}/ui/login"))
            .header(header::ORIGIN, base.as_str())
            .form(&fields)
            .send()
    };
    let refused = login([("token", WEBHOOK), ("username", ""), ("password", "")]).await?;
    ensure!(
        refused.status() == 401,
        "webhook login: {}",
        refused.status()
    );
    ensure!(refused.headers().get(header::SET_COOKIE).is_none());
    for fields in [
        [("token", VIEWER), ("username", ""), ("password", "")],
        [
            ("token", ""),
            ("username", OPERATOR.0),
            ("password", OPERATOR.1),
        ],
    ] {
        let accepted = login(fields).await?;
        ensure!(
            accepted.status() == 303,
            "{fields:?}: {}",
            accepted.status()
        );
        let cookie = accepted.headers()[header::SET_COOKIE].to_str()?;
        let cookie = cookie.split(';').next().context("cookie")?.to_string();
        let overview = pages
            .get(format!("{base}/"))
            .header(header::COOKIE, &cookie)
            .send()
            .await?;
        ensure!(
            overview.status() == 200,
            "{fields:?}: {}",
            overview.status()
        );
    }
    // A page asked with Alertmanager's token goes to the login form.
    let page = pages
        .get(format!("{base}/"))
        .bearer_auth(WEBHOOK)
        .send()
        .await?;
    ensure!(page.status() == 303, "{}", page.status());

    // Guessing: five wrong tokens in a row, then this address waits, even with the right one.
    for attempt in 0..5 {
        let refused = login([("token", "a-guess"), ("username", ""), ("password", "")]).await?;
        ensure!(
            refused.status() == 401,
            "guess {attempt}: {}",
            refused.status()
        );
    }
    let waiting = login([("token", VIEWER), ("username", ""), ("password", "")]).await?;
    ensure!(
        waiting.status() == 429,
        "after five guesses: {}",
        waiting.status()
    );
    let retry_after: u64 = waiting.headers()[header::RETRY_AFTER].to_str()?.parse()?;
    ensure!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    ensure!(waiting.headers().get(header::SET_COOKIE).is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_beyond_loopback_needs_credentials_unless_auth_is_none() -> Result<()> {
    let files = ServiceFiles::new()?;
    let config = files.write_config(&unreachable_cluster(), "")?;
    let with_auth = std::fs::read_to_string(&config)?;
    let check = |text: &str, listen: Option<&str>| -> Result<std::process::Output> {
        std::fs::write(&config, text)?;
        let binary = etcdmedic_tests::project_binary("etcdmedic-remediator")?;
        let mut command = std::process::Command::new(binary);
        command
            .args(["serve", "--config.check", "--config"])
            .arg(&config);
        if let Some(listen) = listen {
            command.args(["--listen", listen]);
        }
        Ok(command.output()?)
    };
    let auth_line = format!(
        "  auth: {{bearer_token_file: {}}}\n",
        files.path("token").display()
    );
    let without = with_auth.replace(&auth_line, "");
    ensure!(
        without != with_auth,
        "the test config has no auth line to remove"
    );
    // No `auth:` on the default 0.0.0.0:9380, or moved there with --listen: refused.
    for listen in [None, Some("0.0.0.0:9380")] {
        let text = match listen {
            None => without.clone(),
            Some(_) => without.replace("remediator:\n", "remediator:\n  listen: 127.0.0.1:9380\n"),
        };
        let output = check(&text, listen)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(output.status.code() == Some(2), "{listen:?}: {output:?}");
        ensure!(
            stderr.contains("remediator.auth: is required when listening on 0.0.0.0:9380")
                && stderr.contains("auth: none"),
            "{stderr}"
        );
    }
    // Said on purpose, it starts; so does a loopback listener without credentials.
    let open = without.replace("remediator:\n", "remediator:\n  auth: none\n");
    let output = check(&open, None)?;
    ensure!(output.status.success(), "auth: none: {output:?}");
    let output = check(&without, Some("127.0.0.1:9380"))?;
    ensure!(output.status.success(), "loopback: {output:?}");
    Ok(())
}

/// A secret every user on the host can read is said at start (and by `--config.check`); one
/// kept to its owner (or a group, as Kubernetes mounts Secrets) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_every_user_can_read_is_warned_about() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let files = ServiceFiles::new()?;
    let config = files.write_config(&unreachable_cluster(), "")?;
    let check = || -> Result<String> {
        let output =
            std::process::Command::new(etcdmedic_tests::project_binary("etcdmedic-remediator")?)
                .args(["serve", "--config.check", "--config"])
                .arg(&config)
                .output()?;
        ensure!(output.status.success(), "{output:?}");
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let warning = "a secret file every user on this host can read";
    for (mode, warned) in [(0o644, true), (0o604, true), (0o640, false), (0o600, false)] {
        std::fs::set_permissions(files.path("token"), std::fs::Permissions::from_mode(mode))?;
        let stderr = check()?;
        ensure!(
            stderr.contains(warning) == warned,
            "token file {mode:o}: {stderr}"
        );
        if warned {
            ensure!(
                stderr.contains("remediator.auth.bearer_token_file")
                    && stderr.contains(&format!("{mode:04o}")),
                "{stderr}"
            );
        }
    }
    Ok(())
}
