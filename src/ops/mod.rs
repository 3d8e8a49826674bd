//! Custom tensor operations, below the model: each has our CubeCL kernels
//! (`shaders/`) on the CubeCL backends, Burn's generic path elsewhere, and an
//! autodiff backward.

pub mod depthwise;
#[cfg(feature = "kernels")]
pub mod frontend;
pub mod gelu;

use std::sync::atomic::{AtomicBool, Ordering};

static GENERIC: AtomicBool = AtomicBool::new(false);

/// Makes every operation here take Burn's generic path for the rest of the
/// process (`bench --ops generic`, for side-by-side timings).
pub fn set_generic(generic: bool) {
    GENERIC.store(generic, Ordering::Relaxed);
}

pub(crate) fn generic() -> bool {
    GENERIC.load(Ordering::Relaxed)
}
