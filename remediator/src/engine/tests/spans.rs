//! A run's log lines carry its span (`run{cluster=..}`), and nothing else's do: the runtime
//! runs other tasks (the scheduler, the webhook, other clusters' runs) on the same thread
//! while a run waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::runs::fragmented;
use super::Scenario;

/// An event's message and the names of the spans it was logged in.
type Logged = (String, Vec<String>);

/// Every event logged, in order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Logged>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.map(|span| span.name().to_owned()).collect())
            .unwrap_or_default();
        if let Ok(mut seen) = self.0.lock() {
            seen.push((message.0, spans));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn another_tasks_log_lines_during_a_run_do_not_carry_the_runs_span() {
    // tracing registers a callsite once, on its first use, and caches whether anyone wants
    // it. A run here first (logging nowhere) registers the engine's callsites on this thread,
    // so none is still being registered by another test's thread when this test's recorder
    // asks every callsite again.
    Scenario::new(fragmented()).run().await.assert_safe();
    let recorder = Recorder::default();
    let subscriber = tracing_subscriber::registry().with(recorder.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let bystander = tokio::spawn(async {
        for _ in 0..10_000 {
            tracing::info!("bystander");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let ran = Scenario::new(fragmented()).run().await;
    bystander.abort();
    ran.assert_safe();
    let seen = recorder.0.lock().map(|s| s.clone()).unwrap_or_default();
    let in_run = seen.iter().filter(|(_, spans)| spans == &["run"]).count();
    assert!(in_run > 0, "no line of the run in its span: {seen:?}");
    let bystanders: Vec<_> = seen.iter().filter(|(m, _)| m == "bystander").collect();
    // The bystander logged while the run waited (its quiet periods last seconds).
    assert!(bystanders.len() > 2, "{bystanders:?}");
    assert!(
        bystanders.iter().all(|(_, spans)| spans.is_empty()),
        "{bystanders:?}"
    );
}
