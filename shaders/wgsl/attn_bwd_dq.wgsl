// Attention backward, query side, tiled like the forward pass: a workgroup owns WG queries of one
// (batch, head); key and value tiles of KT rows stream through workgroup memory. Per query,
// D = Σ dout·out (kept in dvec for the key side) and dq = scale·Σ_j P_j (dP_j − D) k_j with
// P_j = exp(scale·q·k_j − lse), dP_j = dout·v_j. HD, KT and KTHD = KT·HD are constants. With
// P.docs, a query's keys start at its document's (starts), as in attention.wgsl.
struct Params { B: u32, QL: u32, KVL: u32, H: u32, KVH: u32, HD: u32, scale: f32, docs: u32 }
@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> o: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read_write> dq: array<f32>;
@group(0) @binding(7) var<storage, read_write> dvec: array<f32>;
@group(0) @binding(8) var<storage, read> starts: array<i32>;
@group(0) @binding(9) var<uniform> P: Params;

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
    let li = (bb * P.H + h) * P.QL + i;
    var qv: array<f32, HD>;
    var dov: array<f32, HD>;
    var acc: array<f32, HD>;
    var D = 0.0;
    var L = 0.0;
    for (var d = 0u; d < HD; d = d + 1u) {
        if (valid) {
            qv[d] = q[qoff + d];
            dov[d] = dout[qoff + d];
            D = fma(dov[d], o[qoff + d], D);
        } else {
            qv[d] = 0.0;
            dov[d] = 0.0;
        }
        acc[d] = 0.0;
    }
    if (valid) {
        dvec[li] = D;
        L = lse[li];
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
                var dp = 0.0;
                for (var d = 0u; d < HD; d = d + 1u) {
                    s = fma(qv[d], Ks[jj * HD + d], s);
                    dp = fma(dov[d], Vs[jj * HD + d], dp);
                }
                let ds = exp(s * P.scale - L) * (dp - D);
                for (var d = 0u; d < HD; d = d + 1u) {
                    acc[d] = fma(ds, Ks[jj * HD + d], acc[d]);
                }
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        for (var d = 0u; d < HD; d = d + 1u) {
            dq[qoff + d] = P.scale * acc[d];
        }
    }
}
