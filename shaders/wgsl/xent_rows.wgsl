//! use rows
// loss[row] = logsumexp(logits[row]) − logits[row, target] (0 for ignored rows), one workgroup per row.
//! subgroups
struct Params { rows: u32, dim: u32, ignore: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.dim;
    let ms = row_max_sumexp(base, P.dim, lid);
    let m = ms.x;
    let lse = m + log(ms.y);
    if (lid == 0u) {
        let t = targets[row];
        if (t == P.ignore || t < 0 || u32(t) >= P.dim) {
            loss[row] = 0.0;
            if (t != P.ignore) {
                atomicOr(&fault[0], FAULT_INDEX);
            }
        } else {
            loss[row] = lse - x[base + u32(t)];
        }
    }
}
