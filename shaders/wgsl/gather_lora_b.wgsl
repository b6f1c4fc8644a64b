// GatherLoRA's second product: out[n, o] = y[n, o] + Σ_j t[n, j]·B[s·dout + o, j] with s = sel[n]
// (B carries each adapter's scale); y[n, o] for rows that pick no slot. An invocation owns output
// o for RC consecutive rows.
struct Params { N: u32, dout: u32, R: u32, slots: i32 }
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> sel: array<i32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> res: array<f32>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nob = (P.dout + WG - 1u) / WG;
    let w = wgid(wid, nwg);
    if (w >= nob * ((P.N + RC - 1u) / RC)) {
        return;
    }
    let o = (w % nob) * WG + lid;
    let n0 = (w / nob) * RC;
    if (o >= P.dout) {
        return;
    }
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        let n = n0 + rr;
        if (n >= P.N) {
            break;
        }
        let i = n * P.dout + o;
        let slot = sel[n];
        if (slot < 0 || slot >= P.slots) {
            res[i] = y[i];
            continue;
        }
        let brow = (u32(slot) * P.dout + o) * P.R;
        var s = 0.0;
        for (var j = 0u; j < P.R; j = j + 1u) {
            s = fma(t[n * P.R + j], b[brow + j], s);
        }
        res[i] = y[i] + s;
    }
}
