//! `containerd-shim-weft-v1`: containerd's `io.containerd.weft.v1` runtime.

use containerd_shim_wasm::shim::Cli;

fn main() {
    containerd_shim_weft::WeftShim::run(None);
}
