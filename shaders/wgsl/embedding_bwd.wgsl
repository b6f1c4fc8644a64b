// dtable[v, d] = Σ_{i: ids[i] = v} dy[i, d], deterministic without float atomics: a workgroup owns
// one vocabulary row v. For each chunk of WG ids it flags the matches, one invocation lists them in
// order, and every invocation adds the listed rows of dy for its dims, so each sum runs in id
// order. Cost per row: (dim/WG)·(n/WG) chunks, not n·dim.
struct Params { n: u32, dim: u32, vocab: u32 }
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> dt: array<f32>;
@group(0) @binding(3) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> P: Params;

var<workgroup> hit: array<u32, WG>;
var<workgroup> list: array<u32, WG>;
var<workgroup> count: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = wgid(wid, nwg);
    if (v >= P.vocab) {
        return;
    }
    for (var d0 = 0u; d0 < P.dim; d0 = d0 + WG) {
        let d = d0 + lid;
        var s = 0.0;
        for (var c0 = 0u; c0 < P.n; c0 = c0 + WG) {
            let i = c0 + lid;
            let id = ids[min(i, P.n - 1u)];
            hit[lid] = select(0u, 1u, i < P.n && id == i32(v));
            if (v == 0u && i < P.n && (id < 0 || u32(id) >= P.vocab)) {
                atomicOr(&fault[0], FAULT_INDEX);
            }
            workgroupBarrier();
            if (lid == 0u) {
                var c = 0u;
                for (var t = 0u; t < WG; t = t + 1u) {
                    if (hit[t] != 0u) {
                        list[c] = c0 + t;
                        c = c + 1u;
                    }
                }
                count = c;
            }
            workgroupBarrier();
            let c = count;
            if (d < P.dim) {
                for (var t = 0u; t < c; t = t + 1u) {
                    s = s + dy[list[t] * P.dim + d];
                }
            }
            workgroupBarrier();
        }
        if (d < P.dim) {
            dt[v * P.dim + d] = s;
        }
    }
}
