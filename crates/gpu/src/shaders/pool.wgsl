// 2-D max or average pooling on NCHW (1-D pools have H = 1).
// p: [n_out, NC, H, W, OH, OW, KH, KW, sy, sx, pt, pl, dy, dx, mode, include_pad, x_base, y_base]
// (the bases: first elements within the bindings)
// mode 0 max, 1 average.
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p[0]) { return; }
    let h = i32(p[2]); let w = i32(p[3]);
    let oh = p[4]; let ow = p[5];
    let ox = i % ow; let oy = (i / ow) % oh; let nc = i / (ow * oh);
    let base = p[16] + nc * p[2] * p[3];
    let is_max = p[14] == 0u;
    var acc = select(0.0, -3.4028235e38, is_max);
    var count = 0u;
    for (var ky = 0u; ky < p[6]; ky++) {
        let iy = i32(oy * p[8] + ky * p[12]) - i32(p[10]);
        for (var kx = 0u; kx < p[7]; kx++) {
            let ix = i32(ox * p[9] + kx * p[13]) - i32(p[11]);
            if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                let v = f32(x[base + u32(iy) * p[3] + u32(ix)]);
                acc = select(acc + v, max(acc, v), is_max);
                count += 1u;
            }
        }
    }
    if (!is_max) {
        let n = select(count, p[6] * p[7], p[15] == 1u);
        acc = acc / f32(max(n, 1u));
    }
    y[p[17] + i] = {{T}}(acc);
}
