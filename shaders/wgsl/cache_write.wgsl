// The rows of new keys or values written into a KV cache in place: src holds T rows a sequence
// (seq elements), the cache S rows a sequence (stride elements); sequence b's rows land at row
// b·S + off.
struct Params { n: u32, off: u32, seq: u32, stride: u32, d: u32 }
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> cache: array<f32>;
@group(0) @binding(2) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n) {
        return;
    }
    let b = i / P.seq;
    cache[b * P.stride + P.off * P.d + i % P.seq] = src[i];
}
