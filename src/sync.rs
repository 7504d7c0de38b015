//! The synchronisation facade: every atomic, cell and lock that two threads touch comes from
//! here, so that `--cfg loom` swaps the whole crate onto loom's model-checked versions.
//!
//! Nothing else in the crate may name `std::sync::atomic`, `std::cell::UnsafeCell` or
//! `std::sync::Mutex` directly (the loom models would silently stop covering it).
//!
//! `UnsafeCell` follows loom's API (`with` / `with_mut` closures) in both builds, so each
//! access to shared data is a place loom can check for a race.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `std::cell::UnsafeCell` with loom's closure API.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a shared raw pointer to the contents.
    #[allow(dead_code)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the contents.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Locks a mutex, treating poisoning as harmless: every critical section in this crate
/// leaves the protected map consistent before anything in it can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    #[cfg(loom)]
    {
        m.lock().unwrap()
    }
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Lets another thread run (a producer finishing a publish we wait for).
pub(crate) fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// A shared, atomically replaceable `Arc<T>`: readers never block and always see a whole
/// value, old or new. `arc-swap` in normal builds; a loom mutex under loom (arc-swap's
/// internals are not modelled), which keeps the same observable contract.
pub(crate) struct SwapCell<T> {
    #[cfg(not(loom))]
    inner: arc_swap::ArcSwap<T>,
    #[cfg(loom)]
    inner: Mutex<std::sync::Arc<T>>,
}

impl<T> SwapCell<T> {
    pub(crate) fn new(value: std::sync::Arc<T>) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: arc_swap::ArcSwap::new(value),
            #[cfg(loom)]
            inner: Mutex::new(value),
        }
    }

    /// Runs `f` on the current value. arc-swap's load is lock-free and wait-free for
    /// readers; its store/load pair gives Release/Acquire ordering, so a reader that sees
    /// a value sees everything written before it was stored.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&std::sync::Arc<T>) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(&self.inner.load())
        }
        #[cfg(loom)]
        {
            let current = std::sync::Arc::clone(&lock(&self.inner));
            f(&current)
        }
    }

    /// Replaces the value.
    pub(crate) fn store(&self, value: std::sync::Arc<T>) {
        #[cfg(not(loom))]
        self.inner.store(value);
        #[cfg(loom)]
        {
            *lock(&self.inner) = value;
        }
    }
}
