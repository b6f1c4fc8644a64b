#version 450
// 4-bit (NF4/FP4) GEMM on cooperative matrices (tensor cores): c = alpha·x·op(W) [+ lscale·xa·blᵀ]
// [+ c], the bindings, parameters and flags of matmul.wgsl with BQ set. A workgroup of four
// subgroups computes a 64×64 tile of c: for each 32-deep slice of k it stages x as f16 and
// dequantizes W (a packed word, 8 codes, and its block's scale at a time) into shared memory as
// f16, then each subgroup multiplies its four 16×16 tiles with 16×16×16 f16 products accumulated
// in f32. The accumulators go through shared memory to an epilogue that checks bounds (no size need
// be a tile multiple) and applies alpha, the LoRA term and ACC in f32.
//
// One source, three compiles: -DCOOP_NV for GL_NV_cooperative_matrix (what NVIDIA drivers
// expose; what glslang 11.13 knows), -DCOOP_KHR for GL_KHR_cooperative_matrix (AMD RDNA3, Intel,
// newer NVIDIA) once the generator's glslang knows that extension, and -DCOOP_EMU, where the
// matrix types and their load, store and multiply-add are emulated on shared memory by each
// subgroup's lanes: it runs on any device with f16 and subgroups (lavapipe), so that the tests
// check everything of this kernel but the three cooperative-matrix calls. Only the macros differ.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_shader_16bit_storage : require
#if !defined(COOP_EMU)
#extension GL_KHR_memory_scope_semantics : require
#endif
#if defined(COOP_KHR)
#extension GL_KHR_cooperative_matrix : require
#define MAT_A coopmat<float16_t, gl_ScopeSubgroup, CM, CK, gl_MatrixUseA>
#define MAT_B coopmat<float16_t, gl_ScopeSubgroup, CK, CN, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, CM, CN, gl_MatrixUseAccumulator>
#define LOAD(m, buf, at, stride) coopMatLoad(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define STORE(m, buf, at, stride) coopMatStore(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MMA(x, y, acc) coopMatMulAdd(x, y, acc)
#define ZERO_C MAT_C(0.0)
#elif defined(COOP_NV)
#extension GL_NV_cooperative_matrix : require
#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, CM, CK>
#define MAT_B fcoopmatNV<16, gl_ScopeSubgroup, CK, CN>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, CM, CN>
#define LOAD(m, buf, at, stride) coopMatLoadNV(m, buf, at, stride, false)
#define STORE(m, buf, at, stride) coopMatStoreNV(m, buf, at, stride, false)
#define MMA(x, y, acc) coopMatMulAddNV(x, y, acc)
#define ZERO_C MAT_C(0.0)
#elif defined(COOP_EMU)
// A and B stay in shared memory (As, Bs do not change between a load and its products): a
// "matrix" is its offset and row stride there. An accumulator is spread over the subgroup's lanes,
// element e = lane + i·subgroup size (at most 32 a lane: subgroups of 8 or more).
struct EmuC { float v[32]; };
#define MAT_A uvec2
#define MAT_B uvec2
#define MAT_C EmuC
#define LOAD(m, buf, at, stride) m = uvec2(at, stride)
#define STORE(m, buf, at, stride) emuStore(m, at, stride)
#define MMA(x, y, acc) emuMMA(x, y, acc)
#define ZERO_C emuZero()
#else
#error compile with -DCOOP_NV, -DCOOP_KHR or -DCOOP_EMU
#endif

// The product shape (the planner picks this kernel only where the device lists 16×16×16
// f16·f16+f32) and the workgroup tile: four subgroups, each 2×2 products of the 4×4 in a tile.
const uint CM = 16;
const uint CN = 16;
const uint CK = 16;
const uint BM = 64;
const uint BN = 64;
const uint BK = 32;
const uint SA = BK + 8u; // row strides in shared memory: 16-byte multiples, off the bank period
const uint SB = BN + 8u;
const uint SC = BN + 4u;

// WG = 4 × the device's subgroup size (set by the backend).
layout(local_size_x_id = 0) in;
layout(constant_id = 6) const bool TA = false;
layout(constant_id = 7) const bool TB = true;
layout(constant_id = 9) const bool EPI = false;
layout(constant_id = 10) const bool EPIT = false;
layout(constant_id = 11) const bool ACC = false;

layout(set = 0, binding = 0, std430) readonly buffer ABuf { float a[]; };
layout(set = 0, binding = 1, std430) readonly buffer BBuf { uint b[]; };
layout(set = 0, binding = 2, std430) readonly buffer AbsBuf { float absmax[]; };
layout(set = 0, binding = 3, std430) readonly buffer XaBuf { float xa[]; };
layout(set = 0, binding = 4, std430) readonly buffer BlBuf { float bl[]; };
layout(set = 0, binding = 5, std430) buffer CBuf { float c[]; };
#include "params.glsl"

shared float16_t As[BM * SA];
shared float16_t Bs[BK * SB];
shared float Cs[BM * SC];
shared float code[16];

#if defined(COOP_EMU)
EmuC emuZero() {
    EmuC c;
    for (uint i = 0u; i < 32u; i++) {
        c.v[i] = 0.0;
    }
    return c;
}

// emuMMA is acc + A·B for the 16×16 A at x in As and B at y in Bs, f16 products in f32.
EmuC emuMMA(uvec2 x, uvec2 y, EmuC acc) {
    for (uint i = 0u; i < CM * CN / gl_SubgroupSize; i++) {
        uint e = gl_SubgroupInvocationID + i * gl_SubgroupSize;
        uint r = e / CN;
        uint c = e % CN;
        float s = acc.v[i];
        for (uint k = 0u; k < CK; k++) {
            s = fma(float(As[x.x + r * x.y + k]), float(Bs[y.x + k * y.y + c]), s);
        }
        acc.v[i] = s;
    }
    return acc;
}

void emuStore(EmuC m, uint at, uint stride) {
    for (uint i = 0u; i < CM * CN / gl_SubgroupSize; i++) {
        uint e = gl_SubgroupInvocationID + i * gl_SubgroupSize;
        Cs[at + (e / CN) * stride + e % CN] = m.v[i];
    }
}
#endif

// weight is op(W)(k, n), decoded; zero outside K × N.
float weight(uint k, uint n) {
    if (k >= P.K || n >= P.N) {
        return 0.0;
    }
    uint idx = TB ? n * P.ldb + k : k * P.ldb + n;
    return code[nibble(b[idx >> 3u], idx & 7u)] * absmax[idx / P.bs];
}

void main() {
    uint lid = gl_LocalInvocationIndex;
    uint WG = gl_WorkGroupSize.x;
    if (lid < 16u) {
        code[lid] = P.code[lid / 4u][lid % 4u];
    }
    uint tilesN = (P.N + BN - 1u) / BN;
    uint t = wgid();
    uint m0 = (t / tilesN) * BM;
    uint n0 = (t % tilesN) * BN;
    if (m0 >= P.M) {
        return;
    }
    // Subgroup s owns the products (rows 2·(s/2)+i, columns 2·(s%2)+j), i, j < 2, of the 4×4.
    uint sg = gl_SubgroupID;
    uint pm = 2u * (sg / 2u);
    uint pn = 2u * (sg % 2u);
    MAT_C acc[4];
    for (uint i = 0u; i < 4u; i++) {
        acc[i] = ZERO_C;
    }
    barrier();
    bool whole = P.kq % 8u == 0u; // W's rows are whole packed words
    for (uint k0 = 0u; k0 < P.K; k0 += BK) {
        for (uint e = lid; e < BM * BK; e += WG) {
            uint mm = e / BK;
            uint kk = e % BK;
            uint m = m0 + mm;
            uint k = k0 + kk;
            float v = 0.0;
            if (m < P.M && k < P.K) {
                v = TA ? a[k * P.lda + m] : a[m * P.lda + k];
            }
            As[mm * SA + kk] = float16_t(v);
        }
        if (whole && TB) {
            // W[n, k0..k0+32): four words of a row, 8 codes and one scale each.
            for (uint e = lid; e < BN * (BK / 8u); e += WG) {
                uint nn = e / (BK / 8u);
                uint kw = (e % (BK / 8u)) * 8u;
                uint n = n0 + nn;
                uint k = k0 + kw;
                if (n < P.N && k < P.K) {
                    uint at = n * P.ldb + k;
                    uint word = b[at >> 3u];
                    float s = absmax[at / P.bs];
                    for (uint j = 0u; j < 8u; j++) {
                        Bs[(kw + j) * SB + nn] = float16_t(code[nibble(word, j)] * s);
                    }
                } else {
                    for (uint j = 0u; j < 8u; j++) {
                        Bs[(kw + j) * SB + nn] = float16_t(0.0);
                    }
                }
            }
        } else if (whole) {
            // W[k, n0..n0+64): eight words of a row.
            for (uint e = lid; e < BK * (BN / 8u); e += WG) {
                uint kk = e / (BN / 8u);
                uint nw = (e % (BN / 8u)) * 8u;
                uint k = k0 + kk;
                uint n = n0 + nw;
                if (k < P.K && n < P.N) {
                    uint at = k * P.ldb + n;
                    uint word = b[at >> 3u];
                    float s = absmax[at / P.bs];
                    for (uint j = 0u; j < 8u; j++) {
                        Bs[kk * SB + nw + j] = float16_t(code[nibble(word, j)] * s);
                    }
                } else {
                    for (uint j = 0u; j < 8u; j++) {
                        Bs[kk * SB + nw + j] = float16_t(0.0);
                    }
                }
            }
        } else {
            for (uint e = lid; e < BK * BN; e += WG) {
                uint kk = e / BN;
                uint nn = e % BN;
                Bs[kk * SB + nn] = float16_t(weight(k0 + kk, n0 + nn));
            }
        }
        barrier();
        for (uint ks = 0u; ks < BK; ks += CK) {
            MAT_A fa[2];
            MAT_B fb[2];
            for (uint i = 0u; i < 2u; i++) {
                LOAD(fa[i], As, (pm + i) * CM * SA + ks, SA);
                LOAD(fb[i], Bs, ks * SB + (pn + i) * CN, SB);
            }
            for (uint i = 0u; i < 2u; i++) {
                for (uint j = 0u; j < 2u; j++) {
                    acc[2u * i + j] = MMA(fa[i], fb[j], acc[2u * i + j]);
                }
            }
        }
        barrier();
    }
    for (uint i = 0u; i < 2u; i++) {
        for (uint j = 0u; j < 2u; j++) {
            STORE(acc[2u * i + j], Cs, (pm + i) * CM * SC + (pn + j) * CN, SC);
        }
    }
    barrier();
    for (uint e = lid; e < BM * BN; e += WG) {
        uint row = m0 + e / BN;
        uint col = n0 + e % BN;
        if (row >= P.M || col >= P.N) {
            continue;
        }
        float v = P.alpha * Cs[(e / BN) * SC + e % BN];
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
