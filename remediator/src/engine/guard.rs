//! The service's word that a run may still change the cluster. Replicas share one state
//! store; the one carrying a run asks it, right before each change (compaction, leadership
//! handover, each member's defragmentation, the disarm), whether the run is still its own. A
//! replica that lost the store to another (which then records the run interrupted and takes
//! over) is told no, and stops before changing anything more: never two replicas'
//! defragmentations at once.

use std::sync::Arc;

use futures::future::BoxFuture;

/// Why the run may not go on. The engine only reports it; what it can be is the guard's.
pub(crate) type NotConfirmed = Box<dyn std::error::Error + Send + Sync>;

/// Confirms, when asked, that the run may go on; `Err` says why not.
pub trait RunGuard: Send + Sync {
    fn confirm(&self) -> BoxFuture<'_, Result<(), NotConfirmed>>;
}

/// A [`RunGuard`] in [`super::RunOptions`].
#[derive(Clone)]
pub struct Guard(pub Arc<dyn RunGuard>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}
