// subgroup_probe records the subgroup size the device runs compute kernels with (out[0]) and the
// sum over one subgroup of the invocation indices (out[1]), which checks subgroupAdd works.
//! enable subgroups

@group(0) @binding(0) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) i: u32, @builtin(subgroup_size) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let s = subgroupAdd(lane + 1u);
    if (i == 0u) {
        out[0] = sg;
        out[1] = s;
    }
}
