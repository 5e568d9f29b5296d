// Softmax (mode 0), log-softmax (1) or RMS normalization (2, y = x / sqrt(mean(x^2) + eps))
// along one axis, one workgroup per row.
// p: [rows, len, inner, mode, eps, x_base, y_base]; row r starts at (r / inner) * len * inner + r % inner
// after the bases (the first elements within the bindings).
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{T}}>;

var<workgroup> scratch: array<f32, 256>;

fn reduce_max(lid: u32, v: f32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { scratch[lid] = max(scratch[lid], scratch[lid + s]); }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { scratch[lid] = scratch[lid] + scratch[lid + s]; }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    if (row >= p[0]) { return; }
    let len = p[1];
    let inner = p[2];
    let start = (row / inner) * len * inner + row % inner;
    let base = p[5] + start;
    let ybase = p[6] + start;
    if (p[3] == 2u) {
        var q = 0.0;
        for (var j = lid; j < len; j += 256u) { let v = f32(x[base + j * inner]); q += v * v; }
        q = reduce_sum(lid, q);
        let scale = inverseSqrt(q / f32(len) + pf(4u));
        for (var j = lid; j < len; j += 256u) { y[ybase + j * inner] = {{T}}(f32(x[base + j * inner]) * scale); }
        return;
    }
    var m = -3.4028235e38;
    for (var j = lid; j < len; j += 256u) { m = max(m, f32(x[base + j * inner])); }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < len; j += 256u) { s += exp(f32(x[base + j * inner]) - m); }
    s = reduce_sum(lid, s);
    if (p[3] == 1u) {
        let ls = log(s);
        for (var j = lid; j < len; j += 256u) { y[ybase + j * inner] = {{T}}(f32(x[base + j * inner]) - m - ls); }
    } else {
        let inv = 1.0 / s;
        for (var j = lid; j < len; j += 256u) { y[ybase + j * inner] = {{T}}(exp(f32(x[base + j * inner]) - m) * inv); }
    }
}
