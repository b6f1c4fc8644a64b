// Shared helpers, compiled into every kernel after the specialisation constants (WG at least).

// lin is the linear index of an invocation over a 2D grid of workgroups of WG invocations: large 1D
// problems are dispatched as x·y workgroups because one dimension holds at most 65535.
fn lin(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// wgid is the linear index of a workgroup over a 2D grid.
fn wgid(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// red is the scratch of the workgroup reductions below (WG must be a power of two).
var<workgroup> red: array<f32, WG>;

//! section tree
// block_sum returns the sum of v over the workgroup, in a fixed tree order (deterministic). Call it
// from uniform control flow; every invocation gets the result.
fn block_sum(v: f32, lid: u32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

// block_max returns the maximum of v over the workgroup.
fn block_max(v: f32, lid: u32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    return red[0];
}
//! end

const NEG_MAX: f32 = -3.4028234e38;

// FAULT_INDEX is the bit a kernel sets in its fault flag (a read_write binding named fault) when an
// index it reads (a cache row, a token id, a target, a pool slot) is out of range: the backend
// reports the launch as an error at the next read, as the CPU backend reports it from Run.
const FAULT_INDEX: u32 = 1u;

//! section rows
// The helpers below read the kernel's storage buffer x (WGSL cannot pass a storage pointer to a
// function); a kernel that declares x takes them with the line "//! use rows".

// row_max_sumexp returns (m, s) for the row x[base .. base+dim): m its maximum and s = Σ exp(x − m),
// each reduced over the workgroup (call it from uniform control flow; every invocation gets the
// result). The row's log-sum-exp is m + log(s); its softmax is exp(x − m)/s.
fn row_max_sumexp(base: u32, dim: u32, lid: u32) -> vec2<f32> {
    var m = NEG_MAX;
    for (var j = lid; j < dim; j = j + WG) {
        m = max(m, x[base + j]);
    }
    m = block_max(m, lid);
    var s = 0.0;
    for (var j = lid; j < dim; j = j + WG) {
        s = s + exp(x[base + j] - m);
    }
    return vec2<f32>(m, block_sum(s, lid));
}

//! end

//! section attention
// The shared part of the attention kernels (attention.wgsl, tiled; attention_query.wgsl, one query a
// workgroup). Both declare q, k, v, idx, o, lse and P: AttnParams, and take a constant ROWS. Keys
// and values are rows of k and v, [rows, KVH·HD]. With ROWS they are a KV cache of slots of KVS rows
// and idx holds each query's row (engine.Attention with KVStride); else each sequence has KVL rows
// and idx, with P.docs, each query's document start.
struct AttnParams { B: u32, QL: u32, KVL: u32, H: u32, KVH: u32, KVS: u32, R: u32, scale: f32, docs: u32 }

// query_keys returns the rows [first, end) that query tq (= sequence·QL + i) attends to: with ROWS
// its slot's rows up to its own (none when its row lies outside the cache's R rows: it gets zeros,
// and the CPU backend reports an error); else its sequence's rows from its document start (0
// without docs) through its causal position.
fn query_keys(tq: u32) -> vec2<u32> {
    if (ROWS) {
        let r = idx[tq];
        if (r < 0 || u32(r) >= P.R) {
            return vec2<u32>(0u, 0u);
        }
        let last = u32(r);
        return vec2<u32>(last - last % P.KVS, last + 1u);
    }
    let base = (tq / P.QL) * P.KVL;
    var first = 0u;
    if (P.docs != 0u) {
        first = u32(idx[tq]);
    }
    return vec2<u32>(base + first, base + P.KVL - P.QL + tq % P.QL + 1u);
}

// attn_inv is the softmax's 1/l, 0 for a query that saw no key (l = 0).
fn attn_inv(l: f32) -> f32 {
    return select(0.0, 1.0 / l, l > 0.0);
}

// lse_at is where query tq's log-sum-exp for head h goes: lse is [B, H, QL].
fn lse_at(tq: u32, h: u32) -> u32 {
    return ((tq / P.QL) * P.H + h) * P.QL + tq % P.QL;
}

//! end

//! section subgroups
// The subgroup variant of block_sum and block_max, compiled instead of the tree above into the
// subgroup variant of a kernel marked "//! subgroups" (see shaders.ComposeVariant), which sets the
// sg_ variables from its entry point's builtins (WGSL gives them to entry points only). One
// subgroup operation per subgroup, one barrier, then every subgroup combines the partials: no
// log2(WG) barrier tree. The order of a sum is the device's, fixed for a device. Same contract:
// call from uniform control flow; every invocation gets the result.
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_n: u32;
var<private> sg_size: u32;

fn block_sum(v: f32, lid: u32) -> f32 {
    let s = subgroupAdd(v);
    workgroupBarrier();
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = sg_lane; i < sg_n; i = i + sg_size) {
        t = t + red[i];
    }
    return subgroupAdd(t);
}

fn block_max(v: f32, lid: u32) -> f32 {
    let s = subgroupMax(v);
    workgroupBarrier();
    if (sg_lane == 0u) {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var t = NEG_MAX;
    for (var i = sg_lane; i < sg_n; i = i + sg_size) {
        t = max(t, red[i]);
    }
    return subgroupMax(t);
}

//! end

//! section half
// widen16 is the 16-bit float in the low (hi false) or high half of a packed word as f32, exactly:
// bf16 (bf true) is the top half of an f32, f16 is widened by unpack2x16float (core WGSL, no f16
// feature needed). Element 2w of a packed array is the low half of word w.
fn widen16(word: u32, hi: bool, bf: bool) -> f32 {
    let h = select(word & 0xffffu, word >> 16u, hi);
    if (bf) {
        return bitcast<f32>(h << 16u);
    }
    return unpack2x16float(h).x;
}
//! end

//! section f32
// ST is the staging type of a kernel with an f16 variant: tiles in f32 here.
alias ST = f32;
//! end

//! section f16
// ST is the staging type of a kernel's f16 variant (Caps.ShaderF16): tiles in f16, half the
// workgroup memory and its traffic; products of two f16 are exact in f32, where they accumulate.
alias ST = f16;
//! end
