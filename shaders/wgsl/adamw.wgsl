// torch.optim.AdamW, in place on p, m, v (each bound once, read-write). bc1 = 1 − β1^t and
// sbc2 = sqrt(1 − β2^t) come from the host in double precision.
struct Params { n: u32, lr: f32, b1: f32, b2: f32, eps: f32, wd: f32, bc1: f32, sbc2: f32 }
@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    let gi = g[i];
    let mi = P.b1 * m[i] + (1.0 - P.b1) * gi;
    let vi = P.b2 * v[i] + (1.0 - P.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let pi = p[i] * (1.0 - P.lr * P.wd);
    let denom = sqrt(vi) / P.sbc2 + P.eps;
    p[i] = pi - (P.lr / P.bc1) * mi / denom;
}
