// Deterministic full sum in two passes (engine.Sum). Pass 1 (one workgroup per chunk of x): y[w] =
// Σ x over x[w·chunk, (w+1)·chunk). Pass 2 runs this kernel again over the partials with one chunk. The order of every sum is fixed, so results repeat bit for bit.
struct Params { n: u32, chunk: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let w = wgid(wid, nwg);
    let lo = w * P.chunk;
    let hi = min(P.n, lo + P.chunk);
    var s = 0.0;
    for (var i = lo + lid; i < hi; i = i + WG) {
        s = s + x[i];
    }
    let t = block_sum(s, lid);
    if (lid == 0u) {
        y[w] = t;
    }
}
