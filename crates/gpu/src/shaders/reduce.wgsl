// Reduction over some axes, one invocation per output element.
// p: [n_out, op, n_red, out_shape[6], strides[6], red_shape[6], x_base, y_base,
//     combine, divisor]
// (the bases: first elements within the bindings; combine 1: fold in what y
// holds, the result of the earlier parts of a reduction cut along a reduced
// axis; divisor: the whole reduction's count, for the means)
// op: 0 sum, 1 max, 2 min, 3 prod, 4 mean of squares, 5 mean
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p[0]) { return; }
    let op = p[1];
    let n_red = p[2];
    var rest = i;
    var base = p[21];
    for (var d = 5; d >= 0; d--) {
        let dim = p[3 + d];
        base += (rest % dim) * p[9 + d];
        rest = rest / dim;
    }
    var acc: f32;
    switch op {
        case 1u: { acc = -3.4028235e38; }
        case 2u: { acc = 3.4028235e38; }
        case 3u: { acc = 1.0; }
        default: { acc = 0.0; }
    }
    for (var r = 0u; r < n_red; r++) {
        var rr = r;
        var off = base;
        for (var d = 5; d >= 0; d--) {
            let dim = p[15 + d];
            off += (rr % dim) * p[9 + d];
            rr = rr / dim;
        }
        let v = f32(x[off]);
        switch op {
            case 1u: { acc = max(acc, v); }
            case 2u: { acc = min(acc, v); }
            case 3u: { acc = acc * v; }
            case 4u: { acc += v * v; }
            default: { acc += v; }
        }
    }
    if (op == 4u || op == 5u) { acc = acc / f32(p[24]); }
    if (p[23] == 1u) {
        let prev = f32(y[p[22] + i]);
        switch op {
            case 1u: { acc = max(acc, prev); }
            case 2u: { acc = min(acc, prev); }
            case 3u: { acc = acc * prev; }
            default: { acc += prev; }
        }
    }
    y[p[22] + i] = {{T}}(acc);
}
