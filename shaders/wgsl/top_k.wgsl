// engine.TopK: one workgroup a row of x [rows, V] picks its K best (value, index) pairs, best first,
// ties by the lower index, NaNs never: K passes over the row, each keeping the best element that
// comes after the previous pick in that order (K·V reads; K is small: the candidates a sampler
// needs). out[(row·K + k)·2] = value (−inf when none is left), out[… + 1] = index as f32 (−1).
struct Params { rows: u32, v: u32, k: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<i32, WG>;

// before says (av, ai) comes before (bv, bi); index −1 is nothing, after everything.
fn before(av: f32, ai: i32, bv: f32, bi: i32) -> bool {
    if (ai < 0) {
        return false;
    }
    if (bi < 0) {
        return true;
    }
    return av > bv || (av == bv && ai < bi);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    var pv = 0.0;
    var pi = -1i;
    var first = true;
    for (var k = 0u; k < P.k; k = k + 1u) {
        var bv = 0.0;
        var bi = -1i;
        for (var i = lid; i < P.v; i = i + WG) {
            let xv = x[row * P.v + i];
            if ((bitcast<u32>(xv) & 0x7fffffffu) > 0x7f800000u) {
                continue; // NaN
            }
            if (!first && !before(pv, pi, xv, i32(i))) {
                continue;
            }
            if (before(xv, i32(i), bv, bi)) {
                bv = xv;
                bi = i32(i);
            }
        }
        workgroupBarrier();
        rv[lid] = bv;
        ri[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s >> 1u) {
            if (lid < s && before(rv[lid + s], ri[lid + s], rv[lid], ri[lid])) {
                rv[lid] = rv[lid + s];
                ri[lid] = ri[lid + s];
            }
            workgroupBarrier();
        }
        pv = rv[0];
        pi = ri[0];
        first = false;
        if (lid == 0u) {
            let o = (row * P.k + k) * 2u;
            if (pi < 0) {
                out[o] = bitcast<f32>(0xff800000u);
            } else {
                out[o] = pv;
            }
            out[o + 1u] = f32(pi);
        }
    }
}
