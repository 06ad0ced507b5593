//! The process harness behind etcdmedic's end-to-end tests, demo and benchmarks: real etcd
//! clusters (3.4 to 3.7) on loopback, the workloads that fragment or fill them, and the
//! exporter served in-process.
//!
//! # Layout
//! - [`binaries`]: where etcd 3.4 to 3.7, promtool and this workspace's binaries are.
//! - [`etcd`]: [`EtcdCluster`], configured with a builder, killed and removed on drop.
//! - [`certs`]: a throw-away PKI for TLS clusters.
//! - [`workload`]: fragmenting and NOSPACE-filling writes.
//! - [`load`]: steady client writes during a run, every failure kept with its time.
//! - [`exporter`]: the exporter on a free port, in-process.
//! - [`generated`]: the Kubernetes copies of the alert rules and dashboards, rendered.
//! - [`kustomize`]: deploy/kubernetes rendered by kubectl's kustomize.
//! - [`shipped`]: a manifest's container, a systemd unit or the image started as it ships,
//!   with only what it mounts, as its user, in a network namespace of its own.
//! - [`exposition`]: parsing `/metrics` output for assertions.
//! - [`poll`]: waiting for a condition with a deadline.
//! - [`process`]: a child process with its output kept, killed on drop.
//! - [`job_control`]: stopping and continuing a process, waiting until it has happened.
//! - [`remediator`]: `etcdmedic-remediator serve` as a process: webhooks, API, kill, restart.
//! - [`prometheus`]: Debian's Prometheus scraping given targets with given rules.
//! - [`alertmanager`]: Debian's Alertmanager routing to the remediator, alone or clustered.
//! - [`ports`]: free loopback ports.
//! - [`silent`]: a server that accepts connections and never answers.
//! - [`browser`]: Debian's Chromium, headless, through chromedriver.
//! - [`s3`], [`azurite`]: object stores for backups (moto's S3 server, Microsoft's Azurite),
//!   read by [`python`] scripts with the clouds' own clients.

pub mod alertmanager;
pub mod azurite;
pub mod binaries;
pub mod browser;
pub mod certs;
pub mod etcd;
pub mod exporter;
pub mod exposition;
pub mod generated;
pub mod job_control;
pub mod kustomize;
pub mod load;
pub mod operator;
pub mod poll;
pub mod ports;
pub mod postgres;
pub mod process;
pub mod prometheus;
pub mod python;
pub mod remediator;
pub mod s3;
pub mod shipped;
pub mod silent;
pub mod workload;

pub use binaries::{project_binary, prometheus_tool, promtool, EtcdVersion};
pub use etcd::{EtcdCluster, EtcdClusterBuilder, ROOT_PASSWORD};
pub use exporter::{ExporterProcess, RunningExporter};
pub use exposition::Exposition;
pub use poll::eventually;
pub use remediator::RemediatorService;

/// An HTTP client builder for tests and tools. The workspace builds reqwest without a
/// bundled TLS crypto provider, so ring is installed as the process default first.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Another part of the process may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// [`http_client_builder`] with its defaults.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .unwrap_or_else(|err| panic!("building the test HTTP client: {err}"))
}
