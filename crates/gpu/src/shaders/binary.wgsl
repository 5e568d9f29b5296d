// c = a (op) b with broadcasting (f32 arithmetic on f32 or f16 storage). p: [n, op, shape[6], a_strides[6], b_strides[6], rank,
// a_base, b_base, c_base] (the bases: first elements within the bindings)
// (the host collapses dimensions first; only the last `rank` are walked)
@group(0) @binding(1) var<storage, read> a: array<{{T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p[0]) { return; }
    var rest = i;
    var ia = p[21];
    var ib = p[22];
    for (var d = 5; d >= 6 - i32(p[20]); d--) {
        let dim = p[2 + d];
        let coord = rest % dim;
        rest = rest / dim;
        ia += coord * p[8 + d];
        ib += coord * p[14 + d];
    }
    let x = f32(a[ia]);
    let y = f32(b[ib]);
    var r: f32;
    switch p[1] {
        case 0u: { r = x + y; }
        case 1u: { r = x - y; }
        case 2u: { r = x * y; }
        case 3u: { r = x / y; }
        case 4u: { r = max(x, y); }
        case 5u: { r = min(x, y); }
        case 6u: { r = pow(x, y); }
        default: { r = x; }
    }
    c[p[23] + i] = {{T}}(r);
}
