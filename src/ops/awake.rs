//! One computation on the rayon pool with the pool's other threads kept
//! awake while it runs.
//!
//! At batch 1 a forward pass hands the pool a few dozen parallel loops,
//! separated by short stretches on one thread. A rayon worker that finds
//! nothing to do goes to sleep after a few dozen rounds of looking, and
//! waking it again takes a system call on each side: timed on the second
//! halves of C384_B1's products (2-core Zen 4, a virtual machine), a quarter
//! of them started 25–45 µs after the first half, against under 3 µs for
//! all but the first when the worker stays awake. OpenMP runtimes and
//! onnxruntime's thread pool spin between parallel regions for the same
//! reason; rayon has no such setting, so here the other workers each run a
//! task that polls the pool for work (`rayon::yield_now`, which runs what it
//! finds) until the computation ends.
//!
//! A polling task holds its thread, which is safe only at the bottom of
//! that thread's stack: a worker that waits inside a job for its other half
//! may pick up a queued polling task, and had that task waited for the
//! computation to end while the computation needed that job, neither would
//! finish. Each task therefore also gives up after [`IDLE_LIMIT`] without
//! work (and at once on the computation's own thread), so the worst case is
//! a delay, never a hang, and a long stretch on one thread lets the others
//! sleep as usual.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a polling task looks for work in vain before it leaves its
/// thread to rayon's own sleep. Far longer than the gaps between a
/// forward pass's parallel loops (tens of µs to a few hundred), short
/// enough that a polling task nested where it blocks others costs little.
pub const IDLE_LIMIT: Duration = Duration::from_millis(1);

/// Runs `f` on the rayon pool (on the calling thread when it is a worker)
/// while every other worker polls for its parallel work, and returns its
/// result. A panic in `f` ends the polling and propagates.
pub fn with_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    let done = &done;
    rayon::scope(move |s| {
        let owner = rayon::current_thread_index();
        // Queued before `f` pushes any work: thieves take the oldest task
        // first, so these leave the queue before any part of `f` can.
        for _ in 1..rayon::current_num_threads() {
            s.spawn(move |_| poll_until(done, owner));
        }
        let _stop = Stop(done);
        f()
    })
}

/// Runs the pool's pending work as it appears until `done` is set or no
/// work has come for [`IDLE_LIMIT`]; returns at once on `owner`, the thread
/// running the computation (which reaches this task only while it waits).
fn poll_until(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle_since = Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > IDLE_LIMIT {
            return;
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Sets the flag when dropped: on return and on unwinding alike.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_result_and_runs_nested_work() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        use rayon::prelude::*;
        let sum: u64 = pool.install(|| with_pool_awake(|| (0..10_000u64).into_par_iter().map(|x| x * x).sum()));
        assert_eq!(sum, (0..10_000u64).map(|x| x * x).sum::<u64>());
        let outside =
            std::thread::spawn(|| with_pool_awake(|| (0..1000u64).into_par_iter().map(|x| x + 1).sum::<u64>()));
        assert_eq!(outside.join().unwrap(), 500_500);
    }

    #[test]
    fn a_panic_ends_the_polling_and_propagates() {
        let r = std::panic::catch_unwind(|| with_pool_awake(|| panic!("inside")));
        assert!(r.is_err());
        // The pool is usable afterwards (no task still holds a thread).
        assert_eq!(with_pool_awake(|| 7), 7);
    }

    #[test]
    fn concurrent_callers_finish() {
        use rayon::prelude::*;
        let handles: Vec<_> = (0..4)
            .map(|k| {
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| with_pool_awake(|| (0..20_000u64).into_par_iter().map(|x| x % (k + 2)).sum::<u64>()))
                        .sum::<u64>()
                })
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            let each: u64 = (0..20_000u64).map(|x| x % (k as u64 + 2)).sum();
            assert_eq!(h.join().unwrap(), 20 * each);
        }
    }
}
