// RowLoRA's second product: out[n, o] = y[n, o] + scale·Σ_j t[n, j]·B[o, j] on the rows n with
// sel[n] == slot, y[n, o] on the others. An invocation owns output o for RC consecutive rows, so
// B's row o is read once for them (t's row is the same for the whole workgroup: a broadcast).
struct Params { N: u32, dout: u32, r: u32, slot: i32, scale: f32 }
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
    var on: array<bool, RC>;
    var s: array<f32, RC>;
    var hit = false;
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        on[rr] = n0 + rr < P.N && sel[n0 + rr] == P.slot;
        hit = hit || on[rr];
        s[rr] = 0.0;
    }
    if (hit) { // rows of other adapters are a copy
        for (var j = 0u; j < P.r; j = j + 1u) {
            let bv = b[o * P.r + j];
            for (var rr = 0u; rr < RC; rr = rr + 1u) {
                if (on[rr]) {
                    s[rr] = fma(t[(n0 + rr) * P.r + j], bv, s[rr]);
                }
            }
        }
    }
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        let n = n0 + rr;
        if (n >= P.N) {
            break;
        }
        let i = n * P.dout + o;
        if (on[rr]) {
            res[i] = y[i] + P.scale * s[rr];
        } else {
            res[i] = y[i];
        }
    }
}
