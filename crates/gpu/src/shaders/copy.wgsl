// Strided copy: transposes, slices, concatenation parts, broadcasts and the
// inside of a pad, and nearest-neighbour upsampling (the source coordinate is
// the destination one divided by `div`).
// p: [n, src_offset, dst_offset, shape[6], src_strides[6], dst_strides[6], div[6], rank]
@group(0) @binding(1) var<storage, read> src: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> dst: array<{{T}}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p[0]) { return; }
    var rest = i;
    var is = p[1];
    var id = p[2];
    for (var d = 5; d >= 6 - i32(p[27]); d--) {
        let dim = p[3 + d];
        let coord = rest % dim;
        rest = rest / dim;
        is += (coord / p[21 + d]) * p[9 + d];
        id += coord * p[15 + d];
    }
    dst[id] = src[is];
}
