//! Progress of long loops, reported through a small interface so that library
//! code does not depend on how the command line draws it.

/// One progress bar: a known number of units, advanced as they are done
/// (from any thread).
pub trait Progress: Send + Sync {
    /// Advances by `n` units.
    fn inc(&self, n: u64);
    /// Replaces the text shown beside the bar.
    fn message(&self, text: String);
    /// Removes the bar.
    fn finish(&self);
}

/// Makes progress bars.
pub trait Reporter {
    fn bar(&self, len: u64, what: &str) -> Box<dyn Progress>;
}

/// Reports nothing (other ranks of a distributed job, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {
    fn inc(&self, _: u64) {}
    fn message(&self, _: String) {}
    fn finish(&self) {}
}

impl Reporter for Silent {
    fn bar(&self, _: u64, _: &str) -> Box<dyn Progress> {
        Box::new(Silent)
    }
}
