//! use rows
// dlogits = dloss/count · (softmax(logits) − onehot(target)), 0 on ignored rows; count is the
// number of rows not ignored. One workgroup per row.
//! subgroups
struct Params { rows: u32, dim: u32, ignore: i32 }
@group(0) @binding(0) var<storage, read> dloss: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    var n = 0.0;
    for (var i = lid; i < P.rows; i = i + WG) {
        if (targets[i] != P.ignore) {
            n = n + 1.0;
        }
    }
    let count = block_sum(n, lid);
    let base = row * P.dim;
    let ms = row_max_sumexp(base, P.dim, lid);
    let m = ms.x;
    let inv = 1.0 / ms.y;
    let t = targets[row];
    let ignored = t == P.ignore;
    if (lid == 0u && !ignored && (t < 0 || u32(t) >= P.dim)) {
        atomicOr(&fault[0], FAULT_INDEX);
    }
    let g = dloss[0] / max(count, 1.0);
    for (var j = lid; j < P.dim; j = j + WG) {
        var v = exp(x[base + j] - m) * inv;
        if (i32(j) == t) {
            v = v - 1.0;
        }
        dx[base + j] = select(g * v, 0.0, ignored);
    }
}
