// Package gemm holds the CPU backend's matrix kernels: a cache-blocked, packed, parallel SGEMM with
// AVX-512 and AVX2/FMA micro-kernels (and a portable Go one), 4-bit blockwise dequant-matmuls (GEMV
// and GEMM) for the bitsandbytes NF4/FP4 layout, and the vectorised exponential, SwiGLU and RMSNorm
// that share their instruction-set dispatch.
//
// The blocking is GotoBLAS-style with the loops arranged for row-major C. op(A) is packed once, a
// kc-deep block at a time, into strips of mr rows (with AVX-512, a row-major op(A) is read in
// place instead, six row pointers a strip); C is cut into column panels of at most nc columns, and
// each panel is one task: for every kc block it packs its kc×nc slice of op(B) into strips of nr
// columns (kept in L2), then sweeps the A strips (each in L1 for the sweep) across the B strips,
// the micro-kernel adding an mr×nr tile into C. C is thus walked along its rows, six rows
// at a time, which keeps the hardware prefetchers and the TLB happy whatever ldc is (walking down a
// column of C with ldc = 2048 thrashes L1 and L2 sets and cost as much as the arithmetic). Transposes
// are absorbed by the packing, and MatMul4 plugs a dequantizing packer for B into the same driver.
//
// A few rows (decode) skip packing and stream B once: Sgemm with m = 1, or m ≤ 4 when op(B) = Bᵀ,
// and MatMul4 with m ≤ 16. On amd64 the inner loops are assembly, picked from CPUID at start-up:
// AVX-512 (ZMM) where the CPU has it, else AVX2 and FMA, both keeping the same data layouts so the
// drivers are shared (SetISA or LATHE_CPU_ISA selects a narrower path); elsewhere, or built with
// -tags purego, the same drivers run portable Go kernels.
package gemm

import (
	"math/bits"
	"runtime"
	"sync"

	hostpar "github.com/lathe-ml/lathe/internal/parallel"
)

// MR and NR are the micro-tile rows and columns (for tests that probe their edges).
const MR, NR = mr, nr

// KC is the depth of a packed block on the instruction set used now (for tests that probe its
// edges).
func KC() int { return kc }

const (
	mr = 6  // micro-tile rows: 6×16 floats = 12 YMM accumulators, leaving 4 for operands
	nr = 16 // micro-tile columns: two 8-float YMM registers
	// nc is the widest column panel: kc×nc floats of packed B stay in L2 for the whole sweep.
	nc = 256
	// mBig bounds the rows of op(A) packed at once (mBig×k floats), so huge m does not double memory.
	mBig = 128 * mr
	// smallM is the most rows that take the GEMV path, which streams B once instead of packing it,
	// when op(B) = Bᵀ (y = x·Wᵀ, a dot product per output). Otherwise only m = 1 takes it: the
	// blocked path, packing included, already wins at m = 2 (measured on 2048×2048).
	smallM = 4
)

// kc is the depth of a packed block: an A strip (mr×kc) stays in L1 while it sweeps a panel, a B
// strip (kc×nr) streams from L2, and the C tile is read and written once per kc·mr·nr·2 flops.
// With AVX2 it is 256: of kc/nc in {128, 192, 256, 384, 512}², 256/256 measured best on Zen 3,
// whose L2 is 512 KiB (single core: 75 GFLOP/s on 512×2048×2048 and 512×2048×8192). Every CPU
// with AVX-512 has at least 1 MiB of L2 a core, and there 512 halves the C tile's loads and
// stores, whose rows a power of two apart conflict in L1 and L2: on a 2-core Zen 5, three rounds
// interleaved, the NF4 GEMM at 512 tokens gained 5–10% (8–9% with bfloat16 products) and the f32
// GEMM 1536³ on both cores 356–385 → 378–425 GFLOP/s. SetISA sets it with the instruction set.
var kc = depthBlock(useAVX512)

func depthBlock(avx512 bool) int {
	if avx512 {
		return 512
	}
	return 256
}

// aBig bounds the floats of op(A) packed at once (16 MiB), cutting a deep product's k into parts
// (a variable for the test that checks the parts against one whole depth).
var aBig = 1 << 22

// Sgemm computes C = alpha*op(A)*op(B) + beta*C, row-major; op(X) = X or Xᵀ.
// op(A) is m×k, op(B) is k×n, C is m×n; lda/ldb/ldc are row strides. beta==0 means C is not read
// (it may hold NaN). Elements of C outside the m×n matrix (the stride padding) are never touched.
// Slices too short for the shapes and strides make it panic (index out of range): callers check
// shapes.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if k <= 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	if m == 1 || (m <= smallM && transB) {
		gemv(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	blocked(m, n, k, alpha, aOperand{a, lda, transA},
		func(p0, j0, kcur, cols int, dst []float32) { packB(transB, b, ldb, p0, j0, kcur, cols, dst) },
		beta, c, ldc, false)
}

func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		for j := range row {
			if beta == 0 {
				row[j] = 0
			} else {
				row[j] *= beta
			}
		}
	}
}

// workers is how many goroutines a problem of the given flop count gets: one per ~2 MFLOP at most,
// so tiny problems stay on the caller's goroutine where spawning would cost more than it saves.
func workers(flops int) int {
	w := runtime.GOMAXPROCS(0)
	if lim := flops >> 21; lim < w {
		w = max(lim, 1)
	}
	return w
}

// Parallel runs f(i) for i in [0, n) on up to GOMAXPROCS goroutines (the caller's among them),
// handing out indices dynamically; it returns when all are done. Kernels that split their own work
// into independent tasks (attention over heads) share the GEMM's scheduling through it.
func Parallel(n int, f func(i int)) { parallel(n, runtime.GOMAXPROCS(0), f) }

// parallel runs f(i) for i in [0, n) on up to w goroutines (the caller's among them), handing out
// indices dynamically so that a core busy with something else does not hold the rest back.
func parallel(n, w int, f func(i int)) {
	if w <= 1 || n <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	if poolRun(n, min(w, n), f) {
		return
	}
	hostpar.On(n, w, f) // the pool is busy (a nested call, or another goroutine's): goroutines of its own
}

// bufPools recycles packing buffers by power-of-two size class, so that asking for a big buffer
// never gets a small one back (one pool for all sizes reallocated the 4 MiB A buffer nearly every
// call: its zeroing cost as much as the arithmetic on narrow shapes).
var bufPools [64]sync.Pool

func getBuf(n int) *[]float32 {
	class := bits.Len(uint(max(n, 1) - 1))
	p, _ := bufPools[class].Get().(*[]float32)
	if p == nil {
		b := make([]float32, 1<<class)
		p = &b
	}
	*p = (*p)[:n]
	return p
}

func putBuf(p *[]float32) {
	bufPools[bits.Len(uint(cap(*p)-1))].Put(p)
}

// Scratch returns a recycled buffer of n floats with undefined contents, for a kernel's
// temporaries; give it back with Recycle. A training step's temporaries taken from the heap each
// call were most of its garbage, and the collector lets garbage grow to a share of the live heap
// (the weights and planned buffers) before reclaiming it, so they set the step's peak memory.
func Scratch(n int) *[]float32 { return getBuf(n) }

// Recycle returns a buffer from Scratch; it must not be used afterwards.
func Recycle(p *[]float32) { putBuf(p) }

// aOperand is op(A) for the packed driver: A itself, m×k (trans false) or k×m (trans true), row
// stride ld. Its strips of mr rows are packed (packA), except where the AVX-512 kernels read a
// row-major op(A) in place (see blocked).
type aOperand struct {
	a     []float32
	ld    int
	trans bool
}

// aStrip is an A strip as the AVX-512 kernels address it: row r at depth p is a[p·step + r·row].
// A packed strip has step mr and row 1; one read in place from a row-major A, step 1 and row lda.
type aStrip struct {
	a         []float32
	step, row int
}

// packed is a packed strip (packA's layout).
func packed(a []float32) aStrip { return aStrip{a, mr, 1} }

// inPlace is the strip of mr rows of a row-major A (row stride lda) from a[0].
func inPlace(a []float32, lda int) aStrip { return aStrip{a, 1, lda} }

// bPacker packs rows p0..p0+kcur of op(B), columns j0..j0+cols, into dst as ⌈cols/nr⌉ strips of
// kcur groups of nr floats, strip s (columns j0+s·nr..) at dst[s·stripStride(kcur):], zero-padding
// the last strip.
// It packs a whole panel, not a strip, so that a row-major op(B) is read along its rows: a strip
// at a time, each row would yield one cache line per page, and TLB misses would dominate.
type bPacker func(p0, j0, kcur, cols int, dst []float32)

// stripStride is the distance between packed B strips: one cache line more than a strip, because
// strips kc·16 floats apart (16 KiB at kc = 256) would put the same row of every strip in the same
// L1 set, and packing a row-major B (which writes one row of each strip in turn) would thrash it.
func stripStride(kcur int) int { return kcur*nr + nr }

// blocked is the packed GEMM: C = alpha·op(A)·op(B) + beta·C with op(A) m×k and op(B) k×n given
// by its packer.
//
// With bf, the packed strips hold bfloat16 pairs (two depths a float slot: k counts pairs) and the
// VDPBF16PS tiles multiply them (MatMul4BF16).
//
// The AVX-512 f32 kernels read a row-major op(A) in place, six rows at once (broadcasts from six
// row pointers), and only a last strip of fewer than mr rows is packed. Packing A moved every
// element through a register transpose once per product: on a 2-core Zen 5, a 1536³ product
// spent 4–6% of its time there (1 536 and 2 048 cubed, four rounds interleaved, each its own
// process, against the FMA peak taken after each product: 78–82% → 82–86% of it). With nothing
// of A packed, the rows need no chunks and the depth no parts, so op(B) is packed once.
func blocked(m, n, k int, alpha float32, A aOperand, packB bPacker, beta float32, c []float32, ldc int, bf bool) {
	flops := 2 * m * n * k
	if bf {
		flops *= 2
	}
	w := workers(flops)
	if useAVX512 && !bf && !A.trans {
		blockedRows(A, 0, 0, m, n, k, w, alpha, packB, beta, c, ldc, bf, true)
		return
	}
	// Cut the rows into near-equal chunks of at most mBig rows, each a multiple of mr.
	chunks := (m + mBig - 1) / mBig
	rowsPer := ((m+chunks-1)/chunks + mr - 1) / mr * mr
	// Cut the depth into parts of whole kc blocks, so that packed op(A) (rows × depth floats)
	// stays under aBig: with k the vocabulary (the output projection's backward) the whole depth
	// was a 256 MiB temporary. The parts add into C in the order the kc blocks do within one, so
	// the result has the same bits.
	depth := max(kc, aBig/rowsPer/kc*kc)
	for i0 := 0; i0 < m; i0 += rowsPer {
		mcur := min(rowsPer, m-i0)
		for d0 := 0; d0 < k; d0 += depth {
			bet := beta
			if d0 > 0 {
				bet = 1
			}
			blockedRows(A, i0, d0, mcur, n, min(depth, k-d0), w, alpha, func(p0, j0, kcur, cols int, dst []float32) {
				packB(d0+p0, j0, kcur, cols, dst)
			}, bet, c[i0*ldc:], ldc, bf, false)
		}
	}
}

// blockedRows is blocked on rows i0..i0+m of op(A) and depths d0..d0+k (packB already offset by
// d0, c by i0 rows). With direct, the AVX-512 kernels read op(A) (row-major) in place and only a
// last strip of fewer than mr rows is packed.
func blockedRows(A aOperand, i0, d0, m, n, k, w int, alpha float32, packB bPacker, beta float32, c []float32, ldc int, bf, direct bool) {
	mstrips := (m + mr - 1) / mr
	// Pack op(A): the kc block starting at column pc holds the packed strips, mr×kcur floats each,
	// from offset pc·packs·mr. Every column panel reads all of it. Packed are all strips, or with
	// direct only a last short one (packs 0 or 1, from strip first).
	first, packs := 0, mstrips
	if direct {
		first, packs = m/mr, mstrips-m/mr
	}
	apb := getBuf(packs * mr * k)
	ap := *apb
	kblocks := (k + kc - 1) / kc
	parallel(kblocks*packs, w, func(t int) {
		pc, s := t/packs*kc, t%packs
		kcur := min(kc, k-pc)
		off := pc*packs*mr + s*mr*kcur
		i := (first + s) * mr
		packA(A.trans, A.a, A.ld, i0+i, d0+pc, min(mr, m-i), kcur, ap[off:off+mr*kcur])
	})

	// Column panels: as wide as nc, narrower when that leaves a worker idle (but not narrower than
	// four strips, where re-reading A strips from L2 would start to dominate).
	width := nc
	if (n+width-1)/width < w {
		width = max(4*nr, ((n+w-1)/w+nr-1)/nr*nr)
	}
	panels := (n + width - 1) / width
	// Still fewer panels than workers (small n, large m): split the rows too. Each row part then
	// packs its own copy of the B panel.
	rsplit := 1
	if panels < w {
		rsplit = min((w+panels-1)/panels, mstrips)
	}
	parallel(panels*rsplit, w, func(t int) {
		jp, rs := t/rsplit, t%rsplit
		j0 := jp * width
		ncur := min(width, n-j0)
		nstrips := (ncur + nr - 1) / nr
		s0, s1 := rs*mstrips/rsplit, (rs+1)*mstrips/rsplit
		bpb := getBuf(nstrips * stripStride(kc))
		bp := *bpb
		for pc := 0; pc < k; pc += kc {
			kcur := min(kc, k-pc)
			packB(pc, j0, kcur, ncur, bp[:nstrips*stripStride(kcur)])
			bet := beta
			if pc > 0 {
				bet = 1
			}
			abase := pc * packs * mr
			for s := s0; s < s1; s++ {
				i := s * mr
				rows := min(mr, m-i)
				var as aStrip
				if s < first {
					as = inPlace(A.a[(i0+i)*A.ld+d0+pc:], A.ld)
				} else {
					as = packed(ap[abase+(s-first)*mr*kcur : abase+(s-first+1)*mr*kcur])
				}
				js := 0
				if useAVX512 && (rows == mr || !bf) {
					// Four whole strips at a time (a 6×64 tile: see kern6x64AVX512); a last
					// strip of fewer rows too, through a tile.
					for ; js+4 <= nstrips && j0+(js+4)*nr <= n; js += 4 {
						if rows < mr {
							micro4Rows(kcur, as, bp[js*stripStride(kcur):], stripStride(kcur), rows, alpha, bet, c[i*ldc+j0+js*nr:], ldc)
							continue
						}
						micro4(kcur, as, bp[js*stripStride(kcur):], stripStride(kcur), alpha, bet, c[i*ldc+j0+js*nr:], ldc, bf)
					}
				}
				for ; js < nstrips; js++ {
					j := j0 + js*nr
					if bf {
						microBF16(kcur, as.a, bp[js*stripStride(kcur):], rows, min(nr, n-j), alpha, bet, c[i*ldc+j:], ldc)
						continue
					}
					micro(kcur, as, bp[js*stripStride(kcur):], rows, min(nr, n-j), alpha, bet, c[i*ldc+j:], ldc)
				}
			}
		}
		putBuf(bpb)
	})
	putBuf(apb)
}

// packA packs rows i0..i0+rows (rows ≤ mr) of op(A) (A itself, or Aᵀ with trans; row stride lda),
// columns p0..p0+kcur, into dst[:kcur*mr] as kcur groups of mr floats, zero-padding missing rows.
func packA(trans bool, a []float32, lda, i0, p0, rows, kcur int, dst []float32) {
	dst = dst[:kcur*mr]
	if trans { // op(A)[i][p] = a[p*lda+i]: rows of a are contiguous in i
		if rows == mr {
			// Element by element: Go copies a 24-byte array through a call to memmove, which with
			// its register spills cost attention's backward pass on Qwen2-0.5B's heads 17%.
			for p := 0; p < kcur; p++ {
				src, d := a[(p0+p)*lda+i0:(p0+p)*lda+i0+mr], dst[p*mr:p*mr+mr]
				d[0], d[1], d[2], d[3], d[4], d[5] = src[0], src[1], src[2], src[3], src[4], src[5]
			}
			return
		}
		for p := 0; p < kcur; p++ {
			d := dst[p*mr : p*mr+mr]
			n := copy(d, a[(p0+p)*lda+i0:(p0+p)*lda+i0+rows])
			clear(d[n:])
		}
		return
	}
	if rows == mr && useAVX2 && kcur >= 8 {
		k8 := kcur &^ 7
		_ = a[(i0+mr-1)*lda+p0+k8-1]
		packA6AVX2(k8, &a[i0*lda+p0], lda, &dst[0])
		if k8 == kcur {
			return
		}
		p0, kcur, dst = p0+k8, kcur-k8, dst[k8*mr:]
	}
	for r := 0; r < mr; r++ {
		if r >= rows {
			for p := 0; p < kcur; p++ {
				dst[p*mr+r] = 0
			}
			continue
		}
		src := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kcur]
		for p, v := range src {
			dst[p*mr+r] = v
		}
	}
}

// packB: see bPacker.
func packB(trans bool, b []float32, ldb, p0, j0, kcur, cols int, dst []float32) {
	nstrips := (cols + nr - 1) / nr
	dst = dst[:nstrips*stripStride(kcur)]
	if !trans { // op(B)[p][j] = b[p*ldb+j]: each row of the panel is contiguous
		full := cols / nr
		p := 0
		if useAVX2 && full > 0 && kcur >= 8 {
			p = kcur &^ 7
			_ = b[(p0+p-1)*ldb+j0+full*nr-1]
			_ = dst[(full-1)*stripStride(kcur)+p*nr-1]
			pack8x16AVX2(p, full, &b[p0*ldb+j0], ldb, &dst[0], stripStride(kcur))
		}
		// Four rows at a time, interleaved: four streams from four pages keep more cache misses in
		// flight than one row after another (measured 3× faster on a B that is not in cache).
		for ; p+4 <= kcur; p += 4 {
			r0 := b[(p0+p)*ldb+j0:][:full*nr]
			r1 := b[(p0+p+1)*ldb+j0:][:full*nr]
			r2 := b[(p0+p+2)*ldb+j0:][:full*nr]
			r3 := b[(p0+p+3)*ldb+j0:][:full*nr]
			for s := 0; s < full; s++ {
				d := dst[s*stripStride(kcur)+p*nr:][:4*nr]
				*(*[nr]float32)(d) = *(*[nr]float32)(r0[s*nr:])
				*(*[nr]float32)(d[nr:]) = *(*[nr]float32)(r1[s*nr:])
				*(*[nr]float32)(d[2*nr:]) = *(*[nr]float32)(r2[s*nr:])
				*(*[nr]float32)(d[3*nr:]) = *(*[nr]float32)(r3[s*nr:])
			}
		}
		for ; p < kcur; p++ {
			row := b[(p0+p)*ldb+j0:][:full*nr]
			for s := 0; s < full; s++ {
				*(*[nr]float32)(dst[s*stripStride(kcur)+p*nr:]) = *(*[nr]float32)(row[s*nr:])
			}
		}
		if full < nstrips { // the last, partial strip
			for p := 0; p < kcur; p++ {
				d := dst[full*stripStride(kcur)+p*nr:][:nr]
				n := copy(d, b[(p0+p)*ldb+j0+full*nr:(p0+p)*ldb+j0+cols])
				clear(d[n:])
			}
		}
		return
	}
	// op(B)[p][j] = b[j*ldb+p]: each strip is nr rows of b, transposed.
	for s := 0; s < nstrips; s++ {
		packT(b[(j0+s*nr)*ldb+p0:], ldb, kcur, min(nr, cols-s*nr), dst[s*stripStride(kcur):])
	}
}

// packT packs rows rows (≤ nr) of src (stride ld), kcur elements each, transposed into dst as kcur
// groups of nr, zero-padding missing rows.
func packT(src []float32, ld, kcur, rows int, dst []float32) {
	if rows == nr && useAVX2 && kcur >= 8 {
		k8 := kcur &^ 7
		_ = src[(nr-1)*ld+kcur-1]
		_ = dst[kcur*nr-1]
		transpose16AVX2(k8, &src[0], ld, &dst[0])
		if k8 == kcur {
			return
		}
		src, dst, kcur = src[k8:], dst[k8*nr:], kcur-k8
	}
	if rows == nr { // four rows at a time
		for j := 0; j < nr; j += 4 {
			r0 := src[j*ld : j*ld+kcur]
			r1 := src[(j+1)*ld : (j+1)*ld+kcur]
			r2 := src[(j+2)*ld : (j+2)*ld+kcur]
			r3 := src[(j+3)*ld : (j+3)*ld+kcur]
			for p := range r0 {
				d := dst[p*nr+j : p*nr+j+4]
				d[0], d[1], d[2], d[3] = r0[p], r1[p], r2[p], r3[p]
			}
		}
		return
	}
	for j := 0; j < nr; j++ {
		if j >= rows {
			for p := 0; p < kcur; p++ {
				dst[p*nr+j] = 0
			}
			continue
		}
		for p, v := range src[j*ld : j*ld+kcur] {
			dst[p*nr+j] = v
		}
	}
}

// micro adds one mr×nr product of strips into C: C = alpha·(a·b) + beta·C for the rows×cols corner
// that exists (beta == 0: C is not read). Only the AVX-512 kernels take a strip read in place;
// the others take packed ones.
func micro(k int, as aStrip, b []float32, rows, cols int, alpha, beta float32, c []float32, ldc int) {
	a := as.a
	_ = a[(k-1)*as.step+(mr-1)*as.row]
	_ = b[k*nr-1]
	if useAVX512 {
		if rows == mr && cols == nr {
			_ = c[(mr-1)*ldc+nr-1]
			kern6x16AVX512(k, &a[0], &b[0], &c[0], ldc, alpha, beta, as.step, as.row)
			return
		}
		var tile [mr * nr]float32
		kern6x16AVX512(k, &a[0], &b[0], &tile[0], nr, 1, 0, as.step, as.row)
		store(tile[:], nr, rows, cols, alpha, beta, c, ldc)
		return
	}
	if as.step != mr || as.row != 1 {
		panic("gemm: an A strip in place without AVX-512")
	}
	if useAVX2 {
		// The kernels are called directly, not through a func value: through one the compiler
		// loses their noescape, and the edge tile below moved to the heap on every call.
		if rows == mr && cols == nr {
			_ = c[(mr-1)*ldc+nr-1]
			kern6x16(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
			return
		}
		var tile [mr * nr]float32
		kern6x16(k, &a[0], &b[0], &tile[0], nr, 1, 0)
		store(tile[:], nr, rows, cols, alpha, beta, c, ldc)
		return
	}
	var tile [mr * nr]float32
	kernelGo(k, a, b, &tile)
	store(tile[:], nr, rows, cols, alpha, beta, c, ldc)
}

// micro4 adds a whole mr×4nr tile, four adjacent packed B strips (bstride floats apart) against
// one A strip, into C (AVX-512 only): C = alpha·(a·b) + beta·C.
// With bf the strips hold bfloat16 pairs (kern6x64BF16AVX512), and A's strip is packed.
func micro4(k int, as aStrip, b []float32, bstride int, alpha, beta float32, c []float32, ldc int, bf bool) {
	a := as.a
	_ = a[(k-1)*as.step+(mr-1)*as.row]
	_ = b[3*bstride+k*nr-1]
	_ = c[(mr-1)*ldc+4*nr-1]
	if bf {
		kern6x64BF16AVX512(k, &a[0], &b[0], bstride, &c[0], ldc, alpha, beta)
		return
	}
	kern6x64AVX512(k, &a[0], &b[0], bstride, &c[0], ldc, alpha, beta, as.step, as.row)
}

// micro4Rows is micro4 (f32) for a strip of rows < mr rows: the 6×64 tile into a buffer, its
// first rows into C. A prompt of 70 tokens leaves such a strip of 4 rows, which through the
// 16-wide edge tiles (micro) took 9% of an NF4 product's time for 6% of its rows.
func micro4Rows(k int, as aStrip, b []float32, bstride, rows int, alpha, beta float32, c []float32, ldc int) {
	a := as.a
	_ = a[(k-1)*as.step+(mr-1)*as.row]
	_ = b[3*bstride+k*nr-1]
	var tile [mr * 4 * nr]float32
	kern6x64AVX512(k, &a[0], &b[0], bstride, &tile[0], 4*nr, 1, 0, as.step, as.row)
	store(tile[:], 4*nr, rows, 4*nr, alpha, beta, c, ldc)
}

// microBF16 is micro on strips of bfloat16 pairs (AVX512_BF16 only: kern6x16BF16AVX512).
func microBF16(k int, a, b []float32, rows, cols int, alpha, beta float32, c []float32, ldc int) {
	_ = a[k*mr-1]
	_ = b[k*nr-1]
	if rows == mr && cols == nr {
		_ = c[(mr-1)*ldc+nr-1]
		kern6x16BF16AVX512(k, &a[0], &b[0], &c[0], ldc, alpha, beta)
		return
	}
	var tile [mr * nr]float32
	kern6x16BF16AVX512(k, &a[0], &b[0], &tile[0], nr, 1, 0)
	store(tile[:], nr, rows, cols, alpha, beta, c, ldc)
}

// store writes the rows×cols corner of a tile (rows width floats apart) into C:
// C = alpha·tile + beta·C (beta == 0: C is not read).
func store(tile []float32, width, rows, cols int, alpha, beta float32, c []float32, ldc int) {
	for r := 0; r < rows; r++ {
		row := c[r*ldc : r*ldc+cols]
		t := tile[r*width : r*width+cols]
		if beta == 0 {
			for j, v := range t {
				row[j] = alpha * v
			}
			continue
		}
		for j, v := range t {
			row[j] = alpha*v + beta*row[j]
		}
	}
}

// kernelGo is the portable micro-kernel: tile = Σ_p a[p·mr:+mr] ⊗ b[p·nr:+nr]. Each row of the
// tile is a local array so that the compiler keeps the inner loop free of bounds checks.
func kernelGo(k int, a, b []float32, tile *[mr * nr]float32) {
	var c0, c1, c2, c3, c4, c5 [nr]float32
	a, b = a[:k*mr], b[:k*nr]
	for p := 0; p < k; p++ {
		av := (*[mr]float32)(a[p*mr:])
		bv := (*[nr]float32)(b[p*nr:])
		x0, x1, x2, x3, x4, x5 := av[0], av[1], av[2], av[3], av[4], av[5]
		for j, v := range bv {
			c0[j] += x0 * v
			c1[j] += x1 * v
			c2[j] += x2 * v
			c3[j] += x3 * v
			c4[j] += x4 * v
			c5[j] += x5 * v
		}
	}
	copy(tile[0*nr:], c0[:])
	copy(tile[1*nr:], c1[:])
	copy(tile[2*nr:], c2[:])
	copy(tile[3*nr:], c3[:])
	copy(tile[4*nr:], c4[:])
	copy(tile[5*nr:], c5[:])
}

// gemv is Sgemm for a few rows (m ≤ smallM): C = alpha·op(A)·op(B) + beta·C, reading B once, by
// rows, with the m rows of op(A) held in cache. Memory-bound: packing B for the blocked path would
// cost more than the arithmetic.
func gemv(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	var x [smallM][]float32 // rows of op(A)
	for i := 0; i < m; i++ {
		if transA { // a column of a
			row := make([]float32, k)
			for p := range row {
				row[p] = a[p*lda+i]
			}
			x[i] = row
		} else {
			x[i] = a[i*lda : i*lda+k]
		}
	}
	put := func(i, j int, v float32) {
		v *= alpha
		if beta != 0 {
			v += beta * c[i*ldc+j]
		}
		c[i*ldc+j] = v
	}
	const chunk = 64
	chunks := (n + chunk - 1) / chunk
	w := workers(2 * m * n * k)
	if transB { // C[i,j] = x_i · b[j,:]
		parallel(chunks, w, func(t int) {
			for j := t * chunk; j < min(n, (t+1)*chunk); j++ {
				bj := b[j*ldb : j*ldb+k]
				for i := 0; i < m; i++ {
					put(i, j, dot(x[i], bj))
				}
			}
		})
		return
	}
	// C[i,:] = Σ_p x_i[p]·b[p,:]. Each task takes a range of rows of b, read whole and in order (a
	// range of columns instead would read one short piece of every row: a TLB miss each), into its
	// own partial sums, added up at the end.
	parts := min(w, k)
	accb := getBuf(parts * m * n)
	acc := *accb
	clear(acc)
	parallel(parts, w, func(t int) {
		mine := acc[t*m*n : (t+1)*m*n]
		for p := t * k / parts; p < (t+1)*k/parts; p++ {
			bp := b[p*ldb : p*ldb+n]
			for i := 0; i < m; i++ {
				axpy(x[i][p], bp, mine[i*n:(i+1)*n])
			}
		}
	})
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			v := acc[i*n+j]
			for t := 1; t < parts; t++ {
				v += acc[(t*m+i)*n+j]
			}
			put(i, j, v)
		}
	}
	putBuf(accb)
}

func dotGo(x, y []float32) float32 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyGo(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}
