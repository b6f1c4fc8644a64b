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
//   - one row of x (a decoding step; not transW), k a multiple of 128 and a blocksize of 64 or a
//     multiple of 128: each 64-element block of x rounded to signed bytes with its own scale
//     (absmax/127, as llama.cpp's Q8 blocks), the codebook rounded to code·127, their products
//     summed exactly in int32 a block and scaled in float32 by both blocks' scales.
//
// The codebook's rounding moves a weight by at most 1/254 of its block's absmax, and x's by at most
// 1/254 of its block's largest magnitude. Every other call is MatMul4BF16 (bfloat16 where the CPU
// has it, else exact float32): like bfloat16, 8-bit products are an allowance.
func MatMul4I8(transW bool, m, n, k int, x []float32, packed []byte, absmax []float32, blocksize int, code *[16]float32, beta float32, y []float32) {
	if HasI8() && m == 1 && !transW && n > 0 && k > 0 && k%128 == 0 && (blocksize == 64 || blocksize%128 == 0) {
		q := &quant4{packed: packed, absmax: absmax, bs: blocksize, code: code}
		gemv4i8(q, n, k, x[:k], beta, y[:n])
		return
	}
	MatMul4BF16(transW, m, n, k, x, packed, absmax, blocksize, code, beta, y)
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
	absMax64AVX512(nb, &x[0], &amax[0], &abssum[0])
	for b := range amax {
		inv[b] = 0
		if amax[b] > 0 && abssum[b] <= math.MaxFloat32 {
			inv[b] = 127 / amax[b]
		}
	}
	quantI8AVX512(nb/2, &x[0], &inv[0], &xq[0], &sums[0], &oddEven)
	for g := 0; g < nb/2; g++ {
		gs := xs[32*g : 32*g+32]
		for h := 0; h < 2; h++ {
			b := 2*g + h
			s := amax[b] / 127 / 127 // the codebook's bytes are code·127: their 127 leaves here
			if !(abssum[b] <= math.MaxFloat32) {
				// A NaN or an infinity: the NaN scale makes the row's result NaN, as the float32
				// product's would be.
				s = float32(math.NaN())
			}
			for l := 0; l < 8; l++ {
				gs[8*h+l] = s
				gs[16+8*h+l] = 128 * s * float32(sums[b]) / 8
			}
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
