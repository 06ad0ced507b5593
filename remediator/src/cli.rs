//! Command-line interface of `etcdmedic-remediator`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use etcdmedic_cluster::telemetry::LogFormat;

const EXIT_STATUS: &str = "\
Exit status:
  0  `run`: succeeded, skipped (no member needed work) or, with --dry-run, planned
  1  `run`: refused, failed, partial or interrupted (the reason is printed; a refused run changed nothing)
  2  bad usage, invalid configuration or unknown cluster (nothing was contacted)";

#[derive(Debug, Parser)]
#[command(
    name = "etcdmedic-remediator",
    version = etcdmedic_cluster::build_info::VERSION_LONG,
    about = "Safe etcd remediation: health gate, verified snapshot, one member at a time (the leader last, after handing leadership over), NOSPACE disarm, keyspace check.",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, default_value_t = LogFormat::Text, env = "ETCDMEDIC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `etcdmedic_remediator=debug,info` (RUST_LOG wins when set).
    /// Default `warn` for `run`, whose output already shows every step.
    #[arg(long, global = true, env = "ETCDMEDIC_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    pub fn log_level(&self) -> &str {
        match (&self.log_level, &self.command) {
            (Some(level), _) => level,
            (None, Command::Run(_)) => "warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Remediate one cluster now, printing each step as it happens.
    Run(RunArgs),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}
