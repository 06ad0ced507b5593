//! Debian's Chromium, headless, driven through its WebDriver (chromedriver, both installed by
//! scripts/install-deps.sh) with `fantoccini`, on a free loopback port with a throw-away
//! profile. Chromium's own background traffic is off (this machine's network is closed).
//! Dropped, it leaves no process behind: every process started with its profile is killed.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::poll::eventually;
use crate::ports::free_port;
use crate::process::ChildProcess;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    client: Option<Client>,
    profile: tempfile::TempDir,
    _driver: ChildProcess,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a 1280x900 window.
    pub async fn start() -> Result<Browser> {
        let port = free_port()?;
        let driver = ChildProcess::spawn(
            "chromedriver",
            Path::new(CHROMEDRIVER),
            &[format!("--port={port}")],
        )
        .context("starting chromedriver; run scripts/install-deps.sh (chromium-driver)")?;
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::http_client();
        eventually("chromedriver is ready", Duration::from_secs(30), || {
            let request = http.get(format!("{url}/status")).send();
            async move {
                let status: Value = request.await?.json().await?;
                ensure!(status["value"]["ready"] == true, "{status}");
                Ok(())
            }
        })
        .await?;
        let profile = tempfile::tempdir()?;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("starting a Chromium session through chromedriver")?;
        client.set_window_size(1280, 900).await?;
        Ok(Browser {
            client: Some(client),
            profile,
            _driver: driver,
        })
    }

    pub fn client(&self) -> Result<&Client> {
        self.client.as_ref().context("the browser is closed")
    }

    /// The console's messages at level SEVERE (errors, failed loads, CSP violations) since
    /// the last call.
    pub async fn console_errors(&self) -> Result<Vec<String>> {
        let entries = self.client()?.issue_cmd(BrowserLog).await?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// Waits until the page's path (and query) is `path`.
    pub async fn wait_for_path(&self, path: &str) -> Result<()> {
        let client = self.client()?;
        eventually(
            &format!("the browser shows {path}"),
            Duration::from_secs(15),
            || async {
                let url = client.current_url().await?;
                let shown = match url.query() {
                    Some(query) => format!("{}?{query}", url.path()),
                    None => url.path().to_string(),
                };
                ensure!(shown == path, "at {url}");
                Ok(())
            },
        )
        .await
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(mut self) -> Result<()> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that failed early never closed the session: its Chromium is found by the
        // profile directory on its command line.
        let profile = self.profile.path().display().to_string();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profile) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// chromedriver's log of the browser's console (`POST /session/{id}/se/log`), which it keeps
/// beside the W3C commands.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"browser"}"#.to_string()),
        )
    }
}
