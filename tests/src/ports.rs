//! Free loopback ports.

use std::net::TcpListener;

use anyhow::{Context, Result};

/// A port on 127.0.0.1 that was free a moment ago. Callers that hand it to another process
/// must cope with losing it to a race (the etcd harness starts again on new ports).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
