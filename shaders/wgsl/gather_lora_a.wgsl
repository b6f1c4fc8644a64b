// GatherLoRA's first product: t[n, j] = Σ_k x[n, k]·A[s·R + j, k] with s = sel[n], the pool slot
// row n picks; 0 for rows that pick none. A workgroup owns rank index j for RC consecutive rows;
// each sum is a fixed-order workgroup reduction (deterministic).
struct Params { N: u32, din: u32, R: u32, slots: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> sel: array<i32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> t: array<f32>;
@group(0) @binding(4) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wgid(wid, nwg);
    if (w >= P.R * ((P.N + RC - 1u) / RC)) {
        return;
    }
    let j = w % P.R;
    let n0 = (w / P.R) * RC;
    var arow: array<u32, RC>; // the A row each of the RC rows reads
    var on: array<bool, RC>;
    var s: array<f32, RC>;
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        on[rr] = false;
        arow[rr] = 0u;
        if (n0 + rr < P.N) {
            let slot = sel[n0 + rr];
            on[rr] = slot >= 0 && slot < P.slots;
            if (slot >= P.slots && j == 0u && lid == 0u) {
                atomicOr(&fault[0], FAULT_INDEX);
            }
            if (on[rr]) {
                arow[rr] = u32(slot) * P.R + j;
            }
        }
        s[rr] = 0.0;
    }
    for (var kk = lid; kk < P.din; kk = kk + WG) {
        for (var rr = 0u; rr < RC; rr = rr + 1u) {
            if (on[rr]) {
                s[rr] = fma(x[(n0 + rr) * P.din + kk], a[arow[rr] * P.din + kk], s[rr]);
            }
        }
    }
    for (var rr = 0u; rr < RC; rr = rr + 1u) {
        if (n0 + rr >= P.N) {
            break;
        }
        let tot = block_sum(s[rr], lid);
        if (lid == 0u) {
            t[(n0 + rr) * P.R + j] = tot;
        }
    }
}
