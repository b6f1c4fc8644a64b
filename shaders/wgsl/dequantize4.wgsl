// W = code[q]·absmax[block] for every element of a 4-bit weight in bitsandbytes' layout (two codes a
// byte, the first element in the high nibble), one invocation per element.
struct Params { n: u32, bs: u32, code: array<vec4<f32>, 4> }
@group(0) @binding(0) var<storage, read> packed: array<u32>;
@group(0) @binding(1) var<storage, read> absmax: array<f32>;
@group(0) @binding(2) var<storage, read_write> w: array<f32>;
@group(0) @binding(3) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = lin(wid, nwg, lid);
    if (e >= P.n) {
        return;
    }
    let b = e / 2u;
    let byte = (packed[b / 4u] >> (8u * (b % 4u))) & 0xffu;
    let q = select(byte & 15u, byte >> 4u, (e & 1u) == 0u);
    w[e] = P.code[q / 4u][q % 4u] * absmax[e / P.bs];
}
