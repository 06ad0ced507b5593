//! The service's word that a run may still change the cluster. Replicas share one state
//! store; the one carrying a run asks it, right before each change (compaction, leadership
//! handover, each member's defragmentation, the disarm), whether the run is still its own. A
//! replica that lost the store to another (which then records the run interrupted and takes
//! over) is told no, and stops before changing anything more: never two replicas'
//! defragmentations at once.

use std::sync::Arc;

use futures::future::BoxFuture;

/// Confirms, when asked, that the run may go on; `Err` says why not.
pub trait RunGuard: Send + Sync {
    fn confirm(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A [`RunGuard`] in [`super::RunOptions`].
#[derive(Clone)]
pub struct Guard(pub Arc<dyn RunGuard>);

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}
