//! `weft-train`: the guest SDK for training modules.
//!
//! A training module builds its training step as a standard ONNX graph
//! (with `weft-autodiff`) and runs it through wasi-nn; this crate holds
//! the pieces every such module needs, so a custom one is a short `main`
//! (the bundled trainer, `modules/trainer`, is one):
//!
//! - [`model`]: layer networks ([`model::Layer`], [`model::Net`]) and the
//!   [`model::Arch`] interface a training loop drives: parameters, initial
//!   values, the step graph, the evaluation graph, the exported model;
//! - [`tune`]: fine-tuning an existing ONNX classifier ([`tune::Tune`]);
//! - [`data`]: data sets in memory from CSV, NPY or image folders, a
//!   deterministic generator for shuffling, and augmentation;
//! - [`checkpoint`]: safetensors checkpoints written atomically.
//!
//! It has no wasi-nn calls of its own (those are `weft-guest`'s), so it
//! also builds and tests natively.

pub mod checkpoint;
pub mod data;
pub mod model;
pub mod tune;

pub use weft_autodiff;
