//! One guest's host memory, counted against one cap.
//!
//! A store's linear memories (all of them, across every instance a component
//! creates) and the bytes its wasi-nn calls make the host hold for it
//! (tensors set as inputs, tensor resources, graphs loaded from bytes) draw
//! on the same [`Budget`]; `Limits::max_memory` is its size. The limiter
//! charges memory growth, the wasi-nn glue charges and refunds tensors and
//! graphs, and whichever would go over gets a clear error instead.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes one store may hold on the host, and what it holds now.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    memory: AtomicUsize,
    nn: AtomicUsize,
}

/// A charge that would put the store over its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "memory limit of {limit} bytes exceeded: {what} needs {requested} more bytes while the guest holds {memory} bytes of linear memory and {nn} bytes of wasi-nn tensors and graphs"
)]
pub struct OverBudget {
    pub limit: usize,
    pub what: &'static str,
    pub requested: usize,
    pub memory: usize,
    pub nn: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            memory: AtomicUsize::new(0),
            nn: AtomicUsize::new(0),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Linear-memory bytes charged so far.
    pub fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// wasi-nn bytes held now.
    pub fn nn(&self) -> usize {
        self.nn.load(Ordering::Relaxed)
    }

    fn over(&self, what: &'static str, requested: usize) -> OverBudget {
        OverBudget {
            limit: self.limit,
            what,
            requested,
            memory: self.memory(),
            nn: self.nn(),
        }
    }

    fn fits(&self, more: usize) -> bool {
        self.memory()
            .checked_add(self.nn())
            .and_then(|used| used.checked_add(more))
            .is_some_and(|total| total <= self.limit)
    }

    /// Charge linear-memory growth (a store is used by one thread at a
    /// time, so check-then-add does not race).
    pub fn grow_memory(&self, bytes: usize) -> Result<(), OverBudget> {
        if !self.fits(bytes) {
            return Err(self.over("growing linear memory", bytes));
        }
        self.memory.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Give back growth that was charged but did not happen.
    pub fn shrink_memory(&self, bytes: usize) {
        let _ = self
            .memory
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_sub(bytes))
            });
    }

    /// Charge bytes wasi-nn will hold for the guest.
    pub fn charge_nn(&self, what: &'static str, bytes: usize) -> Result<(), OverBudget> {
        if !self.fits(bytes) {
            return Err(self.over(what, bytes));
        }
        self.nn.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Refund bytes wasi-nn no longer holds.
    pub fn refund_nn(&self, bytes: usize) {
        let _ = self
            .nn
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_nn_share_one_cap() {
        let b = Budget::new(100);
        b.grow_memory(60).unwrap();
        b.charge_nn("an input", 30).unwrap();
        let e = b.charge_nn("an input", 20).unwrap_err();
        assert_eq!((e.memory, e.nn, e.requested), (60, 30, 20));
        assert!(b.grow_memory(11).is_err());
        b.refund_nn(30);
        b.grow_memory(40).unwrap();
        assert_eq!(b.memory(), 100);
        b.shrink_memory(1000);
        assert_eq!(b.memory(), 0);
        assert!(!b.fits(usize::MAX));
    }
}
