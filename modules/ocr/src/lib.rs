//! Optical character recognition with the PP-OCRv4 networks, ported from
//! rapidocr-onnxruntime 1.4.4 (`rapidocr_onnxruntime/`, config.yaml defaults).
//!
//! Everything here is plain Rust so it can be tested natively; the networks
//! run behind [`pipeline::Engine`], which [`nn::NnEngine`] implements over
//! wasi-nn with `weft-guest` (for the `ocr` command and the `ocr-serve`
//! serving module).
//!
//! Boxes are rotated rectangles as in rapidocr: minimum-area rectangles of
//! the detector's connected regions, grown by the polygon `unclip` and cut out
//! with a perspective warp. The optional angle classifier of rapidocr is not
//! part of this port, so text is expected upright.

pub mod cli;
pub mod contours;
pub mod det;
pub mod geometry;
pub mod imgproc;
pub mod nn;
pub mod output;
pub mod pipeline;
pub mod rec;
