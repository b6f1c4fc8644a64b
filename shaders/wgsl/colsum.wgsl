// y[j] = Σ_i f[i, j] over the rows of [rows, dim] operands, f by OP: 0 a, 1 a·b, 2 a·b·c[i].
// A workgroup owns CW columns; its WG/CW lanes sum interleaved rows, then a fixed tree adds the
// lanes: deterministic, no atomics, coalesced along each row.
struct Params { rows: u32, dim: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;

const LANES: u32 = WG / CW;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col = wgid(wid, nwg) * CW + lid % CW;
    let lane = lid / CW;
    var s = 0.0;
    if (col < P.dim) {
        for (var i = lane; i < P.rows; i = i + LANES) {
            let k = i * P.dim + col;
            var v = a[k];
            if (OP >= 1u) {
                v = v * b[k];
            }
            if (OP == 2u) {
                v = v * c[i];
            }
            s = s + v;
        }
    }
    red[lid] = s;
    workgroupBarrier();
    for (var st = LANES / 2u; st > 0u; st = st >> 1u) {
        if (lane < st) {
            red[lid] = red[lid] + red[lid + st * CW];
        }
        workgroupBarrier();
    }
    if (lane == 0u && col < P.dim) {
        y[col] = red[lid];
    }
}
