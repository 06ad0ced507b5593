//! A unit of deploy/systemd on a host installed as the README says: the configuration at the
//! path the unit names, every file it names installed 0400 for the service user, the
//! `StateDirectory` as systemd makes it (0700, the user's). Paths the unit makes inaccessible
//! (`InaccessiblePaths=`) are left out of its view. The user `etcdmedic` is played by uid
//! and gid 65532.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{named_files, Identity, Image, Launch, Sandbox};

/// The service user's ids here.
pub const SERVICE_USER: u32 = 65532;

#[derive(Debug, Clone)]
pub struct Unit {
    pub name: String,
    pub user: Option<String>,
    pub exec_start_pre: Vec<Vec<String>>,
    pub exec_start: Vec<String>,
    pub state_directory: Option<String>,
    pub inaccessible: Vec<String>,
}

impl Unit {
    pub fn load(path: &Path) -> Result<Unit> {
        let text = std::fs::read_to_string(path)?;
        let mut unit = Unit {
            name: path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string(),
            user: None,
            exec_start_pre: Vec::new(),
            exec_start: Vec::new(),
            state_directory: None,
            inaccessible: Vec::new(),
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let words = || value.split_whitespace().map(str::to_string).collect();
            match key.trim() {
                "User" => unit.user = Some(value.trim().to_string()),
                "ExecStartPre" => unit.exec_start_pre.push(words()),
                "ExecStart" => unit.exec_start = words(),
                "StateDirectory" => unit.state_directory = Some(value.trim().to_string()),
                "InaccessiblePaths" => unit.inaccessible.extend(
                    value
                        .split_whitespace()
                        .map(|p| p.trim_start_matches('-').to_string()),
                ),
                _ => {}
            }
        }
        Ok(unit)
    }

    /// The binary it runs: `etcdmedic-exporter` or `etcdmedic-remediator`.
    pub fn binary(&self) -> &str {
        self.exec_start
            .first()
            .and_then(|p| Path::new(p).file_name())
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    }

    fn hidden(&self, path: &str) -> bool {
        self.inaccessible
            .iter()
            .any(|hidden| path == hidden || path.starts_with(&format!("{hidden}/")))
    }
}

/// A unit's host: its sandbox, the `ExecStartPre` checks and the `ExecStart` process.
pub struct Host {
    pub sandbox: Sandbox,
    pub checks: Vec<Launch>,
    pub service: Launch,
    needed: std::collections::BTreeSet<String>,
}

impl Host {
    /// `config_text` is the file installed at the path the unit's `--config` names.
    pub fn install(unit: &Unit, config_text: &str, image: &Image) -> Result<Host> {
        let mut sandbox = Sandbox::new()?;
        let owner = (SERVICE_USER, SERVICE_USER);
        let config_path = unit
            .exec_start
            .iter()
            .position(|arg| arg == "--config")
            .and_then(|at| unit.exec_start.get(at + 1))
            .context("the unit's ExecStart names no --config")?
            .clone();
        let config: Value = yaml_serde::from_str(config_text)?;
        let rebased = sandbox.rebase_config(config_text)?;
        sandbox.file(
            &config_path,
            rebased.as_bytes(),
            0o640,
            (0, SERVICE_USER),
            None,
        )?;
        for file in named_files(&config, false) {
            if unit.hidden(&file) {
                continue;
            }
            let name = Path::new(&file)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let content = sandbox.plausible(&name)?;
            sandbox.file(&file, &content, 0o400, owner, Some("the host"))?;
        }
        if let Some(state) = &unit.state_directory {
            sandbox.dir(&format!("/var/lib/{state}"), 0o700, owner)?;
        }
        let identity = match unit.user.as_deref() {
            Some("root") | None => Identity {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            },
            Some(_) => Identity {
                uid: SERVICE_USER,
                gid: SERVICE_USER,
                groups: Vec::new(),
            },
        };
        let launch = |words: &[String], what: &str| -> Result<Launch> {
            let (program, args) = words.split_first().context("an empty Exec line")?;
            Ok(Launch {
                name: format!("{} {what}", unit.name),
                program: image.program(program)?,
                args: args.iter().map(|arg| sandbox.rebase(arg)).collect(),
                env: vec![("PATH".to_string(), image.path_env())],
                identity: identity.clone(),
            })
        };
        let checks = unit
            .exec_start_pre
            .iter()
            .map(|words| launch(words, "ExecStartPre"))
            .collect::<Result<Vec<_>>>()?;
        let service = launch(&unit.exec_start, "ExecStart")?;
        let needed = named_files(&config, unit.binary() == "etcdmedic-exporter");
        Ok(Host {
            sandbox,
            checks,
            service,
            needed,
        })
    }

    /// The installed credentials the unit's process can read that its part of the
    /// configuration does not name.
    pub fn unneeded_credentials(&self) -> Result<Vec<String>> {
        let unneeded = self
            .sandbox
            .unneeded_credentials(&self.needed, &self.service.identity)?;
        Ok(unneeded
            .into_iter()
            .map(|credential| credential.path)
            .collect())
    }
}
