//! The bounded pool that runs every piece of blocking work of a request: unpacking, zipping,
//! hashing, and the file I/O around them.
//!
//! A semaphore bounds how many packages are built at once (each can use up to
//! `max_unpacked_bytes` of temp space and one core per thread), and a request that cannot get a
//! worker within the queue timeout gets a quick 503 instead of piling up. The permit moves into
//! the blocking task, so a worker stays counted until its work really ends, even when the
//! request that started it was dropped (timeout, client gone): the work itself checks the
//! request's cancellation flag (`package::CancelFlag`) at every stage, before each read of the
//! input, each step of the walk, each 25 ms poll of a `git` fetch and each entry and buffer of
//! the pack, so a dropped request frees its worker within one check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tracing::Span;

/// Why blocking work did not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No worker was free within the queue timeout.
    #[error("all {workers} workers stayed busy for {waited:?}")]
    Busy {
        /// Pool size.
        workers: usize,
        /// How long the request waited.
        waited: Duration,
    },
    /// The work panicked.
    #[error("blocking work panicked")]
    Panicked,
}

/// A semaphore-bounded `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
    workers: usize,
    queue_timeout: Duration,
}

impl BlockingPool {
    /// A pool of `workers` slots; callers wait at most `queue_timeout` for one.
    pub fn new(workers: usize, queue_timeout: Duration) -> Self {
        Self { permits: Arc::new(Semaphore::new(workers)), workers, queue_timeout }
    }

    /// Runs `work` on tokio's blocking threads once a slot is free, inside the caller's span.
    pub async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let permit = tokio::time::timeout(self.queue_timeout, Arc::clone(&self.permits).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(PoolError::Busy { workers: self.workers, waited: started.elapsed() })?;
        metrics::histogram!("blocking_pool_wait_seconds").record(started.elapsed().as_secs_f64());
        let span = Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(work)
        })
        .await
        .map_err(|_| PoolError::Panicked)
    }

    /// Slots in use right now.
    pub fn busy(&self) -> usize {
        self.workers - self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_answers_busy_after_the_queue_timeout() {
        let pool = BlockingPool::new(1, Duration::from_millis(50));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || hold_rx.recv()).await })
        };
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let second = pool.run(|| 1).await;
        assert!(matches!(second, Err(PoolError::Busy { workers: 1, .. })), "{second:?}");
        hold_tx.send(()).expect("release");
        assert!(running.await.expect("join").is_ok());
        assert_eq!(pool.run(|| 2).await.expect("a free slot again"), 2);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_not_a_crash() {
        let pool = BlockingPool::new(1, Duration::from_secs(1));
        let r: Result<(), _> = pool.run(|| panic!("boom")).await;
        assert!(matches!(r, Err(PoolError::Panicked)));
        assert_eq!(pool.run(|| 3).await.expect("the slot was released"), 3);
    }
}
