// Grouped-query attention over a KV cache of slots of KVS rows (as attention_rows.wgsl) for many
// queries (prefill), tiled as attention.wgsl: a workgroup owns WG consecutive queries of one
// sequence and one head (heads of a query block adjacent: a kv group reads the same tiles), one
// query per invocation, and the keys stream through workgroup memory KT at a time, each tile loaded
// once for all WG queries. Query t sees the rows of its slot from the slot's first through rows[t];
// the workgroup walks the rows from the least first to the greatest rows[t] of its queries, each
// query skipping the rows outside its own range. For a sequence's rows consecutive in one slot (a
// prefill) that is its causal range; other rows stay correct, only reading rows some queries skip.
// A query whose row lies outside the cache's R rows sees nothing and gets zeros.
struct Params { B: u32, QL: u32, H: u32, KVH: u32, KVS: u32, R: u32, scale: f32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<i32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> P: Params;

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
    // The workgroup's rows [lo, hi): every invocation reads all n rows itself, so the tile loop's
    // bound is uniform without a barrier.
    var lo = P.R;
    var hi = 0u;
    for (var e = 0u; e < n; e = e + 1u) {
        let r = rows[t0 + e];
        if (r >= 0 && u32(r) < P.R) {
            lo = min(lo, u32(r) - u32(r) % P.KVS);
            hi = max(hi, u32(r) + 1u);
        }
    }
    let valid = lid < n;
    var first = 0u;
    var last = 0u;
    var sees = false;
    if (valid) {
        let r = rows[t0 + lid];
        if (r >= 0 && u32(r) < P.R) {
            sees = true;
            last = u32(r);
            first = last - last % P.KVS;
        }
    }
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
                if (j > last) {
                    break;
                }
                if (j < first) {
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
        let inv = select(0.0, 1.0 / l, l > 0.0);
        for (var d = 0u; d < HD; d = d + 1u) {
            o[qoff + d] = acc[d] * inv;
        }
        lse[(bb * P.H + h) * P.QL + qb * WG + lid] = m + log(l);
    }
}
