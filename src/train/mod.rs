//! Training: loss, optimiser step, schedules, data loading, checkpoints.

pub mod checkpoint;
pub mod data;
pub mod loss;
pub mod model;
pub mod optim;
pub mod run;
pub mod step;
