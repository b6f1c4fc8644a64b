//go:build !amd64 || purego

package gemm

// The assembly kernels do not exist here: only the portable Go ones.
var (
	hasAVX2   = false
	hasAVX512 = false
	useAVX2   = false
	useAVX512 = false
	hasBF16   = false
	hasI8     = false
)

func kern6x16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32, astep, arow int) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4AVX512(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32 {
	panic("gemm: no assembly kernels in this build")
}

func gemv4g128AVX512(rows, n128 int, xp *float32, w *byte, scales *float32, table *[16]float32, y *float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4i8AVX512(rows, n128 int, xq *int8, xs *float32, w *byte, scales *float32, table *[64]byte, y *float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4i8x4AVX512(wrows, n128 int, xq *int8, ldx int, xs *float32, ldxs int, w *byte, scales *float32, table *[64]byte, out *float32, ldo int) {
	panic("gemm: no assembly kernels in this build")
}

func absMax64AVX512(nblk int, x *float32, amax, abssum *float32) {
	panic("gemm: no assembly kernels in this build")
}

func quantI8AVX512(n128 int, x, inv *float32, xq *int8, sums *int32, perm *[64]byte) {
	panic("gemm: no assembly kernels in this build")
}

func quantRowsI8AVX512(nblk int, x, inv *float32, xq *int8, sums *int32) {
	panic("gemm: no assembly kernels in this build")
}

func packI8AVX512(nkb int, w *byte, ldw int, table *[64]byte, dst *byte) {
	panic("gemm: no assembly kernels in this build")
}

func kernI8x64(nkb int, a *int8, lda int, b *byte, sw, sa *float32, u *int32, c *float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4bf16AVX512(rows, n128 int, xb *uint16, w *byte, scales *float32, table *[16]uint16, y *float32) {
	panic("gemm: no assembly kernels in this build")
}

func transpose16AVX512() { panic("gemm: no assembly kernels in this build") }

func packNF4AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func packNF4BF16AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func kern6x16BF16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("gemm: no assembly kernels in this build")
}

func kern6x64BF16AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32) {
	panic("gemm: no assembly kernels in this build")
}

func dot16BF16AVX512(n64 int, x, w *uint16) float32 {
	panic("gemm: no assembly kernels in this build")
}

func gemv4bf16x4AVX512(wrows, n128 int, xb *uint16, ldx int, w *byte, scales *float32, table *[16]uint16, out *float32, ldo int) {
	panic("gemm: no assembly kernels in this build")
}

func interleaveBF16AVX512(n16 int, r0, r1 *float32, dst *float32, dstStride int) {
	panic("gemm: no assembly kernels in this build")
}

func toBF16AVX512(n32 int, src *float32, dst *uint16) {
	panic("gemm: no assembly kernels in this build")
}

func dequant4AVX512(n16 int, w *byte, scale float32, table *[16]float32, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func kern6x16(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	panic("gemm: no assembly kernels in this build")
}

func dot(x, y []float32) float32 { return dotGo(x, y) }

func axpy(alpha float32, x, y []float32) { axpyGo(alpha, x, y) }

func gemv4AVX2(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32 {
	panic("gemm: no assembly kernels in this build")
}

func dequant4AVX2(n16 int, w *byte, scale float32, table *[16]float32, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func prefetchSpan(p *byte, n int) {} // a hint: none here

func transpose16AVX2(k8 int, src *float32, ld int, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func pack8x16AVX2(p8, nstrips int, src *float32, ld int, dst *float32, sstride int) {
	panic("gemm: no assembly kernels in this build")
}

func packA6AVX2(k8 int, src *float32, lda int, dst *float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4x4AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4x8AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32) {
	panic("gemm: no assembly kernels in this build")
}

func expSubAVX512(n int, src, dst *float32, shift float32) float32 {
	panic("gemm: no assembly kernels in this build")
}

func swigluAVX512(n int, gate, up, y *float32) {
	panic("gemm: no assembly kernels in this build")
}

func sumSquaresAVX512(n int, x *float32) float32 {
	panic("gemm: no assembly kernels in this build")
}

func scaleMulAVX512(n int, x, w, y *float32, r float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4x4AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32) {
	panic("gemm: no assembly kernels in this build")
}

func gemv4x8AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32) {
	panic("gemm: no assembly kernels in this build")
}

func dotBF16AVX512(n int, x *float32, w *uint16) float32 {
	panic("gemm: no assembly kernels in this build")
}

func dotF16AVX512(n int, x *float32, w *uint16) float32 {
	panic("gemm: no assembly kernels in this build")
}

func attendScoresAVX512(n4, d16, rows int, q, k *float32, ldk int, scale float32, s *float32, lds int) {
	panic("gemm: no assembly kernels in this build")
}

func attendValuesAVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int) {
	panic("gemm: no assembly kernels in this build")
}

func attendValues8AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int) {
	panic("gemm: no assembly kernels in this build")
}

func attendValues4x64AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int) {
	panic("gemm: no assembly kernels in this build")
}

func maxAVX512(n int, x *float32) float32 { panic("gemm: no assembly kernels in this build") }

func kern6x64AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32, astep, arow int) {
	panic("gemm: no assembly kernels in this build")
}

func scaleAVX512(n int, x *float32, a float32) { panic("gemm: no assembly kernels in this build") }

func addScaledAVX512(n int, y, x *float32, a float32) {
	panic("gemm: no assembly kernels in this build")
}

func dequant4StripsAVX512(n16, first, gpb int, w *byte, scales *float32, table *[16]float32, dst *float32, dstride int) {
	panic("gemm: no assembly kernels in this build")
}

func swigluBackwardAVX512(n int, gate, up, dy, dgate, dup *float32) {
	panic("gemm: no assembly kernels in this build")
}
