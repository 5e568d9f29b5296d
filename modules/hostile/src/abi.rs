//! The raw witx ABI of `wasi_ephemeral_nn`, declared with plain integers so
//! that any address (valid or not) can be passed.

#[link(wasm_import_module = "wasi_ephemeral_nn")]
unsafe extern "C" {
    pub fn load(
        builders_ptr: u32,
        builders_len: u32,
        encoding: u32,
        target: u32,
        graph_out: u32,
    ) -> u32;
    pub fn load_by_name(name_ptr: u32, name_len: u32, graph_out: u32) -> u32;
    pub fn init_execution_context(graph: u32, ctx_out: u32) -> u32;
    pub fn set_input(ctx: u32, index: u32, tensor: u32) -> u32;
    pub fn compute(ctx: u32) -> u32;
    pub fn get_output(
        ctx: u32,
        index: u32,
        out_ptr: u32,
        out_max_len: u32,
        bytes_written_out: u32,
    ) -> u32;
    pub fn unload(graph: u32) -> u32;
    pub fn finalize_execution_context(ctx: u32) -> u32;
}

pub const ENCODING_ONNX: u32 = 1;
pub const TARGET_CPU: u32 = 0;
pub const TYPE_F32: u8 = 1;

/// The witx `tensor` record: 20 bytes, `ty` at offset 8, data at 12.
#[repr(C)]
pub struct Tensor {
    pub dims_ptr: u32,
    pub dims_len: u32,
    pub ty: u8,
    pub data_ptr: u32,
    pub data_len: u32,
}

const _: () = assert!(std::mem::size_of::<Tensor>() == 20);

/// A `graph_builder`: bytes as `(pointer, length)`.
#[repr(C)]
pub struct Builder {
    pub ptr: u32,
    pub len: u32,
}

/// The guest address of a value the host reads (wasm32 addresses are 32 bits).
pub fn addr<T: ?Sized>(v: &T) -> u32 {
    v as *const T as *const u8 as u32
}

/// The guest address of a value the host writes.
pub fn addr_mut<T: ?Sized>(v: &mut T) -> u32 {
    v as *mut T as *mut u8 as u32
}

/// An address no guest memory reaches: 16 bytes below 4 GiB, so that adding
/// a length also overflows 32 bits.
pub const OOB: u32 = 0xFFFF_FFF0;

/// Current size of linear memory in bytes.
pub fn memory_size() -> u32 {
    (core::arch::wasm32::memory_size(0) * 65536) as u32
}
