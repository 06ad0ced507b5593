//! The restore drill: a backup counts as proven only once it has been restored the way an
//! operator would restore it (`etcdutl snapshot restore`, or etcdctl's for etcd 3.4), started
//! as a throwaway single-member etcd on Unix sockets in its own 0700 directory (no other
//! user of the host can reach it), and that etcd's HashKV at the backup's
//! revision equals the one the live cluster answered for it when the backup was taken. Every
//! key and value up to that revision is covered by the hash, so equal hashes mean the
//! restored keyspace is the cluster's. The throwaway member and its directory are removed
//! whatever the outcome.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::config::{RestoreDrill, RestoreTool};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Manifest;
use crate::vocabulary::timestamp;

/// How long the throwaway member may take to answer once started.
const READY_WITHIN: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The throwaway member's sockets, as named in its working directory (the scratch one).
const CLIENT_SOCKET: &str = "client:2379";
const PEER_SOCKET: &str = "peer:2380";
/// A Unix socket's path, its terminating zero included (`sun_path`).
const MAX_SOCKET_PATH: usize = 108;

/// A drill's outcome, kept in the backup's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub passed: bool,
    #[serde(with = "timestamp")]
    pub at: SystemTime,
    pub duration_seconds: f64,
    /// The restored member's HashKV at the recorded revision, when it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<u32>,
    /// Why it failed, or what it could not compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why there was no drill at all: `no_identity` (the backup is encrypted and nothing
    /// here can decrypt it). Never passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_drilled: Option<String>,
}

/// [`DrillRecord::not_drilled`] of an encrypted backup without an identity.
pub(crate) const NO_IDENTITY: &str = "no_identity";

/// The record of an encrypted backup nobody here can decrypt: not drilled, never passed.
pub(crate) fn not_drilled_no_identity() -> DrillRecord {
    tracing::warn!("restore drill: not drilled, the backup is encrypted and there is no identity to decrypt it (restore_drill.identity_file)");
    DrillRecord {
        passed: false,
        at: SystemTime::now(),
        duration_seconds: 0.0,
        hash: None,
        reason: Some(
            "not drilled: no identity (the backup is encrypted; set \
             restore_drill.identity_file to an identity of one of its recipients)"
                .into(),
        ),
        not_drilled: Some(NO_IDENTITY.into()),
    }
}

/// Restores `db` into a temporary directory under `work` and checks it against
/// `manifest.hash_kv`. Fails (with the reason) rather than erring: the outcome is a record.
pub(crate) async fn run(
    drill: &RestoreDrill,
    db: &Path,
    manifest: &Manifest,
    work: &Path,
    stop: &CancellationToken,
) -> DrillRecord {
    let started = Instant::now();
    let at = SystemTime::now();
    let outcome = tokio::select! {
        outcome = restore_and_compare(drill, db, manifest, work) => outcome,
        _ = stop.cancelled() => Err(DrillError::Stopped),
    };
    let (passed, hash, reason) = match outcome {
        Ok(hash) => (true, Some(hash), None),
        Err(err) => (false, None, Some(err.to_string())),
    };
    let record = DrillRecord {
        passed,
        at,
        duration_seconds: started.elapsed().as_secs_f64(),
        hash,
        reason,
        not_drilled: None,
    };
    tracing::info!(
        cluster = %manifest.cluster, file = %manifest.file, passed, hash = ?record.hash,
        reason = record.reason.as_deref().unwrap_or(""), seconds = record.duration_seconds,
        "restore drill"
    );
    record
}

/// A drill that failed before it could restore anything.
pub(crate) fn failed(reason: String) -> DrillRecord {
    tracing::warn!(%reason, "restore drill failed");
    DrillRecord {
        passed: false,
        at: SystemTime::now(),
        duration_seconds: 0.0,
        hash: None,
        reason: Some(reason),
        not_drilled: None,
    }
}

/// Why a drill failed; its text is the record's reason.
#[derive(Debug, thiserror::Error)]
enum DrillError {
    #[error(
        "the backup has no recorded HashKV to compare with (its revision was compacted before \
         the hash was taken)"
    )]
    NoRecordedHash,
    #[error("{}: {source}", .path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the drill's socket {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket's path \
         may have: give the snapshot directory a shorter path", .0.display()
    )]
    SocketPath(PathBuf),
    #[error("the drill's socket {}: {source}", .path.display())]
    Socket {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("starting {}: {source}", .binary.display())]
    Start {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("running {}: {source}", .binary.display())]
    Run {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{} snapshot restore exited with {status}: {last_line}", .binary.display())]
    RestoreFailed {
        binary: PathBuf,
        status: std::process::ExitStatus,
        last_line: String,
    },
    #[error("the restored etcd exited with {0}")]
    Exited(std::process::ExitStatus),
    #[error("HashKV at revision {revision}: {source}")]
    HashKv {
        revision: i64,
        source: etcd_client::Error,
    },
    #[error("the restored etcd did not answer within {READY_WITHIN:?}")]
    NotReady,
    /// What went wrong with the restored member, and the last thing it logged.
    #[error("{source}; {log_tail}")]
    Member {
        source: Box<DrillError>,
        log_tail: String,
    },
    #[error(
        "the restored member's HashKV at revision {revision} is {hash}, the cluster's was \
         {expected}: the backup does not hold the cluster's data"
    )]
    OtherData {
        revision: i64,
        hash: u32,
        expected: u32,
    },
    #[error("stopped on request")]
    Stopped,
}

fn in_file(path: &Path) -> impl FnOnce(std::io::Error) -> DrillError + '_ {
    move |source| DrillError::File {
        path: path.to_path_buf(),
        source,
    }
}

async fn restore_and_compare(
    drill: &RestoreDrill,
    db: &Path,
    manifest: &Manifest,
    work: &Path,
) -> Result<u32, DrillError> {
    let expected = manifest
        .hash_kv
        .as_ref()
        .ok_or(DrillError::NoRecordedHash)?;
    let scratch = tempfile::Builder::new()
        .prefix(crate::snapshot::DRILL_SCRATCH)
        .tempdir_in(work)
        .map_err(in_file(work))?;
    let data_dir = scratch.path().join("data");
    // Unix sockets in the 0700 scratch directory, not loopback ports: no other user of the
    // host can read the restored keyspace, nor take the address first and answer the
    // HashKV itself. etcd takes a unix URL's host:port as the socket's file name in its
    // working directory, so the names are short whatever the directory's path.
    let client_socket = scratch.path().join(CLIENT_SOCKET);
    if client_socket.as_os_str().len() >= MAX_SOCKET_PATH {
        return Err(DrillError::SocketPath(client_socket));
    }
    let peer_url = format!("unix://{PEER_SOCKET}");
    let client_url = format!("unix://{CLIENT_SOCKET}");
    let initial_cluster = format!("drill={peer_url}");

    restore(drill, db, &data_dir, &peer_url, &initial_cluster).await?;

    let log_path = scratch.path().join("etcd.log");
    let log = std::fs::File::create(&log_path).map_err(in_file(&log_path))?;
    let log_err = log.try_clone().map_err(in_file(&log_path))?;
    let mut etcd = tool(&drill.etcd)
        .args(["--name", "drill", "--data-dir"])
        .arg(&data_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &initial_cluster])
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DrillError::Start {
            binary: drill.etcd.clone(),
            source,
        })?;
    let compared = hash_at(&mut etcd, &client_socket, expected.revision).await;
    let _ = etcd.start_kill();
    let _ = etcd.wait().await;
    let hash = compared.map_err(|err| DrillError::Member {
        source: Box::new(err),
        log_tail: tail(&log_path),
    })?;
    if hash != expected.hash {
        return Err(DrillError::OtherData {
            revision: expected.revision,
            hash,
            expected: expected.hash,
        });
    }
    Ok(hash)
}

async fn restore(
    drill: &RestoreDrill,
    db: &Path,
    data_dir: &Path,
    peer_url: &str,
    initial_cluster: &str,
) -> Result<(), DrillError> {
    let (binary, mut command): (&PathBuf, Command) = match &drill.restore {
        RestoreTool::Etcdutl(path) => (path, tool(path)),
        RestoreTool::Etcdctl(path) => {
            let mut command = tool(path);
            command.env("ETCDCTL_API", "3");
            (path, command)
        }
    };
    let output = command
        .args(["snapshot", "restore"])
        .arg(db)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "drill"])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-advertise-peer-urls", peer_url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| DrillError::Run {
            binary: binary.clone(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(DrillError::RestoreFailed {
            binary: binary.clone(),
            status: output.status,
            last_line: last.unwrap_or("(no output)").trim().to_string(),
        });
    }
    Ok(())
}

/// `binary` with none of the remediator's environment but `PATH`: the cloud credentials
/// (`AWS_*`, `AZURE_*`, ...) are not the drill's, and an `ETCD_*` variable would change how
/// the throwaway member starts (etcd reads every flag from one).
fn tool(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// The throwaway member's HashKV at `revision`, once it answers on `socket`.
async fn hash_at(etcd: &mut Child, socket: &Path, revision: i64) -> Result<u32, DrillError> {
    let deadline = Instant::now() + READY_WITHIN;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
        .map_err(|source| DrillError::Socket {
            path: socket.to_path_buf(),
            source,
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30));
    loop {
        if let Ok(Some(status)) = etcd.try_wait() {
            return Err(DrillError::Exited(status));
        }
        if let Ok(channel) = endpoint.connect().await {
            let client =
                etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None).await;
            if let Ok(mut client) = client {
                if client.status().await.is_ok() {
                    return client
                        .hash_kv(revision)
                        .await
                        .map(|answer| answer.hash())
                        .map_err(|source| DrillError::HashKv { revision, source });
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(DrillError::NotReady);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The last line of the throwaway etcd's log, for a failure's reason.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!("etcd's last log line: {}", line.trim()),
        None => "etcd logged nothing".to_string(),
    }
}
