//! Export to ONNX: a model as a graph of standard operators that
//! onnxruntime, TensorRT and other runtimes read ([`export`]), written with
//! prost messages of ONNX's schema ([`proto`]) through a small graph
//! builder ([`graph`]).

pub mod export;
pub mod graph;
pub mod proto;

pub use export::{export, OnnxInput, OPSETS};
