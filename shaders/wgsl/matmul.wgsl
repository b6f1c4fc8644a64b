// Tiled GEMM (ASZ = BK·BM, BSZ = BK·BN, TMN = TM·TN come from the host: naga v0.19 takes only a
// single constant as an array size): c = alpha·op(A)·op(B) [+ lscale·xa·blᵀ] [+ c].
// A workgroup computes a BM×BN tile of c; each of its WG invocations keeps TM×TN accumulators in
// registers (rows ty + i·BM/TM, columns tx + j·BN/TN) over BK-deep slices of k staged in workgroup
// memory. Loads are bounds-checked (zero padding), so no size need be a tile multiple.
// Flags: TA/TB transpose A/B; BQ: B is a 4-bit quantized weight [N, kq] (two codes a byte, first
// element in the high nibble, blockwise absmax) dequantized once per tile into workgroup memory;
// EPI: add the LoRA term lscale·Σ_r xa[i, r]·bl(j, r), with bl(j, r) = bl[j·ldbl + r] or, with
// EPIT, bl[r·ldbl + j]; ACC: accumulate into c. BH: B's storage, 0 f32, 1 f16, 2 bf16 (a frozen
// 16-bit weight, packed two to a word, widened exactly to f32 as it is staged).
// F16 (the f16 variant, shaders.F16Const): the tiles are staged in f16 (ST), products taken in f32
// (exact for f16 factors) and accumulated in f32.
//! use half
//! f16
struct Params {
    M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32, alpha: f32,
    kq: u32, bs: u32, rank: u32, lscale: f32, ldxa: u32, ldbl: u32,
    code: array<vec4<f32>, 4>,
}
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read> absmax: array<f32>;
@group(0) @binding(3) var<storage, read> xa: array<f32>;
@group(0) @binding(4) var<storage, read> bl: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<uniform> P: Params;

var<workgroup> As: array<ST, ASZ>;
var<workgroup> Bs: array<ST, BSZ>;
var<private> code: array<f32, 16>;

const RM: u32 = BM / TM; // invocations along m
const RN: u32 = BN / TN; // invocations along n

fn loadA(m: u32, k: u32) -> f32 {
    if (m >= P.M || k >= P.K) {
        return 0.0;
    }
    if (TA) {
        return a[k * P.lda + m];
    }
    return a[m * P.lda + k];
}

// loadB is op(B)(k, n) in the staging type.
fn loadB(k: u32, n: u32) -> ST {
    if (k >= P.K || n >= P.N) {
        return 0.0;
    }
    var idx: u32;
    if (TB) {
        idx = n * P.ldb + k;
    } else {
        idx = k * P.ldb + n;
    }
    if (BQ) {
        let byte = (b[idx >> 3u] >> (8u * ((idx >> 1u) & 3u))) & 0xffu;
        let q = select(byte & 15u, byte >> 4u, (idx & 1u) == 0u);
        return ST(code[q] * absmax[idx / P.bs]);
    }
    if (BH != 0u) {
        // Exact in f32; an f16 weight is exact in the f16 variant too.
        return ST(widen16(b[idx >> 1u], (idx & 1u) == 1u, BH == 2u));
    }
    return ST(bitcast<f32>(b[idx]));
}

// decode8 writes the 8 weights W[row, col..col+8) (col a multiple of 8, W's rows kq long, kq a
// multiple of 8) to Bs[at + j·stride], zeros outside rows × cols.
fn decode8(row: u32, col: u32, rows: u32, cols: u32, at: u32, stride: u32) {
    if (row >= rows || col >= cols) {
        for (var j = 0u; j < 8u; j = j + 1u) {
            Bs[at + j * stride] = ST(0.0);
        }
        return;
    }
    let flat = row * P.ldb + col;
    let word = b[flat >> 3u];
    let am = absmax[flat / P.bs];
    for (var j = 0u; j < 8u; j = j + 1u) {
        let byte = (word >> (8u * (j >> 1u))) & 0xffu;
        let q = select(byte & 15u, byte >> 4u, (j & 1u) == 0u);
        Bs[at + j * stride] = ST(code[q] * am);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (BQ) {
        for (var q = 0u; q < 16u; q = q + 1u) {
            code[q] = P.code[q / 4u][q % 4u];
        }
    }
    let tilesN = (P.N + BN - 1u) / BN;
    let t = wgid(wid, nwg);
    let m0 = (t / tilesN) * BM;
    let n0 = (t % tilesN) * BN;
    if (m0 >= P.M) {
        return;
    }
    let tx = lid % RN;
    let ty = lid / RN;
    var acc: array<f32, TMN>;
    for (var i = 0u; i < TM * TN; i = i + 1u) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < P.K; k0 = k0 + BK) {
        for (var e = lid; e < BM * BK; e = e + WG) {
            var mm: u32;
            var kk: u32;
            if (TA) {
                mm = e % BM;
                kk = e / BM;
            } else {
                kk = e % BK;
                mm = e / BK;
            }
            As[kk * BM + mm] = ST(loadA(m0 + mm, k0 + kk));
        }
        if (BQ && P.kq % 8u == 0u) {
            // Rows of W hold whole packed words: decode 8 codes per u32 read (one absmax each,
            // the blocksize being a multiple of 8).
            if (TB) {
                for (var e = lid; e < BN * (BK / 8u); e = e + WG) {
                    let nn = e / (BK / 8u);
                    let kw = (e % (BK / 8u)) * 8u;
                    decode8(n0 + nn, k0 + kw, P.N, P.K, kw * BN + nn, BN);
                }
            } else {
                for (var e = lid; e < BK * (BN / 8u); e = e + WG) {
                    let kk = e / (BN / 8u);
                    let nw = (e % (BN / 8u)) * 8u;
                    decode8(k0 + kk, n0 + nw, P.K, P.N, kk * BN + nw, 1u);
                }
            }
        } else {
            for (var e = lid; e < BN * BK; e = e + WG) {
                var nn: u32;
                var kk: u32;
                if (TB) {
                    kk = e % BK;
                    nn = e / BK;
                } else {
                    nn = e % BN;
                    kk = e / BN;
                }
                Bs[kk * BN + nn] = loadB(k0 + kk, n0 + nn);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk = kk + 1u) {
            var ar: array<f32, TM>;
            var br: array<f32, TN>;
            for (var i = 0u; i < TM; i = i + 1u) {
                ar[i] = f32(As[kk * BM + ty + i * RM]);
            }
            for (var j = 0u; j < TN; j = j + 1u) {
                br[j] = f32(Bs[kk * BN + tx + j * RN]);
            }
            for (var i = 0u; i < TM; i = i + 1u) {
                for (var j = 0u; j < TN; j = j + 1u) {
                    acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i = i + 1u) {
        let row = m0 + ty + i * RM;
        if (row >= P.M) {
            continue;
        }
        for (var j = 0u; j < TN; j = j + 1u) {
            let col = n0 + tx + j * RN;
            if (col >= P.N) {
                continue;
            }
            var v = P.alpha * acc[i * TN + j];
            if (EPI) {
                var s = 0.0;
                for (var r = 0u; r < P.rank; r = r + 1u) {
                    var w: f32;
                    if (EPIT) {
                        w = bl[r * P.ldbl + col];
                    } else {
                        w = bl[col * P.ldbl + r];
                    }
                    s = fma(xa[row * P.ldxa + r], w, s);
                }
                v = v + P.lscale * s;
            }
            if (ACC) {
                v = v + c[row * P.ldc + col];
            }
            c[row * P.ldc + col] = v;
        }
    }
}
