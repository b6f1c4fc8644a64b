// Causal grouped-query attention, tiled: a workgroup owns WG consecutive queries of one (batch,
// head), one query per invocation. Keys and values stream through workgroup memory KT at a time
// (each tile loaded once for all WG queries) and each query keeps an online softmax (running max m
// and sum l) and its HD accumulators in registers, so the score matrix is never stored. Writes out
// and the log-sum-exp of the scaled scores. HD (the head dim), KT and KTHD = KT·HD are constants.
// With P.docs, starts[query] is the first key of the query's packed document: it sees keys from
// there to itself, and the workgroup skips the tiles before its earliest start.
struct Params { B: u32, QL: u32, KVL: u32, H: u32, KVH: u32, HD: u32, scale: f32, docs: u32 }
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read> starts: array<i32>;
@group(0) @binding(6) var<uniform> P: Params;

var<workgroup> Ks: array<f32, KTHD>;
var<workgroup> Vs: array<f32, KTHD>;
var<workgroup> Sts: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nqb = (P.QL + WG - 1u) / WG;
    let t = wgid(wid, nwg);
    if (t >= P.B * P.H * nqb) {
        return;
    }
    let qb = t % nqb;
    let h = (t / nqb) % P.H;
    let bb = t / (nqb * P.H);
    let g = h / (P.H / P.KVH);
    let i = qb * WG + lid;
    let valid = i < P.QL;
    let pos = P.KVL - P.QL + i;
    let jend = P.KVL - P.QL + min(P.QL, qb * WG + WG);
    let qoff = (bb * P.QL + i) * P.H * HD + h * HD;
    var qv: array<f32, HD>;
    var acc: array<f32, HD>;
    for (var d = 0u; d < HD; d = d + 1u) {
        if (valid) {
            qv[d] = q[qoff + d] * P.scale;
        } else {
            qv[d] = 0.0;
        }
        acc[d] = 0.0;
    }
    var st = 0u;
    if (P.docs != 0u && valid) {
        st = u32(starts[bb * P.QL + i]);
    }
    // The earliest start of the block's queries: tiles wholly before it are not loaded.
    Sts[lid] = select(jend, st, valid);
    workgroupBarrier();
    var jfirst = jend;
    for (var e = 0u; e < WG; e = e + 1u) {
        jfirst = min(jfirst, Sts[e]);
    }
    var m = NEG_MAX;
    var l = 0.0;
    for (var j0 = 0u; j0 < jend; j0 = j0 + KT) {
        let need = j0 + KT > jfirst;
        for (var e = lid; need && e < KTHD; e = e + WG) {
            let j = j0 + e / HD;
            let koff = (bb * P.KVL + j) * P.KVH * HD + g * HD + e % HD;
            if (j < P.KVL) {
                Ks[e] = k[koff];
                Vs[e] = v[koff];
            } else {
                Ks[e] = 0.0;
                Vs[e] = 0.0;
            }
        }
        workgroupBarrier();
        if (valid && need) {
            for (var jj = 0u; jj < KT; jj = jj + 1u) {
                if (j0 + jj > pos) {
                    break;
                }
                if (j0 + jj < st) {
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
        let inv = 1.0 / l;
        for (var d = 0u; d < HD; d = d + 1u) {
            o[qoff + d] = acc[d] * inv;
        }
        lse[(bb * P.H + h) * P.QL + i] = m + log(l);
    }
}
