// dx = r·dy⊙w − x·r³·Σ(dy⊙w⊙x)/dim with r = 1/sqrt(mean(x²)+eps), one workgroup per row; r is
// kept in rstd for the dw column reduction (colsum OP 2).
//! subgroups
struct Params { rows: u32, dim: u32, eps: f32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.dim;
    var ss = 0.0;
    var dot = 0.0;
    for (var j = lid; j < P.dim; j = j + WG) {
        let v = x[base + j];
        ss = ss + v * v;
        dot = dot + dy[base + j] * w[j] * v;
    }
    let r = 1.0 / sqrt(block_sum(ss, lid) / f32(P.dim) + P.eps);
    let d = block_sum(dot, lid) / f32(P.dim);
    for (var j = lid; j < P.dim; j = j + WG) {
        dx[base + j] = r * dy[base + j] * w[j] - x[base + j] * r * r * r * d;
    }
    if (lid == 0u) {
        rstd[row] = r;
    }
}
