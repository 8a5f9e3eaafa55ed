//! The server's lifecycle: one cancellation token reaches every background loop, one tracker
//! holds the work that shutdown waits for, and a loop that dies before shutdown is restarted.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first pause before a dead loop is started again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A loop that ran this long before it died starts again from the first pause.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Shared by everything that runs in the background; cloning shares the token and the tracker.
#[derive(Clone, Default)]
pub struct Lifecycle {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when shutdown begins; loops select on it.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Whether shutdown has begun: new inbound work is refused from then on.
    pub fn stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs a background loop until shutdown. `make` builds the loop from the token; when the
    /// loop returns or panics before shutdown, that is logged and counted, and `make` builds it
    /// again after a back-off that doubles while the loop keeps dying young.
    pub fn supervise<F, Fut>(&self, task: &'static str, make: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(restarting(task, self.token.clone(), make));
    }

    /// Like [`Lifecycle::supervise`], for a loop that must outlive the drain (the router, which
    /// carries the proofs that work in progress waits for): it runs until `stop`, and shutdown
    /// does not wait for it.
    pub fn supervise_until<F, Fut>(&self, task: &'static str, stop: CancellationToken, make: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(restarting(task, stop, make));
    }

    /// Spawns work that shutdown waits for: a request being answered, a post being stored.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// Wraps a future so that shutdown waits for it too (for futures that actix runs).
    pub fn track<F: Future>(&self, work: F) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.tasks.track_future(work)
    }

    /// Cancels every loop and waits for the tracked work, at most `grace`. Returns whether
    /// everything finished in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }

    /// Tracked work still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

/// Runs `make`'s loops one after another until `token` is cancelled; see [`Lifecycle::supervise`].
async fn restarting<F, Fut>(task: &'static str, token: CancellationToken, mut make: F)
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        // Its own task, so that a panic ends this run and not the supervision.
        let outcome = tokio::spawn(make(token.clone())).await;
        if token.is_cancelled() {
            return;
        }
        match outcome {
            Err(err) if err.is_panic() => tracing::error!(task, "background loop panicked; restarting it"),
            _ => tracing::error!(task, "background loop ended before shutdown; restarting it"),
        }
        crate::metrics::task_restart(task);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_loop_that_dies_is_restarted_and_stops_at_shutdown() {
        let life = Lifecycle::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        life.supervise("test", move |token| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("run {n} dies");
                }
                token.cancelled().await;
            }
        });
        while runs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(life.shutdown(Duration::from_secs(5)).await, "the loop did not stop");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn shutdown_waits_for_tracked_work_only_up_to_the_grace() {
        let life = Lifecycle::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        life.spawn(async move {
            let _ = rx.await;
        });
        assert!(!life.shutdown(Duration::from_millis(50)).await, "shutdown did not wait");
        let _ = tx.send(());
        assert!(life.shutdown(Duration::from_secs(5)).await);
    }
}
