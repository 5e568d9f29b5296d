// Direct convolution on NCHW, one invocation per output element: depthwise
// and grouped convolutions, whose per-output work is too small for a GEMM.
// p: [n_out, Ci, H, W, Co, OH, OW, KH, KW, sy, sx, dy, dx, pt, pl, cig, cog, bias_len, act, a, b,
//     x_base, k_base, bias_base, y_base] (the bases: first elements within the bindings)
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read> k: array<{{T}}>;
@group(0) @binding(3) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> y: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p[0]) { return; }
    let ci_n = p[1]; let h = i32(p[2]); let w = i32(p[3]);
    let co_n = p[4]; let oh = p[5]; let ow = p[6];
    let kh = p[7]; let kw = p[8];
    let cig = p[15]; let cog = p[16];
    let ox = i % ow; let oy = (i / ow) % oh; let co = (i / (ow * oh)) % co_n; let n = i / (ow * oh * co_n);
    let g = co / cog;
    var acc = 0.0;
    for (var c = 0u; c < cig; c++) {
        let ci = g * cig + c;
        let xbase = p[21] + (n * ci_n + ci) * p[2] * p[3];
        let kbase = p[22] + (co * cig + c) * kh * kw;
        for (var ky = 0u; ky < kh; ky++) {
            let iy = i32(oy * p[9] + ky * p[11]) - i32(p[13]);
            if (iy < 0 || iy >= h) { continue; }
            for (var kx = 0u; kx < kw; kx++) {
                let ix = i32(ox * p[10] + kx * p[12]) - i32(p[14]);
                if (ix < 0 || ix >= w) { continue; }
                acc += f32(x[xbase + u32(iy) * p[3] + u32(ix)]) * f32(k[kbase + ky * kw + kx]);
            }
        }
    }
    if (p[17] == 1u) { acc += f32(bias[p[23]]); } else if (p[17] > 1u) { acc += f32(bias[p[23] + co]); }
    y[p[24] + i] = {{T}}(activate(acc, p[18], pf(19u), pf(20u)));
}
