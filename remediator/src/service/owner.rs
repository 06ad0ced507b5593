//! One thread that owns a value and does everything to it, in order, for whoever asks: the
//! service's state (its SQLite connection included) lives there, so no database call ever
//! runs on an async thread, where a slow disk or a busy lock would stall the webhook,
//! `/metrics` and the engine's timers.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

type Job<S> = Box<dyn FnOnce(&mut Option<S>) + Send>;

/// The owner thread is gone: it panicked outside a job, or the process is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} thread has stopped")]
pub struct OwnerGone(pub &'static str);

/// A handle to the thread owning an `S`. [`Owner::close`] drops the value (releasing what it
/// holds, such as a file lock) once what was asked before is done; dropping every handle ends
/// the thread the same way, but without waiting for it.
pub(super) struct Owner<S> {
    name: &'static str,
    jobs: mpsc::Sender<Job<S>>,
}

impl<S> Clone for Owner<S> {
    fn clone(&self) -> Self {
        Owner {
            name: self.name,
            jobs: self.jobs.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Owner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner").field("name", &self.name).finish()
    }
}

impl<S: Send + 'static> Owner<S> {
    /// Starts the thread `name` owning `value`.
    pub(super) fn spawn(name: &'static str, value: S) -> std::io::Result<Owner<S>> {
        let (jobs, received) = mpsc::channel::<Job<S>>();
        let mut value = Some(value);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for job in received {
                    // A job that panics loses its own answer (the caller sees OwnerGone for
                    // it), not the thread: the value holds only committed state.
                    let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut value)));
                    if ran.is_err() {
                        tracing::error!(thread = name, "a job panicked; carrying on");
                    }
                }
            })?;
        Ok(Owner { name, jobs })
    }

    /// Runs `work` on the owner thread and waits for its answer without blocking the
    /// async thread.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut S) -> T + Send + 'static,
    ) -> Result<T, OwnerGone> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |value| {
                if let Some(value) = value {
                    let _ = answer.send(work(value));
                }
            }))
            .map_err(|_| OwnerGone(self.name))?;
        answered.await.map_err(|_| OwnerGone(self.name))
    }

    /// Drops the value after every job sent before, and waits until it is dropped. Later
    /// calls get [`OwnerGone`].
    pub(super) async fn close(&self) {
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        let sent = self.jobs.send(Box::new(move |value| {
            drop(value.take());
            drop(answer);
        }));
        if sent.is_ok() {
            let _ = answered.await;
        }
    }

    /// Runs `work` on the owner thread without waiting for it (in order with every other
    /// job).
    pub(super) fn tell(&self, work: impl FnOnce(&mut S) + Send + 'static) {
        let _ = self.jobs.send(Box::new(move |value| {
            if let Some(value) = value {
                work(value)
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_and_a_panic_loses_only_its_answer() {
        let owner = Owner::spawn("test-owner", Vec::<u32>::new()).unwrap();
        owner.tell(|v| v.push(1));
        let thread = owner
            .call(|v| {
                v.push(2);
                std::thread::current().name().map(str::to_string)
            })
            .await;
        assert_eq!(thread, Ok(Some("test-owner".to_string())));
        let panicked = owner.call(|_| -> u32 { panic!("boom") }).await;
        assert_eq!(panicked, Err(OwnerGone("test-owner")));
        assert_eq!(owner.call(|v| v.clone()).await, Ok(vec![1, 2]));
        owner.close().await;
        assert_eq!(owner.call(|v| v.len()).await, Err(OwnerGone("test-owner")));
    }
}
