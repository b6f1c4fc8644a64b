// Softmax over the last dimension, one workgroup per row.
//! use rows
//! subgroups
struct Params { rows: u32, dim: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.dim;
    let ms = row_max_sumexp(base, P.dim, lid);
    let m = ms.x;
    let inv = 1.0 / ms.y;
    for (var j = lid; j < P.dim; j = j + WG) {
        y[base + j] = exp(x[base + j] - m) * inv;
    }
}
