//! A long-running child process (the remediator service, Alertmanager) with its output kept
//! for assertions and error messages, killed on drop, and killed with the test process if
//! that dies first.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::poll::eventually;

pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl ChildProcess {
    /// Starts `program` with `args`; stdout and stderr lines are kept.
    pub fn spawn(name: &str, program: &Path, args: &[String]) -> Result<ChildProcess> {
        ChildProcess::spawn_logged(name, program, args, None)
    }

    /// [`spawn`](Self::spawn), also appending every line to `log` (for people to `tail -f`).
    pub fn spawn_logged(
        name: &str,
        program: &Path,
        args: &[String],
        log: Option<&Path>,
    ) -> Result<ChildProcess> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        set_parent_death_signal(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} ({name})", program.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let log_file = match log {
            Some(path) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ))),
            None => None,
        };
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            let log_file = log_file.clone();
            std::thread::Builder::new()
                .name(format!("{name}-output"))
                .spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        if let Some(file) = &log_file {
                            use std::io::Write;
                            let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                            // A log that cannot be written only loses the copy on disk.
                            let _ = writeln!(file, "{line}");
                        }
                        output
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(line);
                    }
                })?;
        }
        Ok(ChildProcess {
            name: name.to_string(),
            child: Some(child),
            output,
        })
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (and how).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(child) => Ok(child.try_wait()?),
            None => Err(anyhow!("{} was already reaped", self.name)),
        }
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub async fn signal_and_wait(
        &mut self,
        signal: Signal,
        within: Duration,
    ) -> Result<ExitStatus> {
        self.signal(signal)?;
        self.wait_exit(within).await
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        kill(Pid::from_raw(pid as i32), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let name = self.name.clone();
        let status = eventually(&format!("{name} exits"), within, || {
            let status = self.try_wait();
            async move {
                match status? {
                    Some(status) => Ok(status),
                    None => Err(anyhow!("still running")),
                }
            }
        })
        .await?;
        self.child = None;
        Ok(status)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Resident memory of process `pid` now and at its peak (VmRSS, VmHWM), in bytes.
pub fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let kib: u64 = status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .with_context(|| format!("{name} missing from /proc/{pid}/status"))?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Clock ticks per second in /proc/<pid>/stat: Linux reports in USER_HZ, 100 on every
/// architecture it runs on (part of its user-space ABI, whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;
/// The resolution of [`cpu_time`].
pub const CPU_TICK: Duration = Duration::from_millis(1000 / USER_HZ as u64);

/// User and system CPU the process `pid` has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("no command name in /proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    let field = |index: usize| -> Result<u64> {
        Ok(fields
            .get(index)
            .with_context(|| format!("/proc/{pid}/stat is short"))?
            .parse()?)
    };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_secs_f64(ticks as f64 / USER_HZ))
}

/// The child gets SIGKILL when the thread that started it dies, so a crashed test run
/// leaves nothing behind.
pub(crate) fn set_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it is the only thing run between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

/// Times the threads of process `pid` have been switched off a core so far, voluntarily
/// (to wait) or not: each is a sleep and a wake-up the process pays for in kernel time.
pub fn context_switches(pid: u32) -> Result<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for line in status.lines() {
            if let Some(count) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                sum += count.trim().parse::<u64>()?;
            }
        }
    }
    Ok(sum)
}
