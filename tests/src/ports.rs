//! Free loopback ports, for servers the harness starts and tells which port to take.
//!
//! A port is only ever free "a moment ago": between the pick and the server's bind, someone
//! else can take it. Two takers are likely in a test run, and both are kept out:
//! - the kernel's ephemeral range, from which `bind(0)` picks and every outgoing connection
//!   takes its local port (CI once saw an etcd member fail to bind a port picked that way:
//!   "address already in use"). Ports are picked below that range.
//! - another pick in the same process: picks rotate through the ports below the range, so
//!   one is handed out again only after all the others have been.
//!
//! Other processes on the machine are left to the check that each port can be bound when it
//! is picked, and to the callers that cope with losing one (the etcd harness starts again on
//! new ports).

use std::hash::BuildHasher;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Below this, ports are often configured for services of the machine.
const LOWEST: u16 = 10_000;
/// Used when the ephemeral range cannot be read or leaves too little room below it.
const USUAL_EPHEMERAL_START: u16 = 32_768;

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` distinct ports on 127.0.0.1 that were free a moment ago.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let (lowest, span) = pickable();
    let mut picked = Vec::with_capacity(count);
    // Every port of the span is tried at most once per call.
    for _ in 0..span {
        if picked.len() == count {
            return Ok(picked);
        }
        let port = lowest + (next_pick() % u32::from(span)) as u16;
        // Bound for a moment to see that nobody holds it; the rotation, not this listener,
        // keeps the next pick from handing it out again.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            picked.push(port);
        }
    }
    if picked.len() == count {
        return Ok(picked);
    }
    bail!(
        "only {} of {count} free ports in 127.0.0.1:{lowest}+{span}",
        picked.len()
    )
}

/// Where the picks rotate: from [`LOWEST`] up to the kernel's ephemeral range.
fn pickable() -> (u16, u16) {
    static RANGE: OnceLock<(u16, u16)> = OnceLock::new();
    *RANGE.get_or_init(|| {
        let start = ephemeral_start().unwrap_or(USUAL_EPHEMERAL_START);
        let start = if start < LOWEST + 1_000 {
            USUAL_EPHEMERAL_START
        } else {
            start
        };
        (LOWEST, start - LOWEST)
    })
}

fn ephemeral_start() -> Result<u16> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let range = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let start = range.split_whitespace().next().unwrap_or_default();
    start.parse().with_context(|| format!("{path}: {range:?}"))
}

/// The next pick, starting at a random place so that two test processes at once rarely
/// pick alike.
fn next_pick() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    NEXT.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        AtomicU32::new(random as u32)
    })
    .fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() -> Result<()> {
        let (lowest, span) = pickable();
        let ports = free_ports(50)?;
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 50, "{ports:?}");
        for port in ports {
            assert!((lowest..lowest + span).contains(&port), "{port}");
            TcpListener::bind(("127.0.0.1", port))?;
        }
        let start = ephemeral_start()?;
        assert!(lowest + span == start || start < LOWEST + 1_000, "{start}");
        Ok(())
    }
}
