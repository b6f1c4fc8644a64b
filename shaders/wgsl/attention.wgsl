// Causal grouped-query attention, tiled (prefill, training): a workgroup owns WG consecutive queries
// of one sequence and one head (heads of a query block adjacent: a kv group reads the same tiles),
// one query per invocation. Keys and values stream through workgroup memory KT at a time, each
// tile loaded once for all WG queries, and each query keeps an online softmax (running max m and
// sum l) and its HD accumulators in registers, so the score matrix is never stored. The workgroup
// walks the rows from the least first to the greatest end of its queries' ranges (query_keys:
// contiguous with ROWS false, a KV cache of slots with ROWS true), each query skipping the rows
// outside its own: for a causal sequence, or a prefill's rows consecutive in one slot, that skips
// the tiles before the block's earliest document start. Writes out and the log-sum-exp of the
// scaled scores. HD (the head dim), KT and KTHD = KT·HD are constants.
//! use attention
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> idx: array<i32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> P: AttnParams;

var<workgroup> Ks: array<f32, KTHD>;
var<workgroup> Vs: array<f32, KTHD>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nqb = (P.QL + WG - 1u) / WG;
    let t = wgid(wid, nwg);
    if (t >= P.B * nqb * P.H) {
        return;
    }
    let h = t % P.H;
    let qb = (t / P.H) % nqb;
    let bb = t / (P.H * nqb);
    let g = h / (P.H / P.KVH);
    let kstride = P.KVH * HD;
    let t0 = bb * P.QL + qb * WG;
    let n = min(WG, P.QL - qb * WG);
    // The workgroup's rows [lo, hi): every invocation reads all n ranges itself (idx is read-only),
    // so the tile loop's bound is uniform without a barrier.
    var lo = 0xffffffffu;
    var hi = 0u;
    for (var e = 0u; e < n; e = e + 1u) {
        let r = query_keys(t0 + e);
        if (r.y > r.x) {
            lo = min(lo, r.x);
            hi = max(hi, r.y);
        }
    }
    let valid = lid < n;
    var keys = vec2<u32>(0u, 0u);
    if (valid) {
        keys = query_keys(t0 + lid);
    }
    let sees = keys.y > keys.x;
    let qoff = (t0 + lid) * P.H * HD + h * HD;
    var qv: array<f32, HD>;
    var acc: array<f32, HD>;
    for (var d = 0u; d < HD; d = d + 1u) {
        if (sees) {
            qv[d] = q[qoff + d] * P.scale;
        } else {
            qv[d] = 0.0;
        }
        acc[d] = 0.0;
    }
    var m = NEG_MAX;
    var l = 0.0;
    for (var j0 = lo; j0 < hi; j0 = j0 + KT) {
        for (var e = lid; e < KTHD; e = e + WG) {
            let j = j0 + e / HD;
            if (j < hi) {
                let koff = j * kstride + g * HD + e % HD;
                Ks[e] = k[koff];
                Vs[e] = v[koff];
            } else {
                Ks[e] = 0.0;
                Vs[e] = 0.0;
            }
        }
        workgroupBarrier();
        if (sees) {
            for (var jj = 0u; jj < KT; jj = jj + 1u) {
                let j = j0 + jj;
                if (j >= keys.y) {
                    break;
                }
                if (j < keys.x) {
                    continue;
                }
                var s = 0.0;
                for (var d = 0u; d < HD; d = d + 1u) {
                    s = fma(qv[d], Ks[jj * HD + d], s);
                }
                let mn = max(m, s);
                let corr = exp(m - mn);
                let p = exp(s - mn);
                l = l * corr + p;
                for (var d = 0u; d < HD; d = d + 1u) {
                    acc[d] = fma(p, Vs[jj * HD + d], acc[d] * corr);
                }
                m = mn;
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = attn_inv(l);
        for (var d = 0u; d < HD; d = d + 1u) {
            o[qoff + d] = acc[d] * inv;
        }
        lse[lse_at(t0 + lid, h)] = m + log(l);
    }
}
