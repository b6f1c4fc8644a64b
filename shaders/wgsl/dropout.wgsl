// y = x·mask/(1−p): the mask is engine.DropoutKeep, a counter-based hash of (seed, index), so every
// backend and every recomputation drops the same elements.
struct Params { n: u32, p: f32, scale: f32, salt: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> seed: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

fn keep(s: u32, i: u32) -> bool {
    var h = (i * 0x9E3779B9u) ^ s ^ (P.salt * 0x85EBCA6Bu);
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    h = h ^ (h >> 16u);
    return f32(h >> 8u) * (1.0 / 16777216.0) >= P.p;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    if (keep(bitcast<u32>(seed[0]), i)) {
        y[i] = x[i] * P.scale;
    } else {
        y[i] = 0.0;
    }
}
