//! Stopping and continuing a process, returning only once it has happened.
//!
//! `kill(SIGSTOP)` returns when the signal is queued, not when the process has stopped: each
//! of its threads stops the next time it is scheduled, so on a busy machine a
//! multi-threaded etcd can still answer a request sent right after. A test that pauses a
//! member to play "accepts connections and never answers" must wait until every thread
//! is stopped (CI once saw a just-paused member answer and report `up 1`).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a signalled process may take to change state: a machine that needs longer is
/// too loaded for any timing in a test to mean anything.
const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads stop within a scheduler tick or two: polling often keeps a pause short.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// SIGSTOPs `pid` and waits until every one of its threads is stopped.
pub fn stop(pid: u32) -> Result<()> {
    send(pid, Signal::SIGSTOP)?;
    wait_until(pid, "stopped", |states| {
        states.iter().all(|&s| is_stopped(s))
    })
}

/// SIGCONTs `pid` and waits until none of its threads is stopped.
pub fn resume(pid: u32) -> Result<()> {
    send(pid, Signal::SIGCONT)?;
    wait_until(pid, "running", |states| {
        !states.iter().any(|&s| is_stopped(s))
    })
}

fn send(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), signal).with_context(|| format!("sending {signal} to {pid}"))
}

fn wait_until(pid: u32, what: &str, done: impl Fn(&[char]) -> bool) -> Result<()> {
    let deadline = Instant::now() + STATE_CHANGE_TIMEOUT;
    loop {
        let states = thread_states(pid)?;
        if done(&states) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let waited = STATE_CHANGE_TIMEOUT;
            bail!("process {pid} was not {what} after {waited:?}: thread states {states:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Stopped by a signal (`T`) or, under a debugger, by tracing (`t`).
fn is_stopped(state: char) -> bool {
    matches!(state, 'T' | 't')
}

/// The state letter of each live thread of `pid` (exited threads, `Z` or `X`, are left
/// out: they neither answer nor stop).
fn thread_states(pid: u32) -> Result<Vec<char>> {
    let tasks = format!("/proc/{pid}/task");
    let mut states = Vec::new();
    for task in fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
        // A thread that exits between the listing and the read is simply gone.
        let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
            continue;
        };
        let state = state_of(&stat).with_context(|| format!("parsing {tasks}/*/stat: {stat}"))?;
        if !matches!(state, 'Z' | 'X') {
            states.push(state);
        }
    }
    Ok(states)
}

/// The state field of a `/proc/*/stat` line: the first character after the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
fn state_of(stat: &str) -> Option<char> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(state_of("42 (etcd) S 1 42"), Some('S'));
        assert_eq!(state_of("42 (a) b) (c) T 1 42"), Some('T'));
        assert_eq!(state_of("42 etcd"), None);
    }

    #[test]
    fn a_child_is_stopped_and_resumed_before_the_calls_return() -> Result<()> {
        let mut child = std::process::Command::new("sleep").arg("60").spawn()?;
        let outcome = (|| -> Result<()> {
            stop(child.id())?;
            assert!(thread_states(child.id())?.iter().all(|&s| is_stopped(s)));
            resume(child.id())?;
            assert!(!thread_states(child.id())?.iter().any(|&s| is_stopped(s)));
            Ok(())
        })();
        child.kill()?;
        child.wait()?;
        outcome
    }
}
