#version 450
// y[n] = alpha·Σ_k x[k]·W[n, k] [+ lscale·Σ_r xa[r]·bl[n·ldbl + r]] for one row x and a 4-bit
// (NF4 or FP4: the code table comes in the parameters) W [N, kq]: decode's GEMV. Same bindings
// and parameters as qgemv.wgsl. A subgroup computes one output at a time (ROWS a workgroup, a
// specialisation constant: workgroup size ÷ subgroup size) and reduces across K with
// subgroupAdd, so no shared-memory tree and no barrier. Where a row is whole 32-code chunks
// (kq % 32 == 0) a lane takes a chunk at a time: four packed words, whose absmax block (blocksize
// ≥ 32, a power of two) is the same, so the scale is read once per chunk and applied once to the
// chunk's partial sum. Other rows go a word at a time.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint ROWS = 8;
layout(constant_id = 2) const bool EPI = false;

layout(set = 0, binding = 0, std430) readonly buffer XBuf { float x[]; };
layout(set = 0, binding = 1, std430) readonly buffer BBuf { uint b[]; };
layout(set = 0, binding = 2, std430) readonly buffer AbsBuf { float absmax[]; };
layout(set = 0, binding = 3, std430) readonly buffer XaBuf { float xa[]; };
layout(set = 0, binding = 4, std430) readonly buffer BlBuf { float bl[]; };
layout(set = 0, binding = 5, std430) writeonly buffer YBuf { float y[]; };
#include "params.glsl"

shared float code[16];

// dot8 is Σ_j code[q_j]·x[xi + j] over the 8 codes of a word.
float dot8(uint word, uint xi) {
    float s = 0.0;
    for (uint j = 0u; j < 8u; j++) {
        s = fma(code[nibble(word, j)], x[xi + j], s);
    }
    return s;
}

void main() {
    uint lid = gl_LocalInvocationIndex;
    if (lid < 16u) {
        code[lid] = P.code[lid / 4u][lid % 4u];
    }
    barrier();
    uint lane = gl_SubgroupInvocationID;
    uint S = gl_SubgroupSize;
    uint first = wgid() * ROWS;
    for (uint n = first + gl_SubgroupID; n < min(first + ROWS, P.N); n += gl_NumSubgroups) {
        uint start = n * P.kq;
        float s = 0.0;
        if (P.kq % 32u == 0u) {
            uint w0 = start / 8u;
            for (uint ch = lane; ch < P.kq / 32u; ch += S) {
                uint w = w0 + 4u * ch;
                float part = dot8(b[w], 32u * ch) + dot8(b[w + 1u], 32u * ch + 8u) + dot8(b[w + 2u], 32u * ch + 16u) + dot8(b[w + 3u], 32u * ch + 24u);
                s = fma(part, absmax[(start + 32u * ch) / P.bs], s);
            }
        } else {
            uint end = start + P.kq;
            for (uint w = start / 8u + lane; w < (end + 7u) / 8u; w += S) {
                uint word = b[w];
                float part = 0.0;
                for (uint j = 0u; j < 8u; j++) {
                    uint f = w * 8u + j;
                    if (f >= start && f < end) {
                        part = fma(code[nibble(word, j)], x[f - start], part);
                    }
                }
                s = fma(part, absmax[(w * 8u) / P.bs], s);
            }
        }
        float v = P.alpha * subgroupAdd(s);
        if (EPI) {
            float e = 0.0;
            for (uint r = lane; r < P.rank; r += S) {
                e = fma(xa[r], bl[n * P.ldbl + r], e);
            }
            v += P.lscale * subgroupAdd(e);
        }
        if (subgroupElect()) {
            y[n] = v;
        }
    }
}
