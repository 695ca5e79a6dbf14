//! [`Recycling`]: an opt-in global allocator wrapper that keeps a few freed large blocks and
//! hands them back to allocations of the same size.
//!
//! Why: every training step allocates the same large buffers — above all the gradient of a
//! layer's packed expert weights, plus candle's own temporaries of that size
//! — and frees them when the step is done. The system allocator returns such blocks to the
//! kernel (`munmap`), so the next step gets fresh pages that the kernel must fault in and zero
//! one by one (at large E, a large share of the dispatch kernels' time; see docs/PERFORMANCE.md).
//! A recycled block is already mapped: `alloc` returns it as is, `alloc_zeroed` clears it with
//! a user-space `memset`.
//!
//! Safety of the reuse: a block is cached only when its owner frees it (`dealloc`), so no
//! live tensor can point into a block that is handed out again.
//!
//! Use it in a binary (a library cannot choose the allocator):
//! ```no_run
//! use switchyard_kernels::alloc::Recycling;
//! #[global_allocator]
//! static ALLOC: Recycling<std::alloc::System> = Recycling::new(std::alloc::System);
//! ```
//! Memory cost: up to [`Recycling::MAX_CACHED`] bytes of freed blocks stay mapped between
//! steps (they are reused by the next step's allocations of the same sizes).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

const SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Slot {
    /// 0: empty.
    ptr: usize,
    size: usize,
    align: usize,
}

const EMPTY: Slot = Slot {
    ptr: 0,
    size: 0,
    align: 0,
};

/// The cache: its slots and the slot the next eviction frees (round robin).
struct Slots {
    s: [Slot; SLOTS],
    next: usize,
}

/// A global allocator that caches up to 64 freed blocks of at least
/// [`Recycling::MIN_BYTES`] (at most [`Recycling::MAX_CACHED`] bytes in all) for reuse by
/// allocations of exactly the same size and alignment; everything else goes straight to
/// `inner`. When every slot is taken, a newly freed block evicts the oldest-filled slot.
pub struct Recycling<A> {
    inner: A,
    slots: Mutex<Slots>,
    enabled: AtomicBool,
    min_bytes: AtomicUsize,
}

impl<A: GlobalAlloc> Recycling<A> {
    /// Smallest block cached by default: 256 KiB. glibc serves blocks this size from fresh
    /// `mmap`s or from a heap top it trims again, so each step's `[T, E]` routing tensors
    /// (1 MiB at T=4096, E=64) would be faulted in anew on every step.
    pub const MIN_BYTES: usize = 256 << 10;
    /// Most bytes held in the cache.
    pub const MAX_CACHED: usize = 6 << 30;

    pub const fn new(inner: A) -> Self {
        Self {
            inner,
            slots: Mutex::new(Slots {
                s: [EMPTY; SLOTS],
                next: 0,
            }),
            enabled: AtomicBool::new(true),
            min_bytes: AtomicUsize::new(Self::MIN_BYTES),
        }
    }

    /// Turns caching on or off. Off, every call goes to `inner`, and blocks already cached
    /// stay there (for A/B runs that switch back and forth) until [`Recycling::flush`].
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Smallest block cached from now on (default [`Recycling::MIN_BYTES`]), for A/B runs.
    pub fn set_min_bytes(&self, bytes: usize) {
        self.min_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    /// Returns every cached block to `inner`.
    pub fn flush(&self) {
        let taken = {
            let mut slots = self.lock();
            std::mem::replace(&mut slots.s, [EMPTY; SLOTS])
        };
        for s in taken.iter() {
            self.release(*s);
        }
    }

    /// Gives a block taken out of the cache back to `inner` (nothing for an empty slot).
    fn release(&self, s: Slot) {
        if s.ptr != 0 {
            // SAFETY: the block came from `inner` with this size and alignment and nobody
            // else holds it (it was freed to the cache and has left it).
            unsafe {
                self.inner.dealloc(
                    s.ptr as *mut u8,
                    Layout::from_size_align_unchecked(s.size, s.align),
                )
            };
        }
    }

    /// Bytes held in the cache now.
    pub fn cached_bytes(&self) -> usize {
        self.lock().s.iter().map(|s| s.size).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn caches(&self, l: Layout) -> bool {
        l.size() >= self.min_bytes.load(Ordering::Relaxed) && self.enabled.load(Ordering::Relaxed)
    }

    fn take(&self, l: Layout) -> *mut u8 {
        if !self.caches(l) {
            return std::ptr::null_mut();
        }
        let mut slots = self.lock();
        match slots
            .s
            .iter_mut()
            .find(|s| s.ptr != 0 && s.size == l.size() && s.align == l.align())
        {
            Some(s) => std::mem::replace(s, EMPTY).ptr as *mut u8,
            None => std::ptr::null_mut(),
        }
    }

    /// Whether the block was kept.
    fn keep(&self, p: *mut u8, l: Layout) -> bool {
        if !self.caches(l) {
            return false;
        }
        let new = Slot {
            ptr: p as usize,
            size: l.size(),
            align: l.align(),
        };
        let evicted = {
            let mut slots = self.lock();
            let cached: usize = slots.s.iter().map(|s| s.size).sum();
            if cached + l.size() > Self::MAX_CACHED {
                return false;
            }
            match slots.s.iter_mut().find(|s| s.ptr == 0) {
                Some(s) => {
                    *s = new;
                    EMPTY
                }
                None => {
                    let at = slots.next;
                    slots.next = (at + 1) % SLOTS;
                    std::mem::replace(&mut slots.s[at], new)
                }
            }
        };
        self.release(evicted);
        true
    }
}

// SAFETY: blocks come from `inner` and go back to it with their original layout; a cached
// block is handed out again only after its owner freed it, to one caller at a time (under
// the mutex), with the same size and alignment it was allocated with.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Recycling<A> {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = self.take(l);
        if p.is_null() {
            self.inner.alloc(l)
        } else {
            p
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = self.take(l);
        if p.is_null() {
            self.inner.alloc_zeroed(l)
        } else {
            std::ptr::write_bytes(p, 0, l.size());
            p
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if !self.keep(p, l) {
            self.inner.dealloc(p, l);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        // every block, cached before or not, came from `inner`
        self.inner.realloc(p, l, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn reuses_a_freed_block_of_the_same_size_zeroed_on_request() {
        let r = Recycling::new(System);
        let l = Layout::from_size_align(Recycling::<System>::MIN_BYTES, 64).unwrap();
        unsafe {
            let a = r.alloc(l);
            a.write_bytes(7, l.size());
            r.dealloc(a, l);
            assert_eq!(r.cached_bytes(), l.size());
            let b = r.alloc_zeroed(l);
            assert_eq!(a, b, "the cached block comes back");
            assert!(std::slice::from_raw_parts(b, l.size())
                .iter()
                .all(|&x| x == 0));
            assert_eq!(r.cached_bytes(), 0);
            // another size does not take it
            r.dealloc(b, l);
            let l2 = Layout::from_size_align(l.size() + 4096, 64).unwrap();
            let c = r.alloc(l2);
            assert_ne!(c, b);
            r.dealloc(c, l2);
            assert_eq!(r.cached_bytes(), l.size() + l2.size());
            r.set_enabled(false);
            let e = r.alloc(l);
            assert_ne!(e, b, "off: nothing is handed out");
            r.dealloc(e, l);
            assert_eq!(r.cached_bytes(), l.size() + l2.size());
            r.flush();
            assert_eq!(r.cached_bytes(), 0);
            // small blocks are never cached
            let s = Layout::from_size_align(4096, 8).unwrap();
            r.set_enabled(true);
            let d = r.alloc(s);
            r.dealloc(d, s);
            assert_eq!(r.cached_bytes(), 0);
        }
    }

    #[test]
    fn a_full_cache_evicts_its_oldest_block_and_honours_the_threshold() {
        let r = Recycling::new(System);
        let min = Recycling::<System>::MIN_BYTES;
        let layouts: Vec<Layout> = (0..SLOTS + 1)
            .map(|i| Layout::from_size_align(min + i * 4096, 64).unwrap())
            .collect();
        unsafe {
            let ptrs: Vec<*mut u8> = layouts.iter().map(|&l| r.alloc(l)).collect();
            for (&p, &l) in ptrs.iter().zip(&layouts) {
                r.dealloc(p, l);
            }
            // the first block was evicted by the last; every other is still there
            let total: usize = layouts[1..].iter().map(|l| l.size()).sum();
            assert_eq!(r.cached_bytes(), total);
            let again = r.alloc(layouts[SLOTS]);
            assert_eq!(again, ptrs[SLOTS]);
            r.dealloc(again, layouts[SLOTS]);
            r.flush();
            assert_eq!(r.cached_bytes(), 0);
            // a raised threshold leaves smaller blocks alone
            r.set_min_bytes(2 * min);
            let p = r.alloc(layouts[0]);
            r.dealloc(p, layouts[0]);
            assert_eq!(r.cached_bytes(), 0);
        }
    }
}
