package gemm

import (
	"math"
	"unsafe"
)

// HasI8 reports whether MatMul4I8 runs on 8-bit integers on this CPU now: it has AVX512_VNNI (with
// AVX-512BW) and the kernels are not limited below AVX-512 (SetISA).
func HasI8() bool { return hasI8 && useAVX512 }

// MatMul4I8 is MatMul4 (y = β·y + x·Wᵀ, or with transW y = β·y + x·W) with 8-bit products where
// this CPU has VPDPBUSD (HasI8), llama.cpp's route to a decoding GEMV at the memory's speed:
//   - up to 16 rows of x (a decoding step, batched or not; not transW), k a multiple of 128 and a
//     blocksize of 64 or a multiple of 128: each 64-element block of x rounded to signed bytes
//     with its own scale
//     (absmax/127, as llama.cpp's Q8 blocks), the codebook rounded to code·127, their products
//     summed exactly in int32 a block and scaled in float32 by both blocks' scales;
//   - more than 16 rows (a prompt; not transW), k and the blocksize multiples of 64: the same
//     roundings through a packed GEMM of 6×64 VPDPBUSD tiles.
//
// The codebook's rounding moves a weight by at most 1/254 of its block's absmax, and x's by at most
// 1/254 of its block's largest magnitude. Every other call is MatMul4BF16 (bfloat16 where the CPU
// has it, else exact float32): like bfloat16, 8-bit products are an allowance.
func MatMul4I8(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	q := &quant4{packed: packed, absmax: absmax, bs: blocksize, code: code}
	switch {
	case !HasI8() || transW || n <= 0 || k <= 0:
	case m == 1 && k%128 == 0 && (blocksize == 64 || blocksize%128 == 0):
		gemv4i8(q, n, k, x[:k], beta, y[:n])
		return
	case m <= smallM4 && k%128 == 0 && (blocksize == 64 || blocksize%128 == 0):
		gemv4i8Rows(q, m, n, k, x[:m*k], beta, y[:m*n])
		return
	case m > smallM4 && k%64 == 0 && blocksize%64 == 0:
		gemm4i8(q, m, n, k, x[:m*k], beta, y[:m*n])
		return
	}
	MatMul4BF16(transW, m, n, k, x, packed, absmax, blocksize, code, beta, y)
}

// gemm4i8 is MatMul4I8's GEMM (more than 16 rows of x: a prompt): x's rows rounded to signed
// bytes a block of 64 with their scales, and one task a strip of 64 columns of W, which it packs
// once from the codes (packI8AVX512: unsigned bytes, four depths a dword) and multiplies with
// every 6-row tile of x (kernI8x64: VPDPBUSD, int32 a block, scales in f32).
func gemm4i8(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	nkb, tiles := k/64, (m+5)/6
	// x: bytes (6·tiles rows, the padding zero), then each tile's scales and corrections a block.
	xb := getBuf(6*tiles*k/4 + 2*6*tiles*nkb + 3*m*nkb)
	defer putBuf(xb)
	buf := *xb
	xq := unsafe.Slice((*int8)(unsafe.Pointer(&buf[0])), 6*tiles*k)
	clear(xq[m*k:])
	sa := buf[6*tiles*k/4 : 6*tiles*k/4+6*tiles*nkb]
	u := unsafe.Slice((*int32)(unsafe.Pointer(&buf[6*tiles*k/4+6*tiles*nkb])), 6*tiles*nkb)
	clear(sa)
	clear(u)
	amax, abssum, inv := buf[len(buf)-3*m*nkb:len(buf)-2*m*nkb], buf[len(buf)-2*m*nkb:len(buf)-m*nkb], buf[len(buf)-m*nkb:]
	i8Scales(x, amax, abssum, inv)
	sums := unsafe.Slice((*int32)(unsafe.Pointer(&abssum[0])), m*nkb) // abssum is read: reuse it
	quantRowsI8AVX512(m*nkb, &x[0], &inv[0], &xq[0], &sums[0])
	for i := 0; i < m; i++ {
		t, r := i/6, i%6
		for b := 0; b < nkb; b++ {
			sa[(t*nkb+b)*6+r] = amax[i*nkb+b] / 127
			u[(t*nkb+b)*6+r] = 128 * sums[i*nkb+b]
		}
	}
	table := i8Codes(q.code)
	strips := (n + 63) / 64
	intoY(y, beta, func(out []float32) {
		parallel(strips, workers(2*m*n*k), func(s int) {
			j0 := s * 64
			cols := min(64, n-j0)
			sb := getBuf(16*k + 64*nkb + 6*64 + 16*k/8)
			defer putBuf(sb)
			b := (*sb)[:16*k]
			sw := (*sb)[16*k : 16*k+64*nkb]
			tile := (*sb)[16*k+64*nkb : 16*k+64*nkb+6*64]
			pad := unsafe.Slice((*byte)(unsafe.Pointer(&(*sb)[16*k+64*nkb+6*64])), 16*k/2)
			bb := unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), 64*k)
			for g := 0; g < 64; g += 16 {
				w, ldw := &q.packed[0], k/2
				switch {
				case g+16 <= cols:
					w = &q.packed[(j0+g)*k/2]
				default:
					// A partial group: its rows copied, the missing ones repeating the last (their
					// scales are 0).
					for r := 0; r < 16; r++ {
						row := j0 + min(g+r, cols-1)
						copy(pad[r*k/2:(r+1)*k/2], q.packed[row*k/2:(row+1)*k/2])
					}
					w = &pad[0]
				}
				packI8AVX512(nkb, w, ldw, &table, &bb[4*g])
			}
			clear(sw)
			for j := 0; j < cols; j++ {
				if q.bs == 64 { // a block a column and step: no division
					for b, a := range q.absmax[(j0+j)*nkb : (j0+j+1)*nkb] {
						sw[b*64+j] = a / 127
					}
					continue
				}
				for b := 0; b < nkb; b++ {
					sw[b*64+j] = q.absmax[((j0+j)*k+64*b)/q.bs] / 127
				}
			}
			for t := 0; t < tiles; t++ {
				clear(tile)
				kernI8x64(nkb, &xq[6*t*k], k, &bb[0], &sw[0], &sa[t*nkb*6], &u[t*nkb*6], &tile[0])
				for r := 0; r < min(6, m-6*t); r++ {
					copy(out[(6*t+r)*n+j0:(6*t+r)*n+j0+cols], tile[r*64:r*64+cols])
				}
			}
		})
	})
}

// gemv4i8 is MatMul4I8's GEMV (gemvRows with the 8-bit kernel).
func gemv4i8(q *quant4, n, k int, x []float32, beta float32, y []float32) {
	// Scratch: x's bytes (k/4 floats' room), then 32 floats of scales a 128-element group.
	b := getBuf(k/4 + 32*(k/128))
	defer putBuf(b)
	xq := unsafe.Slice((*int8)(unsafe.Pointer(&(*b)[0])), k)
	xs := (*b)[k/4:]
	quantizeI8(xq, xs, x)
	table := i8Codes(q.code)
	intoY(y, beta, func(out []float32) {
		q.gemvRows(n, k, func(j0, rows int, w *byte, scales *float32) {
			gemv4i8AVX512(rows, k/128, &xq[0], &xs[0], w, scales, &table, &out[j0])
		})
	})
}

// gemv4i8Rows is MatMul4I8's GEMV for 2 to 16 rows of x (batched decoding): each stretch of 32
// rows of W is decoded once for four rows of x at a time (gemv4i8x4AVX512), and read again from
// cache for the next four; a last pass runs on zero rows (bytes and scales 0).
func gemv4i8Rows(q *quant4, m, n, k int, x []float32, beta float32, y []float32) {
	m4 := (m + 3) &^ 3
	b := getBuf(m4*k/4 + m4*k/4) // each row's bytes, then its scales (32 floats a 128 group)
	defer putBuf(b)
	xq := unsafe.Slice((*int8)(unsafe.Pointer(&(*b)[0])), m4*k)
	xs := (*b)[m4*k/4 : m4*k/2]
	clear(xq[m*k:])
	clear(xs[m*k/4:])
	for i := 0; i < m; i++ {
		quantizeI8(xq[i*k:(i+1)*k], xs[i*k/4:(i+1)*k/4], x[i*k:(i+1)*k])
	}
	table := i8Codes(q.code)
	q.gemvRows4(m4, n, k, beta, y, func(wrows, i0 int, w *byte, scales, out *float32) {
		gemv4i8x4AVX512(wrows, k/128, &xq[i0*k], k, &xs[i0*k/4], k/4, w, scales, &table, out, n)
	})
}

// i8Codes is the GEMV kernel's VPSHUFB table: the codebook as round(code·127) + 128 (unsigned
// bytes, the operand VPDPBUSD takes unsigned), its 16 entries repeated in each 128-bit lane.
func i8Codes(code *[16]float32) (t [64]byte) {
	for i := range t {
		t[i] = byte(int(math.RoundToEven(float64(code[i%16])*127)) + 128)
	}
	return t
}

// quantizeI8 rounds x (a multiple of 128 long) to signed bytes a 64-element block at a time, each
// block scaled by its largest magnitude over 127, into the layout gemv4i8AVX512 reads: a 128-element
// group's bytes are its first block's odd elements, its second block's odd ones, then the even ones
// of each (the order of the nibbles a byte of W holds). xs gets 32 floats a group: each block's
// scale over 127 (the codebook's bytes are code·127) in 8 lanes, then 128 times that times Σ bytes,
// over 8, in 8 lanes (the kernel's unsigned codes add 128·Σ bytes a block, which this takes back
// out). Rounding is to nearest, ties to even.
func quantizeI8(xq []int8, xs, x []float32) {
	nb := len(x) / 64
	bp := getBuf(4 * nb)
	defer putBuf(bp)
	amax, abssum, inv := (*bp)[:nb], (*bp)[nb:2*nb], (*bp)[2*nb:3*nb]
	sums := unsafe.Slice((*int32)(unsafe.Pointer(&(*bp)[3*nb])), nb)
	i8Scales(x, amax, abssum, inv)
	quantI8AVX512(nb/2, &x[0], &inv[0], &xq[0], &sums[0], &oddEven)
	for g := 0; g < nb/2; g++ {
		gs := xs[32*g : 32*g+32]
		for h := 0; h < 2; h++ {
			b := 2*g + h
			s := amax[b] / 127 / 127 // the codebook's bytes are code·127: their 127 leaves here
			for l := 0; l < 8; l++ {
				gs[8*h+l] = s
				gs[16+8*h+l] = 128 * s * float32(sums[b]) / 8
			}
		}
	}
}

// i8Scales sets, for each 64-element block b of x, amax[b] to its largest magnitude and inv[b] to
// 127/amax[b] (0 for a block of zeros), the multiplier that rounds it to signed bytes. A block
// holding a NaN or an infinity gets inv 0 and amax NaN: the NaN scale makes its results NaN, as
// the float32 product's would be. abssum (Σ|x| a block, how such a block is found: VMAXPS drops
// NaNs) is left as scratch.
func i8Scales(x, amax, abssum, inv []float32) {
	absMax64AVX512(len(amax), &x[0], &amax[0], &abssum[0])
	for b, a := range amax {
		inv[b] = 0
		switch {
		case !(abssum[b] <= math.MaxFloat32):
			amax[b] = float32(math.NaN())
		case a > 0:
			inv[b] = 127 / a
		}
	}
}

// oddEven is quantI8AVX512's VPERMB index: a block's odd bytes, then its even ones.
var oddEven = func() (p [64]byte) {
	for i := 0; i < 32; i++ {
		p[i], p[32+i] = byte(2*i+1), byte(2*i)
	}
	return p
}()
