//! The one way this program takes a lock: a `Mutex` whose poisoning is ignored.
//!
//! Poisoning is ignored because no writer under these locks can leave its data half-changed
//! (each replaces a whole value: a slot's state, an upstream's health, a peer's count, an entry
//! of the recent requests), and one request that panicked must not fail every later one.
//! Nothing else lives here; tiny_http (vendored, its own crate) keeps its own copy.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// Wait for the lock, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The lock if no other thread holds it now, poisoned or not.
pub fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A lock poisoned by a panicking thread still gives its value; a held one is not waited for.
    #[test]
    fn poisoning_is_ignored() {
        let mutex = Arc::new(Mutex::new(1));
        let poisoner = Arc::clone(&mutex);
        let panicked = std::thread::spawn(move || {
            let mut guard = poisoner.lock().unwrap();
            *guard = 2;
            panic!("poison the lock");
        })
        .join();
        assert!(panicked.is_err() && mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 2);
        assert_eq!(try_lock(&mutex).map(|g| *g), Some(2));
        let held = lock(&mutex);
        assert!(try_lock(&mutex).is_none());
        drop(held);
    }
}
