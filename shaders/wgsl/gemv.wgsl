// y = alpha·a·op(B) [+ lscale·xa·blᵀ] for a single row a (decode), dense f32. With TB (y = a·Bᵀ,
// B [N, ldb] row-major) a workgroup owns one output and its invocations stride along the
// contiguous row of B; without TB each invocation owns one output column and the workgroup reads
// rows of B contiguously. Element k of a is a[k·lda] (lda is 1 unless a is a transposed column).
// BH: B's storage, 0 f32, 1 f16, 2 bf16 (a frozen 16-bit weight packed two to a word).
//! use half
struct Params {
    M: u32, N: u32, K: u32, lda: u32, ldb: u32, ldc: u32, alpha: f32,
    kq: u32, bs: u32, rank: u32, lscale: f32, ldxa: u32, ldbl: u32,
    code: array<vec4<f32>, 4>,
}
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<u32>;
@group(0) @binding(2) var<storage, read> xa: array<f32>;
@group(0) @binding(3) var<storage, read> bl: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<uniform> P: Params;

fn loadB(i: u32) -> f32 {
    if (BH != 0u) {
        return widen16(b[i >> 1u], (i & 1u) == 1u, BH == 2u);
    }
    return bitcast<f32>(b[i]);
}

fn epilogue(n: u32, v: f32) -> f32 {
    if (!EPI) {
        return v;
    }
    var e = 0.0;
    for (var r = 0u; r < P.rank; r = r + 1u) {
        e = fma(xa[r], bl[n * P.ldbl + r], e);
    }
    return v + P.lscale * e;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if (TB) {
        let n = wgid(wid, nwg);
        if (n >= P.N) {
            return;
        }
        var s = 0.0;
        for (var k = lid; k < P.K; k = k + WG) {
            s = fma(a[k * P.lda], loadB(n * P.ldb + k), s);
        }
        let t = block_sum(s, lid);
        if (lid == 0u) {
            y[n] = epilogue(n, P.alpha * t);
        }
    } else {
        let n = lin(wid, nwg, lid);
        if (n >= P.N) {
            return;
        }
        var s = 0.0;
        for (var k = 0u; k < P.K; k = k + 1u) {
            s = fma(a[k * P.lda], loadB(k * P.ldb + n), s);
        }
        y[n] = epilogue(n, P.alpha * s);
    }
}
