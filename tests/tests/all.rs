//! Weft's end-to-end tests, one binary to keep link time down.

mod architecture;
mod conformance;
mod deploy;
mod guests;
mod nn;
mod ocr;
mod registry;
mod runtime;
mod serving;
