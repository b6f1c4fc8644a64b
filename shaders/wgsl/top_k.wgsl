// engine.TopK: one workgroup a row of x [rows, V] picks its K best (value, index) pairs, best first,
// ties by the lower index, NaNs never: K passes over the row, each keeping the best element that
// comes after the previous pick in that order (K·V reads; K is small: the candidates a sampler
// needs). out[(row·S + k)·2] = value (−inf when none is left), out[… + 1] = index as f32 (−1),
// S = K, or K + 1 with SAMPLE.
//
// SAMPLE (engine.TopK's Sample): ctl [rows, 4] i32 steers each row. A Gumbel row ranks by the score
// value·(1/T) + Gumbel noise, written once into score [rows, V] and then selected like values; the
// pairs still hold the values. Pair K of every row is (Σ exp((x − max)·(1/T)), 0).
struct Params { rows: u32, v: u32, k: u32 }
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> ctl: array<i32>;
@group(0) @binding(2) var<storage, read_write> score: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> P: Params;

var<workgroup> rv: array<f32, WG>;
var<workgroup> ri: array<i32, WG>;

// before says (av, ai) comes before (bv, bi); index −1 is nothing, after everything.
fn before(av: f32, ai: i32, bv: f32, bi: i32) -> bool {
    if (ai < 0) {
        return false;
    }
    if (bi < 0) {
        return true;
    }
    return av > bv || (av == bv && ai < bi);
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// hash32 is engine.Hash32 (lowbias32).
fn hash32(x: u32) -> u32 {
    var h = x;
    h = h ^ (h >> 16u);
    h = h * 0x7feb352du;
    h = h ^ (h >> 15u);
    h = h * 0x846ca68bu;
    h = h ^ (h >> 16u);
    return h;
}

// atanh2 is 2·atanh(t) for |t| ≤ 1/3, from its series: 2t·Σ t²ⁿ/(2n+1), n ≤ 10 (the first term
// left out is below 10⁻¹¹ of the sum).
fn atanh2(t: f32) -> f32 {
    let t2 = t * t;
    var s = 1.0 / 21.0;
    for (var n = 9; n >= 0; n = n - 1) {
        s = s * t2 + 1.0 / f32(2 * n + 1);
    }
    return 2.0 * t * s;
}

// log_f32 is log(v) for a normal v > 0 from + − × ÷ alone (a device's log() may be far less accurate
// than WGSL asks): v = m·2ᵉ with m in [√½, √2), log m = 2·atanh((m − 1)/(m + 1)).
fn log_f32(v: f32) -> f32 {
    let b = bitcast<u32>(v);
    var e = i32((b >> 23u) & 0xffu) - 127;
    var m = bitcast<f32>((b & 0x7fffffu) | 0x3f800000u);
    if (m > 1.4142135) {
        m = m * 0.5;
        e = e + 1;
    }
    return f32(e) * 0.6931472 + atanh2((m - 1.0) / (m + 1.0));
}

// gumbel_noise is engine.GumbelNoise in f32: −log(−log U), U = (bits + ½)/2²³. −log U is
// 2·atanh(d/(2 − d)) from d = 1 − U (exact) when U ≥ ½, where log U itself would cancel.
fn gumbel_noise(k0: u32, k1: u32, i: u32) -> f32 {
    let m = hash32(hash32((i * 0x9E3779B9u) ^ k0) ^ k1) >> 9u;
    let d = (f32(8388608u - m) - 0.5) * (1.0 / 8388608.0);
    var e: f32;
    if (d <= 0.5) {
        e = atanh2(d / (2.0 - d));
    } else {
        e = -log_f32((f32(m) + 0.5) * (1.0 / 8388608.0));
    }
    return -log_f32(e);
}

// rank_key is what the selection ranks element i of the row by.
fn rank_key(base: u32, i: u32) -> f32 {
    if (SAMPLE) {
        return score[base + i];
    }
    return x[base + i];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wgid(wid, nwg);
    if (row >= P.rows) {
        return;
    }
    let base = row * P.v;
    var stride = P.k;
    if (SAMPLE) {
        stride = P.k + 1u;
        let c = row * 4u;
        let inv_t = bitcast<f32>(ctl[c]);
        let gumbel = ctl[c + 1u] != 0;
        let k0 = bitcast<u32>(ctl[c + 2u]);
        let k1 = bitcast<u32>(ctl[c + 3u]);
        var m = NEG_MAX;
        for (var i = lid; i < P.v; i = i + WG) {
            let xv = x[base + i];
            var s = xv;
            if (gumbel && !is_nan(xv) && xv > NEG_MAX) {
                s = xv * inv_t + gumbel_noise(k0, k1, i);
            }
            score[base + i] = s;
            if (!is_nan(xv)) {
                m = max(m, xv);
            }
        }
        m = block_max(m, lid);
        var z = 0.0;
        for (var i = lid; i < P.v; i = i + WG) {
            let xv = x[base + i];
            if (!is_nan(xv) && xv > NEG_MAX) {
                z = z + exp((xv - m) * inv_t);
            }
        }
        z = block_sum(z, lid);
        if (lid == 0u) {
            out[(row * stride + P.k) * 2u] = z;
            out[(row * stride + P.k) * 2u + 1u] = 0.0;
        }
        storageBarrier(); // every invocation's scores, before any selects
    }
    var pv = 0.0;
    var pi = -1i;
    var first = true;
    for (var k = 0u; k < P.k; k = k + 1u) {
        var bv = 0.0;
        var bi = -1i;
        for (var i = lid; i < P.v; i = i + WG) {
            let xv = rank_key(base, i);
            if (is_nan(xv)) {
                continue;
            }
            if (!first && !before(pv, pi, xv, i32(i))) {
                continue;
            }
            if (before(xv, i32(i), bv, bi)) {
                bv = xv;
                bi = i32(i);
            }
        }
        workgroupBarrier();
        rv[lid] = bv;
        ri[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s >> 1u) {
            if (lid < s && before(rv[lid + s], ri[lid + s], rv[lid], ri[lid])) {
                rv[lid] = rv[lid + s];
                ri[lid] = ri[lid + s];
            }
            workgroupBarrier();
        }
        pv = rv[0];
        pi = ri[0];
        first = false;
        if (lid == 0u) {
            let o = (row * stride + k) * 2u;
            if (pi < 0) {
                out[o] = bitcast<f32>(0xff800000u);
            } else {
                out[o] = x[base + u32(pi)];
            }
            out[o + 1u] = f32(pi);
        }
    }
}
