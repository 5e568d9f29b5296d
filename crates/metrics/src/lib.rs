//! Training metrics for people and tools.
//!
//! - [`EventWriter`]: TensorBoard event files (`events.out.tfevents.*`),
//!   the TFRecord stream of `Event` protobufs TensorBoard, TensorFlow's
//!   `summary_iterator` and every tool of that ecosystem read.
//! - [`plot_png`]: one PNG with the loss per step and the accuracy per
//!   epoch, for a glance without a server.

mod plot;
mod tensorboard;

pub use plot::{Series, plot_png};
pub use tensorboard::EventWriter;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("plotting: {0}")]
    Plot(String),
}
