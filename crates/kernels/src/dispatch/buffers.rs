//! Memory of the dispatch kernels: per-thread workspaces, the process-wide pool of large
//! buffers (the saved pre-activations), zeroed results on transparent huge pages, and the
//! expert-weight gradient written in disjoint ranges without zeroing it first.

use std::ops::{Deref, DerefMut};

use super::waves::up_width;
use super::{KFloat, POOL_MAX};
use crate::layout::ExpertLayout;
use crate::plan::DispatchPlan;

/// Per-thread scratch: gathered rows and activations of the job at hand.
#[derive(Default)]
pub struct Workspace<T> {
    pub(super) xe: Vec<T>,
    pub(super) a: Vec<T>,
    /// A weight-gradient job's block of `[dU | dV]` or `w ⊙ a`, packed for the microkernel.
    pub(super) apack: Vec<T>,
    /// A weight-gradient job's result block, when it is streamed to the gradient afterwards
    /// (see [`STREAM_MIN_BYTES`]).
    pub(super) wblock: Vec<T>,
}

pub(super) fn grown<T: KFloat>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::zero());
    }
    &mut v[..len]
}

/// A large buffer borrowed from the pool; its contents start stale, so every user writes
/// each element before reading it. Returns to the pool when dropped.
pub struct PoolBuf<T: KFloat>(Vec<T>);

impl<T: KFloat> PoolBuf<T> {
    pub(super) fn take(len: usize) -> Self {
        let mut pool = T::pool().lock().expect("buffer pool poisoned");
        // the smallest buffer that fits, else the largest (grown below)
        let pick = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
        let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        if v.len() >= len {
            v.truncate(len);
        } else {
            v.resize(len, T::zero());
        }
        Self(v)
    }
}

impl<T: KFloat> Drop for PoolBuf<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        if let Ok(mut pool) = T::pool().lock() {
            if pool.len() < POOL_MAX {
                pool.push(v);
            }
        }
    }
}

impl<T: KFloat> Deref for PoolBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: KFloat> DerefMut for PoolBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

/// Bytes held by the buffer pools between calls (per-thread workspaces not included).
pub fn pooled_bytes() -> usize {
    fn of<T: KFloat>() -> usize {
        T::pool().lock().map_or(0, |p| {
            p.iter()
                .map(|v| v.capacity() * std::mem::size_of::<T>())
                .sum()
        })
    }
    of::<f32>() + of::<f64>()
}

/// Frees the pooled buffers (for memory measurements that start cold).
pub fn clear_pool() {
    fn of<T: KFloat>() {
        if let Ok(mut p) = T::pool().lock() {
            p.clear();
        }
    }
    of::<f32>();
    of::<f64>();
}
/// Activations saved by the forward for the backward: per assignment, the row of
/// pre-activations `[u | v]` (`v` for SwiGLU only), each expert's block `[n_e, uw_e]` one
/// after the other (`uw_e` = [`up_width`]).
pub struct Saved<T: KFloat> {
    pub uv: PoolBuf<T>,
}
/// Splits `buf` into consecutive mutable chunks of the given lengths.
pub(super) fn split_lens<T>(mut buf: &mut [T], lens: impl Iterator<Item = usize>) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for len in lens {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(len);
        out.push(head);
        buf = tail;
    }
    out
}
pub(super) fn gather<T: KFloat>(src: &[T], d: usize, tokens: &[u32], dst: &mut [T]) {
    for (row, &t) in dst.chunks_exact_mut(d).zip(tokens) {
        row.copy_from_slice(&src[t as usize * d..(t as usize + 1) * d]);
    }
}
/// The smallest spare buffer of at least `len` elements, else a new empty one (which
/// `PackedB::new` allocates at its exact size).
pub(super) fn take_spare<T>(spare: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
    let best = (0..spare.len())
        .filter(|&i| spare[i].capacity() >= len)
        .min_by_key(|&i| spare[i].capacity());
    best.map(|i| spare.swap_remove(i)).unwrap_or_default()
}
/// A zeroed vector for a large result. Fresh memory is faulted in page by page as it is first
/// written; on Linux, ask for transparent huge pages so that costs one fault per 2 MiB.
pub(super) fn zeroed<T: KFloat>(len: usize, huge_pages: bool) -> Vec<T> {
    let v = vec![T::zero(); len];
    advise_huge(
        v.as_ptr() as *const u8,
        len * std::mem::size_of::<T>(),
        huge_pages,
    );
    v
}

/// `madvise(MADV_HUGEPAGE)` over the 2 MiB-aligned interior of a buffer (a hint; failures
/// are ignored).
fn advise_huge(ptr: *const u8, bytes: usize, huge_pages: bool) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < 2 * HUGE || !huge_pages {
            return;
        }
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_HUGEPAGE: i32 = 14;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the live allocation; MADV_HUGEPAGE changes no
            // contents, only how the kernel backs the pages.
            unsafe {
                madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes, huge_pages);
}
/// A buffer that jobs write in disjoint ranges.
pub(super) struct Disjoint<T>(*mut T, usize);
// SAFETY: jobs only touch ranges that no other job touches (see the call sites).
unsafe impl<T: Send> Send for Disjoint<T> {}
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    /// # Safety
    /// No two live slices from this buffer may overlap, and the range must be initialised.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn range(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr(start, len), len)
    }

    /// The start of a range, bounds-checked (for writes into memory not yet initialised).
    pub(super) fn ptr(&self, start: usize, len: usize) -> *mut T {
        assert!(start + len <= self.1, "disjoint range out of bounds");
        self.0.wrapping_add(start)
    }
}

/// The expert-weight gradient before it is complete: with packing, the weight rows of each
/// expert with rows are written (not added to) by the first row chunk's weight-gradient
/// products, so only biases and the parameters of experts without rows are zeroed first —
/// not the whole buffer (the largest buffer of a step at large E; `alloc::Recycling`
/// hands back used memory, which has to be cleared explicitly).
pub(super) struct GradBuf<T>(Vec<std::mem::MaybeUninit<T>>);

impl<T: KFloat> GradBuf<T> {
    /// `zero_all`: zero everything (the `gemm` path adds every chunk into the buffer).
    pub(super) fn new(
        layout: &ExpertLayout,
        plan: &DispatchPlan,
        zero_all: bool,
        huge_pages: bool,
    ) -> Self {
        let mut v = Vec::with_capacity(layout.total);
        // SAFETY: MaybeUninit needs no initialisation
        unsafe { v.set_len(layout.total) };
        advise_huge(
            v.as_ptr() as *const u8,
            layout.total * std::mem::size_of::<T>(),
            huge_pages,
        );
        let zero = |v: &mut [std::mem::MaybeUninit<T>]| {
            v.iter_mut().for_each(|x| {
                x.write(T::zero());
            })
        };
        if zero_all {
            zero(&mut v);
        } else {
            let d = layout.d_model;
            for (e, s) in layout.slots.iter().enumerate() {
                let (h, uw) = (s.spec.hidden, up_width(s));
                let mut parts = vec![(s.b1, h), (s.b2, d)];
                if plan.range(e).is_empty() {
                    parts.extend([(Some(s.w1), uw * d), (Some(s.w2t), h * d)]);
                }
                for (at, len) in parts {
                    if let Some(at) = at {
                        zero(&mut v[at..at + len]);
                    }
                }
            }
        }
        Self(v)
    }

    pub(super) fn disjoint(&mut self) -> Disjoint<T> {
        Disjoint(self.0.as_mut_ptr() as *mut T, self.0.len())
    }

    /// # Safety
    /// Every entry has been written.
    pub(super) unsafe fn assume_init(self) -> Vec<T> {
        let mut v = std::mem::ManuallyDrop::new(self.0);
        Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{backward, forward, plan_of};
    use crate::{ExpertLayout, ExpertSpec, KernelOptions};

    /// A layout that is not `ExpertLayout::new`'s (here: room left after the experts) gets
    /// a fully zeroed expert gradient, not just the biases and empty experts.
    #[test]
    fn an_unusual_layout_gets_a_zeroed_gradient() {
        let mut layout = ExpertLayout::new(32, &[ExpertSpec::swiglu(32); 2]);
        layout.total += 7;
        let plan = plan_of(&[300, 400]);
        let val = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7 + s) % 13) as f32 / 13.0 - 0.5)
                .collect()
        };
        let (x, w, p, gy) = (
            val(plan.num_tokens * 32, 1),
            val(plan.len(), 2),
            val(layout.total, 3),
            val(plan.num_tokens * 32, 4),
        );
        let opts = KernelOptions::default();
        for _ in 0..3 {
            // leave large values in freed memory of the gradient's size
            drop(vec![1e30f32; layout.total]);
            let (_, saved) = forward(&x, &w, &p, &layout, &plan, &opts);
            let g = backward(&x, &w, &p, &layout, &plan, &saved, &gy, &opts);
            assert_eq!(g.dp.len(), layout.total);
            assert!(g.dp[layout.total - 7..].iter().all(|&v| v == 0.0));
            assert!(g.dp.iter().all(|v| v.abs() < 1e6));
        }
    }
}
