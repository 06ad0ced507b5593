//! Python scripts run by the tests with the clouds' own client libraries (boto3, Azure's
//! azure-storage-blob), so a test sees what a store holds through a client that is not ours.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// `$PYTHON`, or `python3`: the interpreter scripts/install-deps.sh installed into.
pub fn python() -> PathBuf {
    PathBuf::from(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
}

/// Runs `program`; its stdout, or an error with its stderr. `what` names it in errors.
pub async fn run(what: &str, program: &str) -> Result<String> {
    let run = tokio::process::Command::new(python())
        .args(["-c", program])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .with_context(|| format!("{what} did not finish within 120s"))??;
    ensure!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}
