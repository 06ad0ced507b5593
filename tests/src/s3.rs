//! A real S3-compatible server for backup tests: moto's (PyPI `moto[server]`, installed by
//! scripts/install-deps.sh), on a free loopback port with a bucket made, reached by the
//! remediator through a [`CutProxy`] the test can cut to play an outage mid-upload. The test
//! itself reads the bucket directly (moto does not check signatures), so what it sees is
//! what the server holds. The backup benchmark also runs s3s-fs (crates.io, Rust), a server
//! whose own CPU does not decide the result on a 2-core machine the way moto's does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::poll::eventually;
use crate::ports::free_port;
use crate::process::ChildProcess;
use crate::python::python;

pub struct S3Server {
    /// The server itself, for the test's own reads.
    direct: String,
    pub bucket: String,
    pub proxy: CutProxy,
    process: ChildProcess,
    /// s3s-fs's storage, removed with the server.
    _root: Option<tempfile::TempDir>,
}

/// The access key and secret [`S3Server::start_s3s_fs`] checks signatures against.
pub const S3S_FS_CREDENTIALS: (&str, &str) = ("bench", "bench-secret");

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub async fn start(bucket: &str) -> Result<S3Server> {
        S3Server::start_moto(bucket, false).await
    }

    /// Moto's S3 server with `bucket` made with Object Lock enabled (and so versioned, as
    /// S3 makes such a bucket), without a default retention.
    pub async fn start_with_object_lock(bucket: &str) -> Result<S3Server> {
        S3Server::start_moto(bucket, true).await
    }

    async fn start_moto(bucket: &str, object_lock: bool) -> Result<S3Server> {
        let port = free_port()?;
        let args = [
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]
        .map(String::from);
        S3Server::serve(bucket, port, &args, object_lock).await
    }

    /// The same server, answering Google Cloud Storage's XML API the way GCS emulators are
    /// used by `object_store`: requests carry an empty OAuth bearer token (`disable_oauth`)
    /// or none, from which moto cannot tell which of its services is asked, so it is set to an
    /// AWS-style header naming S3 (moto checks no signature). Everything else is moto's S3,
    /// which GCS's XML API is compatible with.
    pub async fn start_as_gcs(bucket: &str) -> Result<S3Server> {
        let port = free_port()?;
        let script = format!(
            "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, \
             create_backend_app\nfrom werkzeug.serving import run_simple\n\
             moto = DomainDispatcherApplication(create_backend_app)\n\
             def app(environ, start_response):\n    \
             if environ.get('HTTP_AUTHORIZATION', '').strip() in ('', 'Bearer'):\n        \
             environ['HTTP_AUTHORIZATION'] = 'AWS4-HMAC-SHA256 \
             Credential=gcs/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, \
             Signature=0'\n    \
             return moto(environ, start_response)\n\
             run_simple('127.0.0.1', {port}, app, threaded=True)\n"
        );
        S3Server::serve(bucket, port, &["-c".to_string(), script], false).await
    }

    /// s3s-fs (`cargo install s3s-fs --features binary`, by `scripts/install-deps.sh --bench`)
    /// with `bucket` as a directory of its storage, checking signatures against
    /// [`S3S_FS_CREDENTIALS`].
    pub async fn start_s3s_fs(bucket: &str) -> Result<S3Server> {
        let binary = crate::python::deps_dir().join("s3s-fs/bin/s3s-fs");
        ensure!(
            binary.is_file(),
            "{} is missing; run scripts/install-deps.sh --bench",
            binary.display()
        );
        let root = tempfile::Builder::new()
            .prefix("etcdmedic-s3s-")
            .tempdir()?;
        std::fs::create_dir(root.path().join(bucket))?;
        let port = free_port()?;
        let (key, secret) = S3S_FS_CREDENTIALS;
        let args = [
            "--host".to_string(),
            "127.0.0.1".to_string(),
            "--port".to_string(),
            port.to_string(),
            "--access-key".to_string(),
            key.to_string(),
            "--secret-key".to_string(),
            secret.to_string(),
            root.path().display().to_string(),
        ];
        let process = ChildProcess::spawn("s3s-fs", &binary, &args)?;
        eventually("s3s-fs listens", Duration::from_secs(30), || async move {
            TcpStream::connect(("127.0.0.1", port)).await?;
            Ok(())
        })
        .await?;
        Ok(S3Server {
            direct: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            proxy: CutProxy::start(port).await?,
            process,
            _root: Some(root),
        })
    }

    async fn serve(
        bucket: &str,
        port: u16,
        args: &[String],
        object_lock: bool,
    ) -> Result<S3Server> {
        let process = ChildProcess::spawn("moto", &python(), args).context(
            "starting moto's S3 server; run scripts/install-deps.sh (pip install 'moto[server]')",
        )?;
        let direct = format!("http://127.0.0.1:{port}");
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let create = format!("{direct}/{bucket}");
        eventually(
            "moto's S3 server makes a bucket",
            Duration::from_secs(60),
            || {
                let mut request = http.put(&create);
                if object_lock {
                    request = request.header("x-amz-bucket-object-lock-enabled", "true");
                }
                let request = request.send();
                async move {
                    let response = request.await?;
                    ensure!(
                        response.status().is_success(),
                        "status {}",
                        response.status()
                    );
                    Ok(())
                }
            },
        )
        .await?;
        let proxy = CutProxy::start(port).await?;
        Ok(S3Server {
            direct,
            bucket: bucket.to_string(),
            proxy,
            process,
            _root: None,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> Result<u32> {
        self.process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the S3 server is not running"))
    }

    /// The server itself (not through the proxy), for people and tests to look at.
    pub fn direct_url(&self) -> &str {
        &self.direct
    }

    /// The endpoint the remediator is given: through the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port)
    }

    /// Every key in the bucket under `prefix`, sorted: listed by boto3, AWS's own Python
    /// client, straight from the server.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self
            .boto3(&format!(
                "pages = s3.get_paginator('list_objects_v2').paginate(Bucket={bucket:?}, \
                 Prefix={prefix:?})\nfor page in pages:\n    for item in page.get('Contents', \
                 []):\n        print(item['Key'])",
                bucket = self.bucket,
            ))
            .await?;
        let mut keys: Vec<String> = listed.lines().map(str::to_string).collect();
        keys.sort();
        Ok(keys)
    }

    /// The object's bytes, downloaded by boto3 straight from the server.
    pub async fn object(&self, key: &str) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("object");
        self.boto3(&format!(
            "s3.download_file({bucket:?}, {key:?}, {path:?})",
            bucket = self.bucket,
            path = path.display().to_string(),
        ))
        .await
        .with_context(|| format!("downloading {key}"))?;
        Ok(std::fs::read(&path)?)
    }

    /// Runs `script` with `s3`, a boto3 client of the server, in scope; its stdout.
    pub async fn boto3(&self, script: &str) -> Result<String> {
        let program = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url={endpoint:?}, \
             region_name='us-east-1', aws_access_key_id='test', \
             aws_secret_access_key='test')\n{script}\n",
            endpoint = self.direct,
        );
        crate::python::run("boto3", &program).await
    }
}

/// A TCP proxy in front of one loopback port. [`cut_after`](Self::cut_after) lets a given
/// number of bytes through towards the server, then closes every connection and refuses new
/// ones until [`restore`](Self::restore): the server "goes away" mid-upload at a chosen
/// point, and comes back with its state intact.
pub struct CutProxy {
    pub port: u16,
    state: Arc<ProxyState>,
    accept: AbortHandle,
}

#[derive(Default)]
struct ProxyState {
    cut: AtomicBool,
    /// Bytes towards the server still allowed before the cut; `u64::MAX`: no cut planned.
    allowance: AtomicU64,
    connections: Mutex<Vec<AbortHandle>>,
}

impl ProxyState {
    fn cut_now(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for connection in connections {
            connection.abort();
        }
    }
}

impl CutProxy {
    async fn start(upstream: u16) -> Result<CutProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(ProxyState {
            allowance: AtomicU64::new(u64::MAX),
            ..ProxyState::default()
        });
        let accepting = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accepting.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let state = accepting.clone();
                let connection = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        relay(client, server, state).await;
                    }
                });
                accepting
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(connection.abort_handle());
            }
        })
        .abort_handle();
        Ok(CutProxy {
            port,
            state,
            accept,
        })
    }

    /// Cuts every connection once `bytes` more have gone towards the server.
    pub fn cut_after(&self, bytes: u64) {
        self.state.allowance.store(bytes, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.state.allowance.store(u64::MAX, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.cut_now();
    }
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<ProxyState>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = {
        let state = state.clone();
        async move {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                let read = match client_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                let allowed = state.allowance.load(Ordering::SeqCst);
                if allowed != u64::MAX {
                    let pass = allowed.min(read as u64);
                    state.allowance.store(allowed - pass, Ordering::SeqCst);
                    if pass < read as u64 {
                        let _ = server_write.write_all(&buffer[..pass as usize]).await;
                        state.cut_now();
                        return;
                    }
                }
                if server_write.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
