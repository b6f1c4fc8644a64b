// The rows of new keys or values written into a KV cache in place: row t of src (d elements)
// lands at cache row rows[t]. A row outside the cache's R rows writes nothing and raises the fault
// flag, which the backend reports as an error.
struct Params { n: u32, d: u32, R: u32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> rows: array<i32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    let r = rows[i / P.d];
    if (r < 0 || u32(r) >= P.R) {
        atomicOr(&fault[0], FAULT_INDEX);
        return;
    }
    cache[u32(r) * P.d + i % P.d] = src[i];
}
