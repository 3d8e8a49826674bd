//! The NeXt-TDNN network (see docs/MODEL.md, 'Overview').

pub mod block;
pub mod init;
pub mod layers;
pub mod mask;
pub mod net;
pub mod pooling;
pub mod precision;

pub use mask::FrameMask;
pub use net::{min_frames, value_count, NextTdnn, Trace};
pub use precision::Precision;
