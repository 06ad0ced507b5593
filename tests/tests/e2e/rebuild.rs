//! A build that has nothing to do does nothing: after `make build` (which `make test` runs
//! first), the same `cargo build` compiles nothing and runs no build script again. A build
//! script that watches a file the checkout lacks (as `cluster/build.rs` once watched
//! `.git/packed-refs`) reruns on every build and recompiles everything above it.

use anyhow::{ensure, Context, Result};
use etcdmedic_tests::generated::repository_root;
use serde_json::Value;

use crate::support::cargo;

#[test]
fn a_second_build_compiles_nothing() -> Result<()> {
    let build = || -> Result<Vec<Value>> {
        let output = cargo()
            .args(["build", "--locked", "--workspace", "--bins"])
            .arg("--message-format=json")
            .current_dir(repository_root())
            .output()
            .context("running cargo build")?;
        ensure!(
            output.status.success(),
            "cargo build: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8(output.stdout)?
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    };
    // The first may build what this test's own build did not (make build ran before it).
    build()?;
    let messages = build()?;
    let compiled: Vec<&str> = messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["fresh"] != true)
        .filter_map(|m| m["target"]["name"].as_str())
        .collect();
    ensure!(
        compiled.is_empty(),
        "a second cargo build compiled {compiled:?}"
    );
    ensure!(
        messages.iter().any(|m| m["reason"] == "compiler-artifact"),
        "cargo reported no artifact at all"
    );
    Ok(())
}
