// acc += x, or acc = x with OVERWRITE (engine.Accumulate): the sum of micro-batches' gradients;
// on a span, acc[dst + i] and x[src + i] for i < n (packing gradients into one buffer and back).
struct Params { n: u32, dst: u32, src: u32 }
@group(0) @binding(0) var<storage, read_write> acc: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i < P.n) {
        if (OVERWRITE) {
            acc[P.dst + i] = x[P.src + i];
        } else {
            acc[P.dst + i] = acc[P.dst + i] + x[P.src + i];
        }
    }
}
