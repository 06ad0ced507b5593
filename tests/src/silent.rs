//! A server that accepts connections and never answers: the worst kind of dead etcd member
//! (a hung process, a black-holing firewall), which costs a client its whole timeout.

use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Accepts on a free loopback port and holds every connection open without reading or
/// writing a byte. Dropping it closes the listener and every connection.
pub struct SilentServer {
    pub port: u16,
    accepting: JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Result<SilentServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepting = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                held.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(stream);
            }
        });
        Ok(SilentServer { port, accepting })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A config with `count` clusters (`silent-00`, ...) whose only endpoint is `silent`, then
/// `healthy` as `healthy`: dead clusters listed before a live one.
pub fn fleet_yaml(healthy: &crate::EtcdCluster, silent: &SilentServer, count: usize) -> String {
    let mut yaml = "clusters:\n".to_string();
    for index in 0..count {
        yaml.push_str(&format!(
            "  - name: silent-{index:02}\n    endpoints: [{}]\n",
            silent.endpoint()
        ));
    }
    yaml.push_str(&healthy.config_entry("healthy"));
    yaml
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
