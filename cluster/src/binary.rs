//! What every etcdmedic binary does around its command: the logging flags, a current-thread
//! runtime, and one place that turns an error into `name: message` and an exit status.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use clap::Args;

use crate::telemetry::{self, LogFormat};

/// The command failed while running; what it printed says why.
pub const FAILED: u8 = 1;
/// Bad usage or configuration: nothing was started or contacted.
pub const BAD_INPUT: u8 = 2;

/// What a command returns: its exit code, or an error with the exit status it earns.
pub type CommandResult<E> = Result<ExitCode, (u8, E)>;

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format on stderr.
    #[arg(long, global = true, default_value_t = LogFormat::Text, env = "ETCDMEDIC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `etcdmedic_cluster=debug,info` (RUST_LOG wins when set).
    /// Default: `info` for servers; for one-shot commands, whose output already shows every
    /// error, only what goes wrong (`error` for `status`, `warn` for `run`).
    #[arg(long, global = true, env = "ETCDMEDIC_LOG_LEVEL")]
    pub log_level: Option<String>,
}

/// Installs logging, runs `command` on a current-thread runtime (one thread is plenty for
/// etcdmedic's I/O and keeps memory down), and prints its error as `name: error`.
pub fn run<E: Display>(
    name: &str,
    log: &LogArgs,
    default_level: &str,
    command: impl Future<Output = CommandResult<E>>,
) -> ExitCode {
    let level = log.log_level.as_deref().unwrap_or(default_level);
    if let Err(err) = telemetry::init(log.log_format, level) {
        eprintln!("{name}: {err}");
        return ExitCode::from(BAD_INPUT);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err((code, err)) => {
            eprintln!("{name}: {err:#}");
            ExitCode::from(code)
        }
    }
}
