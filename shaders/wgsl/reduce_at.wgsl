// reduce.wgsl writing at an offset: y[dst + w] = Σ f(x) over chunk w of x (f by OP: 0 x, 1 x²), in
// a fixed order. The multi-tensor sum of squares puts tensor i's sum at y[i].
struct Params { n: u32, chunk: u32, dst: u32 }
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
        let v = x[i];
        if (OP == 1u) {
            s = fma(v, v, s);
        } else {
            s = s + v;
        }
    }
    let t = block_sum(s, lid);
    if (lid == 0u) {
        y[P.dst + w] = t;
    }
}
