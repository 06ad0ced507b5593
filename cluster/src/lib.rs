//! etcdmedic's shared library: everything the exporter and the remediator both need to
//! talk to etcd clusters.
//!
//! # Layout
//! - [`config`]: the YAML configuration file as far as both binaries read it (clusters,
//!   endpoints, TLS, auth, discovery), validated and resolved; [`config::parse`] for the
//!   blocks a binary owns (the remediator's).
//! - `tls`: rustls client settings built from the config's certificate files.
//! - [`transport`]: the pooled HTTP/2 connections (TLS included) under one cluster's clients.
//! - [`member_client`]: one etcd client per member endpoint, with timeouts and error sorting.
//! - [`quota`]: the quota each member enforces, from Status or its `/metrics`.
//! - `hedge`: asking several members for one cluster-wide answer, first answer wins.
//! - [`collect`]: Status, MemberList (and AlarmList, for the remediator) of one cluster,
//!   concurrently, on connections kept or opened per collection; [`alarm_source`]: where the
//!   alarms come from.
//! - [`model`]: [`ClusterStatus`] and [`MemberStatus`], the view everything else reads.
//! - [`table`]: the `talosctl etcd status`-style table.
//! - [`upgrade`]: whether a member's release may take the next minor upgrade.
//! - [`telemetry`], [`shutdown`]: logging set-up and the stop signal for the binaries.
//! - [`binary`]: logging flags, runtime and exit statuses shared by every binary.
//! - [`listener`]: both binaries' HTTP listener: TLS, header timeout, connection limit.
//! - [`build_info`]: version and git revision of this build.

pub mod alarm_source;
pub mod binary;
pub mod collect;
pub mod config;
mod error;
mod hedge;
pub mod listener;
pub mod member_client;
pub mod model;
pub mod quota;
mod secret;
pub mod shutdown;
pub mod table;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod upgrade;

pub use collect::ClusterProbe;
pub use config::{ClusterConfig, Config, Credentials};
pub use error::{ConfigProblem, ConfigProblems, Error, Result};
pub use member_client::MemberClient;
pub use model::{
    Alarm, AlarmKind, ClusterStatus, Downgrade, EndpointStatus, MemberId, MemberStatus, Membership,
    ProbeError, QuotaSource,
};
pub use secret::{warn_if_world_readable, Secret};
pub use tls::{ClientTls, ServerTls};
pub use transport::Transport;

/// Version and git revision of this build, for `*_build_info` metrics and `--version`.
pub mod build_info {
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    pub const REVISION: &str = env!("ETCDMEDIC_REVISION");
    /// `0.1.0 (1a2b3c4d5e6f)`, for `--version`.
    pub const VERSION_LONG: &str = concat!(
        env!("CARGO_PKG_VERSION"),
        " (",
        env!("ETCDMEDIC_REVISION"),
        ")"
    );
}
