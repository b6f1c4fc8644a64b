// Attention backward, key side, tiled: a workgroup owns WG keys of one (batch, kv head); for each
// query head of the group, tiles of QT queries (q, dout, lse and D) stream through workgroup
// memory, and each key sums in a fixed order (deterministic, no atomics):
// dv_j = Σ P dout, dk_j = scale·Σ P (dP − D) q. HD, QT and QTHD = QT·HD are constants. With
// P.docs, only the queries of the key's own document (starts[i] ≤ j) count.
struct Params { B: u32, QL: u32, KVL: u32, H: u32, KVH: u32, HD: u32, scale: f32, docs: u32 }
@group(0) @binding(0) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> dvec: array<f32>;
@group(0) @binding(6) var<storage, read_write> dk: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<storage, read> starts: array<i32>;
@group(0) @binding(9) var<uniform> P: Params;

var<workgroup> Qs: array<f32, QTHD>;
var<workgroup> Os: array<f32, QTHD>;
var<workgroup> Ls: array<f32, QT>;
var<workgroup> Ds: array<f32, QT>;
var<workgroup> Ss: array<u32, QT>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nkb = (P.KVL + WG - 1u) / WG;
    let t = wgid(wid, nwg);
    if (t >= P.B * P.KVH * nkb) {
        return;
    }
    let kb = t % nkb;
    let g = (t / nkb) % P.KVH;
    let bb = t / (nkb * P.KVH);
    let j = kb * WG + lid;
    let valid = j < P.KVL;
    let koff = (bb * P.KVL + j) * P.KVH * HD + g * HD;
    var kv: array<f32, HD>;
    var vv: array<f32, HD>;
    var dka: array<f32, HD>;
    var dva: array<f32, HD>;
    for (var d = 0u; d < HD; d = d + 1u) {
        if (valid) {
            kv[d] = k[koff + d];
            vv[d] = v[koff + d];
        } else {
            kv[d] = 0.0;
            vv[d] = 0.0;
        }
        dka[d] = 0.0;
        dva[d] = 0.0;
    }
    // Query i sits at position KVL − QL + i and sees key j when j ≤ that position; the block's
    // first key is kb·WG.
    var ifirst = 0u;
    if (kb * WG + P.QL > P.KVL) {
        ifirst = kb * WG + P.QL - P.KVL;
    }
    let grp = P.H / P.KVH;
    for (var hh = 0u; hh < grp; hh = hh + 1u) {
        let h = g * grp + hh;
        for (var i0 = ifirst; i0 < P.QL; i0 = i0 + QT) {
            for (var e = lid; e < QTHD; e = e + WG) {
                let i = i0 + e / HD;
                let qoff = (bb * P.QL + i) * P.H * HD + h * HD + e % HD;
                if (i < P.QL) {
                    Qs[e] = q[qoff];
                    Os[e] = dout[qoff];
                } else {
                    Qs[e] = 0.0;
                    Os[e] = 0.0;
                }
            }
            for (var e = lid; e < QT; e = e + WG) {
                let i = i0 + e;
                if (i < P.QL) {
                    Ls[e] = lse[(bb * P.H + h) * P.QL + i];
                    Ds[e] = dvec[(bb * P.H + h) * P.QL + i];
                    Ss[e] = 0u;
                    if (P.docs != 0u) {
                        Ss[e] = u32(starts[bb * P.QL + i]);
                    }
                } else {
                    Ls[e] = 0.0;
                    Ds[e] = 0.0;
                    Ss[e] = 0u;
                }
            }
            workgroupBarrier();
            if (valid) {
                for (var ii = 0u; ii < QT; ii = ii + 1u) {
                    let i = i0 + ii;
                    if (i >= P.QL) {
                        break;
                    }
                    if (P.KVL - P.QL + i < j || j < Ss[ii]) {
                        continue;
                    }
                    var s = 0.0;
                    var dp = 0.0;
                    for (var d = 0u; d < HD; d = d + 1u) {
                        s = fma(Qs[ii * HD + d], kv[d], s);
                        dp = fma(Os[ii * HD + d], vv[d], dp);
                    }
                    let p = exp(s * P.scale - Ls[ii]);
                    let ds = p * (dp - Ds[ii]);
                    for (var d = 0u; d < HD; d = d + 1u) {
                        dva[d] = fma(p, Os[ii * HD + d], dva[d]);
                        dka[d] = fma(ds, Qs[ii * HD + d], dka[d]);
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if (valid) {
        for (var d = 0u; d < HD; d = d + 1u) {
            dk[koff + d] = P.scale * dka[d];
            dv[koff + d] = dva[d];
        }
    }
}
