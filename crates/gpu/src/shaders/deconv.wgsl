// Transposed convolution (ConvTranspose) on NCHW, one invocation per output
// element gathering the input pixels whose kernel taps land on it.
// Kernel layout OIHW: [Co, Ci/group, KH, KW] as tract's Deconv holds it.
// p: [n_out, Ci, H, W, Co, OH, OW, KH, KW, sy, sx, dy, dx, pt, pl, cig, cog, bias_len,
//     x_base, k_base, bias_base, y_base, accumulate, x_cs, k_os, y_cs]
// (the bases: first elements within the bindings; x_cs and y_cs: the input's
// and output's channel strides, k_os: the kernel's output-channel stride;
// accumulate 1: add what y holds, the partial sums of a cut over input
// channels)
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
    let sy = i32(p[9]); let sx = i32(p[10]);
    let cig = p[15]; let cog = p[16];
    let ox = i % ow; let oy = (i / ow) % oh; let co = (i / (ow * oh)) % co_n; let n = i / (ow * oh * co_n);
    let g = co / cog;
    var acc = 0.0;
    for (var ky = 0u; ky < kh; ky++) {
        let ty = i32(oy) + i32(p[13]) - i32(ky * p[11]);
        if (ty < 0 || ty % sy != 0) { continue; }
        let iy = ty / sy;
        if (iy >= h) { continue; }
        for (var kx = 0u; kx < kw; kx++) {
            let tx = i32(ox) + i32(p[14]) - i32(kx * p[12]);
            if (tx < 0 || tx % sx != 0) { continue; }
            let ix = tx / sx;
            if (ix >= w) { continue; }
            for (var c = 0u; c < cig; c++) {
                let ci = g * cig + c;
                acc += f32(x[p[18] + (n * ci_n + ci) * p[23] + u32(iy) * p[3] + u32(ix)])
                    * f32(k[p[19] + co * p[24] + (c * kh + ky) * kw + kx]);
            }
        }
    }
    if (p[17] == 1u) { acc += f32(bias[p[20]]); } else if (p[17] > 1u) { acc += f32(bias[p[20] + co]); }
    let yi = p[21] + (n * co_n + co) * p[25] + oy * ow + ox;
    if (p[22] == 1u) { acc += f32(y[yi]); }
    y[yi] = {{T}}(acc);
}
