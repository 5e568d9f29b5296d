// Batched C = act(A x B + bias), tiled in workgroup memory with register
// blocking: each workgroup computes a BM x BN tile of C, each of its 16 x 16
// invocations a block of BM/16 x BN/16 elements, stepping K by BK. An
// invocation's rows are ty + 16 i and its columns tx + 16 j (interleaved,
// not a contiguous block), so the 16 invocations of a row read 16
// consecutive words of Bs (no bank conflicts) and write 16 consecutive
// columns of C (coalesced). As holds A transposed (k-major) with each row's
// index swizzled by XOR 2 kk: the loads, 16 consecutive k of a row per 16
// invocations, land in 16 different banks instead of one, while reads stay
// one word per invocation pair. The register block is written out by
// `kernels.rs` (`gemm_block`): constant indices keep it in registers on
// every driver. Operands are addressed by strides, so transposed inputs
// cost nothing; `load_b` is either a strided read or an implicit im2col
// gather (convolution as GEMM without materializing patches).
//
// p: [M, N, K, batch, bshape[3], a_bstride[3], b_bstride[3], c_bstride[3],
//     a_rs, a_cs, b_rs, b_cs, c_rs, c_cs, bias_mode, act, act_a, act_b,
//     H, W, KH, KW, OW, sy, sx, dy, dx, pt, pl, HW,
//     bias_rs, bias_cs, bias_bstride[3], a_base, b_base, c_base, bias_base]
// Storage is f32, or f16 in the `shader-f16` variant; accumulation is
// always f32.
// bias_mode: bit 0 adds a strided bias operand (a row or column vector, a
// scalar, or a full matrix, by its strides); bit 1 adds what C holds (the
// partial sums of the earlier parts of a GEMM cut along K).
// Every word of As and Bs is written before the barrier that precedes any
// read, which is why the pipeline skips zeroing workgroup memory.
const BM = {{BM}}u;
const BN = {{BN}}u;
const BK = 16u;

@group(0) @binding(1) var<storage, read> a: array<{{T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{T}}>;
@group(0) @binding(3) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> c: array<{{T}}>;

var<workgroup> As: array<f32, BM * BK>;
var<workgroup> Bs: array<f32, BK * BN>;

fn load_b(base: u32, k: u32, n: u32) -> f32 {
{{LOAD_B}}
}

// One element of C: act(v + bias + what C holds, as bias_mode says).
fn put(gm: u32, gn: u32, acc: f32, cbase: u32, biasbase: u32) {
    if (gm >= p[0] || gn >= p[1]) { return; }
    var v = acc;
    let ci = cbase + gm * p[20] + gn * p[21];
    let mode = p[22];
    if ((mode & 1u) != 0u) { v += f32(bias[biasbase + gm * p[38] + gn * p[39]]); }
    if ((mode & 2u) != 0u) { v += f32(c[ci]); }
    c[ci] = {{T}}(activate(v, p[23], pf(24u), pf(25u)));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let M = p[0];
    let N = p[1];
    let K = p[2];
    let base = batch_bases(wid.z);
    let abase = base.x;
    let bbase = base.y;
    let cbase = base.z;
    let biasbase = base.w;
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid3.x;
    let ty = lid3.y;
{{ACC}}
    for (var k0 = 0u; k0 < K; k0 += BK) {
        for (var l = 0u; l < BM * BK / 256u; l++) {
            let e = lid + l * 256u;
            let kk = e % BK;
            let mm = e / BK;
            let gm = m0 + mm;
            let gk = k0 + kk;
            var v = 0.0;
            if (gm < M && gk < K) { v = f32(a[abase + gm * p[16] + gk * p[17]]); }
            As[kk * BM + (mm ^ (kk * 2u))] = v;
        }
        for (var l = 0u; l < BN * BK / 256u; l++) {
            let e = lid + l * 256u;
            let nn = e % BN;
            let kk = e / BN;
            let gn = n0 + nn;
            let gk = k0 + kk;
            var v = 0.0;
            if (gn < N && gk < K) { v = load_b(bbase, gk, gn); }
            Bs[kk * BN + nn] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ar = kk * BM;
            let sw = kk * 2u;
            let br = kk * BN;
{{STEP}}
        }
        workgroupBarrier();
    }
{{STORE}}
}
