//! Training: loss, optimiser step, schedules, data loading, checkpoints.

pub mod loss;
pub mod model;
pub mod optim;
pub mod step;
