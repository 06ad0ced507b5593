//! One process as it ships: its own user and groups, no capabilities, only its own
//! environment, in a network namespace of its own whose only interface is loopback.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::process::ChildProcess;

/// Who a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (a pod's `fsGroup`).
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct Launch {
    /// What started it, for messages: `base: Deployment etcdmedic-exporter, container exporter`.
    pub name: String,
    /// The program on this machine.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub identity: Identity,
}

/// How a process fared in its first seconds.
#[derive(Debug)]
pub enum Verdict {
    Running,
    Exited { status: ExitStatus, output: String },
}

/// Must be root: only root makes network namespaces and switches users.
pub fn check_privileges() -> Result<()> {
    ensure!(
        nix::unistd::Uid::effective().is_root(),
        "starting what ships as it ships needs root (a network namespace of its own, the pod's \
         user): run the tests as root, as CI does"
    );
    Ok(())
}

fn ip() -> Result<&'static str> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())
        .context("no ip command (iproute2); run scripts/install-deps.sh")
}

impl Launch {
    /// `unshare --net`, loopback up, then the user and groups set with every capability
    /// dropped, and the program run with only its own environment.
    fn command_line(&self) -> Result<Vec<String>> {
        let groups = match self.identity.groups.as_slice() {
            [] => "--clear-groups".to_string(),
            groups => format!(
                "--groups={}",
                groups
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let mut line = vec![
            "--net".to_string(),
            "--".to_string(),
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("{} link set lo up && exec \"$@\"", ip()?),
            "sh".to_string(),
            "/usr/bin/setpriv".to_string(),
            format!("--reuid={}", self.identity.uid),
            format!("--regid={}", self.identity.gid),
            groups,
            "--inh-caps=-all".to_string(),
            "--bounding-set=-all".to_string(),
            "--".to_string(),
            "/usr/bin/env".to_string(),
            "-i".to_string(),
        ];
        line.extend(
            self.env
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        line.push(self.program.display().to_string());
        line.extend(self.args.iter().cloned());
        Ok(line)
    }

    pub fn start(&self) -> Result<ChildProcess> {
        ChildProcess::spawn(
            &self.name,
            std::path::Path::new("/usr/bin/unshare"),
            &self.command_line()?,
        )
    }

    /// Runs it to its end (a unit's `ExecStartPre`), for at most `within`.
    pub async fn run(&self, within: Duration) -> Result<(ExitStatus, String)> {
        let mut child = self.start()?;
        let status = child
            .wait_exit(within)
            .await
            .with_context(|| format!("{} did not finish", self.name))?;
        Ok((status, child.output()))
    }
}

/// Starts every launch at once; after `grace`, how each fared. A process that exits early
/// is reported as soon as it does; the others are stopped once `grace` has passed.
pub async fn first_seconds(launches: &[Launch], grace: Duration) -> Result<Vec<Verdict>> {
    let mut children = launches
        .iter()
        .map(|launch| launch.start().map(Some))
        .collect::<Result<Vec<_>>>()?;
    let mut verdicts: Vec<Option<Verdict>> = launches.iter().map(|_| None).collect();
    let deadline = Instant::now() + grace;
    // Surviving until the deadline is what is asserted: the loop polls for early exits.
    while Instant::now() < deadline && verdicts.iter().any(Option::is_none) {
        for (slot, verdict) in children.iter_mut().zip(verdicts.iter_mut()) {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait()? {
                // The output threads finish once the pipes close.
                let output = wait_for_output(child).await;
                *verdict = Some(Verdict::Exited { status, output });
                *slot = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(verdicts
        .into_iter()
        .map(|verdict| verdict.unwrap_or(Verdict::Running))
        .collect())
}

async fn wait_for_output(child: &ChildProcess) -> String {
    let until = Instant::now() + Duration::from_secs(2);
    let mut output = child.output();
    while output.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        output = child.output();
    }
    output
}
