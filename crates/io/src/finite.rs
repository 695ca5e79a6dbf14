//! Non-finite values (NaN, ±infinity) in tensors read from disk.
//!
//! A checkpoint written by the trainer never holds one (a step with a non-finite loss or
//! gradient is not applied), and neither does a usable HF model; a file that does is damaged
//! or comes from a diverged run, and a model made from it would print NaN losses and garbage
//! text without failing. Loaders refuse it, naming the tensor ([`CheckpointError::NonFinite`],
//! and `switchyard-interop`'s import).
//!
//! The scan reads the tensor's storage in place (no copy), in chunks whose test is
//! branch-free so the compiler vectorises it; it costs about as much as reading the file.
//!
//! [`CheckpointError::NonFinite`]: crate::CheckpointError::NonFinite

use candle_core::{CpuStorage, Storage, Tensor};

/// Where a tensor's non-finite values are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    /// How many values are NaN or infinite.
    pub count: usize,
    /// Flat (row-major) index of the first.
    pub first_index: usize,
    /// Its value (NaN, inf or -inf).
    pub first: f64,
}

/// Values scanned per branch-free block.
const CHUNK: usize = 4096;

/// The non-finite values of `t`, if any. Integer tensors have none; tensors not on the CPU
/// are copied there first.
pub fn non_finite(t: &Tensor) -> candle_core::Result<Option<NonFinite>> {
    let t = if t.device().is_cpu() {
        t.contiguous()?
    } else {
        t.to_device(&candle_core::Device::Cpu)?
    };
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        unreachable!("the tensor was moved to the CPU above")
    };
    let (start, end) = layout
        .contiguous_offsets()
        .expect("the tensor was made contiguous above");
    Ok(match cpu {
        CpuStorage::F32(v) => scan(&v[start..end], |x| !x.is_finite(), |x| x as f64),
        CpuStorage::F64(v) => scan(&v[start..end], |x| !x.is_finite(), |x| x),
        // exponent bits all ones: infinity or NaN
        CpuStorage::F16(v) => scan(
            &v[start..end],
            |x| x.to_bits() & 0x7c00 == 0x7c00,
            |x| x.to_f64(),
        ),
        CpuStorage::BF16(v) => scan(
            &v[start..end],
            |x| x.to_bits() & 0x7f80 == 0x7f80,
            |x| x.to_f64(),
        ),
        _ => None,
    })
}

fn scan<T: Copy>(v: &[T], bad: impl Fn(T) -> bool, value: impl Fn(T) -> f64) -> Option<NonFinite> {
    let mut found: Option<NonFinite> = None;
    for (c, chunk) in v.chunks(CHUNK).enumerate() {
        let n: usize = chunk.iter().map(|&x| usize::from(bad(x))).sum();
        if n == 0 {
            continue;
        }
        match &mut found {
            Some(f) => f.count += n,
            None => {
                let i = chunk.iter().position(|&x| bad(x)).expect("n > 0");
                found = Some(NonFinite {
                    count: n,
                    first_index: c * CHUNK + i,
                    first: value(chunk[i]),
                });
            }
        }
    }
    found
}
