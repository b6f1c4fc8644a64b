//go:build amd64 && !purego

#include "textflag.h"

// func kern6x16(k int, a, b, c *float32, ldc int, alpha, beta float32)
// C[6×16] = alpha·Σ_p a[6p:6p+6] ⊗ b[16p:16p+16] + beta·C, row stride ldc: the tile lives in twelve
// YMM accumulators, Y12/Y13 hold a row of b and Y14/Y15 the broadcast a values. beta == 0: C is not
// read. k ≥ 1.
TEXT ·kern6x16(SB), NOSPLIT, $0-48
	MOVQ   k+0(FP), CX
	MOVQ   a+8(FP), SI
	MOVQ   b+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

loop:
	VMOVUPS      (DI), Y12
	VMOVUPS      32(DI), Y13
	VBROADCASTSS (SI), Y14
	VFMADD231PS  Y12, Y14, Y0
	VFMADD231PS  Y13, Y14, Y1
	VBROADCASTSS 4(SI), Y15
	VFMADD231PS  Y12, Y15, Y2
	VFMADD231PS  Y13, Y15, Y3
	VBROADCASTSS 8(SI), Y14
	VFMADD231PS  Y12, Y14, Y4
	VFMADD231PS  Y13, Y14, Y5
	VBROADCASTSS 12(SI), Y15
	VFMADD231PS  Y12, Y15, Y6
	VFMADD231PS  Y13, Y15, Y7
	VBROADCASTSS 16(SI), Y14
	VFMADD231PS  Y12, Y14, Y8
	VFMADD231PS  Y13, Y14, Y9
	VBROADCASTSS 20(SI), Y15
	VFMADD231PS  Y12, Y15, Y10
	VFMADD231PS  Y13, Y15, Y11
	ADDQ         $24, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          loop

	MOVQ         c+24(FP), DX
	MOVQ         ldc+32(FP), R8
	SHLQ         $2, R8
	VBROADCASTSS alpha+40(FP), Y12
	VMULPS       Y12, Y0, Y0
	VMULPS       Y12, Y1, Y1
	VMULPS       Y12, Y2, Y2
	VMULPS       Y12, Y3, Y3
	VMULPS       Y12, Y4, Y4
	VMULPS       Y12, Y5, Y5
	VMULPS       Y12, Y6, Y6
	VMULPS       Y12, Y7, Y7
	VMULPS       Y12, Y8, Y8
	VMULPS       Y12, Y9, Y9
	VMULPS       Y12, Y10, Y10
	VMULPS       Y12, Y11, Y11
	MOVL         beta+44(FP), AX
	ANDL         $0x7fffffff, AX
	JZ           store

	VBROADCASTSS beta+44(FP), Y13
	MOVQ         DX, BX
	VFMADD231PS  (BX), Y13, Y0
	VFMADD231PS  32(BX), Y13, Y1
	ADDQ         R8, BX
	VFMADD231PS  (BX), Y13, Y2
	VFMADD231PS  32(BX), Y13, Y3
	ADDQ         R8, BX
	VFMADD231PS  (BX), Y13, Y4
	VFMADD231PS  32(BX), Y13, Y5
	ADDQ         R8, BX
	VFMADD231PS  (BX), Y13, Y6
	VFMADD231PS  32(BX), Y13, Y7
	ADDQ         R8, BX
	VFMADD231PS  (BX), Y13, Y8
	VFMADD231PS  32(BX), Y13, Y9
	ADDQ         R8, BX
	VFMADD231PS  (BX), Y13, Y10
	VFMADD231PS  32(BX), Y13, Y11

store:
	VMOVUPS Y0, (DX)
	VMOVUPS Y1, 32(DX)
	ADDQ    R8, DX
	VMOVUPS Y2, (DX)
	VMOVUPS Y3, 32(DX)
	ADDQ    R8, DX
	VMOVUPS Y4, (DX)
	VMOVUPS Y5, 32(DX)
	ADDQ    R8, DX
	VMOVUPS Y6, (DX)
	VMOVUPS Y7, 32(DX)
	ADDQ    R8, DX
	VMOVUPS Y8, (DX)
	VMOVUPS Y9, 32(DX)
	ADDQ    R8, DX
	VMOVUPS Y10, (DX)
	VMOVUPS Y11, 32(DX)
	VZEROUPPER
	RET

// func dotAVX2(n int, x, y *float32) float32
// Σ x[i]·y[i] with four 8-wide accumulators; n ≥ 32.
TEXT ·dotAVX2(SB), NOSPLIT, $0-28
	MOVQ   n+0(FP), CX
	MOVQ   x+8(FP), SI
	MOVQ   y+16(FP), DI
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ   CX, BX
	SHRQ   $5, BX

dotloop:
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	DECQ        BX
	JNZ         dotloop

	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	ANDQ         $31, CX
	JZ           dotdone

dottail:
	VMOVSS      (SI), X1
	VFMADD231SS (DI), X1, X0
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JNZ         dottail

dotdone:
	VMOVSS     X0, ret+24(FP)
	VZEROUPPER
	RET

// func axpyAVX2(n int, alpha float32, x, y *float32)
// y[i] += alpha·x[i]; n ≥ 32.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ         n+0(FP), CX
	VBROADCASTSS alpha+8(FP), Y0
	MOVQ         x+16(FP), SI
	MOVQ         y+24(FP), DI
	MOVQ         CX, BX
	SHRQ         $5, BX

axpyloop:
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VMOVUPS     64(DI), Y3
	VMOVUPS     96(DI), Y4
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VFMADD231PS 64(SI), Y0, Y3
	VFMADD231PS 96(SI), Y0, Y4
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	VMOVUPS     Y3, 64(DI)
	VMOVUPS     Y4, 96(DI)
	ADDQ        $128, SI
	ADDQ        $128, DI
	DECQ        BX
	JNZ         axpyloop

	ANDQ $31, CX
	JZ   axpydone

axpytail:
	VMOVSS      (DI), X1
	VFMADD231SS (SI), X0, X1
	VMOVSS      X1, (DI)
	ADDQ        $4, SI
	ADDQ        $4, DI
	DECQ        CX
	JNZ         axpytail

axpydone:
	VZEROUPPER
	RET

// func gemv4AVX2(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32
// Σ over n16 groups of 16 elements of xp·code[nibbles of w]·scale, the scale advancing after the
// first `first` groups and then every gpb groups. Each group is 8 bytes: their high nibbles pair
// with xp[0:8] of the group, their low nibbles with xp[8:16]. The 16-entry table is looked up as
// two 8-entry VPERMPS tables, bit 3 of the code choosing between them through VBLENDVPS (which
// reads the sign bit, hence the shifts by 28 and 24).
TEXT ·gemv4AVX2(SB), NOSPLIT, $0-60
	MOVQ    n16+0(FP), CX
	MOVQ    first+8(FP), R9
	MOVQ    gpb+16(FP), R11
	MOVQ    xp+24(FP), SI
	MOVQ    w+32(FP), DI
	MOVQ    scales+40(FP), BX
	MOVQ    table+48(FP), AX
	VMOVUPS (AX), Y14
	VMOVUPS 32(AX), Y15
	VXORPS  Y0, Y0, Y0
	VXORPS  Y1, Y1, Y1
	VXORPS  Y2, Y2, Y2
	XORQ    R10, R10

g4loop:
	VPMOVZXBD   (DI), Y3
	VPSRLD      $4, Y3, Y4
	VPSLLD      $28, Y3, Y5
	VPSLLD      $24, Y3, Y6
	VPERMPS     Y14, Y3, Y7
	VPERMPS     Y15, Y3, Y8
	VBLENDVPS   Y5, Y8, Y7, Y7
	VPERMPS     Y14, Y4, Y9
	VPERMPS     Y15, Y4, Y10
	VBLENDVPS   Y6, Y10, Y9, Y9
	VFMADD231PS (SI), Y9, Y1
	VFMADD231PS 32(SI), Y7, Y2
	ADDQ        $8, DI
	ADDQ        $64, SI
	INCQ        R10
	DECQ        R9
	JNZ         g4next

	// block boundary: total += (Y1+Y2)·scale
	VADDPS       Y2, Y1, Y1
	VBROADCASTSS (BX), Y3
	VFMADD231PS  Y1, Y3, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	ADDQ         $4, BX
	MOVQ         R11, R9
	XORQ         R10, R10

g4next:
	DECQ CX
	JNZ  g4loop

	TESTQ R10, R10
	JZ    g4sum
	VADDPS       Y2, Y1, Y1
	VBROADCASTSS (BX), Y3
	VFMADD231PS  Y1, Y3, Y0

g4sum:
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VMOVSS       X0, ret+56(FP)
	VZEROUPPER
	RET

// func dequant4AVX2(n16 int, w *byte, scale float32, table *[16]float32, dst *float32)
// dst[0:16·n16] = table[code]·scale for the 2·8·n16 codes of w[0:8·n16], high nibble first.
TEXT ·dequant4AVX2(SB), NOSPLIT, $0-40
	MOVQ         n16+0(FP), CX
	MOVQ         w+8(FP), SI
	VBROADCASTSS scale+16(FP), Y13
	MOVQ         table+24(FP), AX
	MOVQ         dst+32(FP), DI
	VMOVUPS      (AX), Y14
	VMOVUPS      32(AX), Y15
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X12
	VPBROADCASTD X12, X12

dqloop:
	VMOVQ      (SI), X0
	VPSRLW     $4, X0, X1
	VPAND      X12, X1, X1
	VPAND      X12, X0, X0
	VPUNPCKLBW X0, X1, X2  // h0 l0 h1 l1 … in element order
	VPMOVZXBD  X2, Y3
	VPSRLDQ    $8, X2, X2
	VPMOVZXBD  X2, Y4
	VPSLLD     $28, Y3, Y5
	VPERMPS    Y14, Y3, Y6
	VPERMPS    Y15, Y3, Y7
	VBLENDVPS  Y5, Y7, Y6, Y6
	VMULPS     Y13, Y6, Y6
	VMOVUPS    Y6, (DI)
	VPSLLD     $28, Y4, Y5
	VPERMPS    Y14, Y4, Y6
	VPERMPS    Y15, Y4, Y7
	VBLENDVPS  Y5, Y7, Y6, Y6
	VMULPS     Y13, Y6, Y6
	VMOVUPS    Y6, 32(DI)
	ADDQ       $8, SI
	ADDQ       $64, DI
	DECQ       CX
	JNZ        dqloop
	VZEROUPPER
	RET

// func transpose16AVX2(k8 int, src *float32, ld int, dst *float32)
// dst[p·16+j] = src[j·ld+p] for j < 16, p < k8 (a multiple of 8): 16 rows of src packed transposed
// into a B strip, as two 8×8 register transposes per 8 columns.
TEXT ·transpose16AVX2(SB), NOSPLIT, $0-32
	MOVQ k8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ ld+16(FP), R8
	MOVQ dst+24(FP), DI
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R9  // 3·ld
	LEAQ (R8)(R8*4), R10 // 5·ld
	LEAQ (R9)(R8*4), R11 // 7·ld
	SHRQ $3, CX

tloop:
	LEAQ (SI)(R8*8), DX  // row 8
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R9*1), Y3
	VMOVUPS (SI)(R8*4), Y4
	VMOVUPS (SI)(R10*1), Y5
	VMOVUPS (SI)(R9*2), Y6
	VMOVUPS (SI)(R11*1), Y7
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y7, Y3, Y15
	VMOVUPS Y8, 0(DI)
	VMOVUPS Y9, 64(DI)
	VMOVUPS Y10, 128(DI)
	VMOVUPS Y11, 192(DI)
	VMOVUPS Y12, 256(DI)
	VMOVUPS Y13, 320(DI)
	VMOVUPS Y14, 384(DI)
	VMOVUPS Y15, 448(DI)
	VMOVUPS (DX), Y0
	VMOVUPS (DX)(R8*1), Y1
	VMOVUPS (DX)(R8*2), Y2
	VMOVUPS (DX)(R9*1), Y3
	VMOVUPS (DX)(R8*4), Y4
	VMOVUPS (DX)(R10*1), Y5
	VMOVUPS (DX)(R9*2), Y6
	VMOVUPS (DX)(R11*1), Y7
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y7, Y3, Y15
	VMOVUPS Y8, 32(DI)
	VMOVUPS Y9, 96(DI)
	VMOVUPS Y10, 160(DI)
	VMOVUPS Y11, 224(DI)
	VMOVUPS Y12, 288(DI)
	VMOVUPS Y13, 352(DI)
	VMOVUPS Y14, 416(DI)
	VMOVUPS Y15, 480(DI)
	ADDQ $32, SI
	ADDQ $512, DI
	DECQ CX
	JNZ  tloop
	VZEROUPPER
	RET

// func pack8x16AVX2(p8, nstrips int, src *float32, ld int, dst *float32, sstride int)
// Copies rows 0..p8 (a multiple of 8) of a row-major panel, 16·nstrips floats each, into B strips:
// dst[s·sstride + p·16 + j] = src[p·ld + s·16 + j]. Eight rows are read side by side, eight
// streams from eight pages, so that many cache misses are in flight at once.
TEXT ·pack8x16AVX2(SB), NOSPLIT, $0-48
	MOVQ p8+0(FP), CX
	MOVQ src+16(FP), BX
	MOVQ ld+24(FP), R8
	MOVQ dst+32(FP), DX
	MOVQ sstride+40(FP), R12
	SHLQ $2, R8
	SHLQ $2, R12
	LEAQ (R8)(R8*2), R9  // 3·ld
	LEAQ (R8)(R8*4), R10 // 5·ld
	LEAQ (R9)(R8*4), R11 // 7·ld
	SHRQ $3, CX

prows:
	MOVQ BX, SI
	MOVQ DX, DI
	MOVQ nstrips+8(FP), AX

pstrips:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS (SI)(R8*1), Y2
	VMOVUPS 32(SI)(R8*1), Y3
	VMOVUPS (SI)(R8*2), Y4
	VMOVUPS 32(SI)(R8*2), Y5
	VMOVUPS (SI)(R9*1), Y6
	VMOVUPS 32(SI)(R9*1), Y7
	VMOVUPS (SI)(R8*4), Y8
	VMOVUPS 32(SI)(R8*4), Y9
	VMOVUPS (SI)(R10*1), Y10
	VMOVUPS 32(SI)(R10*1), Y11
	VMOVUPS (SI)(R9*2), Y12
	VMOVUPS 32(SI)(R9*2), Y13
	VMOVUPS (SI)(R11*1), Y14
	VMOVUPS 32(SI)(R11*1), Y15
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VMOVUPS Y4, 128(DI)
	VMOVUPS Y5, 160(DI)
	VMOVUPS Y6, 192(DI)
	VMOVUPS Y7, 224(DI)
	VMOVUPS Y8, 256(DI)
	VMOVUPS Y9, 288(DI)
	VMOVUPS Y10, 320(DI)
	VMOVUPS Y11, 352(DI)
	VMOVUPS Y12, 384(DI)
	VMOVUPS Y13, 416(DI)
	VMOVUPS Y14, 448(DI)
	VMOVUPS Y15, 480(DI)
	ADDQ $64, SI
	ADDQ R12, DI
	DECQ AX
	JNZ  pstrips

	LEAQ (BX)(R8*8), BX
	ADDQ $512, DX
	DECQ CX
	JNZ  prows
	VZEROUPPER
	RET

// func packA6AVX2(k8 int, src *float32, lda int, dst *float32)
// dst[p·6+r] = src[r·lda+p] for r < 6, p < k8 (a multiple of 8): six rows of A interleaved into an
// A strip, an 8×8 register transpose (two rows zero) per 8 columns. The 8-float stores overlap,
// each overwriting the zero padding of the one before, and the last one is cut to 6 floats.
TEXT ·packA6AVX2(SB), NOSPLIT, $0-32
	MOVQ k8+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ lda+16(FP), R8
	MOVQ dst+24(FP), DI
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R9  // 3·lda
	LEAQ (R8)(R8*4), R10 // 5·lda
	SHRQ $3, CX

aloop:
	VMOVUPS (SI), Y0
	VMOVUPS (SI)(R8*1), Y1
	VMOVUPS (SI)(R8*2), Y2
	VMOVUPS (SI)(R9*1), Y3
	VMOVUPS (SI)(R8*4), Y4
	VMOVUPS (SI)(R10*1), Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VUNPCKLPS Y1, Y0, Y8
	VUNPCKHPS Y1, Y0, Y9
	VUNPCKLPS Y3, Y2, Y10
	VUNPCKHPS Y3, Y2, Y11
	VUNPCKLPS Y5, Y4, Y12
	VUNPCKHPS Y5, Y4, Y13
	VUNPCKLPS Y7, Y6, Y14
	VUNPCKHPS Y7, Y6, Y15
	VSHUFPS $0x44, Y10, Y8, Y0
	VSHUFPS $0xEE, Y10, Y8, Y1
	VSHUFPS $0x44, Y11, Y9, Y2
	VSHUFPS $0xEE, Y11, Y9, Y3
	VSHUFPS $0x44, Y14, Y12, Y4
	VSHUFPS $0xEE, Y14, Y12, Y5
	VSHUFPS $0x44, Y15, Y13, Y6
	VSHUFPS $0xEE, Y15, Y13, Y7
	VPERM2F128 $0x20, Y4, Y0, Y8
	VPERM2F128 $0x31, Y4, Y0, Y12
	VPERM2F128 $0x20, Y5, Y1, Y9
	VPERM2F128 $0x31, Y5, Y1, Y13
	VPERM2F128 $0x20, Y6, Y2, Y10
	VPERM2F128 $0x31, Y6, Y2, Y14
	VPERM2F128 $0x20, Y7, Y3, Y11
	VPERM2F128 $0x31, Y7, Y3, Y15
	VMOVUPS Y8, 0(DI)
	VMOVUPS Y9, 24(DI)
	VMOVUPS Y10, 48(DI)
	VMOVUPS Y11, 72(DI)
	VMOVUPS Y12, 96(DI)
	VMOVUPS Y13, 120(DI)
	VMOVUPS Y14, 144(DI)
	VMOVUPS X15, 168(DI)
	VEXTRACTF128 $1, Y15, X15
	VMOVQ X15, 184(DI)
	ADDQ $32, SI
	ADDQ $192, DI
	DECQ CX
	JNZ  aloop
	VZEROUPPER
	RET

// func gemv4x4AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32)
// out[r] = Σ over n16 groups of 16 elements of xp[r·ldx:]·code[nibbles of w]·scale for four rows
// r of x at once: each group is dequantized once (and scaled) and feeds eight FMAs, which makes the
// loop FMA-bound rather than shuffle-bound. xp is permuted as for gemv4AVX2; the scale advances
// after the first `first` groups and then every gpb groups.
TEXT ·gemv4x4AVX2(SB), NOSPLIT, $0-72
	MOVQ         n16+0(FP), CX
	MOVQ         first+8(FP), R9
	MOVQ         gpb+16(FP), R11
	MOVQ         xp+24(FP), SI
	MOVQ         ldx+32(FP), R8
	MOVQ         w+40(FP), DI
	MOVQ         scales+48(FP), BX
	MOVQ         table+56(FP), AX
	SHLQ         $2, R8
	LEAQ         (R8)(R8*2), R12
	VMOVUPS      (AX), Y14
	VMOVUPS      32(AX), Y15
	VBROADCASTSS (BX), Y13
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7

g44loop:
	VPMOVZXBD   (DI), Y8
	VPSLLD      $28, Y8, Y9
	VPERMPS     Y14, Y8, Y10
	VPERMPS     Y15, Y8, Y11
	VBLENDVPS   Y9, Y11, Y10, Y10 // low nibbles: the odd elements
	VPSLLD      $24, Y8, Y9
	VPSRLD      $4, Y8, Y8
	VPERMPS     Y14, Y8, Y11
	VPERMPS     Y15, Y8, Y12
	VBLENDVPS   Y9, Y12, Y11, Y11 // high nibbles: the even elements
	VMULPS      Y13, Y10, Y10
	VMULPS      Y13, Y11, Y11
	VFMADD231PS (SI), Y11, Y0
	VFMADD231PS 32(SI), Y10, Y1
	VFMADD231PS (SI)(R8*1), Y11, Y2
	VFMADD231PS 32(SI)(R8*1), Y10, Y3
	VFMADD231PS (SI)(R8*2), Y11, Y4
	VFMADD231PS 32(SI)(R8*2), Y10, Y5
	VFMADD231PS (SI)(R12*1), Y11, Y6
	VFMADD231PS 32(SI)(R12*1), Y10, Y7
	ADDQ        $8, DI
	ADDQ        $64, SI
	DECQ        R9
	JNZ         g44next
	CMPQ        CX, $1
	JEQ         g44next // the last group: no next block to load the scale of
	ADDQ        $4, BX
	VBROADCASTSS (BX), Y13
	MOVQ        R11, R9

g44next:
	DECQ CX
	JNZ  g44loop

	VADDPS       Y1, Y0, Y0
	VADDPS       Y3, Y2, Y2
	VADDPS       Y5, Y4, Y4
	VADDPS       Y7, Y6, Y6
	VHADDPS      Y2, Y0, Y0
	VHADDPS      Y6, Y4, Y4
	VHADDPS      Y4, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	MOVQ         out+64(FP), AX
	VMOVUPS      X0, (AX)
	VZEROUPPER
	RET

// func gemv4x8AVX2(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32)
// gemv4x4AVX2 for eight rows of x: each group is dequantized once and feeds sixteen FMAs, so the
// dequantization (shuffle-bound) costs half as much a row. One accumulator a row takes both the
// even and the odd half of a group, which leaves room for eight rows in sixteen registers.
TEXT ·gemv4x8AVX2(SB), NOSPLIT, $0-72
	MOVQ         n16+0(FP), CX
	MOVQ         first+8(FP), R9
	MOVQ         gpb+16(FP), R11
	MOVQ         xp+24(FP), SI
	MOVQ         ldx+32(FP), R8
	MOVQ         w+40(FP), DI
	MOVQ         scales+48(FP), BX
	MOVQ         table+56(FP), AX
	SHLQ         $2, R8
	LEAQ         (R8)(R8*2), R12
	LEAQ         (SI)(R8*4), R13 // rows 4 to 7
	VMOVUPS      (AX), Y14
	VMOVUPS      32(AX), Y15
	VBROADCASTSS (BX), Y13
	VXORPS       Y0, Y0, Y0
	VXORPS       Y1, Y1, Y1
	VXORPS       Y2, Y2, Y2
	VXORPS       Y3, Y3, Y3
	VXORPS       Y4, Y4, Y4
	VXORPS       Y5, Y5, Y5
	VXORPS       Y6, Y6, Y6
	VXORPS       Y7, Y7, Y7

g48loop:
	VPMOVZXBD   (DI), Y8
	VPSLLD      $28, Y8, Y9
	VPERMPS     Y14, Y8, Y10
	VPERMPS     Y15, Y8, Y11
	VBLENDVPS   Y9, Y11, Y10, Y10 // low nibbles: the odd elements
	VPSLLD      $24, Y8, Y9
	VPSRLD      $4, Y8, Y8
	VPERMPS     Y14, Y8, Y11
	VPERMPS     Y15, Y8, Y12
	VBLENDVPS   Y9, Y12, Y11, Y11 // high nibbles: the even elements
	VMULPS      Y13, Y10, Y10
	VMULPS      Y13, Y11, Y11
	VFMADD231PS (SI), Y11, Y0
	VFMADD231PS (SI)(R8*1), Y11, Y1
	VFMADD231PS (SI)(R8*2), Y11, Y2
	VFMADD231PS (SI)(R12*1), Y11, Y3
	VFMADD231PS (R13), Y11, Y4
	VFMADD231PS (R13)(R8*1), Y11, Y5
	VFMADD231PS (R13)(R8*2), Y11, Y6
	VFMADD231PS (R13)(R12*1), Y11, Y7
	VFMADD231PS 32(SI), Y10, Y0
	VFMADD231PS 32(SI)(R8*1), Y10, Y1
	VFMADD231PS 32(SI)(R8*2), Y10, Y2
	VFMADD231PS 32(SI)(R12*1), Y10, Y3
	VFMADD231PS 32(R13), Y10, Y4
	VFMADD231PS 32(R13)(R8*1), Y10, Y5
	VFMADD231PS 32(R13)(R8*2), Y10, Y6
	VFMADD231PS 32(R13)(R12*1), Y10, Y7
	ADDQ        $8, DI
	ADDQ        $64, SI
	ADDQ        $64, R13
	DECQ        R9
	JNZ         g48next
	CMPQ        CX, $1
	JEQ         g48next // the last group: no next block to load the scale of
	ADDQ        $4, BX
	VBROADCASTSS (BX), Y13
	MOVQ        R11, R9

g48next:
	DECQ CX
	JNZ  g48loop

	// out[0:4] from Y0-Y3, out[4:8] from Y4-Y7: pairwise horizontal sums, then the two lanes.
	VHADDPS      Y1, Y0, Y0
	VHADDPS      Y3, Y2, Y2
	VHADDPS      Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      Y5, Y4, Y4
	VHADDPS      Y7, Y6, Y6
	VHADDPS      Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS       X5, X4, X4
	MOVQ         out+64(FP), AX
	VMOVUPS      X0, (AX)
	VMOVUPS      X4, 16(AX)
	VZEROUPPER
	RET

// func prefetchSpan(p *byte, n int)
// PREFETCHT0 on every cache line of p[0:n] (n > 0).
TEXT ·prefetchSpan(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	LEAQ -1(SI)(CX*1), CX // the last byte
	ANDQ $-64, SI
	ANDQ $-64, CX

pfloop:
	PREFETCHT0 (SI)
	ADDQ       $64, SI
	CMPQ       SI, CX
	JLE        pfloop
	RET
