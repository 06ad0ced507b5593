//! Python scripts run by the tests with the clouds' own client libraries (boto3, Azure's
//! azure-storage-blob), so a test sees what a store holds through a client that is not ours.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// Where scripts/install-deps.sh puts what it installs beside the system's packages: the
/// Python virtual environment (`venv/`) and Azurite (`azurite/`). `$ETCDMEDIC_DEPS`, or
/// `/opt/etcdmedic-deps`.
pub fn deps_dir() -> PathBuf {
    std::env::var_os("ETCDMEDIC_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/etcdmedic-deps"))
}

/// `$PYTHON`; else the virtual environment's interpreter, where scripts/install-deps.sh
/// installed the Python tools; else `python3`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("PYTHON") {
        return PathBuf::from(python);
    }
    let venv = deps_dir().join("venv/bin/python");
    match venv.is_file() {
        true => venv,
        false => PathBuf::from("python3"),
    }
}

/// A command-line tool installed into the virtual environment (kubernetes-validate), or
/// else found on `PATH`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let venv = deps_dir().join("venv/bin");
    std::iter::once(venv)
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>()),
        )
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
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
