// y[i, d] = table[ids[i], d]; an id out of range gives 0 and raises the fault flag, except a
// negative id with pad set, whose row is padv (a gather in which a row picks nothing). TH: the
// table's storage, 0 f32, 1 f16, 2 bf16 (a frozen 16-bit table packed two to a word, widened exactly).
//! use half
struct Params { n: u32, dim: u32, vocab: u32, pad: u32, padv: f32 }
@group(0) @binding(0) var<storage, read> table: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> fault: array<atomic<u32>>;
@group(0) @binding(4) var<uniform> P: Params;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = lin(wid, nwg, lid);
    if (i >= P.n * P.dim) {
        return;
    }
    let r = i / P.dim;
    let d = i % P.dim;
    let id = ids[r];
    if (id < 0 && P.pad != 0u) {
        y[i] = P.padv;
    } else if (id < 0 || u32(id) >= P.vocab) {
        y[i] = 0.0;
        atomicOr(&fault[0], FAULT_INDEX);
    } else {
        let at = u32(id) * P.dim + d;
        if (TH != 0u) {
            y[i] = widen16(table[at >> 1u], (at & 1u) == 1u, TH == 2u);
        } else {
            y[i] = bitcast<f32>(table[at]);
        }
    }
}
