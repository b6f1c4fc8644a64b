// y = f(x) elementwise. OP: 0 silu, 1 s·x, 2 x[0] broadcast (expand), 3 copy.
struct Params { n: u32, s: f32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    if (OP == 0u) {
        y[i] = silu(x[i]);
    } else if (OP == 1u) {
        y[i] = P.s * x[i];
    } else if (OP == 2u) {
        y[i] = x[0];
    } else {
        y[i] = x[i];
    }
}
