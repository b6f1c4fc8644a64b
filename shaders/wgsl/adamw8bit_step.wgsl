// bitsandbytes' blockwise 8-bit AdamW in place (engine.AdamW8bitStep; the CPU's kernels.AdamW8bit
// in the same f32 order): one workgroup of 64 invocations per block of 256 values, each invocation
// owning four consecutive values, so that it reads and writes whole u32 words of codes. q holds
// the first moment's codes (nw words: n rounded up to 4 bytes) then the second's; absmax their block scales; qmap the
// signed code (256) then the unsigned one (256). Nothing changes when status[3] skips the step.
struct Params { n: u32, nb: u32, nw: u32, b1: f32, b2: f32, eps: f32, wd: f32 }
@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<u32>;
@group(0) @binding(3) var<storage, read_write> absmax: array<f32>;
@group(0) @binding(4) var<storage, read> qmap: array<f32>;
@group(0) @binding(5) var<storage, read> status: array<f32>;
@group(0) @binding(6) var<storage, read> ctl: array<f32>;
@group(0) @binding(7) var<uniform> P: Params;

var<workgroup> code: array<f32, 512>;
var<workgroup> red2: array<vec2<f32>, WG>;

// quantize8 is quant.Quantize8 (bitsandbytes' dQuantize<0>) on code[off..off+256): a binary
// search from index 127, then the midpoint to the neighbour on x's side.
fn quantize8(off: u32, x: f32) -> u32 {
    var pivot = 127u;
    var upper_pivot = 255u;
    var lower_pivot = 0u;
    var lower = -1.0;
    var upper = 1.0;
    var val = code[off + pivot];
    for (var i = 64u; i > 0u; i = i >> 1u) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot = pivot + i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot = pivot - i;
        }
        val = code[off + pivot];
    }
    if (upper_pivot == 255u) {
        upper = code[off + upper_pivot];
    }
    if (lower_pivot == 0u) {
        lower = code[off + lower_pivot];
    }
    if (x > val) {
        if (x > (upper + val) * 0.5) {
            return upper_pivot;
        }
        return pivot;
    }
    if (x < (lower + val) * 0.5) {
        return lower_pivot;
    }
    return pivot;
}

fn signbit(x: f32) -> bool {
    return (bitcast<u32>(x) >> 31u) != 0u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wgid(wid, nwg);
    for (var k = lid; k < 512u; k = k + WG) {
        code[k] = qmap[k];
    }
    workgroupBarrier();
    // Uniform per workgroup: every invocation of a block returns together.
    if (b >= P.nb || status[3] != 0.0) {
        return;
    }
    let a1 = absmax[b];
    let a2 = absmax[P.nb + b];
    let gs = status[2];
    // This invocation's word of each moment, when it holds any value (else its values are 0).
    let wi = b * 64u + lid;
    let own = wi < P.nw;
    var w1 = 0u;
    var w2 = 0u;
    if (own) {
        w1 = q[wi];
        w2 = q[P.nw + wi];
    }
    var s1: array<f32, 4>;
    var s2: array<f32, 4>;
    var mx = vec2<f32>(0.0, 0.0);
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = b * 256u + lid * 4u + j;
        if (i < P.n) {
            let gi = g[i] * gs;
            s1[j] = code[(w1 >> (8u * j)) & 255u] * a1 * P.b1 + (1.0 - P.b1) * gi;
            s2[j] = code[256u + ((w2 >> (8u * j)) & 255u)] * a2 * P.b2 + (1.0 - P.b2) * gi * gi;
        } else {
            s1[j] = 0.0;
            s2[j] = 0.0;
        }
        mx = max(mx, vec2<f32>(abs(s1[j]), abs(s2[j])));
    }
    red2[lid] = mx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red2[lid] = max(red2[lid], red2[lid + s]);
        }
        workgroupBarrier();
    }
    let na = red2[0];
    if (lid == 0u) {
        absmax[b] = na.x;
        absmax[P.nb + b] = na.y;
    }
    let lr = ctl[0];
    let t = ctl[2];
    let corr1 = 1.0 - pow(P.b1, t);
    let corr2 = sqrt(1.0 - pow(P.b2, t));
    let step_size = -lr * corr2 / corr1;
    let zero1 = quantize8(0u, 0.0);
    let zero2 = quantize8(256u, 0.0);
    var c1 = 0u;
    var c2 = 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = b * 256u + lid * 4u + j;
        var k1 = zero1;
        var k2 = zero2;
        if (i < P.n) {
            var pi = p[i] + step_size * (s1[j] / (sqrt(s2[j]) + corr2 * P.eps));
            if (P.wd > 0.0) {
                pi = pi * (1.0 - lr * P.wd);
            }
            p[i] = pi;
            if (na.x > 0.0) {
                k1 = quantize8(0u, s1[j] / na.x);
                if (signbit(code[k1]) != signbit(s1[j])) {
                    if (s1[j] > 0.0) {
                        k1 = k1 + 1u;
                    } else {
                        k1 = k1 - 1u;
                    }
                }
            }
            if (na.y > 0.0) {
                k2 = quantize8(256u, s2[j] / na.y);
            }
        }
        c1 = c1 | (k1 << (8u * j));
        c2 = c2 | (k2 << (8u * j));
    }
    if (own) {
        q[wi] = c1;
        q[P.nw + wi] = c2;
    }
}
