//! Waiting for a condition with a deadline, never for a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `attempt` until it succeeds or `timeout` has passed; the error then names `what`
/// was awaited and why the last attempt failed.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}; last attempt: {error:#}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `GET url` answers 200; the error names `what`.
pub async fn until_http_ok(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    timeout: Duration,
) -> Result<()> {
    eventually(what, timeout, || {
        let request = http.get(url).send();
        async move {
            let response = request.await?;
            anyhow::ensure!(response.status() == 200, "status {}", response.status());
            Ok(())
        }
    })
    .await
}
