//! A memory budget shared by concurrent users: bytes are reserved before they are
//! held and given back when the reservation is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::telemetry::metrics::{Registry, Sampled, Unit};

/// At most `limit` bytes held at once, over every reservation.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes`, or nothing when they do not fit beside what is held.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        };
        reservation.grow(bytes).then_some(reservation)
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Registers two gauges: `name` (bytes held, `help`) and `name_limit` (the
    /// limit, `limit_help`), both in bytes.
    pub fn register_metrics(
        self: &Arc<Self>,
        registry: &mut Registry,
        [name, limit_name]: [&'static str; 2],
        [help, limit_help]: [&'static str; 2],
    ) {
        let budget = Arc::clone(self);
        Sampled::gauge(name, help, Some(Unit::Bytes), move || budget.used() as u64)
            .register(registry);
        let limit = self.limit as u64;
        Sampled::gauge(limit_name, limit_help, Some(Unit::Bytes), move || limit).register(registry);
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes held from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `more` bytes on top; false (and nothing reserved) when they do not fit.
    pub fn grow(&mut self, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        let taken = self.budget.take(more);
        if taken {
            self.bytes += more;
        }
        taken
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Joins `other` into this reservation (both from the same budget).
    pub fn absorb(&mut self, mut other: Reservation) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget));
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_under_the_limit_and_are_given_back() {
        let budget = MemoryBudget::new(100);
        let mut first = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none());
        let second = budget.try_reserve(40).unwrap();
        assert_eq!(budget.used(), 100);
        assert!(!first.grow(1));
        drop(second);
        assert!(first.grow(30));
        first.shrink_to(10);
        assert_eq!(budget.used(), 10);
        let mut third = budget.try_reserve(5).unwrap();
        third.absorb(first);
        assert_eq!((third.bytes(), budget.used()), (15, 15));
        drop(third);
        assert_eq!(budget.used(), 0);
        assert!(budget.try_reserve(101).is_none());
    }
}
