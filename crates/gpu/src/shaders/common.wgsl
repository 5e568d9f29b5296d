// Shared by every Weft kernel: parameters are one read-only u32 array at
// binding 0 (f32 parameters travel as their bits); 1-D kernels run 256
// invocations per workgroup over a 2-D grid, so more than 65535 workgroups
// fit a dispatch.
@group(0) @binding(0) var<storage, read> p: array<u32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(p[i]);
}

// Activations shared by the unary kernel and the fused GEMM/conv epilogues.
fn activate(x: f32, op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return x; }
        case 1u: { return max(x, 0.0); }
        case 2u: { return clamp(x, a, b); }
        case 3u: { return x * clamp(x * (1.0 / 6.0) + 0.5, 0.0, 1.0); }
        case 4u: { return 1.0 / (1.0 + exp(-x)); }
        case 5u: { return select(a * x, x, x >= 0.0); }
        case 6u: { return clamp(a * x + b, 0.0, 1.0); }
        case 7u: { return x / (1.0 + exp(-x)); }
        default: { return x; }
    }
}

// A batched GEMM's element offsets of batch z in A, B, C and the bias
// (p[4..7] the batch shape, then per-operand batch strides, and p[43..47]
// each operand's first element within its binding, which a part of a cut
// GEMM binds from an aligned offset before it; both GEMM kernels share
// this parameter layout).
fn batch_bases(z: u32) -> vec4<u32> {
    let b2 = z % p[6];
    let b1 = (z / p[6]) % p[5];
    let b0 = z / (p[6] * p[5]);
    return vec4<u32>(p[43] + b0 * p[7] + b1 * p[8] + b2 * p[9],
                     p[44] + b0 * p[10] + b1 * p[11] + b2 * p[12],
                     p[45] + b0 * p[13] + b1 * p[14] + b2 * p[15],
                     p[46] + b0 * p[40] + b1 * p[41] + b2 * p[42]);
}
