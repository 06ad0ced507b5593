//! The remediator's sections of the configuration file exactly as written: `remediation:`,
//! `backup:` (top level and per cluster) and `remediator:`. The shared crate reads them as
//! opaque YAML (the exporter never looks inside); they are checked and resolved here. Every
//! struct denies unknown keys, so a typo is an error that names the key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use etcdmedic_cluster::config::file::{ServerTlsFile, TlsFile};
use serde::Deserialize;

/// Where `etcdmedic-remediator backup` puts a cluster's backups, and how many it keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// Every backup goes to each of them (a cluster's own list replaces the default one).
    #[serde(default)]
    pub destinations: Option<Vec<DestinationFile>>,
    #[serde(default)]
    pub retention: Option<RetentionFile>,
    #[serde(default)]
    pub restore_drill: Option<RestoreDrillFile>,
    /// `serve` takes a backup at each time of this cron expression.
    #[serde(default)]
    pub schedule: Option<String>,
    /// How copies are stored in the destinations.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The IANA time zone `schedule` is read in (UTC when absent).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Copies are encrypted with age to these recipients.
    #[serde(default)]
    pub encryption: Option<EncryptionFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionFile {
    /// age X25519 public keys (`age1…`); any one of their identities decrypts a backup.
    pub recipients: Vec<String>,
}

/// Each new backup is restored into a throwaway etcd before it counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreDrillFile {
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Where `etcd` and `etcdutl` (or, for etcd 3.4, `etcdctl`) are; default: `PATH`.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The age identity file that decrypts encrypted backups for the drill (0600).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFile {
    /// Names the destination in `--destination`, output and reports.
    pub name: String,
    pub kind: DestinationKind,
    /// `local`: the directory (relative to the configuration file's).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `s3`, `gcs`: the bucket; objects go under `<prefix>/<cluster>/`.
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    /// `s3`, `gcs`, `azure`: the store's URL instead of the cloud's own (an S3-compatible
    /// server, a private endpoint, an emulator).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key`.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// `s3`: files holding the credentials; without them, the environment's
    /// (`AWS_ACCESS_KEY_ID`, ...) or the instance's.
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// `gcs`: a service account's JSON key; without it, Application Default Credentials.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// `azure`: the storage account.
    #[serde(default)]
    pub account: Option<String>,
    /// `azure`: the blob container; objects go under `<prefix>/<cluster>/`.
    #[serde(default)]
    pub container: Option<String>,
    /// `azure`: a file holding the account's access key; without it, the environment's
    /// credentials (`AZURE_*`) or the managed identity.
    #[serde(default)]
    pub account_key_file: Option<PathBuf>,
    /// This destination's own retention; each unset key is `backup.retention`'s.
    #[serde(default)]
    pub retention: Option<RetentionFile>,
    /// `s3`: every object written is locked (S3 Object Lock) for `days` from its backup.
    #[serde(default)]
    pub object_lock: Option<ObjectLockFile>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockFile {
    pub mode: LockMode,
    pub days: u32,
}

/// S3 Object Lock's retention modes: `governance` can be lifted by whoever holds
/// `s3:BypassGovernanceRetention`, `compliance` by nobody until the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    /// As S3 spells it in requests and answers.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Local,
    S3,
    Gcs,
    Azure,
}

/// `none` keeps the snapshot as etcd streams it; `zstd` stores `<name>.db.zst`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Backups kept per destination, the newest first.
    #[serde(default)]
    pub keep: Option<usize>,
    /// Older backups are removed too (never the newest).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// How the remediator treats one cluster. Every key is optional: an unset key falls back to
/// the top-level block, then to the default named in [`crate::config::RemediationSettings`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationFile {
    /// Snapshots go to `<snapshot_dir>/<cluster>/`.
    #[serde(default)]
    pub snapshot_dir: Option<PathBuf>,
    /// How many verified snapshots per cluster to keep.
    #[serde(default)]
    pub snapshot_retention: Option<usize>,
    /// How long streaming one snapshot may take.
    #[serde(default, with = "humantime_serde")]
    pub snapshot_timeout: Option<Duration>,
    /// An expression over `dbSize, dbSizeInUse, dbSizeFree, dbQuota, dbQuotaUsage`
    /// (etcd-defrag's `--defrag-rule`), replacing the built-in rule.
    #[serde(default)]
    pub defrag_rule: Option<String>,
    /// How long one member's Defragment call may take before the engine waits for the
    /// member instead of the call.
    #[serde(default, with = "humantime_serde")]
    pub defrag_timeout: Option<Duration>,
    /// Pause between two members.
    #[serde(default, with = "humantime_serde")]
    pub settle_time: Option<Duration>,
    /// Compact to the current revision (physically) before the snapshot.
    #[serde(default)]
    pub compact_first: Option<bool>,
    #[serde(default)]
    pub leader: Option<LeaderPolicy>,
    /// `leader: auto` defragments the leader in place when its predicted defragmentation is
    /// shorter than this, and moves leadership first otherwise.
    #[serde(default, with = "humantime_serde")]
    pub leader_in_place_below: Option<Duration>,
    #[serde(default)]
    pub on_leader_move_failure: Option<LeaderMoveFailure>,
    /// NOSPACE is disarmed only once every member's db size is below quota x this.
    #[serde(default)]
    pub disarm_nospace_below: Option<f64>,
    /// Accept clusters of fewer than 3 voting members.
    #[serde(default)]
    pub allow_single_member: Option<bool>,
    /// How far (in raft entries) a member's applied index may trail the leader's and still
    /// count as caught up.
    #[serde(default)]
    pub max_applied_lag: Option<u64>,
    /// The quiet-cluster gate: before the snapshot and before each member, the cluster's
    /// write rate (raft entries per second) must be at most this. Unset: no gate.
    #[serde(default)]
    pub max_write_rate: Option<f64>,
    /// How long the gate waits for a busy cluster to quieten.
    #[serde(default, with = "humantime_serde")]
    pub quiet_wait: Option<Duration>,
    /// What a busy cluster gets.
    #[serde(default)]
    pub on_busy: Option<OnBusy>,
    /// Maintenance windows: runs from non-urgent triggers wait for one to open.
    #[serde(default)]
    pub windows: Option<Vec<WindowFile>>,
    /// A cron expression: a run starts by itself at each of its times (maintenance windows
    /// apply to it, the defragmentation rule decides what it does).
    #[serde(default)]
    pub schedule: Option<String>,
    /// The IANA time zone `windows` and `schedule` are read in (UTC when absent).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// One maintenance window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    /// A cron expression: when the window opens.
    pub start: String,
    /// How long it stays open.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
}

/// What the quiet-cluster gate does when the cluster writes faster than `max_write_rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBusy {
    /// Wait up to `quiet_wait` for it to quieten, then end the run (`cluster_busy`).
    Wait,
    /// End the run at once (`cluster_busy`); the service tries again later.
    Defer,
    /// Wait up to `quiet_wait`, then go on anyway with a warning.
    Proceed,
}

/// The webhook service. Every key is optional; defaults are in
/// the webhook service's settings (`ServiceSettings` in the remediator crate).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediatorFile {
    /// `observe`: plan and record the runs alerts, schedules and requests would start, and
    /// execute none; `act` (the default): remediate.
    #[serde(default)]
    pub mode: Option<ServiceMode>,
    /// Address the webhook, API and metrics listen on.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The address people reach the service at behind a proxy or an ingress, e.g.
    /// `https://etcdmedic.example.com`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// SQLite file holding triggers, runs, cooldown clocks and the pause switch.
    #[serde(default)]
    pub state_path: Option<PathBuf>,
    /// Who may do what: one credential per role, one for every role, or `none`.
    #[serde(default)]
    pub auth: Option<AuthFile>,
    /// Serve HTTPS, optionally requiring client certificates.
    #[serde(default)]
    pub tls: Option<ServerTlsFile>,
    /// Alert names that start a run.
    #[serde(default)]
    pub triggers: Option<Vec<String>>,
    /// Triggers that act at once, outside maintenance windows.
    #[serde(default)]
    pub urgent_triggers: Option<Vec<String>>,
    /// After a run that did work, further triggers for the cluster are recorded and skipped
    /// for this long, unless the cluster has an active NOSPACE alarm.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// How many clusters may be remediated at once.
    #[serde(default)]
    pub max_concurrent_runs: Option<usize>,
    /// Largest webhook or API request body accepted.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// How long a client may take to send a request's head.
    #[serde(default, with = "humantime_serde")]
    pub read_header_timeout: Option<Duration>,
    /// How long a client may take to send a request's body.
    #[serde(default, with = "humantime_serde")]
    pub read_body_timeout: Option<Duration>,
    /// Connections open at once; more are closed on arrival.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// After a refused run (nothing changed) whose alerts still fire, run again this much
    /// later.
    #[serde(default, with = "humantime_serde")]
    pub retry_after_refusal: Option<Duration>,
    /// Silence the triggering alerts in Alertmanager while their run is active.
    #[serde(default)]
    pub silences: Option<SilencesFile>,
    /// Post one Grafana annotation per run.
    #[serde(default)]
    pub grafana_annotations: Option<GrafanaFile>,
    /// Keep the state in PostgreSQL instead of the SQLite file at `state_path`.
    #[serde(default)]
    pub postgres: Option<PostgresFile>,
}

/// The remediator's state in PostgreSQL: where, and the password from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresFile {
    /// `postgres://user@host:port/database`, without a password.
    pub url: String,
    /// File holding the user's password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// How long connecting may take.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// TLS to PostgreSQL: the CA that signed its certificate, a client certificate.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// `auth:` as written: `none` (every request accepted, said on purpose) or credentials.
#[derive(Debug, Clone)]
pub enum AuthFile {
    None,
    Credentials(Box<CredentialsFile>),
}

impl<'de> Deserialize<'de> for AuthFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Written;
        impl<'de> serde::de::Visitor<'de> for Written {
            type Value = AuthFile;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "`none`, or credentials: webhook, operator and viewer (each a \
                     bearer_token_file or basic_auth), or one bearer_token_file or basic_auth \
                     for every role",
                )
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AuthFile, E> {
                match text {
                    "none" => Ok(AuthFile::None),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AuthFile, A::Error> {
                CredentialsFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|credentials| AuthFile::Credentials(Box::new(credentials)))
            }
        }
        deserializer.deserialize_any(Written)
    }
}

/// Per role (`webhook`, `operator`, `viewer`), or one credential for all three (the
/// top-level `bearer_token_file` or `basic_auth`), never both ways at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    /// File holding the token of `Authorization: Bearer <token>`, for every role.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth for every role.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthFile>,
    /// What Alertmanager sends: may deliver alerts, nothing else.
    #[serde(default)]
    pub webhook: Option<CredentialFile>,
    /// May pause, resume, start runs and backups, and everything a viewer may.
    #[serde(default)]
    pub operator: Option<CredentialFile>,
    /// May read: the web pages and the API's GET endpoints.
    #[serde(default)]
    pub viewer: Option<CredentialFile>,
}

/// Exactly one of the two, like Alertmanager's `http_config`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    /// File holding the token of `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuthFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthFile {
    pub username: String,
    pub password_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilencesFile {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub alertmanager_url: String,
    /// Bearer token for an Alertmanager behind an authenticating proxy.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// For an `https://` Alertmanager: its CA (the system's otherwise), a client certificate.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaFile {
    /// Grafana's base URL, e.g. `http://grafana:3000`.
    pub url: String,
    /// A service-account token allowed to write annotations.
    pub token_file: PathBuf,
    /// Tags on every annotation (`etcdmedic` and the cluster name are always added).
    #[serde(default)]
    pub tags: Vec<String>,
    /// For an `https://` Grafana: its CA (the system's otherwise), a client certificate.
    #[serde(default)]
    pub tls: Option<TlsFile>,
}

/// Whether the webhook service remediates, or only shows what it would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    /// Every run is a dry run: preflight and plan with its predicted durations, recorded and
    /// shown, nothing changed in etcd. Backups still run.
    Observe,
    /// Runs remediate.
    #[default]
    Act,
}

impl ServiceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceMode::Observe => "observe",
            ServiceMode::Act => "act",
        }
    }

    pub fn observes(self) -> bool {
        self == ServiceMode::Observe
    }
}

/// What to do with the leader when it needs defragmenting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderPolicy {
    /// Decided at the leader's turn from the defragmentation throughput measured on the
    /// followers (or earlier runs): in place when the predicted stall is shorter than
    /// `leader_in_place_below`, else `move_then_defrag` (the default).
    Auto,
    /// Hand leadership to a defragmented follower, then defragment the old leader as a
    /// follower.
    MoveThenDefrag,
    /// Defragment the leader where it is: every client of the cluster waits meanwhile.
    DefragInPlace,
    /// Leave the leader alone.
    Skip,
}

/// What to do when handing leadership over fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaderMoveFailure {
    /// End the run, reported as partial (the default).
    Stop,
    /// Defragment the leader in place anyway, with a warning.
    DefragInPlace,
}
