// RowLoRA's first product: t[n, j] = Σ_k x[n, k]·A[j, k] on the rows n with sel[n] == slot, 0 on
// the others. A workgroup owns rank index j for RC consecutive rows, so A's row j is read once for
// them all; each sum is a fixed-order workgroup reduction (deterministic). Which rows select the
// adapter is known only here, on the device.
struct Params { N: u32, din: u32, r: u32, slot: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> sel: array<i32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> t: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wgid(wid, nwg);
    if (w >= P.r * ((P.N + RC - 1u) / RC)) {
        return;
    }
    let j = w % P.r;
    let n0 = (w / P.r) * RC;
    var on: array<bool, RC>;
    var s: array<f32, RC>;
    var hit = false;
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        on[rr] = n0 + rr < P.N && sel[n0 + rr] == P.slot;
        hit = hit || on[rr];
        s[rr] = 0.0;
    }
    if (hit) { // rows of other adapters cost no pass over A
        for (var kk = lid; kk < P.din; kk = kk + WG) {
            let av = a[j * P.din + kk];
            for (var rr = 0u; rr < RC; rr = rr + 1u) {
                if (on[rr]) {
                    s[rr] = fma(x[(n0 + rr) * P.din + kk], av, s[rr]);
                }
            }
        }
    }
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        if (n0 + rr >= P.N) {
            break;
        }
        let tot = block_sum(s[rr], lid);
        if (lid == 0u) {
            t[(n0 + rr) * P.r + j] = tot;
        }
    }
}
