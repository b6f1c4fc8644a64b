// torch.optim.AdamW in place on p, m, v (engine.AdamWStep), its step's values on the device: the
// gradient is g·status[2], nothing changes when status[3] says the step is skipped, and ctl holds
// the learning rate and the step number t (bias corrections 1 − β^t computed here in f32).
struct Params { n: u32, b1: f32, b2: f32, eps: f32, wd: f32 }
@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> status: array<f32>;
@group(0) @binding(5) var<storage, read> ctl: array<f32>;
@group(0) @binding(6) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n || status[3] != 0.0) {
        return;
    }
    let lr = ctl[0];
    let t = ctl[2];
    let bc1 = 1.0 - pow(P.b1, t);
    let sbc2 = sqrt(1.0 - pow(P.b2, t));
    let gi = g[i] * status[2];
    let mi = P.b1 * m[i] + (1.0 - P.b1) * gi;
    let vi = P.b2 * v[i] + (1.0 - P.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    let pi = p[i] * (1.0 - lr * P.wd);
    let denom = sqrt(vi) / sbc2 + P.eps;
    p[i] = pi - (lr / bc1) * mi / denom;
}
