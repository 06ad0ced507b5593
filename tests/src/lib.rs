//! The process harness behind etcdmedic's end-to-end tests, demo and benchmarks: real etcd
//! clusters (3.4 and 3.5) on loopback, the workloads that fragment or fill them, and the
//! exporter served in-process.
//!
//! # Layout
//! - [`binaries`]: where etcd 3.4/3.5, promtool and this workspace's binaries are.
//! - [`etcd`]: [`EtcdCluster`], configured with a builder, killed and removed on drop.
//! - [`certs`]: a throw-away PKI for TLS clusters.
//! - [`workload`]: fragmenting and NOSPACE-filling writes.
//! - [`exporter`]: the exporter on a free port, in-process.
//! - [`exposition`]: parsing `/metrics` output for assertions.
//! - [`poll`]: waiting for a condition with a deadline.
//! - [`ports`]: free loopback ports.

pub mod binaries;
pub mod certs;
pub mod etcd;
pub mod exporter;
pub mod exposition;
pub mod poll;
pub mod ports;
pub mod workload;

pub use binaries::{project_binary, promtool, EtcdVersion};
pub use etcd::{EtcdCluster, EtcdClusterBuilder, ROOT_PASSWORD};
pub use exporter::{ExporterProcess, RunningExporter};
pub use exposition::Exposition;
pub use poll::eventually;
