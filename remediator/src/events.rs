//! What a run reports while it happens: every step as it starts and ends, progress during
//! long steps, and warnings. The CLI prints them; the webhook service logs them.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::plan::Plan;
use crate::vocabulary::{MemberRef, StepKind, StepRecord};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Planned {
        plan: Box<Plan>,
    },
    Started {
        step: StepKind,
        member: Option<MemberRef>,
    },
    /// A long step still running: a 5-minute defragmentation must not look hung.
    Progress {
        step: StepKind,
        member: Option<MemberRef>,
        #[serde(serialize_with = "seconds")]
        elapsed: Duration,
        detail: String,
    },
    Finished {
        record: StepRecord,
    },
    Warning {
        message: String,
    },
    /// A decision the run made on its own (the leader's fate under `leader: auto`).
    Decided {
        message: String,
    },
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Where a run sends its events; `Events::default()` sends them nowhere.
#[derive(Debug, Clone, Default)]
pub struct Events(Option<mpsc::UnboundedSender<Event>>);

impl Events {
    /// Events and the receiving end to read them from.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Events(Some(sender)), receiver)
    }

    pub(crate) fn emit(&self, event: Event) {
        if let Some(sender) = &self.0 {
            // A receiver that went away only stops the printing, never the run.
            let _ = sender.send(event);
        }
    }
}
