//! The attacks. Each returns what the offending call answered.

use std::fmt;

use crate::abi::{self, Builder, OOB, Tensor, addr, addr_mut};

pub struct Attack {
    pub name: &'static str,
    pub run: fn(&str) -> Outcome,
}

/// What an attack observed.
pub enum Outcome {
    /// The attacked call returned this errno (0 is printed as `ok`).
    Errno(u32),
    /// A call the attack needed beforehand failed.
    SetupFailed(&'static str, u32),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Errno(0) => f.write_str("ok"),
            Outcome::Errno(n) => write!(f, "errno={n}"),
            Outcome::SetupFailed(step, n) => write!(f, "setup-failed step={step} errno={n}"),
        }
    }
}

use Outcome::{Errno, SetupFailed};

const ATTACKS: &[Attack] = &[
    Attack {
        name: "load_builders_oob",
        run: load_builders_oob,
    },
    Attack {
        name: "load_builder_past_memory",
        run: load_builder_past_memory,
    },
    Attack {
        name: "load_builders_len_huge",
        run: load_builders_len_huge,
    },
    Attack {
        name: "load_garbage_onnx",
        run: load_garbage_onnx,
    },
    Attack {
        name: "load_by_name_oob",
        run: load_by_name_oob,
    },
    Attack {
        name: "load_by_name_bad_utf8",
        run: load_by_name_bad_utf8,
    },
    Attack {
        name: "load_by_name_unknown",
        run: load_by_name_unknown,
    },
    Attack {
        name: "init_bad_graph",
        run: init_bad_graph,
    },
    Attack {
        name: "set_input_tensor_oob",
        run: set_input_tensor_oob,
    },
    Attack {
        name: "set_input_dims_oob",
        run: set_input_dims_oob,
    },
    Attack {
        name: "set_input_data_oob",
        run: set_input_data_oob,
    },
    Attack {
        name: "set_input_bad_ctx",
        run: set_input_bad_ctx,
    },
    Attack {
        name: "set_input_wrong_size",
        run: set_input_wrong_size,
    },
    Attack {
        name: "set_input_bad_index",
        run: set_input_bad_index,
    },
    Attack {
        name: "set_input_bad_type",
        run: set_input_bad_type,
    },
    Attack {
        name: "compute_without_inputs",
        run: compute_without_inputs,
    },
    Attack {
        name: "get_output_oob",
        run: get_output_oob,
    },
    Attack {
        name: "get_output_small_buffer",
        run: get_output_small_buffer,
    },
    Attack {
        name: "get_output_written_oob",
        run: get_output_written_oob,
    },
    Attack {
        name: "get_output_before_compute",
        run: get_output_before_compute,
    },
    Attack {
        name: "unload_bad_handle",
        run: unload_bad_handle,
    },
    Attack {
        name: "finalize_bad_handle",
        run: finalize_bad_handle,
    },
    Attack {
        name: "double_unload",
        run: double_unload,
    },
    Attack {
        name: "leak",
        run: leak,
    },
];

/// Attacks run only by name (`all` leaves them out): they need a model
/// with a dynamic batch (`mlp`) and a memory cap to hit.
const BY_NAME: &[Attack] = &[Attack {
    name: "input_flood",
    run: input_flood,
}];

pub fn names() -> Vec<&'static str> {
    ATTACKS.iter().chain(BY_NAME).map(|a| a.name).collect()
}

/// The attacks `which` names: one, or `all` of [`ATTACKS`] in order.
pub fn select(which: &str) -> Vec<&'static Attack> {
    ATTACKS
        .iter()
        .filter(|a| which == "all" || a.name == which)
        .chain(BY_NAME.iter().filter(|a| a.name == which))
        .collect()
}

/// A handle no host has handed out.
const BAD_HANDLE: u32 = 12345;
const INPUT: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
const DIMS: [u32; 2] = [1, 4];

/// A valid [1, 4] f32 tensor record pointing at `INPUT`.
fn input_tensor() -> Tensor {
    Tensor {
        dims_ptr: addr(&DIMS),
        dims_len: 2,
        ty: abi::TYPE_F32,
        data_ptr: addr(&INPUT),
        data_len: 16,
    }
}

fn load(builders_ptr: u32, builders_len: u32) -> u32 {
    let mut graph = 0u32;
    // SAFETY: the host validates every address; `graph` is writable.
    unsafe {
        abi::load(
            builders_ptr,
            builders_len,
            abi::ENCODING_ONNX,
            abi::TARGET_CPU,
            addr_mut(&mut graph),
        )
    }
}

fn load_by_name(name_ptr: u32, name_len: u32) -> (u32, u32) {
    let mut graph = 0u32;
    // SAFETY: as above.
    let errno = unsafe { abi::load_by_name(name_ptr, name_len, addr_mut(&mut graph)) };
    (errno, graph)
}

fn init(graph: u32) -> (u32, u32) {
    let mut ctx = 0u32;
    // SAFETY: as above.
    let errno = unsafe { abi::init_execution_context(graph, addr_mut(&mut ctx)) };
    (errno, ctx)
}

fn set_input(ctx: u32, index: u32, tensor: u32) -> u32 {
    // SAFETY: as above.
    unsafe { abi::set_input(ctx, index, tensor) }
}

fn compute(ctx: u32) -> u32 {
    // SAFETY: plain integers.
    unsafe { abi::compute(ctx) }
}

fn get_output(ctx: u32, out_ptr: u32, out_max: u32, written_ptr: u32) -> u32 {
    // SAFETY: as above.
    unsafe { abi::get_output(ctx, 0, out_ptr, out_max, written_ptr) }
}

/// Loads the model and opens a context: (graph, ctx) or the failed step.
fn model_context(model: &str) -> Result<(u32, u32), Outcome> {
    let (errno, graph) = load_by_name(addr(model.as_bytes()), model.len() as u32);
    if errno != 0 {
        return Err(SetupFailed("load_by_name", errno));
    }
    match init(graph) {
        (0, ctx) => Ok((graph, ctx)),
        (errno, _) => Err(SetupFailed("init_execution_context", errno)),
    }
}

/// A context whose input is set and computed.
fn computed_context(model: &str) -> Result<u32, Outcome> {
    let (_, ctx) = model_context(model)?;
    let tensor = input_tensor();
    match set_input(ctx, 0, addr(&tensor)) {
        0 => {}
        errno => return Err(SetupFailed("set_input", errno)),
    }
    match compute(ctx) {
        0 => Ok(ctx),
        errno => Err(SetupFailed("compute", errno)),
    }
}

/// Runs `attack` on a context from `setup`, or reports the setup failure.
fn with<T>(setup: Result<T, Outcome>, attack: impl FnOnce(T) -> u32) -> Outcome {
    match setup {
        Ok(v) => Errno(attack(v)),
        Err(e) => e,
    }
}

fn load_builders_oob(_: &str) -> Outcome {
    Errno(load(OOB, 1))
}

fn load_builder_past_memory(_: &str) -> Outcome {
    let builders = [Builder {
        ptr: abi::memory_size() - 8,
        len: 64,
    }];
    Errno(load(addr(&builders), 1))
}

fn load_builders_len_huge(_: &str) -> Outcome {
    let bytes = [0u8; 8];
    let builders = [Builder {
        ptr: addr(&bytes),
        len: 8,
    }];
    Errno(load(addr(&builders), 1 << 30))
}

fn load_garbage_onnx(_: &str) -> Outcome {
    let bytes = b"this is not an ONNX model, just 48 bytes of junk";
    let builders = [Builder {
        ptr: addr(bytes),
        len: bytes.len() as u32,
    }];
    Errno(load(addr(&builders), 1))
}

fn load_by_name_oob(_: &str) -> Outcome {
    Errno(load_by_name(OOB, 64).0)
}

fn load_by_name_bad_utf8(_: &str) -> Outcome {
    let name = b"\xff\xfe tiny \xc3\x28";
    Errno(load_by_name(addr(name), name.len() as u32).0)
}

fn load_by_name_unknown(_: &str) -> Outcome {
    let name = "no-such-model-preloaded";
    Errno(load_by_name(addr(name.as_bytes()), name.len() as u32).0)
}

fn init_bad_graph(_: &str) -> Outcome {
    Errno(init(BAD_HANDLE).0)
}

fn set_input_tensor_oob(model: &str) -> Outcome {
    with(model_context(model), |(_, ctx)| set_input(ctx, 0, OOB))
}

fn set_input_dims_oob(model: &str) -> Outcome {
    let tensor = Tensor {
        dims_ptr: OOB,
        ..input_tensor()
    };
    with(model_context(model), |(_, ctx)| {
        set_input(ctx, 0, addr(&tensor))
    })
}

fn set_input_data_oob(model: &str) -> Outcome {
    let tensor = Tensor {
        data_ptr: OOB,
        ..input_tensor()
    };
    with(model_context(model), |(_, ctx)| {
        set_input(ctx, 0, addr(&tensor))
    })
}

fn set_input_bad_ctx(_: &str) -> Outcome {
    let tensor = input_tensor();
    Errno(set_input(BAD_HANDLE, 0, addr(&tensor)))
}

fn set_input_wrong_size(model: &str) -> Outcome {
    // [1, 4] f32 needs 16 bytes.
    let tensor = Tensor {
        data_len: 8,
        ..input_tensor()
    };
    with(model_context(model), |(_, ctx)| {
        set_input(ctx, 0, addr(&tensor))
    })
}

fn set_input_bad_index(model: &str) -> Outcome {
    let tensor = input_tensor();
    with(model_context(model), |(_, ctx)| {
        set_input(ctx, 7, addr(&tensor))
    })
}

fn set_input_bad_type(model: &str) -> Outcome {
    let tensor = Tensor {
        ty: 77,
        ..input_tensor()
    };
    with(model_context(model), |(_, ctx)| {
        set_input(ctx, 0, addr(&tensor))
    })
}

fn compute_without_inputs(model: &str) -> Outcome {
    with(model_context(model), |(_, ctx)| compute(ctx))
}

fn get_output_oob(model: &str) -> Outcome {
    let mut written = 0u32;
    with(computed_context(model), |ctx| {
        get_output(ctx, OOB, 16, addr_mut(&mut written))
    })
}

fn get_output_small_buffer(model: &str) -> Outcome {
    let (mut out, mut written) = (0u32, 0u32);
    with(computed_context(model), |ctx| {
        get_output(ctx, addr_mut(&mut out), 4, addr_mut(&mut written))
    })
}

fn get_output_written_oob(model: &str) -> Outcome {
    let mut out = [0f32; 4];
    with(computed_context(model), |ctx| {
        get_output(ctx, addr_mut(&mut out), 16, OOB)
    })
}

fn get_output_before_compute(model: &str) -> Outcome {
    let (mut out, mut written) = ([0f32; 4], 0u32);
    let tensor = input_tensor();
    with(model_context(model), |(_, ctx)| {
        match set_input(ctx, 0, addr(&tensor)) {
            0 => get_output(ctx, addr_mut(&mut out), 16, addr_mut(&mut written)),
            errno => errno,
        }
    })
}

fn unload_bad_handle(_: &str) -> Outcome {
    // SAFETY: plain integers.
    Errno(unsafe { abi::unload(BAD_HANDLE) })
}

fn finalize_bad_handle(_: &str) -> Outcome {
    // SAFETY: plain integers.
    Errno(unsafe { abi::finalize_execution_context(BAD_HANDLE) })
}

/// Unloads a graph twice; reports the second unload.
fn double_unload(model: &str) -> Outcome {
    let (errno, graph) = load_by_name(addr(model.as_bytes()), model.len() as u32);
    if errno != 0 {
        return SetupFailed("load_by_name", errno);
    }
    // SAFETY: plain integers.
    match unsafe { abi::unload(graph) } {
        0 => Errno(unsafe { abi::unload(graph) }),
        errno => SetupFailed("first unload", errno),
    }
}

/// Creates and finalizes 10000 contexts on one graph: must finish without
/// the host running out of anything.
/// Keep 64 contexts alive, each holding a 16 MiB input (1 GiB in all):
/// the host must refuse (`TooLarge`) once the instance's memory budget is
/// spent, rather than hold whatever a guest hands it.
fn input_flood(model: &str) -> Outcome {
    let (errno, graph) = load_by_name(addr(model.as_bytes()), model.len() as u32);
    if errno != 0 {
        return SetupFailed("load_by_name", errno);
    }
    const ROWS: u32 = 1 << 20;
    let data = vec![0f32; ROWS as usize * 4];
    let dims = [ROWS, 4];
    let tensor = Tensor {
        dims_ptr: addr(&dims),
        dims_len: 2,
        ty: abi::TYPE_F32,
        data_ptr: addr(&data[..]),
        data_len: (data.len() * 4) as u32,
    };
    for i in 0..64 {
        let (errno, ctx) = init(graph);
        if errno != 0 {
            return SetupFailed("init_execution_context", errno);
        }
        let errno = set_input(ctx, 0, addr(&tensor));
        if errno != 0 {
            eprintln!("hostile: input_flood: refused at context {i}");
            return Errno(errno);
        }
    }
    Errno(0)
}

fn leak(model: &str) -> Outcome {
    let (errno, graph) = load_by_name(addr(model.as_bytes()), model.len() as u32);
    if errno != 0 {
        return SetupFailed("load_by_name", errno);
    }
    for i in 0..10_000 {
        let (errno, ctx) = init(graph);
        // SAFETY: plain integers.
        let errno = if errno == 0 {
            unsafe { abi::finalize_execution_context(ctx) }
        } else {
            errno
        };
        if errno != 0 {
            eprintln!("hostile: leak: failed at context {i}");
            return Errno(errno);
        }
    }
    Errno(0)
}
