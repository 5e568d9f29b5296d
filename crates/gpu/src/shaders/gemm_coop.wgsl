// Batched C = act(A x B + bias) on cooperative matrices (tensor cores):
// f16 operands staged through workgroup memory, 16 x 16 x 16 multiply-adds
// into f32 accumulators, f16 results. A workgroup of 8 subgroups computes a
// 128 x 128 tile of C, subgroup s the 32 x 64 block at rows (s / 4) * 32,
// columns (s % 4) * 64 (2 x 4 accumulators). The parameters are gemm.wgsl's.
// Generated for one subgroup size (WG = 8 x subgroup size) and used only
// after `coop::probe` has checked it against a CPU reference on the device.
const BM = 128u;
const BN = 128u;
const BK = {{BK}}u;
const WG = {{WG}}u;

@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<f16>;
@group(0) @binding(4) var<storage, read_write> c: array<f16>;

// Row-major A tile [m][k] and B tile [k][n]; one 16 x 16 f32 scratch per
// subgroup for the epilogue (and the accumulators' zeros).
var<workgroup> As: array<f16, BM * BK>;
var<workgroup> Bs: array<f16, BK * BN>;
var<workgroup> Cs: array<f32, 2048>;

fn load_b(base: u32, k: u32, n: u32) -> f32 {
{{LOAD_B}}
}

// Bias, activation and the strided f16 store of the 16 x 16 tile a subgroup
// left in its scratch, its lanes taking every `step`-th element.
fn store_tile(s: u32, lane: u32, step: u32, row0: u32, col0: u32, cbase: u32, biasbase: u32) {
    let M = p[0];
    let N = p[1];
    for (var e = lane; e < 256u; e += step) {
        let gm = row0 + e / 16u;
        let gn = col0 + e % 16u;
        if (gm < M && gn < N) {
            var v = Cs[s * 256u + e];
            let ci = cbase + gm * p[20] + gn * p[21];
            if ((p[22] & 1u) != 0u) { v += f32(bias[biasbase + gm * p[38] + gn * p[39]]); }
            if ((p[22] & 2u) != 0u) { v += f32(c[ci]); }
            c[ci] = f16(activate(v, p[23], pf(24u), pf(25u)));
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32,
        @builtin(subgroup_invocation_id) lane: u32,
        @builtin(subgroup_size) sgsize: u32) {
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
    let wm = (sg / 4u) * 32u;
    let wn = (sg % 4u) * 64u;
    for (var i = lid; i < 2048u; i += WG) { Cs[i] = 0.0; }
    workgroupBarrier();
{{DECLS}}
    for (var k0 = 0u; k0 < K; k0 += BK) {
        for (var e = lid; e < BM * BK; e += WG) {
            let gm = m0 + e / BK;
            let gk = k0 + e % BK;
            var v = f16(0.0);
            if (gm < M && gk < K) { v = a[abase + gm * p[16] + gk * p[17]]; }
            As[e] = v;
        }
        for (var e = lid; e < BK * BN; e += WG) {
            let gk = k0 + e / BN;
            let gn = n0 + e % BN;
            var v = 0.0;
            if (gn < N && gk < K) { v = load_b(bbase, gk, gn); }
            Bs[e] = f16(v);
        }
        workgroupBarrier();
        for (var ks = 0u; ks < BK; ks += 16u) {
            let x0 = coopLoadT<coop_mat16x16<f16, A>>(&As[wm * BK + ks], BK);
            let x1 = coopLoadT<coop_mat16x16<f16, A>>(&As[(wm + 16u) * BK + ks], BK);
            let y0 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[ks * BN + wn], BN);
            let y1 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[ks * BN + wn + 16u], BN);
            let y2 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[ks * BN + wn + 32u], BN);
            let y3 = coopLoadT<coop_mat16x16<f16, B>>(&Bs[ks * BN + wn + 48u], BN);
{{MMA}}
        }
        workgroupBarrier();
    }
{{EPILOGUE}}
}
