// IA3's scaling with a vector each row picks from a pool: y[n, d] = x[n, d]·L[s, d] with s = sel[n];
// x[n, d] for rows that pick no slot.
struct Params { n: u32, dim: u32, slots: i32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> sel: array<i32>;
@group(0) @binding(2) var<storage, read> l: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    let slot = sel[i / P.dim];
    if (slot >= 0 && slot < P.slots) {
        y[i] = x[i] * l[u32(slot) * P.dim + i % P.dim];
    } else {
        if (slot >= P.slots) {
            atomicOr(&fault[0], FAULT_INDEX);
        }
        y[i] = x[i];
    }
}
