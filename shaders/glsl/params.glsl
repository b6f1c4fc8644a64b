// The uniform block of the GEMM/GEMV kernels, laid out (std140) exactly as matmul.wgsl's and
// qgemv.wgsl's Params, so that a GLSL kernel takes the plan gpuplan made for the WGSL one.
layout(set = 0, binding = 6, std140) uniform Params {
    uint M, N, K, lda, ldb, ldc;
    float alpha;
    uint kq, bs, rank;
    float lscale;
    uint ldxa, ldbl;
    vec4 code[4];
} P;

// wgid is the linear index of a workgroup over a 2D grid (gpuplan.GroupsFor).
uint wgid() { return gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x; }

// nibble is code j (0..7) of a packed word: two codes a byte, the first in the high nibble.
uint nibble(uint word, uint j) {
    uint byte_ = (word >> (8u * (j >> 1u))) & 0xffu;
    return (j & 1u) == 0u ? byte_ >> 4u : byte_ & 15u;
}
