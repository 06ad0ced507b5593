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
        // An attempt never outlives the deadline: one that hangs (a request that is never
        // answered) is cut off at it, and counts as the last attempt's failure.
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match tokio::time::timeout(left.max(POLL_INTERVAL), attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => anyhow::anyhow!("the attempt was still under way at the deadline"),
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
