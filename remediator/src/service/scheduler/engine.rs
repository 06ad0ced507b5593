//! What the scheduler asks of one cluster's engine, behind one trait: the real
//! [`Remediator`] in the service, a scripted cluster in the scheduler's scenario tests (as
//! the engine's own `Etcd` seam does one level down).

use std::time::Duration;

use etcdmedic_cluster::model::ClusterStatus;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupError, BackupReport};
use crate::config::BackupSettings;
use crate::events::Events;
use crate::report::RunReport;
use crate::{Remediator, RunError, RunOptions};

pub(crate) trait ClusterEngine: Send + Sync {
    /// The members as they answer now (alarms included).
    fn live_status(&self) -> BoxFuture<'_, ClusterStatus>;

    /// One remediation, reported however it ends.
    fn run<'a>(
        &'a self,
        options: &'a RunOptions,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, RunReport>;

    /// A backup to every destination of `settings`.
    fn backup<'a>(
        &'a self,
        settings: &'a BackupSettings,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BackupReport, BackupError>>;

    /// Waits until every member serves reads (after a restart that interrupted a run).
    fn wait_until_members_serve_reads<'a>(
        &'a self,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Duration, RunError>>;
}

impl ClusterEngine for Remediator {
    fn live_status(&self) -> BoxFuture<'_, ClusterStatus> {
        Box::pin(Remediator::live_status(self))
    }

    fn run<'a>(
        &'a self,
        options: &'a RunOptions,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, RunReport> {
        Box::pin(Remediator::run(self, options, events, stop))
    }

    fn backup<'a>(
        &'a self,
        settings: &'a BackupSettings,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<BackupReport, BackupError>> {
        Box::pin(Remediator::backup(self, settings, None, stop))
    }

    fn wait_until_members_serve_reads<'a>(
        &'a self,
        events: &'a Events,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Duration, RunError>> {
        Box::pin(Remediator::wait_until_members_serve_reads(
            self, events, stop,
        ))
    }
}
