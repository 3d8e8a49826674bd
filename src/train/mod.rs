//! Training: loss, optimiser step, schedules, data loading, checkpoints, and
//! the collectives of data-parallel training.

pub mod checkpoint;
pub mod collective;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod grads;
pub mod history;
pub mod loss;
pub mod model;
pub mod optim;
pub mod run;
pub mod step;
