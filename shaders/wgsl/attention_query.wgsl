// Causal grouped-query attention, one query a workgroup (decode, and cached attention on software
// devices): a workgroup owns one (query, head), heads of a query adjacent (those of a kv group read
// the same keys), and splits the query's keys (query_keys: contiguous with ROWS false, a KV cache
// of slots with ROWS true) WG at a time: each invocation scores one key, the workgroup takes the
// chunk's max and sum (fixed-order reductions) for the online softmax, and each invocation then
// accumulates DPT of the HD output dims over the chunk's values (coalesced reads of v). Writes out
// and the log-sum-exp of the scaled scores, as attention.wgsl.
//! subgroups
//! use attention
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> P: AttnParams;

var<workgroup> qs: array<f32, HD>;
var<workgroup> S: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wgid(wid, nwg);
    if (t >= P.B * P.QL * P.H) {
        return;
    }
    let h = t % P.H;
    let tq = t / P.H;
    let g = h / (P.H / P.KVH);
    let qoff = tq * P.H * HD + h * HD;
    let kstride = P.KVH * HD;
    let keys = query_keys(tq);
    let nkeys = keys.y - keys.x;
    let kbase = keys.x * kstride + g * HD;
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
    for (var j0 = 0u; j0 < nkeys; j0 = j0 + WG) {
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
    let inv = attn_inv(l);
    for (var dd = 0u; dd < DPT; dd = dd + 1u) {
        let d = lid + dd * WG;
        if (d < HD) {
            o[qoff + d] = acc[dd] * inv;
        }
    }
    if (lid == 0u) {
        lse[lse_at(tq, h)] = m + log(l);
    }
}
