//! Azurite, Microsoft's Azure Storage emulator (npm `azurite`, installed by
//! scripts/install-deps.sh under /opt/etcdmedic-deps/azurite), serving Blob Storage on a free
//! loopback port with its data in a temp dir and a container made. The test reads the
//! container with Azure's own Python client (azure-storage-blob), straight from the emulator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::poll::eventually;
use crate::ports::free_port;
use crate::process::ChildProcess;

/// Azurite's well-known development account and key (public, in Azure's documentation).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Where scripts/install-deps.sh installs it; `$AZURITE_BLOB` overrides.
fn program() -> PathBuf {
    std::env::var_os("AZURITE_BLOB")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::python::deps_dir().join("azurite/node_modules/.bin/azurite-blob"))
}

pub struct Azurite {
    pub container: String,
    port: u16,
    _data: tempfile::TempDir,
    _process: ChildProcess,
}

impl Azurite {
    /// Starts the emulator and creates `container`.
    pub async fn start(container: &str) -> Result<Azurite> {
        let port = free_port()?;
        let data = tempfile::tempdir()?;
        let args: Vec<String> = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            &data.path().display().to_string(),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let process = ChildProcess::spawn("azurite", &program(), &args)
            .context("starting Azurite; run scripts/install-deps.sh (npm azurite)")?;
        let azurite = Azurite {
            container: container.to_string(),
            port,
            _data: data,
            _process: process,
        };
        let create = format!("client.create_container({container:?})");
        eventually("Azurite makes a container", Duration::from_secs(60), || {
            azurite.python(&create)
        })
        .await?;
        Ok(azurite)
    }

    /// The account's URL, as a destination's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// Every blob name in the container under `prefix`, sorted.
    pub async fn blobs(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self
            .python(&format!(
                "for blob in client.get_container_client({container:?}).list_blobs(\
                 name_starts_with={prefix:?}):\n    print(blob.name)",
                container = self.container,
            ))
            .await?;
        let mut names: Vec<String> = listed.lines().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// The blob's bytes.
    pub async fn blob(&self, name: &str) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("blob");
        self.python(&format!(
            "data = client.get_blob_client({container:?}, {name:?}).download_blob().readall()\n\
             open({path:?}, 'wb').write(data)",
            container = self.container,
            path = path.display().to_string(),
        ))
        .await
        .with_context(|| format!("downloading {name}"))?;
        Ok(std::fs::read(&path)?)
    }

    /// Runs `script` with `client`, a BlobServiceClient of the emulator, in scope.
    async fn python(&self, script: &str) -> Result<String> {
        let program = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             client = BlobServiceClient(account_url={url:?}, credential={{'account_name': \
             {ACCOUNT:?}, 'account_key': {ACCOUNT_KEY:?}}})\n{script}\n",
            url = self.endpoint(),
        );
        crate::python::run("azure-storage-blob", &program).await
    }
}
