//go:build amd64 && !purego

package gemm

import "golang.org/x/sys/cpu"

// hasAVX2 and hasAVX512 say what the CPU runs; useAVX2 and useAVX512 select the assembly kernels
// (SetISA and tests switch them off to run the narrower or the Go ones on this machine). useAVX512
// implies useAVX2: the AVX-512 path replaces some AVX2 kernels and shares the others.
var (
	hasAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
	hasAVX512 = hasAVX2 && cpu.X86.HasAVX512F
	// hasBF16: the AVX-512 BF16 products (VDPBF16PS) and the word permutes (AVX-512BW) beside them.
	hasBF16 = hasAVX512 && cpu.X86.HasAVX512BF16 && cpu.X86.HasAVX512BW
	// hasI8: the AVX-512 8-bit dot products (VPDPBUSD) and the byte shuffles beside them
	// (AVX-512BW's VPSHUFB, VBMI's VPERMB).
	hasI8     = hasAVX512 && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VBMI
	useAVX2   = hasAVX2
	useAVX512 = hasAVX512
)

// kern6x16AVX512 is kern6x16 with ZMM registers; row r of A at depth p is a[p·astep + r·arow]
// (a packed strip: astep mr, arow 1; A read in place: astep 1, arow lda).
//
//go:noescape
func kern6x16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32, astep, arow int)

// gemv4AVX512 is gemv4AVX2 with ZMM registers (one VPERMPS per 16 codes).
//
//go:noescape
func gemv4AVX512(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32

// dequant4AVX512 is dequant4AVX2 with ZMM registers.
//
//go:noescape
func dequant4AVX512(n16 int, w *byte, scale float32, table *[16]float32, dst *float32)

// kern6x16 sets C[6×16] = alpha·Σ_p a[6p:6p+6] ⊗ b[16p:16p+16] + beta·C (row stride ldc; beta == 0:
// C is not read). k ≥ 1.
//
//go:noescape
func kern6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func dotAVX2(n int, x, y *float32) float32

//go:noescape
func axpyAVX2(n int, alpha float32, x, y *float32)

func dot(x, y []float32) float32 {
	if useAVX2 && len(x) >= 32 {
		_ = y[len(x)-1]
		return dotAVX2(len(x), &x[0], &y[0])
	}
	return dotGo(x, y)
}

func axpy(alpha float32, x, y []float32) {
	if useAVX2 && len(x) >= 32 {
		_ = y[len(x)-1]
		axpyAVX2(len(x), alpha, &x[0], &y[0])
		return
	}
	axpyGo(alpha, x, y)
}

// gemv4AVX2 is Σ over n16 groups of 16 elements of xp·code[nibbles of w]·scale, the scale pointer
// advancing after the first `first` groups and then every gpb groups; see matmul4.go.
//
//go:noescape
func gemv4AVX2(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32

// dequant4AVX2 sets dst[0:16·n16] = table[code]·scale for the codes of w[0:8·n16], high nibble
// first.
//
//go:noescape
func dequant4AVX2(n16 int, w *byte, scale float32, table *[16]float32, dst *float32)

// prefetchSpan asks for every cache line of p[0:n] (n > 0) to be brought into the cache: a hint,
// which never faults.
//
//go:noescape
func prefetchSpan(p *byte, n int)

// transpose16AVX2 sets dst[p·16+j] = src[j·ld+p] for j < 16 and p < k8, a multiple of 8.
//
//go:noescape
func transpose16AVX2(k8 int, src *float32, ld int, dst *float32)

// pack8x16AVX2 sets dst[s·sstride+p·16+j] = src[p·ld+s·16+j] for p < p8 (a multiple of 8),
// s < nstrips, j < 16.
//
//go:noescape
func pack8x16AVX2(p8, nstrips int, src *float32, ld int, dst *float32, sstride int)

// packA6AVX2 sets dst[p·6+r] = src[r·lda+p] for r < 6 and p < k8, a multiple of 8.
//
//go:noescape
func packA6AVX2(k8 int, src *float32, lda int, dst *float32)

// gemv4x4AVX2 sets out[r] = Σ over n16 groups of xp[r·ldx:]·code[nibbles of w]·scale for r < 4;
// see matmul4.go.
//
//go:noescape
func gemv4x4AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32)

// gemv4x8AVX2 is gemv4x4AVX2 for eight rows.
//
//go:noescape
func gemv4x8AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32)

// expSubAVX512 sets dst[i] = exp(src[i] − shift) for i < n (a multiple of 16) and returns their sum.
//
//go:noescape
func expSubAVX512(n int, src, dst *float32, shift float32) float32

// swigluAVX512 sets y[i] = silu(gate[i])·up[i] for i < n (a multiple of 16).
//
//go:noescape
func swigluAVX512(n int, gate, up, y *float32)

// swigluBackwardAVX512 sets dgate and dup, SwiGLU's gradients, for i < n (a multiple of 16).
//
//go:noescape
func swigluBackwardAVX512(n int, gate, up, dy, dgate, dup *float32)

// sumSquaresAVX512 is Σ x[i]² for i < n (a multiple of 16).
//
//go:noescape
func sumSquaresAVX512(n int, x *float32) float32

// scaleMulAVX512 sets y[i] = x[i]·r·w[i] for i < n (a multiple of 16).
//
//go:noescape
func scaleMulAVX512(n int, x, w, y *float32, r float32)

// dotBF16AVX512 is Σ x[i]·w[i] over bfloat16 weights for i < n (a multiple of 64), each widened
// exactly in registers.
//
//go:noescape
func dotBF16AVX512(n int, x *float32, w *uint16) float32

// dotF16AVX512 is dotBF16AVX512 for IEEE halves.
//
//go:noescape
func dotF16AVX512(n int, x *float32, w *uint16) float32

// gemv4x4AVX512 is gemv4x4AVX2 with ZMM registers.
//
//go:noescape
func gemv4x4AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32)

// gemv4x8AVX512 is gemv4x8AVX2 with ZMM registers.
//
//go:noescape
func gemv4x8AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32)

// gemv4g128AVX512 is the m = 1 GEMV of rows ≥ 1 consecutive rows of n128 ≥ 1 whole 128-code
// groups each, with xp permuted a group at a time as gemv4 describes and two scales a group (see
// the assembly); it writes y[0:rows].
//
//go:noescape
func gemv4g128AVX512(rows, n128 int, xp *float32, w *byte, scales *float32, table *[16]float32, y *float32)

// gemv4i8AVX512 is gemv4g128AVX512 on 8-bit integers (MatMul4I8): x as signed bytes xq with
// the scales xs, the codebook as table; see the assembly for their layout.
//
//go:noescape
func gemv4i8AVX512(rows, n128 int, xq *int8, xs *float32, w *byte, scales *float32, table *[64]byte, y *float32)

// gemv4i8x4AVX512 is gemv4i8AVX512 for four rows of x (bytes ldx apart, scales ldxs floats
// apart) against wrows rows of W, row r's result for W's row j at out[r·ldo + j].
//
//go:noescape
func gemv4i8x4AVX512(wrows, n128 int, xq *int8, ldx int, xs *float32, ldxs int, w *byte, scales *float32, table *[64]byte, out *float32, ldo int)

// absMax64AVX512 sets amax[b] and abssum[b] to the largest |x| and Σ|x| of x's 64-float blocks
// b < nblk.
//
//go:noescape
func absMax64AVX512(nblk int, x *float32, amax, abssum *float32)

// quantI8AVX512 rounds x's n128 groups of two 64-float blocks to signed bytes round(x·inv[b]) in
// gemv4i8AVX512's layout (perm: the odd-then-even byte order of a block), and sets sums[b] to each
// block's Σ bytes.
//
//go:noescape
func quantI8AVX512(n128 int, x, inv *float32, xq *int8, sums *int32, perm *[64]byte)

// quantRowsI8AVX512 rounds x's nblk 64-float blocks to signed bytes round(x·inv[b]) in order and
// sets sums[b] to each block's Σ bytes.
//
//go:noescape
func quantRowsI8AVX512(nblk int, x, inv *float32, xq *int8, sums *int32)

// packI8AVX512 packs 16 columns of the 8-bit GEMM's B strip from 16 rows of W's codes (ldw bytes
// apart), nkb blocks of 64 codes, into dst (four-depth steps 256 bytes apart).
//
//go:noescape
func packI8AVX512(nkb int, w *byte, ldw int, table *[64]byte, dst *byte)

// kernI8x64 is the 8-bit GEMM's 6×64 tile over nkb blocks of 64 depths (see the assembly).
//
//go:noescape
func kernI8x64(nkb int, a *int8, lda int, b *byte, sw, sa *float32, u *int32, c *float32)

// gemv4bf16AVX512 is gemv4g128AVX512 in bfloat16 (x rounded, as xb, and the codebook, as table):
// see the assembly for xb's order.
//
//go:noescape
func gemv4bf16AVX512(rows, n128 int, xb *uint16, w *byte, scales *float32, table *[16]uint16, y *float32)

// kern6x16StoreAVX512 and kern6x64StoreAVX512 are the shared ends of the 6×16 and 6×64 kernels
// (f32 and bfloat16), which jump to them with the tile's sums in registers; never called from Go.
//
//go:noescape
func kern6x16StoreAVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)

//go:noescape
func kern6x64StoreAVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32)

// kern6x16BF16AVX512 is kern6x16AVX512 on bfloat16 pairs (k pairs; see the assembly).
//
//go:noescape
func kern6x16BF16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)

// kern6x64BF16AVX512 is kern6x64AVX512 on bfloat16 pairs (k pairs; see the assembly).
//
//go:noescape
func kern6x64BF16AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32)

// dot16BF16AVX512 is Σ x[i]·w[i] over 64·n64 bfloat16 of x and w, products summed in float32.
//
//go:noescape
func dot16BF16AVX512(n64 int, x, w *uint16) float32

// interleaveBF16AVX512 packs rows r0 and r1 (16·n16 floats each) as bfloat16 pairs into n16
// strip rows of 16 slots, dstStride floats apart.
//
//go:noescape
func interleaveBF16AVX512(n16 int, r0, r1 *float32, dst *float32, dstStride int)

// packNF4BF16AVX512 packs one bfloat16 B strip (16 columns, 16·groups depth pairs) straight from
// 16 rows of 4-bit codes ldw bytes apart, scales holding each block's 16 row scales (a block
// spanning gpb groups of 16 pairs): see the assembly.
//
//go:noescape
func packNF4BF16AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32)

// transpose16AVX512 transposes the 16×16 dwords in Z0-Z15 in place: the shared middle of the
// pack kernels, which CALL it; never called from Go.
//
//go:noescape
func transpose16AVX512()

// packNF4AVX512 is packNF4BF16AVX512 for float32 strips (packCols): 32·groups depths.
//
//go:noescape
func packNF4AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32)

// toBF16AVX512 rounds src[:32·n32] to bfloat16 into dst.
//
//go:noescape
func toBF16AVX512(n32 int, src *float32, dst *uint16)

// gemv4bf16x4AVX512 is gemv4bf16AVX512 for four rows of x (ldx words apart) against wrows rows of
// W, row r's result for W's row j at out[r·ldo + j].
//
//go:noescape
func gemv4bf16x4AVX512(wrows, n128 int, xb *uint16, ldx int, w *byte, scales *float32, table *[16]uint16, out *float32, ldo int)

// attendScoresAVX512 sets s[r·lds + j] = scale·q_r·k_j for 4·n4 keys (row stride ldk floats) and
// rows r < rows ≥ 1 of q, 16·d16 floats each.
//
//go:noescape
func attendScoresAVX512(n4, d16, rows int, q, k *float32, ldk int, scale float32, s *float32, lds int)

// attendValuesAVX512 adds Σ_j p[r·ldp + j]·v[j·ldv + 0:32] to out[r·ldo + 0:32] for four rows r,
// n ≥ 1 keys.
//
//go:noescape
func attendValuesAVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)

// attendValues8AVX512 is attendValuesAVX512 for eight rows: Σ_j p[r·ldp + j]·v[j·ldv + 0:32] added
// to out[r·ldo + 0:32] for r < 8, n ≥ 1.
//
//go:noescape
func attendValues8AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)

// attendValues4x64AVX512 adds Σ_j p[r·ldp + j]·v[j·ldv + 0:64] to out[r·ldo + 0:64] for four rows r,
// n ≥ 1 keys.
//
//go:noescape
func attendValues4x64AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)

// maxAVX512 is the largest of x[:n], n a positive multiple of 16.
//
//go:noescape
func maxAVX512(n int, x *float32) float32

// kern6x64AVX512 is kern6x16AVX512 over four adjacent packed B strips, bstride floats apart: C[6×64].
//
//go:noescape
func kern6x64AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32, astep, arow int)

// addScaledAVX512 adds a·x[:n] to y[:n], n a positive multiple of 16.
//
//go:noescape
func addScaledAVX512(n int, y, x *float32, a float32)

// scaleAVX512 multiplies x[:n] by a, n a positive multiple of 16.
//
//go:noescape
func scaleAVX512(n int, x *float32, a float32)

// dequant4StripsAVX512 dequantizes n16 groups of 16 4-bit codes from w, group i to
// dst[i·dstride:], the scale starting at scales[0] and advancing after the first `first` groups,
// then every gpb (first ≥ 1, n16 ≥ 1).
//
//go:noescape
func dequant4StripsAVX512(n16, first, gpb int, w *byte, scales *float32, table *[16]float32, dst *float32, dstride int)
