// y = f(a, b) elementwise. OP: 0 a+b, 1 a·b, 2 silu backward (a = dy, b = x), 3 swiglu (a = gate,
// b = up), 4 a·b[i mod dim] (IA3 scaling), 5 a + b[i mod dim] (bias), 6 a / sqrt(b[i mod dim])
// (DoRA's magnitude over the weight norm).
struct Params { n: u32, dim: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    if (OP == 0u) {
        y[i] = a[i] + b[i];
    } else if (OP == 1u) {
        y[i] = a[i] * b[i];
    } else if (OP == 2u) {
        let x = b[i];
        let s = 1.0 / (1.0 + exp(-x));
        y[i] = a[i] * s * (1.0 + x * (1.0 - s));
    } else if (OP == 3u) {
        y[i] = silu(a[i]) * b[i];
    } else if (OP == 4u) {
        y[i] = a[i] * b[i % P.dim];
    } else if (OP == 5u) {
        y[i] = a[i] + b[i % P.dim];
    } else {
        y[i] = a[i] / sqrt(b[i % P.dim]);
    }
}
