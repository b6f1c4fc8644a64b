// y[n] = Σ_k x[k]·W[n, k] for one row x and a 4-bit W [N, kq]: one workgroup per output n. Each
// invocation walks whole packed u32 words (8 codes, one absmax block since the blocksize is a
// multiple of 8), so every weight byte is read once; the code table lives in private memory.
// EPI adds lscale·Σ_r xa[r]·bl[n·ldbl + r] (LoRA decode).
//! subgroups
struct Params {
    M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32, alpha: f32,
    kq: u32, bs: u32, rank: u32, lscale: f32, ldxa: u32, ldbl: u32,
    code: array<vec4<f32>, 4>,
}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read> absmax: array<f32>;
@group(0) @binding(3) var<storage, read> xa: array<f32>;
@group(0) @binding(4) var<storage, read> bl: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<uniform> P: Params;

var<private> code: array<f32, 16>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = wgid(wid, nwg);
    if (n >= P.N) {
        return;
    }
    for (var q = 0u; q < 16u; q = q + 1u) {
        code[q] = P.code[q / 4u][q % 4u];
    }
    let start = n * P.kq;
    let end = start + P.kq;
    let w1 = (end + 7u) / 8u;
    var s = 0.0;
    for (var w = start / 8u + lid; w < w1; w = w + WG) {
        let word = b[w];
        var part = 0.0;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let f = w * 8u + j;
            if (f < start || f >= end) {
                continue;
            }
            let byte = (word >> (8u * (j / 2u))) & 0xffu;
            let q = select(byte & 15u, byte >> 4u, (j & 1u) == 0u);
            part = fma(code[q], x[f - start], part);
        }
        s = fma(part, absmax[(w * 8u) / P.bs], s);
    }
    let total = block_sum(s, lid);
    if (lid == 0u) {
        var v = P.alpha * total;
        if (EPI) {
            var e = 0.0;
            for (var r = 0u; r < P.rank; r = r + 1u) {
                e = fma(xa[r], bl[n * P.ldbl + r], e);
            }
            v = v + P.lscale * e;
        }
        y[n] = v;
    }
}
