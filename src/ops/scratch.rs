//! Working buffers of the fused CPU operations, kept per thread between calls.
//!
//! The operations' temporaries (a block's normalised input, its `[B·T, 4C]`
//! activations recomputed for the backward, gradients on their way through)
//! are each written in full before they are read. A fresh `Vec` would be
//! zero-filled for nothing: at C128, batch 32, that was about 600 MB of
//! memset per training step. A [`Scratch`] is instead taken from this
//! thread's few most recent buffers and handed back when dropped, holding
//! whatever floats its last user left. The allocator cannot do this: it
//! has to hand out memory that is either uninitialised, which safe code may
//! not read, or zeroed.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// How many buffers a thread keeps: a backward holds three at once.
const KEPT: usize = 4;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `n` floats of unspecified (but initialised) value, for a buffer that its
/// user writes in full before reading it.
pub fn scratch(n: usize) -> Scratch {
    let reused = FREE.with(|free| {
        let mut free = free.borrow_mut();
        // The smallest kept buffer that is large enough.
        let best = (0..free.len()).filter(|&i| free[i].len() >= n).min_by_key(|&i| free[i].len());
        best.map(|i| free.swap_remove(i))
    });
    Scratch { buf: reused.unwrap_or_else(|| super::host_gemm::zeros(n)), n }
}

/// The first `n` floats of a buffer from [`scratch`]. The whole buffer goes
/// back to its thread's buffers when dropped; the smallest is let go when
/// there are more than [`KEPT`].
pub struct Scratch {
    buf: Vec<f32>,
    n: usize,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            return;
        }
        // Never fails but while the thread exits; the buffer is then freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            free.push(buf);
            if free.len() > KEPT {
                let smallest = (0..free.len()).min_by_key(|&i| free[i].len()).expect("not empty");
                free.swap_remove(smallest);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.n]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_and_sized_as_asked() {
        let mut a = scratch(1000);
        assert_eq!(a.len(), 1000);
        a[999] = 7.0;
        let p = a.as_ptr();
        drop(a);
        let b = scratch(500);
        assert_eq!(b.len(), 500);
        assert_eq!(b.as_ptr(), p, "the kept buffer is handed out again");
        let c = scratch(2000);
        assert_eq!(c.len(), 2000);
        assert!(c.iter().all(|&v| v == 0.0), "a new buffer starts zeroed");
    }
}
