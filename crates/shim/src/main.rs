//! `containerd-shim-weft-v1`: containerd's `io.containerd.weft.v1` runtime.

fn main() {
    containerd_shim_weft::main();
}
