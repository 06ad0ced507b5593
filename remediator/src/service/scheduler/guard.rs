//! The run guard of replicas sharing PostgreSQL: before each change to the cluster, the run
//! is confirmed still running in the store, on a connection holding the store's lock.

use std::time::Duration;

use futures::future::BoxFuture;

use super::super::owner::Owner;
use super::super::store::StoreError;
use super::ledger::Ledger;
use crate::engine::guard::{NotConfirmed, RunGuard};

/// How long a store that does not answer (PostgreSQL restarting) is asked again before the
/// run stops: shorter than the time a standby needs to take over.
const CONFIRM_FOR: Duration = Duration::from_secs(5);
const CONFIRM_EVERY: Duration = Duration::from_millis(500);

/// Why the store does not let the run go on.
#[derive(Debug, thiserror::Error)]
enum Fenced {
    #[error("the state store no longer records run {0} as running: another replica took it over")]
    TakenOver(i64),
    #[error("another replica holds the state store ({0})")]
    LockHeld(String),
    #[error("the state store did not confirm the run for {seconds}s ({0})", seconds = CONFIRM_FOR.as_secs())]
    Unconfirmed(StoreError),
}

pub(super) struct StoreGuard {
    pub(super) ledger: Owner<Ledger>,
    pub(super) run: i64,
}

impl RunGuard for StoreGuard {
    fn confirm(&self) -> BoxFuture<'_, Result<(), NotConfirmed>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + CONFIRM_FOR;
            loop {
                let run = self.run;
                let asked = self
                    .ledger
                    .call(move |ledger| ledger.store.still_running(run))
                    .await
                    .map_err(StoreError::from)
                    .and_then(|answer| answer);
                let why = match asked {
                    Ok(true) => return Ok(()),
                    Ok(false) => return Err(Fenced::TakenOver(run).into()),
                    Err(StoreError::InUse { holder, .. }) => {
                        return Err(Fenced::LockHeld(holder).into())
                    }
                    Err(err) => err,
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(Fenced::Unconfirmed(why).into());
                }
                tracing::warn!(run, error = %why, "cannot confirm the run with the state store; asking again");
                tokio::time::sleep(CONFIRM_EVERY).await;
            }
        })
    }
}
