//! The stamp pool: proof-of-work checks run here, on blocking threads, never in an actor.
//!
//! Capacity is the admission limit: when every permit is taken, new stamped work is refused at
//! once (`Busy`, which callers report as `rate_limited`) instead of queueing without bound.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::wire::stamp;

/// Shared by every group; cheap to clone.
#[derive(Clone, Debug)]
pub struct StampPool {
    permits: Arc<Semaphore>,
    capacity: usize,
}

/// The pool is full; try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stamp pool is full")]
pub struct Busy;

impl StampPool {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        StampPool { permits: Arc::new(Semaphore::new(capacity)), capacity }
    }

    /// Work admitted and not yet finished.
    pub fn depth(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// The value (leading zero bits) of `stamp` over `material`'s workblock, or `Busy`.
    pub async fn value(&self, material: Vec<u8>, rounds: usize, stamp: Vec<u8>) -> Result<u32, Busy> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| Busy)?;
        crate::metrics::stamp_pool_depth(self.depth());
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            let wb = stamp::workblock(&material, rounds);
            stamp::value(&wb, &stamp)
        })
        .await;
        drop(permit);
        crate::metrics::stamp_validation(started.elapsed());
        crate::metrics::stamp_pool_depth(self.depth());
        // A panicked worker (it cannot, but) counts as a stamp worth nothing.
        Ok(out.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_pool_refuses_at_once() {
        let pool = StampPool::new(1);
        let held = pool.permits.clone().try_acquire_owned().expect("permit");
        assert_eq!(pool.value(vec![1], 25, vec![0; 32]).await, Err(Busy));
        drop(held);
        let stamp = stamp::generate(b"m", 25, 4).expect("stamp");
        assert!(pool.value(b"m".to_vec(), 25, stamp.to_vec()).await.expect("admitted") >= 4);
    }
}
