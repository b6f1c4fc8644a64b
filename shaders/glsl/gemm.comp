#version 450
// Register-tiled GEMM, the GLSL port of matmul.wgsl with the same bindings, parameters and flags:
// c = alpha·op(A)·op(B) [+ lscale·xa·blᵀ] [+ c]. A workgroup computes a BM×BN tile of c; each of
// its (BM/TM)·(BN/TN) invocations keeps TM×TN accumulators in registers over BK-deep slices of k
// staged in shared memory. The tile sizes are specialisation constants the backend sets from the
// device's limits (one SPIR-V module, any tiling); loads are bounds-checked, so no size need be a
// tile multiple.
// Flags (specialisation constants): TA/TB transpose A/B; BQ: B is a 4-bit weight [N, kq] decoded
// once per tile into shared memory; EPI/EPIT: the LoRA epilogue; ACC: accumulate into c.
// Compiled with -DF16: A and B are f16 buffers staged as f16 (shaderFloat16 + 16-bit storage),
// products accumulated in f32; BQ is not used then.
#extension GL_GOOGLE_include_directive : require
#ifdef F16
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#define ELEM float16_t
#define TOE(x) float16_t(x)
#else
#define ELEM float
#define TOE(x) (x)
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 4;
layout(constant_id = 6) const bool TA = false;
layout(constant_id = 7) const bool TB = false;
layout(constant_id = 8) const bool BQ = false;
layout(constant_id = 9) const bool EPI = false;
layout(constant_id = 10) const bool EPIT = false;
layout(constant_id = 11) const bool ACC = false;

layout(set = 0, binding = 0, std430) readonly buffer ABuf { ELEM a[]; };
#ifdef F16
layout(set = 0, binding = 1, std430) readonly buffer BBuf { float16_t bh[]; };
#else
layout(set = 0, binding = 1, std430) readonly buffer BBuf { uint b[]; };
#endif
layout(set = 0, binding = 2, std430) readonly buffer AbsBuf { float absmax[]; };
layout(set = 0, binding = 3, std430) readonly buffer XaBuf { float xa[]; };
layout(set = 0, binding = 4, std430) readonly buffer BlBuf { float bl[]; };
layout(set = 0, binding = 5, std430) buffer CBuf { float c[]; };
#include "params.glsl"

const uint RM = BM / TM; // invocations along m
const uint RN = BN / TN; // invocations along n
const uint WG = RM * RN;

shared ELEM As[BK * BM];
shared ELEM Bs[BK * BN];
shared float code[16];

ELEM loadA(uint m, uint k) {
    if (m >= P.M || k >= P.K) {
        return TOE(0.0);
    }
    return TA ? a[k * P.lda + m] : a[m * P.lda + k];
}

ELEM loadB(uint k, uint n) {
    if (k >= P.K || n >= P.N) {
        return TOE(0.0);
    }
    uint idx = TB ? n * P.ldb + k : k * P.ldb + n;
#ifdef F16
    return bh[idx];
#else
    if (BQ) {
        uint q = nibble(b[idx >> 3u], idx & 7u);
        return code[q] * absmax[idx / P.bs];
    }
    return uintBitsToFloat(b[idx]);
#endif
}

#ifndef F16
// decode8 writes the 8 weights W[row, col..col+8) (col a multiple of 8, rows kq long, kq a
// multiple of 8: whole words, one absmax each) to Bs[at + j·stride], zeros outside rows × cols.
void decode8(uint row, uint col, uint rows, uint cols, uint at, uint stride) {
    if (row >= rows || col >= cols) {
        for (uint j = 0u; j < 8u; j++) {
            Bs[at + j * stride] = 0.0;
        }
        return;
    }
    uint fl = row * P.ldb + col;
    uint word = b[fl >> 3u];
    float am = absmax[fl / P.bs];
    for (uint j = 0u; j < 8u; j++) {
        Bs[at + j * stride] = code[nibble(word, j)] * am;
    }
}
#endif

void main() {
    uint lid = gl_LocalInvocationIndex;
    if (BQ && lid < 16u) {
        code[lid] = P.code[lid / 4u][lid % 4u];
    }
    uint tilesN = (P.N + BN - 1u) / BN;
    uint t = wgid();
    uint m0 = (t / tilesN) * BM;
    uint n0 = (t % tilesN) * BN;
    if (m0 >= P.M) {
        return; // the whole workgroup leaves together: no barrier is skipped by some only
    }
    uint tx = lid % RN;
    uint ty = lid / RN;
    float acc[TM * TN];
    for (uint i = 0u; i < TM * TN; i++) {
        acc[i] = 0.0;
    }
    barrier();
    for (uint k0 = 0u; k0 < P.K; k0 += BK) {
        for (uint e = lid; e < BM * BK; e += WG) {
            uint mm = TA ? e % BM : e / BK;
            uint kk = TA ? e / BM : e % BK;
            As[kk * BM + mm] = loadA(m0 + mm, k0 + kk);
        }
#ifndef F16
        if (BQ && P.kq % 8u == 0u && BK % 8u == 0u && BN % 8u == 0u) {
            if (TB) {
                for (uint e = lid; e < BN * (BK / 8u); e += WG) {
                    uint nn = e / (BK / 8u);
                    uint kw = (e % (BK / 8u)) * 8u;
                    decode8(n0 + nn, k0 + kw, P.N, P.K, kw * BN + nn, BN);
                }
            } else {
                for (uint e = lid; e < BK * (BN / 8u); e += WG) {
                    uint kk = e / (BN / 8u);
                    uint nw = (e % (BN / 8u)) * 8u;
                    decode8(k0 + kk, n0 + nw, P.K, P.N, kk * BN + nw, 1u);
                }
            }
        } else
#endif
        {
            for (uint e = lid; e < BN * BK; e += WG) {
                uint nn = TB ? e / BK : e % BN;
                uint kk = TB ? e % BK : e / BN;
                Bs[kk * BN + nn] = loadB(k0 + kk, n0 + nn);
            }
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float ar[TM];
            float br[TN];
            for (uint i = 0u; i < TM; i++) {
                ar[i] = float(As[kk * BM + ty + i * RM]);
            }
            for (uint j = 0u; j < TN; j++) {
                br[j] = float(Bs[kk * BN + tx + j * RN]);
            }
            for (uint i = 0u; i < TM; i++) {
                for (uint j = 0u; j < TN; j++) {
                    acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]);
                }
            }
        }
        barrier();
    }
    for (uint i = 0u; i < TM; i++) {
        uint row = m0 + ty + i * RM;
        if (row >= P.M) {
            continue;
        }
        for (uint j = 0u; j < TN; j++) {
            uint col = n0 + tx + j * RN;
            if (col >= P.N) {
                continue;
            }
            float v = P.alpha * acc[i * TN + j];
            if (EPI) {
                float s = 0.0;
                for (uint r = 0u; r < P.rank; r++) {
                    float w = EPIT ? bl[r * P.ldbl + col] : bl[col * P.ldbl + r];
                    s = fma(xa[row * P.ldxa + r], w, s);
                }
                v += P.lscale * s;
            }
            if (ACC) {
                v += c[row * P.ldc + col];
            }
            c[row * P.ldc + col] = v;
        }
    }
}
