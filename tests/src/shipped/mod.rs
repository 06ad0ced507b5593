//! What ships, started the way it ships: a container of a rendered Kubernetes manifest, a
//! systemd unit, the image's entry point. Each gets a filesystem of its own (a temporary
//! root holding exactly what its mounts or its host give it, owned as the kubelet or an
//! installation would leave it), its own command and arguments, and runs as its own user in
//! a network namespace of its own, so nothing it does leaves the machine.
//!
//! Paths that the manifests name (`/etc/etcdmedic/...`) are rebased onto the temporary root
//! in the arguments and in the configuration file; addresses become loopback ones.
//!
//! # Layout
//! - `sandbox`: the temporary root, files laid out with owner and mode, rebasing.
//! - [`kubernetes`]: a container of a render, with its volumes, env and security context.
//! - [`systemd`]: a unit of deploy/systemd, with its `ExecStartPre` checks.
//! - `image`: what the Dockerfile's final stage sets (user, entry point, command).
//! - `launch`: the process itself, in `unshare --net`, as the given user.

mod image;
pub mod kubernetes;
mod launch;
mod sandbox;
pub mod systemd;

pub use image::{etcd_release, Image};
pub use launch::{check_privileges, first_seconds, Identity, Launch, Verdict};
pub use sandbox::Sandbox;

use std::collections::BTreeSet;

use serde_json::Value;

/// The files a configuration names (every `*_file` key), as written. With `shared_only`, only
/// those of the part both binaries read (`clusters`, without a cluster's `remediation` and
/// `backup`): what the exporter may need.
pub fn named_files(config: &Value, shared_only: bool) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let start = if shared_only {
        &config["clusters"]
    } else {
        config
    };
    collect_files(start, shared_only, &mut files);
    files
}

fn collect_files(value: &Value, shared_only: bool, files: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if shared_only && matches!(key.as_str(), "remediation" | "backup") {
                    continue;
                }
                match inner {
                    Value::String(path) if key.ends_with("_file") => {
                        files.insert(path.clone());
                    }
                    _ => collect_files(inner, shared_only, files),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_files(item, shared_only, files);
            }
        }
        _ => {}
    }
}
