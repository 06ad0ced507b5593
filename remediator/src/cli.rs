//! Command-line interface of `etcdmedic-remediator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use etcdmedic_cluster::binary::LogArgs;

const EXIT_STATUS: &str = "\
Exit status:
  0  `serve`: stopped on SIGTERM/SIGINT after the run under way finished its member
  0  `run`: succeeded, skipped (no member needed work) or, with --dry-run, planned
  0  `backup`: the backup passed its restore drill and is verified in every destination asked for
  1  `backup`: the lock is held, no member answered, the snapshot or its drill failed, or a destination missed it
  0  `drill`: the backup restored and its HashKV matched
  0  `defrag --member`: as `run` (the member defragmented, or skipped)
  0  `alarm list`: the alarms were read (whether or not there are any)
  0  `alarm disarm`: no alarm is left raised
  1  `alarm disarm`: an alarm stays (NOSPACE while a member is past the threshold, or CORRUPT, which is never disarmed)
  0  `forfeit-leadership`: the member does not lead (any more); 1: leadership did not move
  0  `downgrade validate|enable|cancel`: etcd accepted it; 1: refused (unhealthy, a member
     before 3.6, the backup failed, or etcd said no), nothing changed
  0  `downgrade status`: nothing left to do; 1: a step remains (it is printed)
  1  `drill`: it did not (the reason is printed and kept in the backup's manifest), or the lock is held
  1  `run`: refused, failed, partial or interrupted (the reason is printed; a refused run changed nothing)
  1  `serve`: the listener or the state store failed
  2  bad usage, invalid configuration, unknown cluster or member, or a state file that is not etcdmedic's (nothing was changed)";

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-remediator",
    version = etcdmedic_cluster::build_info::VERSION_LONG,
    about = "Safe etcd remediation: health gate, verified snapshot, one member at a time (the leader last, after handing leadership over), NOSPACE disarm, keyspace check.",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter when `--log-level` is not given.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive Alertmanager webhooks and remediate the clusters they name, one run per
    /// cluster at a time, with an API for runs, pause and manual runs.
    Serve(ServeArgs),
    /// Remediate one cluster now, printing each step as it happens.
    Run(RunArgs),
    /// Back one cluster up now: a verified snapshot in each of its `backup.destinations`,
    /// with a manifest beside it; older backups beyond the retention removed.
    Backup(BackupArgs),
    /// Prove a backup already taken: restore it into a throwaway etcd on loopback and compare
    /// its HashKV with the cluster's at the backup's revision; the result goes into its
    /// manifest.
    Drill(DrillArgs),
    /// Rebuild the cluster's data directories from a backup: the newest whose restore drill
    /// passed (or --backup), fetched and checked against its manifest, written with `etcdutl
    /// snapshot restore` into DIR/<member>/ for each member, with the revision bumped and
    /// marked compacted (what Kubernetes' caches need); then what to run next.
    Restore(RestoreArgs),
    /// Defragment one member now, whatever the rule says, with `run`'s health gate, verified
    /// snapshot and waits (a leader hands leadership over first, as in `run`).
    Defrag(DefragArgs),
    /// The cluster's alarms, one line per alarm (`list`), or NOSPACE disarmed once every
    /// member is below its quota again (`disarm`; CORRUPT never is).
    Alarm(AlarmArgs),
    /// Hand leadership from a member to the most caught-up voting follower, and wait until
    /// every member follows it.
    ForfeitLeadership(ForfeitArgs),
    /// The seed's 3.6 -> 3.5 downgrade: etcd's Downgrade call (`validate`, `enable` after a
    /// health check and a verified backup, `cancel`), and `status`: where it stands and what
    /// to do next.
    #[command(subcommand)]
    Downgrade(DowngradeAction),
}

#[derive(Debug, Subcommand)]
pub enum DowngradeAction {
    /// Ask etcd whether the cluster can be downgraded to VERSION (one minor at a time).
    Validate(DowngradeTo),
    /// Check health, take a verified backup, then enable the downgrade to VERSION: the
    /// cluster speaks VERSION's protocol and migrates its storage version to it.
    Enable(DowngradeTo),
    /// Cancel an enabled downgrade (before a member runs the older binary).
    Cancel(ClusterArgs),
    /// Each member's version, storage version and downgrade state, and the next step. Exit 0
    /// only when nothing is left to do.
    Status(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct DowngradeTo {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// The version to downgrade to: MAJOR.MINOR, such as 3.5.
    pub version: String,
}

/// Which cluster of which configuration file.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// The configuration file.
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Name of the cluster, as in the config.
    #[arg(long)]
    pub cluster: String,
    /// Output: one line per member or alarm, or JSON.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DefragArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The member to defragment: its name, client URL or ID.
    #[arg(long)]
    pub member: String,
}

#[derive(Debug, Args)]
pub struct AlarmArgs {
    #[command(subcommand)]
    pub action: AlarmAction,
}

#[derive(Debug, Subcommand)]
pub enum AlarmAction {
    /// Every alarm the cluster has raised, one line each.
    List(ClusterArgs),
    /// Disarm NOSPACE once every member is below `disarm_nospace_below` of its quota, then
    /// check that a write is accepted again. CORRUPT is never disarmed.
    Disarm(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct ForfeitArgs {
    #[command(flatten)]
    pub target: ClusterArgs,
    /// The member to take leadership from: its name, client URL or ID.
    #[arg(long)]
    pub member: String,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The configuration file (clusters and their `backup:` settings).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Name of the cluster whose backup to drill, as in the config.
    #[arg(long)]
    pub cluster: String,
    /// The destination to read, a directory or a bucket (default: the first local one, else
    /// the first bucket).
    #[arg(long)]
    pub destination: Option<String>,
    /// The backup's file name (default: the newest).
    #[arg(long)]
    pub file: Option<String>,
    /// An age identity file that decrypts an encrypted backup (default:
    /// `backup.restore_drill.identity_file`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Output: one line, or the drill's record as JSON.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The configuration file (clusters and their `backup:` settings).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Name of the cluster to restore, as in the config.
    #[arg(long)]
    pub cluster: String,
    /// The backup's file name (default: the newest whose restore drill passed).
    #[arg(long, conflicts_with = "newest")]
    pub backup: Option<String>,
    /// The newest backup whose restore drill passed (the default).
    #[arg(long)]
    pub newest: bool,
    /// Only this destination (by its name in `backup.destinations`; default: all of them).
    #[arg(long)]
    pub from: Option<String>,
    /// A new or empty directory: the checked snapshot and one data directory per member go
    /// there.
    #[arg(long)]
    pub into: PathBuf,
    /// A member of the restored cluster, NAME=PEER_URL, once for each (default: the members
    /// the backup recorded).
    #[arg(long = "member", value_name = "NAME=PEER_URL")]
    pub members: Vec<String>,
    /// Added to the backup's revision (with --mark-compacted).
    #[arg(long, default_value_t = etcdmedic_remediator_default_bump(), conflicts_with = "no_bump")]
    pub bump_revision: u64,
    /// Start at the backup's own revision, nothing marked compacted: only for a cluster no
    /// client has watched past the backup.
    #[arg(long)]
    pub no_bump: bool,
    /// Restore a backup whose restore drill failed or never ran.
    #[arg(long)]
    pub accept_unproven: bool,
    /// Show what would be restored, and how, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The etcdutl to restore with (default: the restore drill's, from
    /// `backup.restore_drill.bin_dir` or PATH).
    #[arg(long)]
    pub etcdutl: Option<PathBuf>,
    /// An age identity file (as age-keygen writes it, 0600) that decrypts an encrypted backup
    /// (default: `backup.restore_drill.identity_file`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Output: the plan and the next steps as text, or the report as JSON.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

const fn etcdmedic_remediator_default_bump() -> u64 {
    crate::restore::DEFAULT_BUMP
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The configuration file (clusters and their `backup:` settings).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Name of the cluster to back up, as in the config.
    #[arg(long)]
    pub cluster: String,
    /// Only this destination (by its name in `backup.destinations`).
    #[arg(long)]
    pub destination: Option<String>,
    /// Output: a summary line per destination, or the backup's report as JSON.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (clusters, `remediation:` and `remediator:` settings).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Listen address; overrides `remediator.listen` (default 0.0.0.0:9380).
    #[arg(long, env = "ETCDMEDIC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Validate the configuration (secrets and certificates included), print a summary and
    /// exit.
    #[arg(long = "config.check")]
    pub config_check: bool,
    /// Initialise the state file even though it exists, when it is empty (0 bytes, or no
    /// tables). Without it such a file is refused: starting afresh loses the pause switch,
    /// the cooldowns and the run history.
    #[arg(long)]
    pub init_state: bool,
    /// With the state in PostgreSQL: the URL the other replicas reach this one at, e.g.
    /// http://$(POD_IP):9380. While this replica is active, standbys forward the webhook,
    /// the API and the web pages to it; without it they answer 503.
    #[arg(long, env = "ETCDMEDIC_ADVERTISE_URL")]
    pub advertise_url: Option<url::Url>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file (clusters and their `remediation:` settings).
    #[arg(long, env = "ETCDMEDIC_CONFIG")]
    pub config: PathBuf,
    /// Name of the cluster to remediate, as in the config.
    #[arg(long)]
    pub cluster: String,
    /// Print the plan (members, order, reasons) and change nothing, not even a snapshot.
    #[arg(long)]
    pub dry_run: bool,
    /// Accept a cluster of fewer than 3 voting members (its requests wait during the
    /// defragmentation).
    #[arg(long)]
    pub force: bool,
    /// Output: steps as text while they happen, or the run report as JSON at the end.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Defragment although a downgrade is enabled (refused otherwise: members may run
    /// different releases while it is under way).
    #[arg(long)]
    pub during_downgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}
