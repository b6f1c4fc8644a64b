// y = x / sqrt(mean(x²) + eps) ⊙ w, one workgroup per row.
//! subgroups
struct Params { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.dim;
    var ss = 0.0;
    for (var j = lid; j < P.dim; j = j + WG) {
        let v = x[base + j];
        ss = ss + v * v;
    }
    let r = 1.0 / sqrt(block_sum(ss, lid) / f32(P.dim) + P.eps);
    for (var j = lid; j < P.dim; j = j + WG) {
        y[base + j] = x[base + j] * r * w[j];
    }
}
