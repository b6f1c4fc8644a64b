// dx = y ⊙ (dy − Σ dy⊙y), one workgroup per row.
//! subgroups
struct Params { rows: u32, dim: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.dim;
    var s = 0.0;
    for (var j = lid; j < P.dim; j = j + WG) {
        s = s + dy[base + j] * y[base + j];
    }
    let d = block_sum(s, lid);
    for (var j = lid; j < P.dim; j = j + WG) {
        dx[base + j] = y[base + j] * (dy[base + j] - d);
    }
}
