//! The seed's "Downgrade v3.6 to v3.5", done and checked around the one thing etcdmedic
//! cannot do for the operator: replace a member's binary (Talos patches the machine config,
//! kubeadm the static pod's image, a bare host its package). `validate`, `enable` and
//! `cancel` are etcd's Maintenance Downgrade call; `enable` first checks the cluster's health
//! and takes a verified backup (the seed: download a snapshot first), and refuses without one.
//! `status` says where the downgrade stands and what to do next ([`next`]).
//!
//! # Layout
//! - this file: the verbs, over [`Live`].
//! - [`next`]: the next step, from one live status (pure, unit-tested).

pub mod next;

use etcd_client::DowngradeOptions;
use etcdmedic_cluster::model::ClusterStatus;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupError, BackupReport};
use crate::engine::error::RunError;
use crate::engine::{Live, Remediator};
use crate::plan::{self, member_ref};
use etcdmedic_cluster::upgrade::release;
use next::{minor, next_step, NextStep};

/// What a downgrade verb can be asked to do, with the version asked for as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Validate(String),
    Enable(String),
    Cancel,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Validate(_) => "validate",
            Action::Enable(_) => "enable",
            Action::Cancel => "cancel",
        }
    }
}

/// Why a downgrade verb changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum DowngradeError {
    /// Bad input: not `MAJOR.MINOR`.
    #[error("{0:?} is not a version to downgrade to; write MAJOR.MINOR, such as 3.5")]
    BadTarget(String),
    /// A member runs a release that cannot take part (before 3.6).
    #[error(
        "{member} runs etcd {version}: a downgrade needs every member on etcd 3.6 or later \
         (3.5's Downgrade enable never completes, 3.4 has no Downgrade call); nothing was changed"
    )]
    TooOld { member: String, version: String },
    #[error("refused: {0}")]
    Unhealthy(#[from] RunError),
    /// `enable` takes a backup first, and there is nowhere to put it.
    #[error(
        "a downgrade is enabled only after a verified backup (the way back), and cluster {0} \
         has no backup.destinations; configure one; nothing was changed"
    )]
    NoBackupDestination(String),
    #[error("the backup before the downgrade failed, so it was not enabled: {0}")]
    Backup(#[from] BackupError),
    #[error("the backup before the downgrade missed {0}, so it was not enabled")]
    BackupMissed(String),
    /// etcd refused the call (validate 3.4 on a 3.6 cluster, say).
    #[error("{member}: downgrade {action} refused by etcd: {reason}")]
    Refused {
        member: String,
        action: &'static str,
        reason: String,
    },
}

impl DowngradeError {
    /// Bad input (exit 2) rather than a refusal of the cluster's state (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DowngradeError::BadTarget(_) | DowngradeError::NoBackupDestination(_)
        )
    }
}

/// What a verb did: the member asked, etcd's answer, and the backup `enable` took.
#[derive(Debug, Serialize)]
pub struct Done {
    pub member: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupReport>,
}

/// `3.5` of `3.5` or `3.5.0`; bad input otherwise.
pub fn target(raw: &str) -> Result<String, DowngradeError> {
    let parts: Vec<&str> = raw.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match parts.as_slice() {
        [_, _] | [_, _, "0"] if numeric => Ok(minor(raw)),
        _ => Err(DowngradeError::BadTarget(raw.to_string())),
    }
}

/// Every member must run 3.6 or later to validate or enable.
fn check_versions(status: &ClusterStatus) -> Result<(), DowngradeError> {
    for member in &status.members {
        if let Some(answer) = member.reachable() {
            // A version that does not read as one is no 3.6 either.
            let too_old =
                release(&answer.version).is_none_or(|(major, minor, _)| (major, minor) < (3, 6));
            if too_old {
                return Err(DowngradeError::TooOld {
                    member: member.display_name(),
                    version: answer.version.clone(),
                });
            }
        }
    }
    Ok(())
}

impl Remediator<Live> {
    /// `downgrade validate|enable|cancel`: etcd's call, asked of the leader once the cluster
    /// passed the run's preflight (every voting member up, one leader, none lagging).
    pub async fn downgrade(
        &self,
        action: Action,
        stop: &CancellationToken,
    ) -> Result<Done, DowngradeError> {
        let options = match &action {
            Action::Validate(to) => DowngradeOptions::Validate(target(to)?),
            Action::Enable(to) => DowngradeOptions::Enable(target(to)?),
            Action::Cancel => DowngradeOptions::Cancel,
        };
        let status = self.live_status().await;
        if action != Action::Cancel {
            check_versions(&status)?;
        }
        let healthy = plan::preflight(&status, self.settings(), true).map_err(RunError::from)?;
        let leader = member_ref(healthy.leader.member);
        let backup = match action {
            Action::Enable(_) => Some(self.backup_first(stop).await?),
            _ => None,
        };
        let version = self
            .etcd()
            .downgrade(&leader.endpoint, options)
            .await
            .map_err(|err| DowngradeError::Refused {
                member: leader.name.clone(),
                action: action.as_str(),
                reason: err.to_string(),
            })?;
        Ok(Done {
            member: leader.name,
            message: format!(
                "downgrade {} success, cluster version {}",
                action.as_str(),
                minor(&version)
            ),
            backup,
        })
    }

    /// The backup `enable` takes first, verified in every destination.
    async fn backup_first(&self, stop: &CancellationToken) -> Result<BackupReport, DowngradeError> {
        let settings = self.backup_settings().clone();
        if settings.destinations.is_empty() {
            return Err(DowngradeError::NoBackupDestination(
                self.cluster().to_string(),
            ));
        }
        let report = self.backup(&settings, None, stop).await?;
        if let Some(missed) = report.missed.first() {
            return Err(DowngradeError::BackupMissed(format!(
                "{}: {}",
                missed.destination, missed.reason
            )));
        }
        Ok(report)
    }

    /// `downgrade status`: the live status and the next step.
    pub async fn downgrade_status(&self) -> (ClusterStatus, NextStep) {
        let status = self.live_status().await;
        let next = next_step(&status);
        (status, next)
    }
}

/// `MEMBER  VERSION  STORAGE  DOWNGRADE  LEADER` rows for `downgrade status`.
pub fn status_rows(status: &ClusterStatus) -> Vec<Vec<String>> {
    let mut rows = vec![["MEMBER", "VERSION", "STORAGE", "DOWNGRADE", "LEADER"]
        .map(String::from)
        .to_vec()];
    for member in &status.members {
        let row = match member.reachable() {
            Some(s) => vec![
                member.display_name(),
                s.version.clone(),
                s.storage_version.clone().unwrap_or_else(|| "-".into()),
                match &s.downgrade {
                    Some(d) if d.enabled => format!("to {}", d.target_version),
                    Some(_) => "off".into(),
                    None => "-".into(),
                },
                if s.is_leader() { "leader" } else { "" }.into(),
            ],
            None => vec![
                member.display_name(),
                "-".into(),
                "-".into(),
                "-".into(),
                "not answering".into(),
            ],
        };
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_major_minor_and_anything_else_is_bad_input() {
        assert_eq!(target("3.5").unwrap(), "3.5");
        assert_eq!(target("3.5.0").unwrap(), "3.5");
        for bad in ["3", "3.5.1", "v3.5", "3.x", ""] {
            let err = target(bad).unwrap_err();
            assert!(err.is_bad_input(), "{bad}: {err}");
        }
    }
}
