// Causal grouped-query attention for few queries (decode): a workgroup owns one (batch, head,
// query) and splits its keys WG at a time: each invocation scores one key, the workgroup takes the
// chunk's max and sum (fixed-order trees) for the online softmax, and each invocation then
// accumulates DPT of the HD output dims over the chunk's values (coalesced reads of v). Writes out
// and lse like attention.wgsl; with P.docs, from the query's document start (starts) on.
//! subgroups
struct Params { B: u32, QL: u32, KVL: u32, H: u32, KVH: u32, HD: u32, scale: f32, docs: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read> starts: array<i32>;
@group(0) @binding(6) var<uniform> P: Params;

var<workgroup> qs: array<f32, HD>;
var<workgroup> S: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wgid(wid, nwg);
    if (t >= P.B * P.H * P.QL) {
        return;
    }
    let i = t % P.QL;
    let h = (t / P.QL) % P.H;
    let bb = t / (P.QL * P.H);
    let g = h / (P.H / P.KVH);
    let qoff = (bb * P.QL + i) * P.H * HD + h * HD;
    let kbase = bb * P.KVL * P.KVH * HD + g * HD;
    let kstride = P.KVH * HD;
    let nkeys = P.KVL - P.QL + i + 1u;
    var first = 0u;
    if (P.docs != 0u) {
        first = u32(starts[bb * P.QL + i]);
    }
    for (var d = lid; d < HD; d = d + WG) {
        qs[d] = q[qoff + d] * P.scale;
    }
    workgroupBarrier();
    var acc: array<f32, DPT>;
    for (var dd = 0u; dd < DPT; dd = dd + 1u) {
        acc[dd] = 0.0;
    }
    var m = NEG_MAX;
    var l = 0.0;
    for (var j0 = first; j0 < nkeys; j0 = j0 + WG) {
        let j = j0 + lid;
        var s = NEG_MAX;
        if (j < nkeys) {
            s = 0.0;
            for (var d = 0u; d < HD; d = d + 1u) {
                s = fma(qs[d], k[kbase + j * kstride + d], s);
            }
        }
        let mn = max(m, block_max(s, lid));
        let corr = exp(m - mn);
        var p = 0.0;
        if (j < nkeys) {
            p = exp(s - mn);
        }
        S[lid] = p;
        l = l * corr + block_sum(p, lid);
        let cnt = min(WG, nkeys - j0);
        for (var dd = 0u; dd < DPT; dd = dd + 1u) {
            let d = lid + dd * WG;
            if (d < HD) {
                var a = acc[dd] * corr;
                for (var jj = 0u; jj < cnt; jj = jj + 1u) {
                    a = fma(S[jj], v[kbase + (j0 + jj) * kstride + d], a);
                }
                acc[dd] = a;
            }
        }
        m = mn;
        workgroupBarrier();
    }
    let inv = 1.0 / l;
    for (var dd = 0u; dd < DPT; dd = dd + 1u) {
        let d = lid + dd * WG;
        if (d < HD) {
            o[qoff + d] = acc[dd] * inv;
        }
    }
    if (lid == 0u) {
        lse[(bb * P.H + h) * P.QL + i] = m + log(l);
    }
}
