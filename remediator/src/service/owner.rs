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
    /// Starts the thread `name` owning the value `init` makes on it, and answers with what
    /// else `init` returned once it has run. The caller's thread (an async one) is never held
    /// up meanwhile, and a value that fails half-way is dropped on the owner's thread too. The
    /// outer error is the thread not starting, the inner one `init`'s (or the thread dying
    /// during it).
    pub(super) async fn start<R, E>(
        name: &'static str,
        init: impl FnOnce() -> Result<(S, R), E> + Send + 'static,
    ) -> std::io::Result<Result<(Owner<S>, R), E>>
    where
        R: Send + 'static,
        E: From<OwnerGone> + Send + 'static,
    {
        let (jobs, received) = mpsc::channel::<Job<S>>();
        let (started, answered) = tokio::sync::oneshot::channel::<Result<R, E>>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || match init() {
                Ok((value, made)) => {
                    let _ = started.send(Ok(made));
                    serve(name, Some(value), received);
                }
                Err(err) => {
                    let _ = started.send(Err(err));
                }
            })?;
        Ok(match answered.await {
            Ok(Ok(made)) => Ok((Owner { name, jobs }, made)),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(E::from(OwnerGone(name))),
        })
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

/// Runs every job on `value`, in order, until every sender is gone.
fn serve<S>(name: &'static str, mut value: Option<S>, received: mpsc::Receiver<Job<S>>) {
    for job in received {
        // A job that panics loses its own answer (the caller sees OwnerGone for it), not the
        // thread: the value holds only committed state.
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut value)));
        if ran.is_err() {
            tracing::error!(thread = name, "a job panicked; carrying on");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_thread_and_a_panic_loses_only_its_answer() {
        let started = Owner::start("test-owner", || Ok::<_, OwnerGone>((Vec::<u32>::new(), ())));
        let (owner, ()) = started.await.unwrap().unwrap();
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

    /// The value is made on the owner's thread while the caller's runtime (one thread) goes
    /// on with its other tasks: a standby taking over still answers while the store opens.
    #[tokio::test(flavor = "current_thread")]
    async fn start_makes_the_value_on_the_owner_thread_without_holding_up_the_caller() {
        let (ticked, ticks) = std::sync::mpsc::channel::<()>();
        let ticker = tokio::spawn(async move {
            let _ = ticked.send(());
        });
        let started = Owner::start("test-start", move || -> Result<_, OwnerGone> {
            // Waits for a task of the caller's runtime: only possible if that runtime runs.
            let ran = ticks
                .recv_timeout(std::time::Duration::from_secs(10))
                .is_ok();
            let thread = std::thread::current().name().map(str::to_string);
            Ok((vec![1u32], (ran, thread)))
        })
        .await
        .unwrap();
        let (owner, (ticker_ran, thread)) = started.unwrap();
        ticker.await.unwrap();
        assert!(
            ticker_ran,
            "the caller's runtime was held up while the value was made"
        );
        assert_eq!(thread.as_deref(), Some("test-start"));
        assert_eq!(owner.call(|v| v.clone()).await, Ok(vec![1]));
    }

    #[tokio::test]
    async fn a_value_start_cannot_make_is_the_callers_error() {
        type Made = Result<(Vec<u32>, ()), OwnerGone>;
        let failed = Owner::start("test-start-fails", || -> Made { Err(OwnerGone("made up")) });
        assert_eq!(failed.await.unwrap().err(), Some(OwnerGone("made up")));
        let panicked = Owner::start("test-start-panics", || -> Made { panic!("boom") });
        assert_eq!(
            panicked.await.unwrap().err(),
            Some(OwnerGone("test-start-panics"))
        );
    }
}
