// From dy, gate, up (y = silu(gate)·up): dgate = dy·up·silu'(gate), dup = dy·silu(gate).
struct Params { n: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> dgate: array<f32>;
@group(0) @binding(4) var<storage, read_write> dup: array<f32>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    let g = gate[i];
    let s = 1.0 / (1.0 + exp(-g));
    dgate[i] = dy[i] * up[i] * s * (1.0 + g * (1.0 - s));
    dup[i] = dy[i] * g * s;
}
