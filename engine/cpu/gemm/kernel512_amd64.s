//go:build amd64 && !purego

#include "textflag.h"

// The vector exponential shared by expSubAVX512, swigluAVX512 and swigluBackwardAVX512 (Cephes'
// expf). EXP_CONSTANTS broadcasts its constants (through AX) into Z17-Z28: log₂e, ln2 in a high
// and a low part, the polynomial p0-p5, 1, and the clamps −104 and 88.7. EXP_Z1 sets
// Z4 = exp(Z1): x clamped to [−104, 88.7], n = round(x·log₂e), r = x − n·ln2 (in two parts),
// e^r = 1 + r + r²·p(r), times 2ⁿ by VSCALEFPS; it clobbers Z1-Z3.
#define EXP_CONSTANTS \
	MOVL $0x3fb8aa3b, AX; VPBROADCASTD AX, Z17; \
	MOVL $0x3f318000, AX; VPBROADCASTD AX, Z18; \
	MOVL $0xb95e8083, AX; VPBROADCASTD AX, Z19; \
	MOVL $0x39506967, AX; VPBROADCASTD AX, Z20; \
	MOVL $0x3ab743ce, AX; VPBROADCASTD AX, Z21; \
	MOVL $0x3c088908, AX; VPBROADCASTD AX, Z22; \
	MOVL $0x3d2aa9c1, AX; VPBROADCASTD AX, Z23; \
	MOVL $0x3e2aaaaa, AX; VPBROADCASTD AX, Z24; \
	MOVL $0x3f000000, AX; VPBROADCASTD AX, Z25; \
	MOVL $0x3f800000, AX; VPBROADCASTD AX, Z26; \
	MOVL $0xc2d00000, AX; VPBROADCASTD AX, Z27; \
	MOVL $0x42b16666, AX; VPBROADCASTD AX, Z28;

#define EXP_Z1 \
	VMAXPS Z27, Z1, Z1; \
	VMINPS Z28, Z1, Z1; \
	VMULPS Z17, Z1, Z2; \
	VRNDSCALEPS $0, Z2, Z2; \
	VFNMADD231PS Z18, Z2, Z1; \
	VFNMADD231PS Z19, Z2, Z1; \
	VMULPS Z1, Z1, Z3; \
	VMOVAPS Z20, Z4; \
	VFMADD213PS Z21, Z1, Z4; \
	VFMADD213PS Z22, Z1, Z4; \
	VFMADD213PS Z23, Z1, Z4; \
	VFMADD213PS Z24, Z1, Z4; \
	VFMADD213PS Z25, Z1, Z4; \
	VFMADD213PS Z1, Z3, Z4; \
	VADDPS Z26, Z4, Z4; \
	VSCALEFPS Z2, Z4, Z4;

// AVX-512 kernels. They keep the AVX2 kernels' data layouts (packed 6×16 tiles, the permuted x of
// the 4-bit GEMV), so the Go drivers are shared and only the inner loops differ.

// func kern6x16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32, astep, arow int)
// kern6x16 with ZMM registers: a row of the 16-wide B strip is one register, and each a value is
// broadcast from memory inside its FMA. Row r's value at depth p is a[p·astep + r·arow] (floats):
// a packed strip (astep 6, arow 1) or six rows of a row-major A read in place (astep 1, arow
// lda). Two k steps per iteration go to two sets of six
// accumulators (Z0-Z5 even steps, Z6-Z11 odd ones), so that each accumulator waits for its last FMA
// only every other step (six FMAs a step are three cycles on two 512-bit pipes, less than the FMA
// latency of four).
TEXT ·kern6x16AVX512(SB), NOSPLIT, $0-64
	MOVQ   k+0(FP), CX
	MOVQ   a+8(FP), SI
	MOVQ   b+16(FP), DI
	MOVQ   astep+48(FP), AX
	MOVQ   arow+56(FP), R11
	SHLQ   $2, AX
	SHLQ   $2, R11
	LEAQ   (R11)(R11*2), R12 // 3·arow
	LEAQ   (R11)(R11*4), R13 // 5·arow
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	MOVQ   CX, R9
	SHRQ   $1, CX
	JZ     k512tail

k512loop:
	VMOVUPS          (DI), Z12
	VMOVUPS          64(DI), Z13
	LEAQ             (SI)(AX*1), BX
	VFMADD231PS.BCST (SI), Z12, Z0
	VFMADD231PS.BCST (SI)(R11*1), Z12, Z1
	VFMADD231PS.BCST (SI)(R11*2), Z12, Z2
	VFMADD231PS.BCST (SI)(R12*1), Z12, Z3
	VFMADD231PS.BCST (SI)(R11*4), Z12, Z4
	VFMADD231PS.BCST (SI)(R13*1), Z12, Z5
	VFMADD231PS.BCST (BX), Z13, Z6
	VFMADD231PS.BCST (BX)(R11*1), Z13, Z7
	VFMADD231PS.BCST (BX)(R11*2), Z13, Z8
	VFMADD231PS.BCST (BX)(R12*1), Z13, Z9
	VFMADD231PS.BCST (BX)(R11*4), Z13, Z10
	VFMADD231PS.BCST (BX)(R13*1), Z13, Z11
	LEAQ             (SI)(AX*2), SI
	ADDQ             $128, DI
	DECQ             CX
	JNZ              k512loop

k512tail:
	ANDQ             $1, R9
	JZ               k512sum
	VMOVUPS          (DI), Z12
	VFMADD231PS.BCST (SI), Z12, Z0
	VFMADD231PS.BCST (SI)(R11*1), Z12, Z1
	VFMADD231PS.BCST (SI)(R11*2), Z12, Z2
	VFMADD231PS.BCST (SI)(R12*1), Z12, Z3
	VFMADD231PS.BCST (SI)(R11*4), Z12, Z4
	VFMADD231PS.BCST (SI)(R13*1), Z12, Z5

k512sum:
	JMP ·kern6x16StoreAVX512(SB)

// func gemv4AVX512(n16, first, gpb int, xp *float32, w *byte, scales *float32, table *[16]float32) float32
// gemv4AVX2 with ZMM registers, same arguments and layout. The 16-entry codebook is one register
// and one VPERMPS looks up a whole group: VPERMPS on ZMM reads only the low four bits of each index,
// so a byte's low nibble needs no mask and its high nibble only a shift. A group's 16 indexes are
// [bytes >> 4, bytes] (its even elements, then its odd ones, as xp is permuted). Each block runs its
// groups two at a time (16 bytes) into two accumulators, then adds them, scaled once, to the total.
TEXT ·gemv4AVX512(SB), NOSPLIT, $0-60
	MOVQ    n16+0(FP), CX
	MOVQ    first+8(FP), R9
	MOVQ    gpb+16(FP), R11
	MOVQ    xp+24(FP), SI
	MOVQ    w+32(FP), DI
	MOVQ    scales+40(FP), BX
	MOVQ    table+48(FP), AX
	VMOVUPS (AX), Z14
	VPXORD  Z0, Z0, Z0

g5block:
	// R10 = the groups of this block: min(R9, CX).
	MOVQ    R9, R10
	CMPQ    R10, CX
	CMOVQGT CX, R10
	SUBQ    R10, CX
	VPXORD  Z1, Z1, Z1
	VPXORD  Z2, Z2, Z2

g5pair:
	CMPQ         R10, $2
	JLT          g5single
	VPMOVZXBD    (DI), Z3              // 16 bytes, one a lane
	VPSRLD       $4, Z3, Z4            // their high nibbles
	VINSERTI64X4 $1, Y3, Z4, Z5        // group 0: [high of bytes 0-7, bytes 0-7]
	VSHUFI32X4   $0xEE, Z3, Z4, Z6     // group 1: [high of bytes 8-15, bytes 8-15]
	VPERMPS      Z14, Z5, Z5
	VPERMPS      Z14, Z6, Z6
	VFMADD231PS  (SI), Z5, Z1
	VFMADD231PS  64(SI), Z6, Z2
	ADDQ         $16, DI
	ADDQ         $128, SI
	SUBQ         $2, R10
	JMP          g5pair

g5single:
	TESTQ        R10, R10
	JZ           g5end
	VPMOVZXBD    (DI), Y3
	VPSRLD       $4, Y3, Y4
	VINSERTI64X4 $1, Y3, Z4, Z5
	VPERMPS      Z14, Z5, Z5
	VFMADD231PS  (SI), Z5, Z1
	ADDQ         $8, DI
	ADDQ         $64, SI

g5end:
	VADDPS       Z2, Z1, Z1
	VBROADCASTSS (BX), Z3
	VFMADD231PS  Z1, Z3, Z0
	ADDQ         $4, BX
	MOVQ         R11, R9
	TESTQ        CX, CX
	JNZ          g5block

	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, ret+56(FP)
	VZEROUPPER
	RET

// func dequant4AVX512(n16 int, w *byte, scale float32, table *[16]float32, dst *float32)
// dequant4AVX2 with ZMM registers: a group's 16 indexes are its bytes shifted right by 4
// interleaved with the bytes themselves (VPERMPS reads only the low four bits), one lookup each.
TEXT ·dequant4AVX512(SB), NOSPLIT, $0-40
	MOVQ         n16+0(FP), CX
	MOVQ         w+8(FP), SI
	VBROADCASTSS scale+16(FP), Z13
	MOVQ         table+24(FP), AX
	MOVQ         dst+32(FP), DI
	VMOVUPS      (AX), Z14

dq5loop:
	VMOVQ      (SI), X0
	VPSRLW     $4, X0, X1
	VPUNPCKLBW X0, X1, X2  // h0 b0 h1 b1 … in element order
	VPMOVZXBD  X2, Z3
	VPERMPS    Z14, Z3, Z3
	VMULPS     Z13, Z3, Z3
	VMOVUPS    Z3, (DI)
	ADDQ       $8, SI
	ADDQ       $64, DI
	DECQ       CX
	JNZ        dq5loop
	VZEROUPPER
	RET

// func dequant4StripsAVX512(n16, first, gpb int, w *byte, scales *float32, table *[16]float32, dst *float32, dstride int)
// dequant4AVX512 across blocks, each group of 16 to its own place: group i (bytes w[8i:8i+8]) goes
// to dst[i·dstride:], times its block's scale, which starts at scales[0] and advances after the
// first `first` groups, then every gpb. packRows uses it to dequantize a stretch of a row of W
// straight into the B strips (dstride: their distance), where a row buffer and a copy a strip
// took longer than the products on a 128-token backward.
TEXT ·dequant4StripsAVX512(SB), NOSPLIT, $0-64
	MOVQ    n16+0(FP), CX
	MOVQ    first+8(FP), R9
	MOVQ    gpb+16(FP), R11
	MOVQ    w+24(FP), SI
	MOVQ    scales+32(FP), BX
	MOVQ    table+40(FP), AX
	MOVQ    dst+48(FP), DI
	MOVQ    dstride+56(FP), R8
	SHLQ    $2, R8
	VMOVUPS (AX), Z14

dqsblock:
	// R10 = the groups of this block: min(R9, CX).
	MOVQ         R9, R10
	CMPQ         R10, CX
	CMOVQGT      CX, R10
	SUBQ         R10, CX
	VBROADCASTSS (BX), Z13
	ADDQ         $4, BX

dqsloop:
	VMOVQ      (SI), X0
	VPSRLW     $4, X0, X1
	VPUNPCKLBW X0, X1, X2  // h0 b0 h1 b1 … in element order
	VPMOVZXBD  X2, Z3
	VPERMPS    Z14, Z3, Z3
	VMULPS     Z13, Z3, Z3
	VMOVUPS    Z3, (DI)
	ADDQ       $8, SI
	ADDQ       R8, DI
	DECQ       R10
	JNZ        dqsloop
	MOVQ       R11, R9
	TESTQ      CX, CX
	JNZ        dqsblock
	VZEROUPPER
	RET

// func expSubAVX512(n int, src, dst *float32, shift float32) float32
// dst[i] = exp(src[i] − shift) for i < n (a multiple of 16), and returns Σ dst[i]: the softmax's
// exponentials and their sum in one pass. Cephes' expf: x clamped to [−104, 88.7], n = round(x·log₂e),
// r = x − n·ln2 (in two parts), e^r by a degree-6 polynomial, times 2ⁿ by VSCALEFPS, which
// underflows to 0 (so x ≤ −104, −∞ included, gives 0) instead of wrapping the exponent.
TEXT ·expSubAVX512(SB), NOSPLIT, $0-36
	MOVQ         n+0(FP), CX
	MOVQ         src+8(FP), SI
	MOVQ         dst+16(FP), DI
	VBROADCASTSS shift+24(FP), Z16
	EXP_CONSTANTS
	VPXORD       Z0, Z0, Z0
	SHRQ         $4, CX
	JZ           exdone

exloop:
	VMOVUPS      (SI), Z1
	VSUBPS       Z16, Z1, Z1
	EXP_Z1
	VMOVUPS      Z4, (DI)
	VADDPS       Z4, Z0, Z0
	ADDQ         $64, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          exloop

exdone:
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, ret+32(FP)
	VZEROUPPER
	RET

// func swigluAVX512(n int, gate, up, y *float32)
// y[i] = gate[i]·up[i] / (1 + exp(−gate[i])) for i < n (a multiple of 16): silu(gate)·up, with
// expSubAVX512's exponential (−gate clamped to [−104, 88.7]: silu of a gate below −88.7 is
// rounded to its limit, 0).
TEXT ·swigluAVX512(SB), NOSPLIT, $0-32
	MOVQ         n+0(FP), CX
	MOVQ         gate+8(FP), SI
	MOVQ         up+16(FP), DX
	MOVQ         y+24(FP), DI
	EXP_CONSTANTS
	VPXORD       Z16, Z16, Z16
	SHRQ         $4, CX
	JZ           swdone

swloop:
	VMOVUPS      (SI), Z5     // g
	VSUBPS       Z5, Z16, Z1  // x = −g
	EXP_Z1
	VADDPS       Z26, Z4, Z4  // 1 + exp(−g)
	VMULPS       (DX), Z5, Z5 // g·up
	VDIVPS       Z4, Z5, Z5
	VMOVUPS      Z5, (DI)
	ADDQ         $64, SI
	ADDQ         $64, DX
	ADDQ         $64, DI
	DECQ         CX
	JNZ          swloop

swdone:
	VZEROUPPER
	RET

// func swigluBackwardAVX512(n int, gate, up, dy, dgate, dup *float32)
// SwiGLU's backward for i < n (a multiple of 16): with s = sigmoid(g), g = gate[i],
// dup[i] = dy[i]·g·s and dgate[i] = dy[i]·up[i]·(s + g·s·(1 − s)), the exponential as in
// swigluAVX512. Every input of a lane is read before its outputs are written, so the outputs may
// be inputs.
TEXT ·swigluBackwardAVX512(SB), NOSPLIT, $0-48
	MOVQ         n+0(FP), CX
	MOVQ         gate+8(FP), SI
	MOVQ         up+16(FP), DX
	MOVQ         dy+24(FP), BX
	MOVQ         dgate+32(FP), DI
	MOVQ         dup+40(FP), R8
	EXP_CONSTANTS
	VPXORD       Z16, Z16, Z16
	SHRQ         $4, CX
	JZ           sbdone

sbloop:
	VMOVUPS      (SI), Z5     // g
	VSUBPS       Z5, Z16, Z1  // x = −g
	EXP_Z1
	VADDPS       Z26, Z4, Z4  // 1 + exp(−g)
	VDIVPS       Z4, Z26, Z6  // s
	VMULPS       Z6, Z5, Z7   // t = g·s
	VMOVUPS      (BX), Z8     // dy
	VMULPS       (DX), Z8, Z11 // dy·up
	VSUBPS       Z6, Z26, Z9  // 1 − s
	VFMADD213PS  Z6, Z7, Z9   // s + t·(1 − s)
	VMULPS       Z7, Z8, Z7   // dy·t
	VMULPS       Z9, Z11, Z11
	VMOVUPS      Z11, (DI)
	VMOVUPS      Z7, (R8)
	ADDQ         $64, SI
	ADDQ         $64, DX
	ADDQ         $64, BX
	ADDQ         $64, DI
	ADDQ         $64, R8
	DECQ         CX
	JNZ          sbloop

sbdone:
	VZEROUPPER
	RET

// func sumSquaresAVX512(n int, x *float32) float32
// Σ x[i]² for i < n (a multiple of 16), in four accumulators.
TEXT ·sumSquaresAVX512(SB), NOSPLIT, $0-20
	MOVQ   n+0(FP), CX
	MOVQ   x+8(FP), SI
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	SHRQ   $4, CX

ssloop4:
	CMPQ        CX, $4
	JLT         ssloop1
	VMOVUPS     (SI), Z4
	VMOVUPS     64(SI), Z5
	VMOVUPS     128(SI), Z6
	VMOVUPS     192(SI), Z7
	VFMADD231PS Z4, Z4, Z0
	VFMADD231PS Z5, Z5, Z1
	VFMADD231PS Z6, Z6, Z2
	VFMADD231PS Z7, Z7, Z3
	ADDQ        $256, SI
	SUBQ        $4, CX
	JMP         ssloop4

ssloop1:
	TESTQ       CX, CX
	JZ          ssdone
	VMOVUPS     (SI), Z4
	VFMADD231PS Z4, Z4, Z0
	ADDQ        $64, SI
	DECQ        CX
	JMP         ssloop1

ssdone:
	VADDPS        Z1, Z0, Z0
	VADDPS        Z3, Z2, Z2
	VADDPS        Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, ret+16(FP)
	VZEROUPPER
	RET

// func scaleMulAVX512(n int, x, w, y *float32, r float32)
// y[i] = x[i]·r·w[i] for i < n (a multiple of 16): RMSNorm's second pass.
TEXT ·scaleMulAVX512(SB), NOSPLIT, $0-36
	MOVQ         n+0(FP), CX
	MOVQ         x+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         y+24(FP), DI
	VBROADCASTSS r+32(FP), Z3
	SHRQ         $4, CX
	JZ           smdone

smloop:
	VMULPS  (SI), Z3, Z0
	VMULPS  (DX), Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ    $64, SI
	ADDQ    $64, DX
	ADDQ    $64, DI
	DECQ    CX
	JNZ     smloop

smdone:
	VZEROUPPER
	RET

// func gemv4x4AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[4]float32)
// gemv4x4AVX2 with ZMM registers: a group's 16 codes are one VPERMPS (as in gemv4AVX512), scaled
// once, and feed one FMA a row; four accumulators.
TEXT ·gemv4x4AVX512(SB), NOSPLIT, $0-72
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
	VMOVUPS      (AX), Z14
	VBROADCASTSS (BX), Z13
	VPXORD       Z0, Z0, Z0
	VPXORD       Z1, Z1, Z1
	VPXORD       Z2, Z2, Z2
	VPXORD       Z3, Z3, Z3

g54loop:
	VPMOVZXBD    (DI), Y8
	VPSRLD       $4, Y8, Y9
	VINSERTI64X4 $1, Y8, Z9, Z9
	VPERMPS      Z14, Z9, Z9
	VMULPS       Z13, Z9, Z9
	VFMADD231PS  (SI), Z9, Z0
	VFMADD231PS  (SI)(R8*1), Z9, Z1
	VFMADD231PS  (SI)(R8*2), Z9, Z2
	VFMADD231PS  (SI)(R12*1), Z9, Z3
	ADDQ         $8, DI
	ADDQ         $64, SI
	DECQ         R9
	JNZ          g54next
	CMPQ         CX, $1
	JEQ          g54next // the last group: no next block to load the scale of
	ADDQ         $4, BX
	VBROADCASTSS (BX), Z13
	MOVQ         R11, R9

g54next:
	DECQ CX
	JNZ  g54loop

	MOVQ out+64(FP), AX
	VEXTRACTF64X4 $1, Z0, Y4
	VADDPS        Y4, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y4
	VADDPS        Y4, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y4
	VADDPS        Y4, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y4
	VADDPS        Y4, Y3, Y3
	VHADDPS       Y1, Y0, Y0
	VHADDPS       Y3, Y2, Y2
	VHADDPS       Y2, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VMOVUPS       X0, (AX)
	VZEROUPPER
	RET

// func gemv4x8AVX512(n16, first, gpb int, xp *float32, ldx int, w *byte, scales *float32, table *[16]float32, out *[8]float32)
// gemv4x4AVX512 for eight rows of x: each group decoded once feeds eight FMAs.
TEXT ·gemv4x8AVX512(SB), NOSPLIT, $0-72
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
	VMOVUPS      (AX), Z14
	VBROADCASTSS (BX), Z13
	VPXORD       Z0, Z0, Z0
	VPXORD       Z1, Z1, Z1
	VPXORD       Z2, Z2, Z2
	VPXORD       Z3, Z3, Z3
	VPXORD       Z4, Z4, Z4
	VPXORD       Z5, Z5, Z5
	VPXORD       Z6, Z6, Z6
	VPXORD       Z7, Z7, Z7

g58loop:
	VPMOVZXBD    (DI), Y8
	VPSRLD       $4, Y8, Y9
	VINSERTI64X4 $1, Y8, Z9, Z9
	VPERMPS      Z14, Z9, Z9
	VMULPS       Z13, Z9, Z9
	VFMADD231PS  (SI), Z9, Z0
	VFMADD231PS  (SI)(R8*1), Z9, Z1
	VFMADD231PS  (SI)(R8*2), Z9, Z2
	VFMADD231PS  (SI)(R12*1), Z9, Z3
	VFMADD231PS  (R13), Z9, Z4
	VFMADD231PS  (R13)(R8*1), Z9, Z5
	VFMADD231PS  (R13)(R8*2), Z9, Z6
	VFMADD231PS  (R13)(R12*1), Z9, Z7
	ADDQ         $8, DI
	ADDQ         $64, SI
	ADDQ         $64, R13
	DECQ         R9
	JNZ          g58next
	CMPQ         CX, $1
	JEQ          g58next // the last group: no next block to load the scale of
	ADDQ         $4, BX
	VBROADCASTSS (BX), Z13
	MOVQ         R11, R9

g58next:
	DECQ CX
	JNZ  g58loop

	// Fold each accumulator to 8 lanes, then as gemv4x8AVX2 does.
	VEXTRACTF64X4 $1, Z0, Y8
	VADDPS        Y8, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y8
	VADDPS        Y8, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y8
	VADDPS        Y8, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y8
	VADDPS        Y8, Y3, Y3
	VEXTRACTF64X4 $1, Z4, Y8
	VADDPS        Y8, Y4, Y4
	VEXTRACTF64X4 $1, Z5, Y8
	VADDPS        Y8, Y5, Y5
	VEXTRACTF64X4 $1, Z6, Y8
	VADDPS        Y8, Y6, Y6
	VEXTRACTF64X4 $1, Z7, Y8
	VADDPS        Y8, Y7, Y7
	VHADDPS       Y1, Y0, Y0
	VHADDPS       Y3, Y2, Y2
	VHADDPS       Y2, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       Y5, Y4, Y4
	VHADDPS       Y7, Y6, Y6
	VHADDPS       Y6, Y4, Y4
	VEXTRACTF128  $1, Y4, X5
	VADDPS        X5, X4, X4
	MOVQ          out+64(FP), AX
	VMOVUPS       X0, (AX)
	VMOVUPS       X4, 16(AX)
	VZEROUPPER
	RET

// func dotBF16AVX512(n int, x *float32, w *uint16) float32
// Σ x[i]·w[i] for bfloat16 w, i < n (a multiple of 64): each 16 weights widened in registers
// (zero-extended to 32 bits and shifted up), exactly, into four accumulators.
TEXT ·dotBF16AVX512(SB), NOSPLIT, $0-28
	MOVQ   n+0(FP), CX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	SHRQ   $6, CX
	JZ     dbdone

dbloop:
	PREFETCHT0  4096(DX)          // a row streams once: keep lines in flight (see gemv4g128AVX512)
	PREFETCHT0  4160(DX)
	VPMOVZXWD   (DX), Z4
	VPMOVZXWD   32(DX), Z5
	VPMOVZXWD   64(DX), Z6
	VPMOVZXWD   96(DX), Z7
	VPSLLD      $16, Z4, Z4
	VPSLLD      $16, Z5, Z5
	VPSLLD      $16, Z6, Z6
	VPSLLD      $16, Z7, Z7
	VFMADD231PS (SI), Z4, Z0
	VFMADD231PS 64(SI), Z5, Z1
	VFMADD231PS 128(SI), Z6, Z2
	VFMADD231PS 192(SI), Z7, Z3
	ADDQ        $128, DX
	ADDQ        $256, SI
	DECQ        CX
	JNZ         dbloop

dbdone:
	VADDPS        Z1, Z0, Z0
	VADDPS        Z3, Z2, Z2
	VADDPS        Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotF16AVX512(n int, x *float32, w *uint16) float32
// dotBF16AVX512 for IEEE halves (VCVTPH2PS widens exactly).
TEXT ·dotF16AVX512(SB), NOSPLIT, $0-28
	MOVQ   n+0(FP), CX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	SHRQ   $6, CX
	JZ     dhdone

dhloop:
	PREFETCHT0  4096(DX)          // a row streams once: keep lines in flight (see gemv4g128AVX512)
	PREFETCHT0  4160(DX)
	VCVTPH2PS   (DX), Z4
	VCVTPH2PS   32(DX), Z5
	VCVTPH2PS   64(DX), Z6
	VCVTPH2PS   96(DX), Z7
	VFMADD231PS (SI), Z4, Z0
	VFMADD231PS 64(SI), Z5, Z1
	VFMADD231PS 128(SI), Z6, Z2
	VFMADD231PS 192(SI), Z7, Z3
	ADDQ        $128, DX
	ADDQ        $256, SI
	DECQ        CX
	JNZ         dhloop

dhdone:
	VADDPS        Z1, Z0, Z0
	VADDPS        Z3, Z2, Z2
	VADDPS        Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, ret+24(FP)
	VZEROUPPER
	RET

// func gemv4g128AVX512(rows, n128 int, xp *float32, w *byte, scales *float32, table *[16]float32, y *float32)
// The m = 1 NF4/FP4 GEMV of rows consecutive rows of n128 groups of 128 codes (64 bytes) each,
// y[r] = the row's dot product with x, with fewer shuffles than gemv4AVX512: a group's 64 bytes
// are loaded as 16 dwords and dword lane l's nibble s (bits 4s..4s+3) is code 8l + (s^1) of the
// group, so seven shifts by 4s (VPERMPS reads only the low four bits of an index) and eight
// VPERMPS decode the whole group. xp holds each group's x in that order (xp[16s+l] =
// x[8l + (s^1)]). Lanes 0-7 are the group's first 64 codes and lanes 8-15 its last 64: scales
// holds two scales a group (its halves' blocks), applied once a group, consecutive across rows.
// W streams from memory once, a prefetch 8 KiB ahead. On a 2-core EPYC (Zen 5) reading from
// DRAM, prefetch distances of 4-16 KiB, PREFETCHNTA, T2 and none measured within 10% of each
// other when interleaved in one run (33-37 GB/s on both cores); so did a kernel with fewer
// instructions a group, which is 6% faster from cache: from memory the kernel waits on DRAM.
TEXT ·gemv4g128AVX512(SB), NOSPLIT, $0-56
	MOVQ    rows+0(FP), DX
	MOVQ    w+24(FP), DI
	MOVQ    scales+32(FP), BX
	MOVQ    table+40(FP), AX
	MOVQ    y+48(FP), R8
	VMOVUPS (AX), Z14

g7row:
	MOVQ    n128+8(FP), CX
	MOVQ    xp+16(FP), SI
	VPXORD  Z0, Z0, Z0

g7loop:
	PREFETCHT0    8192(DI)
	VMOVDQU32     (DI), Z1
	VPSRLD        $4, Z1, Z2
	VPSRLD        $8, Z1, Z3
	VPSRLD        $12, Z1, Z4
	VPSRLD        $16, Z1, Z5
	VPSRLD        $20, Z1, Z6
	VPSRLD        $24, Z1, Z7
	VPSRLD        $28, Z1, Z8
	VPERMPS       Z14, Z1, Z1
	VPERMPS       Z14, Z2, Z2
	VPERMPS       Z14, Z3, Z3
	VPERMPS       Z14, Z4, Z4
	VPERMPS       Z14, Z5, Z5
	VPERMPS       Z14, Z6, Z6
	VPERMPS       Z14, Z7, Z7
	VPERMPS       Z14, Z8, Z8
	VMULPS        (SI), Z1, Z16
	VMULPS        64(SI), Z2, Z17
	VMULPS        128(SI), Z3, Z18
	VMULPS        192(SI), Z4, Z19
	VFMADD231PS   256(SI), Z5, Z16
	VFMADD231PS   320(SI), Z6, Z17
	VFMADD231PS   384(SI), Z7, Z18
	VFMADD231PS   448(SI), Z8, Z19
	VADDPS        Z17, Z16, Z16
	VADDPS        Z19, Z18, Z18
	VADDPS        Z18, Z16, Z16
	VBROADCASTSS  (BX), Z12
	VBROADCASTSS  4(BX), Y13
	VINSERTF32X8  $1, Y13, Z12, Z12
	VFMADD231PS   Z12, Z16, Z0
	ADDQ          $64, DI
	ADDQ          $512, SI
	ADDQ          $8, BX
	DECQ          CX
	JNZ           g7loop

	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)
	ADDQ          $4, R8
	DECQ          DX
	JNZ           g7row
	VZEROUPPER
	RET

// func kern6x64AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32, astep, arow int)
// C[6×64] = alpha·Σ_p A[:, p] ⊗ [four packed B strips' row p] + beta·C: kern6x16AVX512 over
// four adjacent strips (bstride floats apart) at once, A addressed as there (a[p·astep + r·arow]).
// 24 accumulators (Z0-Z23, row r and strip s in Z(4r+s)) take four B loads and six broadcasts a
// step for 24 FMAs, where the 6×16 tile takes seven loads for six: the FMA pipes, not the loads,
// now set the pace. 64 steps before the end it asks for the C tile's 24 lines (PREFETCHT0): read
// at the end without it, from L3 or memory, they cost 3-5% of a 1536³ product; asked for at the
// start, the B strips streaming through L1 evicted them again.
TEXT ·kern6x64AVX512(SB), NOSPLIT, $0-72
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ bstride+24(FP), R8
	MOVQ astep+56(FP), AX
	MOVQ arow+64(FP), R11
	SHLQ $2, R8
	SHLQ $2, AX
	SHLQ $2, R11
	LEAQ (R8)(R8*2), R10
	LEAQ (R11)(R11*2), R12 // 3·arow
	LEAQ (R11)(R11*4), R13 // 5·arow
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

	MOVQ    c+32(FP), DX
	MOVQ    ldc+40(FP), R9
	SHLQ    $2, R9
	MOVQ    $64, R14
	CMPQ    CX, R14
	CMOVQLT CX, R14 // min(k, 64)

k64loop:
	// 64 steps before the end (at the start when k ≤ 64), ask for the C tile (see above).
	CMPQ CX, R14
	JNE  k64step
	MOVQ DX, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)
	ADDQ R9, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)
	ADDQ R9, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)
	ADDQ R9, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)
	ADDQ R9, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)
	ADDQ R9, BX
	PREFETCHT0 0(BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	PREFETCHT0 192(BX)

k64step:
	VMOVUPS (DI), Z24
	VMOVUPS (DI)(R8*1), Z25
	VMOVUPS (DI)(R8*2), Z26
	VMOVUPS (DI)(R10*1), Z27
	VBROADCASTSS (SI), Z28
	VFMADD231PS Z24, Z28, Z0
	VFMADD231PS Z25, Z28, Z1
	VFMADD231PS Z26, Z28, Z2
	VFMADD231PS Z27, Z28, Z3
	VBROADCASTSS (SI)(R11*1), Z29
	VFMADD231PS Z24, Z29, Z4
	VFMADD231PS Z25, Z29, Z5
	VFMADD231PS Z26, Z29, Z6
	VFMADD231PS Z27, Z29, Z7
	VBROADCASTSS (SI)(R11*2), Z28
	VFMADD231PS Z24, Z28, Z8
	VFMADD231PS Z25, Z28, Z9
	VFMADD231PS Z26, Z28, Z10
	VFMADD231PS Z27, Z28, Z11
	VBROADCASTSS (SI)(R12*1), Z29
	VFMADD231PS Z24, Z29, Z12
	VFMADD231PS Z25, Z29, Z13
	VFMADD231PS Z26, Z29, Z14
	VFMADD231PS Z27, Z29, Z15
	VBROADCASTSS (SI)(R11*4), Z28
	VFMADD231PS Z24, Z28, Z16
	VFMADD231PS Z25, Z28, Z17
	VFMADD231PS Z26, Z28, Z18
	VFMADD231PS Z27, Z28, Z19
	VBROADCASTSS (SI)(R13*1), Z29
	VFMADD231PS Z24, Z29, Z20
	VFMADD231PS Z25, Z29, Z21
	VFMADD231PS Z26, Z29, Z22
	VFMADD231PS Z27, Z29, Z23
	ADDQ AX, SI
	ADDQ $64, DI
	DECQ CX
	JNZ k64loop
	JMP ·kern6x64StoreAVX512(SB)

// func gemv4bf16AVX512(rows, n128 int, xb *uint16, w *byte, scales *float32, table *[16]uint16, y *float32)
// The m = 1 NF4/FP4 GEMV in bfloat16 (MatMul4BF16): rows consecutive rows of n128 groups of 128
// codes (64 bytes, two 64-code blocks) each. A block's 32 bytes widen to 32 words (VPMOVZXBW):
// masked to the low nibble (the block's odd elements) and shifted down by four (its even ones),
// they index the 16 bfloat16 codes in Y14 (VPERMW), and VDPBF16PS multiplies each pair of adjacent
// words by xb's pair and adds both products into a float32 lane. xb holds each block's x rounded
// to bfloat16, odd elements then even (xb[64h + i] = x[64h + 2i + 1], xb[64h + 32 + i] =
// x[64h + 2i] for block h of the group, i < 32). A block's sum is scaled once (its scale
// broadcast from scales, two a group, consecutive across rows) into one of two accumulators.
// Half the instructions of gemv4g128AVX512 for the same bytes: 32 codes a VPERMW and 32
// products a VDPBF16PS, where VPERMPS and an FMA take 16. W streams from memory: PREFETCHNTA
// 8 KiB ahead measured 25-32 GB/s on one core of a Zen 5 EPYC against 18-27 with PREFETCHT0
// (interleaved, Llama-3.2-1B's shapes from DRAM), and no worse on two.
TEXT ·gemv4bf16AVX512(SB), NOSPLIT, $0-56
	MOVQ         rows+0(FP), DX
	MOVQ         w+24(FP), DI
	MOVQ         scales+32(FP), BX
	MOVQ         table+40(FP), AX
	MOVQ         y+48(FP), R8
	VMOVDQU      (AX), Y14
	MOVL         $0x000F000F, AX
	VPBROADCASTD AX, Z15

b16row:
	MOVQ   n128+8(FP), CX
	MOVQ   xb+16(FP), SI
	VPXORD Z0, Z0, Z0
	VPXORD Z5, Z5, Z5

b16loop:
	PREFETCHNTA 8192(DI)
	VPMOVZXBW  (DI), Z1
	VPMOVZXBW  32(DI), Z3
	VPSRLW     $4, Z1, Z2
	VPSRLW     $4, Z3, Z4
	VPANDD     Z15, Z1, Z1
	VPANDD     Z15, Z3, Z3
	VPERMW     Z14, Z1, Z1
	VPERMW     Z14, Z2, Z2
	VPERMW     Z14, Z3, Z3
	VPERMW     Z14, Z4, Z4
	VPXORD     Z16, Z16, Z16
	VPXORD     Z17, Z17, Z17
	VMOVDQU32  (SI), Z6
	VMOVDQU32  64(SI), Z7
	VMOVDQU32  128(SI), Z8
	VMOVDQU32  192(SI), Z9
	// VDPBF16PS Z6, Z1, Z16 (Go's assembler has no AVX512_BF16 mnemonics)
	BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xc6
	// VDPBF16PS Z7, Z2, Z16 (Go's assembler has no AVX512_BF16 mnemonics)
	BYTE $0x62; BYTE $0xe2; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xc7
	// VDPBF16PS Z8, Z3, Z17 (Go's assembler has no AVX512_BF16 mnemonics)
	BYTE $0x62; BYTE $0xc2; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xc8
	// VDPBF16PS Z9, Z4, Z17 (Go's assembler has no AVX512_BF16 mnemonics)
	BYTE $0x62; BYTE $0xc2; BYTE $0x5e; BYTE $0x48; BYTE $0x52; BYTE $0xc9
	VFMADD231PS.BCST (BX), Z16, Z0
	VFMADD231PS.BCST 4(BX), Z17, Z5
	ADDQ             $64, DI
	ADDQ             $256, SI
	ADDQ             $8, BX
	DECQ             CX
	JNZ              b16loop

	VADDPS        Z5, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)
	ADDQ          $4, R8
	DECQ          DX
	JNZ           b16row
	VZEROUPPER
	RET

// func kern6x16BF16AVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)
// kern6x16AVX512 on bfloat16 pairs: a "float" of the packed A and B strips holds two bfloat16 (two
// consecutive depths, the first in the low half), k counts the pairs, and VDPBF16PS adds both
// products of a pair into a float32 lane where the FMA added one (Go's assembler has no AVX512_BF16
// mnemonics: the bytes are spelled out). Each a pair is broadcast (VPBROADCASTD) into Z14 or Z15
// first. C and its alpha, beta are float32 as in kern6x16AVX512.
TEXT ·kern6x16BF16AVX512(SB), NOSPLIT, $0-48
	MOVQ   k+0(FP), CX
	MOVQ   a+8(FP), SI
	MOVQ   b+16(FP), DI
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	MOVQ   CX, R9
	SHRQ   $1, CX
	JZ     b512tail

b512loop:
	VMOVUPS          (DI), Z12
	VMOVUPS          64(DI), Z13
	VPBROADCASTD (SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xc4 // VDPBF16PS Z12, Z14, Z0
	VPBROADCASTD 4(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xcc // VDPBF16PS Z12, Z15, Z1
	VPBROADCASTD 8(SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xd4 // VDPBF16PS Z12, Z14, Z2
	VPBROADCASTD 12(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xdc // VDPBF16PS Z12, Z15, Z3
	VPBROADCASTD 16(SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xe4 // VDPBF16PS Z12, Z14, Z4
	VPBROADCASTD 20(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xec // VDPBF16PS Z12, Z15, Z5
	VPBROADCASTD 24(SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xf5 // VDPBF16PS Z13, Z14, Z6
	VPBROADCASTD 28(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xfd // VDPBF16PS Z13, Z15, Z7
	VPBROADCASTD 32(SI), Z14
	BYTE $0x62; BYTE $0x52; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xc5 // VDPBF16PS Z13, Z14, Z8
	VPBROADCASTD 36(SI), Z15
	BYTE $0x62; BYTE $0x52; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xcd // VDPBF16PS Z13, Z15, Z9
	VPBROADCASTD 40(SI), Z14
	BYTE $0x62; BYTE $0x52; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xd5 // VDPBF16PS Z13, Z14, Z10
	VPBROADCASTD 44(SI), Z15
	BYTE $0x62; BYTE $0x52; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xdd // VDPBF16PS Z13, Z15, Z11
	ADDQ             $48, SI
	ADDQ             $128, DI
	DECQ             CX
	JNZ              b512loop

b512tail:
	ANDQ             $1, R9
	JZ               b512sum
	VMOVUPS          (DI), Z12
	VPBROADCASTD (SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xc4 // VDPBF16PS Z12, Z14, Z0
	VPBROADCASTD 4(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xcc // VDPBF16PS Z12, Z15, Z1
	VPBROADCASTD 8(SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xd4 // VDPBF16PS Z12, Z14, Z2
	VPBROADCASTD 12(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xdc // VDPBF16PS Z12, Z15, Z3
	VPBROADCASTD 16(SI), Z14
	BYTE $0x62; BYTE $0xd2; BYTE $0x0e; BYTE $0x48; BYTE $0x52; BYTE $0xe4 // VDPBF16PS Z12, Z14, Z4
	VPBROADCASTD 20(SI), Z15
	BYTE $0x62; BYTE $0xd2; BYTE $0x06; BYTE $0x48; BYTE $0x52; BYTE $0xec // VDPBF16PS Z12, Z15, Z5

b512sum:
	JMP ·kern6x16StoreAVX512(SB)

// func kern6x64BF16AVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32)
// kern6x64AVX512 on bfloat16 pairs, as kern6x16BF16AVX512 is kern6x16AVX512's: 24 VDPBF16PS a step
// of two depths.
TEXT ·kern6x64BF16AVX512(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ bstride+24(FP), R8
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R10
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

b64loop:
	VMOVUPS (DI), Z24
	VMOVUPS (DI)(R8*1), Z25
	VMOVUPS (DI)(R8*2), Z26
	VMOVUPS (DI)(R10*1), Z27
	VPBROADCASTD 0(SI), Z28
	BYTE $0x62; BYTE $0x92; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc0 // VDPBF16PS Z24, Z28, Z0
	BYTE $0x62; BYTE $0x92; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc9 // VDPBF16PS Z25, Z28, Z1
	BYTE $0x62; BYTE $0x92; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xd2 // VDPBF16PS Z26, Z28, Z2
	BYTE $0x62; BYTE $0x92; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xdb // VDPBF16PS Z27, Z28, Z3
	VPBROADCASTD 4(SI), Z29
	BYTE $0x62; BYTE $0x92; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe0 // VDPBF16PS Z24, Z29, Z4
	BYTE $0x62; BYTE $0x92; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe9 // VDPBF16PS Z25, Z29, Z5
	BYTE $0x62; BYTE $0x92; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xf2 // VDPBF16PS Z26, Z29, Z6
	BYTE $0x62; BYTE $0x92; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xfb // VDPBF16PS Z27, Z29, Z7
	VPBROADCASTD 8(SI), Z28
	BYTE $0x62; BYTE $0x12; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc0 // VDPBF16PS Z24, Z28, Z8
	BYTE $0x62; BYTE $0x12; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc9 // VDPBF16PS Z25, Z28, Z9
	BYTE $0x62; BYTE $0x12; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xd2 // VDPBF16PS Z26, Z28, Z10
	BYTE $0x62; BYTE $0x12; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xdb // VDPBF16PS Z27, Z28, Z11
	VPBROADCASTD 12(SI), Z29
	BYTE $0x62; BYTE $0x12; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe0 // VDPBF16PS Z24, Z29, Z12
	BYTE $0x62; BYTE $0x12; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe9 // VDPBF16PS Z25, Z29, Z13
	BYTE $0x62; BYTE $0x12; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xf2 // VDPBF16PS Z26, Z29, Z14
	BYTE $0x62; BYTE $0x12; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xfb // VDPBF16PS Z27, Z29, Z15
	VPBROADCASTD 16(SI), Z28
	BYTE $0x62; BYTE $0x82; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc0 // VDPBF16PS Z24, Z28, Z16
	BYTE $0x62; BYTE $0x82; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xc9 // VDPBF16PS Z25, Z28, Z17
	BYTE $0x62; BYTE $0x82; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xd2 // VDPBF16PS Z26, Z28, Z18
	BYTE $0x62; BYTE $0x82; BYTE $0x1e; BYTE $0x40; BYTE $0x52; BYTE $0xdb // VDPBF16PS Z27, Z28, Z19
	VPBROADCASTD 20(SI), Z29
	BYTE $0x62; BYTE $0x82; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe0 // VDPBF16PS Z24, Z29, Z20
	BYTE $0x62; BYTE $0x82; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xe9 // VDPBF16PS Z25, Z29, Z21
	BYTE $0x62; BYTE $0x82; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xf2 // VDPBF16PS Z26, Z29, Z22
	BYTE $0x62; BYTE $0x82; BYTE $0x16; BYTE $0x40; BYTE $0x52; BYTE $0xfb // VDPBF16PS Z27, Z29, Z23
	ADDQ $24, SI
	ADDQ $64, DI
	DECQ CX
	JNZ b64loop
	JMP ·kern6x64StoreAVX512(SB)

// func toBF16AVX512(n32 int, src *float32, dst *uint16)
// dst[i] = src[i] rounded to bfloat16 (to nearest, ties to even) for i < 32·n32: VCVTNE2PS2BF16
// turns two registers of floats into one of 32 bfloat16 in order (the second operand's sixteen
// low, the first's high). Denormal inputs become zero.
TEXT ·toBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ n32+0(FP), CX
	MOVQ src+8(FP), SI
	MOVQ dst+16(FP), DI

cvtloop:
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	BYTE $0x62; BYTE $0xf2; BYTE $0x77; BYTE $0x48; BYTE $0x72; BYTE $0xd0 // VCVTNE2PS2BF16 Z0, Z1, Z2
	VMOVDQU32 Z2, (DI)
	ADDQ      $128, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       cvtloop
	VZEROUPPER
	RET

// func dot16BF16AVX512(n64 int, x, w *uint16) float32
// Σ x[i]·w[i] over 64·n64 bfloat16 pairs of x and w (two registers of 32 a step, two accumulators
// of VDPBF16PS products), summed in float32: MatMul16BF16's GEMV, a row of W against x. W streams
// from memory once: a prefetch 4 KiB ahead.
TEXT ·dot16BF16AVX512(SB), NOSPLIT, $0-28
	MOVQ   n64+0(FP), CX
	MOVQ   x+8(FP), SI
	MOVQ   w+16(FP), DI
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5

d16loop:
	PREFETCHT0 4096(DI)
	PREFETCHT0 4160(DI)
	VMOVDQU32  (SI), Z0
	VMOVDQU32  64(SI), Z1
	VMOVDQU32  (DI), Z2
	VMOVDQU32  64(DI), Z3
	BYTE $0x62; BYTE $0xf2; BYTE $0x7e; BYTE $0x48; BYTE $0x52; BYTE $0xe2 // VDPBF16PS Z2, Z0, Z4
	BYTE $0x62; BYTE $0xf2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xeb // VDPBF16PS Z3, Z1, Z5
	ADDQ       $128, SI
	ADDQ       $128, DI
	DECQ       CX
	JNZ        d16loop

	VADDPS        Z5, Z4, Z4
	VEXTRACTF64X4 $1, Z4, Y1
	VADDPS        Y1, Y4, Y4
	VEXTRACTF128  $1, Y4, X1
	VADDPS        X1, X4, X4
	VHADDPS       X4, X4, X4
	VHADDPS       X4, X4, X4
	VMOVSS        X4, ret+24(FP)
	VZEROUPPER
	RET

// func kern6x16StoreAVX512(k int, a, b, c *float32, ldc int, alpha, beta float32)
// The end of kern6x16AVX512 and kern6x16BF16AVX512, which jump here with the sums of the even and
// odd steps in Z0-Z5 and Z6-Z11: C = alpha·(their sum) + beta·C.
TEXT ·kern6x16StoreAVX512(SB), NOSPLIT, $0-48
	VADDPS       Z6, Z0, Z0
	VADDPS       Z7, Z1, Z1
	VADDPS       Z8, Z2, Z2
	VADDPS       Z9, Z3, Z3
	VADDPS       Z10, Z4, Z4
	VADDPS       Z11, Z5, Z5
	MOVQ         c+24(FP), DX
	MOVQ         ldc+32(FP), R8
	SHLQ         $2, R8
	VBROADCASTSS alpha+40(FP), Z12
	VMULPS       Z12, Z0, Z0
	VMULPS       Z12, Z1, Z1
	VMULPS       Z12, Z2, Z2
	VMULPS       Z12, Z3, Z3
	VMULPS       Z12, Z4, Z4
	VMULPS       Z12, Z5, Z5
	MOVL         beta+44(FP), AX
	ANDL         $0x7fffffff, AX
	JZ           s512store

	VBROADCASTSS beta+44(FP), Z13
	MOVQ         DX, BX
	VFMADD231PS  (BX), Z13, Z0
	ADDQ         R8, BX
	VFMADD231PS  (BX), Z13, Z1
	ADDQ         R8, BX
	VFMADD231PS  (BX), Z13, Z2
	ADDQ         R8, BX
	VFMADD231PS  (BX), Z13, Z3
	ADDQ         R8, BX
	VFMADD231PS  (BX), Z13, Z4
	ADDQ         R8, BX
	VFMADD231PS  (BX), Z13, Z5

s512store:
	VMOVUPS Z0, (DX)
	ADDQ    R8, DX
	VMOVUPS Z1, (DX)
	ADDQ    R8, DX
	VMOVUPS Z2, (DX)
	ADDQ    R8, DX
	VMOVUPS Z3, (DX)
	ADDQ    R8, DX
	VMOVUPS Z4, (DX)
	ADDQ    R8, DX
	VMOVUPS Z5, (DX)
	VZEROUPPER
	RET

// func kern6x64StoreAVX512(k int, a, b *float32, bstride int, c *float32, ldc int, alpha, beta float32)
// The end of kern6x64AVX512 and kern6x64BF16AVX512, which jump here with the 6×64 tile's sums in
// Z0-Z23 (their arguments, the same, still in place): C = alpha·sums + beta·C (C not read when
// beta is ±0).
TEXT ·kern6x64StoreAVX512(SB), NOSPLIT, $0-56
	MOVQ         c+32(FP), DX
	MOVQ         ldc+40(FP), R9
	SHLQ         $2, R9
	VBROADCASTSS alpha+48(FP), Z24
	VMULPS Z24, Z0, Z0
	VMULPS Z24, Z1, Z1
	VMULPS Z24, Z2, Z2
	VMULPS Z24, Z3, Z3
	VMULPS Z24, Z4, Z4
	VMULPS Z24, Z5, Z5
	VMULPS Z24, Z6, Z6
	VMULPS Z24, Z7, Z7
	VMULPS Z24, Z8, Z8
	VMULPS Z24, Z9, Z9
	VMULPS Z24, Z10, Z10
	VMULPS Z24, Z11, Z11
	VMULPS Z24, Z12, Z12
	VMULPS Z24, Z13, Z13
	VMULPS Z24, Z14, Z14
	VMULPS Z24, Z15, Z15
	VMULPS Z24, Z16, Z16
	VMULPS Z24, Z17, Z17
	VMULPS Z24, Z18, Z18
	VMULPS Z24, Z19, Z19
	VMULPS Z24, Z20, Z20
	VMULPS Z24, Z21, Z21
	VMULPS Z24, Z22, Z22
	VMULPS Z24, Z23, Z23
	MOVL         beta+52(FP), AX
	ANDL         $0x7fffffff, AX
	JZ           s64store
	VBROADCASTSS beta+52(FP), Z25
	MOVQ         DX, BX
	VFMADD231PS 0(BX), Z25, Z0
	VFMADD231PS 64(BX), Z25, Z1
	VFMADD231PS 128(BX), Z25, Z2
	VFMADD231PS 192(BX), Z25, Z3
	ADDQ R9, BX
	VFMADD231PS 0(BX), Z25, Z4
	VFMADD231PS 64(BX), Z25, Z5
	VFMADD231PS 128(BX), Z25, Z6
	VFMADD231PS 192(BX), Z25, Z7
	ADDQ R9, BX
	VFMADD231PS 0(BX), Z25, Z8
	VFMADD231PS 64(BX), Z25, Z9
	VFMADD231PS 128(BX), Z25, Z10
	VFMADD231PS 192(BX), Z25, Z11
	ADDQ R9, BX
	VFMADD231PS 0(BX), Z25, Z12
	VFMADD231PS 64(BX), Z25, Z13
	VFMADD231PS 128(BX), Z25, Z14
	VFMADD231PS 192(BX), Z25, Z15
	ADDQ R9, BX
	VFMADD231PS 0(BX), Z25, Z16
	VFMADD231PS 64(BX), Z25, Z17
	VFMADD231PS 128(BX), Z25, Z18
	VFMADD231PS 192(BX), Z25, Z19
	ADDQ R9, BX
	VFMADD231PS 0(BX), Z25, Z20
	VFMADD231PS 64(BX), Z25, Z21
	VFMADD231PS 128(BX), Z25, Z22
	VFMADD231PS 192(BX), Z25, Z23

s64store:
	VMOVUPS Z0, 0(DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	ADDQ R9, DX
	VMOVUPS Z4, 0(DX)
	VMOVUPS Z5, 64(DX)
	VMOVUPS Z6, 128(DX)
	VMOVUPS Z7, 192(DX)
	ADDQ R9, DX
	VMOVUPS Z8, 0(DX)
	VMOVUPS Z9, 64(DX)
	VMOVUPS Z10, 128(DX)
	VMOVUPS Z11, 192(DX)
	ADDQ R9, DX
	VMOVUPS Z12, 0(DX)
	VMOVUPS Z13, 64(DX)
	VMOVUPS Z14, 128(DX)
	VMOVUPS Z15, 192(DX)
	ADDQ R9, DX
	VMOVUPS Z16, 0(DX)
	VMOVUPS Z17, 64(DX)
	VMOVUPS Z18, 128(DX)
	VMOVUPS Z19, 192(DX)
	ADDQ R9, DX
	VMOVUPS Z20, 0(DX)
	VMOVUPS Z21, 64(DX)
	VMOVUPS Z22, 128(DX)
	VMOVUPS Z23, 192(DX)
	VZEROUPPER
	RET

// interleaveIdx takes word j of the low half and word j of the high half to words 2j and 2j+1.
DATA interleaveIdx<>+0(SB)/2, $0
DATA interleaveIdx<>+2(SB)/2, $16
DATA interleaveIdx<>+4(SB)/2, $1
DATA interleaveIdx<>+6(SB)/2, $17
DATA interleaveIdx<>+8(SB)/2, $2
DATA interleaveIdx<>+10(SB)/2, $18
DATA interleaveIdx<>+12(SB)/2, $3
DATA interleaveIdx<>+14(SB)/2, $19
DATA interleaveIdx<>+16(SB)/2, $4
DATA interleaveIdx<>+18(SB)/2, $20
DATA interleaveIdx<>+20(SB)/2, $5
DATA interleaveIdx<>+22(SB)/2, $21
DATA interleaveIdx<>+24(SB)/2, $6
DATA interleaveIdx<>+26(SB)/2, $22
DATA interleaveIdx<>+28(SB)/2, $7
DATA interleaveIdx<>+30(SB)/2, $23
DATA interleaveIdx<>+32(SB)/2, $8
DATA interleaveIdx<>+34(SB)/2, $24
DATA interleaveIdx<>+36(SB)/2, $9
DATA interleaveIdx<>+38(SB)/2, $25
DATA interleaveIdx<>+40(SB)/2, $10
DATA interleaveIdx<>+42(SB)/2, $26
DATA interleaveIdx<>+44(SB)/2, $11
DATA interleaveIdx<>+46(SB)/2, $27
DATA interleaveIdx<>+48(SB)/2, $12
DATA interleaveIdx<>+50(SB)/2, $28
DATA interleaveIdx<>+52(SB)/2, $13
DATA interleaveIdx<>+54(SB)/2, $29
DATA interleaveIdx<>+56(SB)/2, $14
DATA interleaveIdx<>+58(SB)/2, $30
DATA interleaveIdx<>+60(SB)/2, $15
DATA interleaveIdx<>+62(SB)/2, $31
GLOBL interleaveIdx<>(SB), RODATA|NOPTR, $64

// func interleaveBF16AVX512(n16 int, r0, r1 *float32, dst *float32, dstStride int)
// For each of n16 groups of 16 columns: dst[g·dstStride + j] (a float slot) = the bfloat16 pair
// (r0[16g + j], r1[16g + j]), r0's in the low half, both rounded to nearest even: two rows of
// the dequantized W packed as one depth pair of 16-column B strips (MatMul4BF16's transposed
// product). VCVTNE2PS2BF16 puts r0's 16 in the low words and r1's in the high; VPERMW interleaves.
TEXT ·interleaveBF16AVX512(SB), NOSPLIT, $0-40
	MOVQ    n16+0(FP), CX
	MOVQ    r0+8(FP), SI
	MOVQ    r1+16(FP), DX
	MOVQ    dst+24(FP), DI
	MOVQ    dstStride+32(FP), R8
	SHLQ    $2, R8
	VMOVDQU16 interleaveIdx<>(SB), Z3

ilvloop:
	VMOVUPS (SI), Z0
	VMOVUPS (DX), Z1
	BYTE $0x62; BYTE $0xf2; BYTE $0x77; BYTE $0x48; BYTE $0x72; BYTE $0xd0 // VCVTNE2PS2BF16 Z0, Z1, Z2
	VPERMW    Z2, Z3, Z2
	VMOVDQU32 Z2, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DX
	ADDQ      R8, DI
	DECQ      CX
	JNZ       ilvloop
	VZEROUPPER
	RET

// func gemv4bf16x4AVX512(wrows, n128 int, xb *uint16, ldx int, w *byte, scales *float32, table *[16]uint16, out *float32, ldo int)
// gemv4bf16AVX512 for four rows of x at once (batched decoding: MatMul4BF16 with 2 to 16 rows):
// each group of W is decoded once (VPMOVZXBW, mask, shift, VPERMW) and multiplied by the four
// rows of xb (ldx words apart, each in gemv4bf16AVX512's order) into two accumulators a row.
// W's wrows consecutive rows go to out[j], out[ldo + j], out[2·ldo + j], out[3·ldo + j]; scales
// as in gemv4bf16AVX512 (two a group, consecutive across rows).
TEXT ·gemv4bf16x4AVX512(SB), NOSPLIT, $0-72
	MOVQ         wrows+0(FP), DX
	MOVQ         ldx+24(FP), R9
	SHLQ         $1, R9
	LEAQ         (R9)(R9*2), R10
	MOVQ         w+32(FP), DI
	MOVQ         scales+40(FP), BX
	MOVQ         table+48(FP), AX
	VMOVDQU      (AX), Y14
	MOVQ         out+56(FP), R8
	MOVQ         ldo+64(FP), R11
	SHLQ         $2, R11
	MOVL         $0x000F000F, AX
	VPBROADCASTD AX, Z15

x4row:
	MOVQ   n128+8(FP), CX
	MOVQ   xb+16(FP), SI
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

x4loop:
	PREFETCHNTA 8192(DI)
	VPMOVZXBW   (DI), Z1
	VPMOVZXBW   32(DI), Z3
	VPSRLW      $4, Z1, Z2
	VPSRLW      $4, Z3, Z4
	VPANDD      Z15, Z1, Z1
	VPANDD      Z15, Z3, Z3
	VPERMW      Z14, Z1, Z1
	VPERMW      Z14, Z2, Z2
	VPERMW      Z14, Z3, Z3
	VPERMW      Z14, Z4, Z4
	VPXORD     Z16, Z16, Z16
	VPXORD     Z17, Z17, Z17
	VMOVDQU32  (SI), Z5
	VMOVDQU32  64(SI), Z6
	VMOVDQU32  128(SI), Z7
	VMOVDQU32  192(SI), Z8
	BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xc5 // VDPBF16PS Z5, Z1, Z16
	BYTE $0x62; BYTE $0xe2; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xc6 // VDPBF16PS Z6, Z2, Z16
	BYTE $0x62; BYTE $0xe2; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xcf // VDPBF16PS Z7, Z3, Z17
	BYTE $0x62; BYTE $0xc2; BYTE $0x5e; BYTE $0x48; BYTE $0x52; BYTE $0xc8 // VDPBF16PS Z8, Z4, Z17
	VFMADD231PS.BCST (BX), Z16, Z24
	VFMADD231PS.BCST 4(BX), Z17, Z25
	VPXORD     Z18, Z18, Z18
	VPXORD     Z19, Z19, Z19
	VMOVDQU32  (SI)(R9*1), Z5
	VMOVDQU32  64(SI)(R9*1), Z6
	VMOVDQU32  128(SI)(R9*1), Z7
	VMOVDQU32  192(SI)(R9*1), Z8
	BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xd5 // VDPBF16PS Z5, Z1, Z18
	BYTE $0x62; BYTE $0xe2; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xd6 // VDPBF16PS Z6, Z2, Z18
	BYTE $0x62; BYTE $0xe2; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xdf // VDPBF16PS Z7, Z3, Z19
	BYTE $0x62; BYTE $0xc2; BYTE $0x5e; BYTE $0x48; BYTE $0x52; BYTE $0xd8 // VDPBF16PS Z8, Z4, Z19
	VFMADD231PS.BCST (BX), Z18, Z26
	VFMADD231PS.BCST 4(BX), Z19, Z27
	VPXORD     Z20, Z20, Z20
	VPXORD     Z21, Z21, Z21
	VMOVDQU32  (SI)(R9*2), Z5
	VMOVDQU32  64(SI)(R9*2), Z6
	VMOVDQU32  128(SI)(R9*2), Z7
	VMOVDQU32  192(SI)(R9*2), Z8
	BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xe5 // VDPBF16PS Z5, Z1, Z20
	BYTE $0x62; BYTE $0xe2; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xe6 // VDPBF16PS Z6, Z2, Z20
	BYTE $0x62; BYTE $0xe2; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xef // VDPBF16PS Z7, Z3, Z21
	BYTE $0x62; BYTE $0xc2; BYTE $0x5e; BYTE $0x48; BYTE $0x52; BYTE $0xe8 // VDPBF16PS Z8, Z4, Z21
	VFMADD231PS.BCST (BX), Z20, Z28
	VFMADD231PS.BCST 4(BX), Z21, Z29
	VPXORD     Z22, Z22, Z22
	VPXORD     Z23, Z23, Z23
	VMOVDQU32  (SI)(R10*1), Z5
	VMOVDQU32  64(SI)(R10*1), Z6
	VMOVDQU32  128(SI)(R10*1), Z7
	VMOVDQU32  192(SI)(R10*1), Z8
	BYTE $0x62; BYTE $0xe2; BYTE $0x76; BYTE $0x48; BYTE $0x52; BYTE $0xf5 // VDPBF16PS Z5, Z1, Z22
	BYTE $0x62; BYTE $0xe2; BYTE $0x6e; BYTE $0x48; BYTE $0x52; BYTE $0xf6 // VDPBF16PS Z6, Z2, Z22
	BYTE $0x62; BYTE $0xe2; BYTE $0x66; BYTE $0x48; BYTE $0x52; BYTE $0xff // VDPBF16PS Z7, Z3, Z23
	BYTE $0x62; BYTE $0xc2; BYTE $0x5e; BYTE $0x48; BYTE $0x52; BYTE $0xf8 // VDPBF16PS Z8, Z4, Z23
	VFMADD231PS.BCST (BX), Z22, Z30
	VFMADD231PS.BCST 4(BX), Z23, Z31
	ADDQ        $64, DI
	ADDQ        $256, SI
	ADDQ        $8, BX
	DECQ        CX
	JNZ         x4loop

	MOVQ R8, R12
	VADDPS        Z25, Z24, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R12)
	ADDQ          R11, R12
	VADDPS        Z27, Z26, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R12)
	ADDQ          R11, R12
	VADDPS        Z29, Z28, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R12)
	ADDQ          R11, R12
	VADDPS        Z31, Z30, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R12)
	ADDQ $4, R8
	DECQ DX
	JNZ  x4row
	VZEROUPPER
	RET

// func packNF4BF16AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32)
// One packed B strip of the bfloat16 GEMM straight from the 4-bit codes (packColsBF16's fast path):
// 16 rows of W (ldw bytes apart), groups·16 bytes of each, a byte being one depth pair (its high
// nibble the first element). For each group of 16 pairs, each row's 16 bytes widen to dwords
// (VPMOVZXBD), the high nibbles (shifted down) and the low ones (VPERMPS reads only the low four
// bits) index the f32 codebook, both are scaled by the row's block scale in f32 (as span does),
// rounded to bfloat16 and interleaved into pairs (VCVTNE2PS2BF16, VPERMW): a row's 16 slots in Zr.
// A 16×16 dword transpose (transpose16AVX512) turns the rows into the strip's 16 depth rows of 16
// columns, stored 64 bytes apart. scales holds each
// block's 16 row scales (16 floats a block); a block spans gpb groups.
TEXT ·packNF4BF16AVX512(SB), NOSPLIT, $0-56
	MOVQ groups+0(FP), CX
	MOVQ gpb+8(FP), R10
	MOVQ w+16(FP), SI
	MOVQ ldw+24(FP), R8
	MOVQ scales+32(FP), BX
	MOVQ table+40(FP), AX
	MOVQ dst+48(FP), DI
	MOVQ R10, R11 // groups left in this block

pkgroup:
	VMOVUPS   (AX), Z30
	VMOVDQU16 interleaveIdx<>(SB), Z31
	MOVQ      SI, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 0(BX), Z17, Z17
	VMULPS.BCST 0(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xc1 // VCVTNE2PS2BF16 Z17, Z16, Z0 (low half from Z17, high from Z16)
	VPERMW      Z0, Z31, Z0
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 4(BX), Z17, Z17
	VMULPS.BCST 4(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xc9 // VCVTNE2PS2BF16 Z17, Z16, Z1 (low half from Z17, high from Z16)
	VPERMW      Z1, Z31, Z1
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 8(BX), Z17, Z17
	VMULPS.BCST 8(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xd1 // VCVTNE2PS2BF16 Z17, Z16, Z2 (low half from Z17, high from Z16)
	VPERMW      Z2, Z31, Z2
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 12(BX), Z17, Z17
	VMULPS.BCST 12(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xd9 // VCVTNE2PS2BF16 Z17, Z16, Z3 (low half from Z17, high from Z16)
	VPERMW      Z3, Z31, Z3
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 16(BX), Z17, Z17
	VMULPS.BCST 16(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xe1 // VCVTNE2PS2BF16 Z17, Z16, Z4 (low half from Z17, high from Z16)
	VPERMW      Z4, Z31, Z4
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 20(BX), Z17, Z17
	VMULPS.BCST 20(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xe9 // VCVTNE2PS2BF16 Z17, Z16, Z5 (low half from Z17, high from Z16)
	VPERMW      Z5, Z31, Z5
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 24(BX), Z17, Z17
	VMULPS.BCST 24(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xf1 // VCVTNE2PS2BF16 Z17, Z16, Z6 (low half from Z17, high from Z16)
	VPERMW      Z6, Z31, Z6
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 28(BX), Z17, Z17
	VMULPS.BCST 28(BX), Z16, Z16
	BYTE $0x62; BYTE $0xb2; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xf9 // VCVTNE2PS2BF16 Z17, Z16, Z7 (low half from Z17, high from Z16)
	VPERMW      Z7, Z31, Z7
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 32(BX), Z17, Z17
	VMULPS.BCST 32(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xc1 // VCVTNE2PS2BF16 Z17, Z16, Z8 (low half from Z17, high from Z16)
	VPERMW      Z8, Z31, Z8
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 36(BX), Z17, Z17
	VMULPS.BCST 36(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xc9 // VCVTNE2PS2BF16 Z17, Z16, Z9 (low half from Z17, high from Z16)
	VPERMW      Z9, Z31, Z9
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 40(BX), Z17, Z17
	VMULPS.BCST 40(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xd1 // VCVTNE2PS2BF16 Z17, Z16, Z10 (low half from Z17, high from Z16)
	VPERMW      Z10, Z31, Z10
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 44(BX), Z17, Z17
	VMULPS.BCST 44(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xd9 // VCVTNE2PS2BF16 Z17, Z16, Z11 (low half from Z17, high from Z16)
	VPERMW      Z11, Z31, Z11
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 48(BX), Z17, Z17
	VMULPS.BCST 48(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xe1 // VCVTNE2PS2BF16 Z17, Z16, Z12 (low half from Z17, high from Z16)
	VPERMW      Z12, Z31, Z12
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 52(BX), Z17, Z17
	VMULPS.BCST 52(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xe9 // VCVTNE2PS2BF16 Z17, Z16, Z13 (low half from Z17, high from Z16)
	VPERMW      Z13, Z31, Z13
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 56(BX), Z17, Z17
	VMULPS.BCST 56(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xf1 // VCVTNE2PS2BF16 Z17, Z16, Z14 (low half from Z17, high from Z16)
	VPERMW      Z14, Z31, Z14
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z16
	VPSRLD      $4, Z16, Z17
	VPERMPS     Z30, Z17, Z17
	VPERMPS     Z30, Z16, Z16
	VMULPS.BCST 60(BX), Z17, Z17
	VMULPS.BCST 60(BX), Z16, Z16
	BYTE $0x62; BYTE $0x32; BYTE $0x7f; BYTE $0x40; BYTE $0x72; BYTE $0xf9 // VCVTNE2PS2BF16 Z17, Z16, Z15 (low half from Z17, high from Z16)
	VPERMW      Z15, Z31, Z15
	CALL        ·transpose16AVX512(SB)
	VMOVDQU32   Z0, 0(DI)
	VMOVDQU32   Z1, 64(DI)
	VMOVDQU32   Z2, 128(DI)
	VMOVDQU32   Z3, 192(DI)
	VMOVDQU32   Z4, 256(DI)
	VMOVDQU32   Z5, 320(DI)
	VMOVDQU32   Z6, 384(DI)
	VMOVDQU32   Z7, 448(DI)
	VMOVDQU32   Z8, 512(DI)
	VMOVDQU32   Z9, 576(DI)
	VMOVDQU32   Z10, 640(DI)
	VMOVDQU32   Z11, 704(DI)
	VMOVDQU32   Z12, 768(DI)
	VMOVDQU32   Z13, 832(DI)
	VMOVDQU32   Z14, 896(DI)
	VMOVDQU32   Z15, 960(DI)
	ADDQ        $16, SI
	ADDQ        $1024, DI
	DECQ        R11
	JNZ         pknext
	ADDQ        $64, BX // the next block's scales
	MOVQ        R10, R11

pknext:
	DECQ CX
	JNZ  pkgroup
	VZEROUPPER
	RET


// func packNF4AVX512(groups, gpb int, w *byte, ldw int, scales *float32, table *[16]float32, dst *float32)
// packNF4BF16AVX512 for packCols' float32 strips: a group's 16 bytes of a row are 32 depths (a byte's
// high nibble the even one), so each group is decoded twice, the high nibbles of the 16 rows, then
// the low ones, each time transposed (transpose16AVX512) into the even, then the odd, of the
// group's 32 depth rows, 64 bytes each.
TEXT ·packNF4AVX512(SB), NOSPLIT, $0-56
	MOVQ groups+0(FP), CX
	MOVQ gpb+8(FP), R10
	MOVQ w+16(FP), SI
	MOVQ ldw+24(FP), R8
	MOVQ scales+32(FP), BX
	MOVQ table+40(FP), AX
	MOVQ dst+48(FP), DI
	MOVQ R10, R11 // groups left in this block

p4group:
	// The even depths: high nibbles.
	VMOVUPS   (AX), Z30
	MOVQ      SI, DX
	VPMOVZXBD   (DX), Z0
	VPSRLD      $4, Z0, Z0
	VPERMPS     Z30, Z0, Z0
	VMULPS.BCST 0(BX), Z0, Z0
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z1
	VPSRLD      $4, Z1, Z1
	VPERMPS     Z30, Z1, Z1
	VMULPS.BCST 4(BX), Z1, Z1
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z2
	VPSRLD      $4, Z2, Z2
	VPERMPS     Z30, Z2, Z2
	VMULPS.BCST 8(BX), Z2, Z2
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z3
	VPSRLD      $4, Z3, Z3
	VPERMPS     Z30, Z3, Z3
	VMULPS.BCST 12(BX), Z3, Z3
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z4
	VPSRLD      $4, Z4, Z4
	VPERMPS     Z30, Z4, Z4
	VMULPS.BCST 16(BX), Z4, Z4
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z5
	VPSRLD      $4, Z5, Z5
	VPERMPS     Z30, Z5, Z5
	VMULPS.BCST 20(BX), Z5, Z5
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z6
	VPSRLD      $4, Z6, Z6
	VPERMPS     Z30, Z6, Z6
	VMULPS.BCST 24(BX), Z6, Z6
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z7
	VPSRLD      $4, Z7, Z7
	VPERMPS     Z30, Z7, Z7
	VMULPS.BCST 28(BX), Z7, Z7
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z8
	VPSRLD      $4, Z8, Z8
	VPERMPS     Z30, Z8, Z8
	VMULPS.BCST 32(BX), Z8, Z8
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z9
	VPSRLD      $4, Z9, Z9
	VPERMPS     Z30, Z9, Z9
	VMULPS.BCST 36(BX), Z9, Z9
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z10
	VPSRLD      $4, Z10, Z10
	VPERMPS     Z30, Z10, Z10
	VMULPS.BCST 40(BX), Z10, Z10
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z11
	VPSRLD      $4, Z11, Z11
	VPERMPS     Z30, Z11, Z11
	VMULPS.BCST 44(BX), Z11, Z11
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z12
	VPSRLD      $4, Z12, Z12
	VPERMPS     Z30, Z12, Z12
	VMULPS.BCST 48(BX), Z12, Z12
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z13
	VPSRLD      $4, Z13, Z13
	VPERMPS     Z30, Z13, Z13
	VMULPS.BCST 52(BX), Z13, Z13
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z14
	VPSRLD      $4, Z14, Z14
	VPERMPS     Z30, Z14, Z14
	VMULPS.BCST 56(BX), Z14, Z14
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z15
	VPSRLD      $4, Z15, Z15
	VPERMPS     Z30, Z15, Z15
	VMULPS.BCST 60(BX), Z15, Z15
	CALL        ·transpose16AVX512(SB)
	VMOVUPS     Z0, 0(DI)
	VMOVUPS     Z1, 128(DI)
	VMOVUPS     Z2, 256(DI)
	VMOVUPS     Z3, 384(DI)
	VMOVUPS     Z4, 512(DI)
	VMOVUPS     Z5, 640(DI)
	VMOVUPS     Z6, 768(DI)
	VMOVUPS     Z7, 896(DI)
	VMOVUPS     Z8, 1024(DI)
	VMOVUPS     Z9, 1152(DI)
	VMOVUPS     Z10, 1280(DI)
	VMOVUPS     Z11, 1408(DI)
	VMOVUPS     Z12, 1536(DI)
	VMOVUPS     Z13, 1664(DI)
	VMOVUPS     Z14, 1792(DI)
	VMOVUPS     Z15, 1920(DI)
	// The odd depths: low nibbles.
	VMOVUPS   (AX), Z30
	MOVQ      SI, DX
	VPMOVZXBD   (DX), Z0
	VPERMPS     Z30, Z0, Z0
	VMULPS.BCST 0(BX), Z0, Z0
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z1
	VPERMPS     Z30, Z1, Z1
	VMULPS.BCST 4(BX), Z1, Z1
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z2
	VPERMPS     Z30, Z2, Z2
	VMULPS.BCST 8(BX), Z2, Z2
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z3
	VPERMPS     Z30, Z3, Z3
	VMULPS.BCST 12(BX), Z3, Z3
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z4
	VPERMPS     Z30, Z4, Z4
	VMULPS.BCST 16(BX), Z4, Z4
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z5
	VPERMPS     Z30, Z5, Z5
	VMULPS.BCST 20(BX), Z5, Z5
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z6
	VPERMPS     Z30, Z6, Z6
	VMULPS.BCST 24(BX), Z6, Z6
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z7
	VPERMPS     Z30, Z7, Z7
	VMULPS.BCST 28(BX), Z7, Z7
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z8
	VPERMPS     Z30, Z8, Z8
	VMULPS.BCST 32(BX), Z8, Z8
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z9
	VPERMPS     Z30, Z9, Z9
	VMULPS.BCST 36(BX), Z9, Z9
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z10
	VPERMPS     Z30, Z10, Z10
	VMULPS.BCST 40(BX), Z10, Z10
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z11
	VPERMPS     Z30, Z11, Z11
	VMULPS.BCST 44(BX), Z11, Z11
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z12
	VPERMPS     Z30, Z12, Z12
	VMULPS.BCST 48(BX), Z12, Z12
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z13
	VPERMPS     Z30, Z13, Z13
	VMULPS.BCST 52(BX), Z13, Z13
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z14
	VPERMPS     Z30, Z14, Z14
	VMULPS.BCST 56(BX), Z14, Z14
	ADDQ        R8, DX
	VPMOVZXBD   (DX), Z15
	VPERMPS     Z30, Z15, Z15
	VMULPS.BCST 60(BX), Z15, Z15
	CALL        ·transpose16AVX512(SB)
	VMOVUPS     Z0, 64(DI)
	VMOVUPS     Z1, 192(DI)
	VMOVUPS     Z2, 320(DI)
	VMOVUPS     Z3, 448(DI)
	VMOVUPS     Z4, 576(DI)
	VMOVUPS     Z5, 704(DI)
	VMOVUPS     Z6, 832(DI)
	VMOVUPS     Z7, 960(DI)
	VMOVUPS     Z8, 1088(DI)
	VMOVUPS     Z9, 1216(DI)
	VMOVUPS     Z10, 1344(DI)
	VMOVUPS     Z11, 1472(DI)
	VMOVUPS     Z12, 1600(DI)
	VMOVUPS     Z13, 1728(DI)
	VMOVUPS     Z14, 1856(DI)
	VMOVUPS     Z15, 1984(DI)
	ADDQ        $16, SI
	ADDQ        $2048, DI
	DECQ        R11
	JNZ         p4next
	ADDQ        $64, BX // the next block's scales
	MOVQ        R10, R11

p4next:
	DECQ CX
	JNZ  p4group
	VZEROUPPER
	RET

// func transpose16AVX512()
// Transposes the 16×16 dwords in Z0-Z15 (row r in Zr) in place, with Z16-Z31 as scratch: the
// shared middle of packNF4AVX512 and packNF4BF16AVX512, reached by CALL; never called from Go.
// Dwords, then qwords, are unpacked within 128-bit lanes (u[4i+c] lane L holds rows 4i..4i+3 of
// column 4L+c), then two rounds of VSHUFI32X4 gather the lanes across the four row quarters.
TEXT ·transpose16AVX512(SB), NOSPLIT, $0-0
	VPUNPCKLDQ  Z1, Z0, Z16
	VPUNPCKHDQ  Z1, Z0, Z17
	VPUNPCKLDQ  Z3, Z2, Z18
	VPUNPCKHDQ  Z3, Z2, Z19
	VPUNPCKLDQ  Z5, Z4, Z20
	VPUNPCKHDQ  Z5, Z4, Z21
	VPUNPCKLDQ  Z7, Z6, Z22
	VPUNPCKHDQ  Z7, Z6, Z23
	VPUNPCKLDQ  Z9, Z8, Z24
	VPUNPCKHDQ  Z9, Z8, Z25
	VPUNPCKLDQ  Z11, Z10, Z26
	VPUNPCKHDQ  Z11, Z10, Z27
	VPUNPCKLDQ  Z13, Z12, Z28
	VPUNPCKHDQ  Z13, Z12, Z29
	VPUNPCKLDQ  Z15, Z14, Z30
	VPUNPCKHDQ  Z15, Z14, Z31
	VPUNPCKLQDQ Z18, Z16, Z0
	VPUNPCKHQDQ Z18, Z16, Z1
	VPUNPCKLQDQ Z19, Z17, Z2
	VPUNPCKHQDQ Z19, Z17, Z3
	VPUNPCKLQDQ Z22, Z20, Z4
	VPUNPCKHQDQ Z22, Z20, Z5
	VPUNPCKLQDQ Z23, Z21, Z6
	VPUNPCKHQDQ Z23, Z21, Z7
	VPUNPCKLQDQ Z26, Z24, Z8
	VPUNPCKHQDQ Z26, Z24, Z9
	VPUNPCKLQDQ Z27, Z25, Z10
	VPUNPCKHQDQ Z27, Z25, Z11
	VPUNPCKLQDQ Z30, Z28, Z12
	VPUNPCKHQDQ Z30, Z28, Z13
	VPUNPCKLQDQ Z31, Z29, Z14
	VPUNPCKHQDQ Z31, Z29, Z15
	// Then 128-bit lanes across the four row quarters: row 4L+c of the result gathers lane L of
	// u[c], u[4+c], u[8+c], u[12+c].
	VSHUFI32X4  $0x44, Z4, Z0, Z16
	VSHUFI32X4  $0xEE, Z4, Z0, Z17
	VSHUFI32X4  $0x44, Z12, Z8, Z18
	VSHUFI32X4  $0xEE, Z12, Z8, Z19
	VSHUFI32X4  $0x44, Z5, Z1, Z20
	VSHUFI32X4  $0xEE, Z5, Z1, Z21
	VSHUFI32X4  $0x44, Z13, Z9, Z22
	VSHUFI32X4  $0xEE, Z13, Z9, Z23
	VSHUFI32X4  $0x44, Z6, Z2, Z24
	VSHUFI32X4  $0xEE, Z6, Z2, Z25
	VSHUFI32X4  $0x44, Z14, Z10, Z26
	VSHUFI32X4  $0xEE, Z14, Z10, Z27
	VSHUFI32X4  $0x44, Z7, Z3, Z28
	VSHUFI32X4  $0xEE, Z7, Z3, Z29
	VSHUFI32X4  $0x44, Z15, Z11, Z30
	VSHUFI32X4  $0xEE, Z15, Z11, Z31
	VSHUFI32X4  $0x88, Z18, Z16, Z0
	VSHUFI32X4  $0xDD, Z18, Z16, Z4
	VSHUFI32X4  $0x88, Z19, Z17, Z8
	VSHUFI32X4  $0xDD, Z19, Z17, Z12
	VSHUFI32X4  $0x88, Z22, Z20, Z1
	VSHUFI32X4  $0xDD, Z22, Z20, Z5
	VSHUFI32X4  $0x88, Z23, Z21, Z9
	VSHUFI32X4  $0xDD, Z23, Z21, Z13
	VSHUFI32X4  $0x88, Z26, Z24, Z2
	VSHUFI32X4  $0xDD, Z26, Z24, Z6
	VSHUFI32X4  $0x88, Z27, Z25, Z10
	VSHUFI32X4  $0xDD, Z27, Z25, Z14
	VSHUFI32X4  $0x88, Z30, Z28, Z3
	VSHUFI32X4  $0xDD, Z30, Z28, Z7
	VSHUFI32X4  $0x88, Z31, Z29, Z11
	VSHUFI32X4  $0xDD, Z31, Z29, Z15
	RET

// func gemv4i8AVX512(rows, n128 int, xq *int8, xs *float32, w *byte, scales *float32, table *[64]byte, y *float32)
// The 8-bit GEMV (MatMul4I8): y[r] = Σ over the n128 128-code groups of row r of
// Σ_h absmax_h·xscale_h·Σ_i code8[c_i]·xq_i, for the rows consecutive rows of W (w), each group's
// two 64-code halves with their own scales (scales: two a group) and x's two 64-element blocks
// with theirs. A group's 64 bytes split into low and high nibbles (its odd and even elements); a
// VPSHUFB of each looks up the codebook as unsigned bytes (code8 + 128: VPDPBUSD multiplies
// unsigned by signed bytes), and two VPDPBUSD sum their products with x's signed bytes in four-byte
// lanes: lanes 0-7 the first half, 8-15 the second, since each nibble vector holds the first
// half's 32 bytes and then the second's. The +128 adds 128·Σ xq a half, which the second
// accumulator takes back out: xs holds, a group, 16 floats (xscale of each half in its 8 lanes)
// and 16 more (128·xscale·Σ xq of each half, over 8). xq holds, a group, the first half's odd
// elements, the second half's odd ones, then the even ones likewise.
TEXT ·gemv4i8AVX512(SB), NOSPLIT, $0-64
	MOVQ         rows+0(FP), DX
	MOVQ         w+32(FP), DI
	MOVQ         scales+40(FP), BX
	MOVQ         table+48(FP), AX
	MOVQ         y+56(FP), R8
	VMOVDQU32    (AX), Z14
	MOVL         $0x0F0F0F0F, AX
	VPBROADCASTD AX, Z15
	MOVL         $0xFF00, AX
	KMOVW        AX, K1

i8row:
	MOVQ   n128+8(FP), CX
	MOVQ   xq+16(FP), SI
	MOVQ   xs+24(FP), R9
	VPXORD Z0, Z0, Z0
	VPXORD Z5, Z5, Z5

i8loop:
	PREFETCHT0   8192(DI)
	VMOVDQU32    (DI), Z1
	VPSRLW       $4, Z1, Z2
	VPANDD       Z15, Z1, Z1
	VPANDD       Z15, Z2, Z2
	VPSHUFB      Z1, Z14, Z1
	VPSHUFB      Z2, Z14, Z2
	VPXORD       Z16, Z16, Z16
	VPDPBUSD     (SI), Z1, Z16
	VPDPBUSD     64(SI), Z2, Z16
	VCVTDQ2PS    Z16, Z16
	VBROADCASTSS (BX), Z3
	VBROADCASTSS 4(BX), K1, Z3
	VFMADD231PS  64(R9), Z3, Z5
	VMULPS       (R9), Z3, Z3
	VFMADD231PS  Z3, Z16, Z0
	ADDQ         $64, DI
	ADDQ         $128, SI
	ADDQ         $128, R9
	ADDQ         $8, BX
	DECQ         CX
	JNZ          i8loop

	VSUBPS        Z5, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)
	ADDQ          $4, R8
	DECQ          DX
	JNZ           i8row
	VZEROUPPER
	RET

// func absMax64AVX512(nblk int, x *float32, amax, abssum *float32)
// amax[b] and abssum[b] = the largest |x| and Σ|x| of x's 64-float blocks b < nblk (the sum only to
// find a NaN or an infinity, which VMAXPS does not carry).
TEXT ·absMax64AVX512(SB), NOSPLIT, $0-32
	MOVQ         nblk+0(FP), CX
	MOVQ         x+8(FP), SI
	MOVQ         amax+16(FP), DI
	MOVQ         abssum+24(FP), DX
	MOVL         $0x7FFFFFFF, AX
	VPBROADCASTD AX, Z15

amloop:
	VANDPS        (SI), Z15, Z0
	VANDPS        64(SI), Z15, Z1
	VANDPS        128(SI), Z15, Z2
	VANDPS        192(SI), Z15, Z3
	VADDPS        Z1, Z0, Z4
	VADDPS        Z3, Z2, Z5
	VADDPS        Z5, Z4, Z4
	VMAXPS        Z1, Z0, Z0
	VMAXPS        Z3, Z2, Z2
	VMAXPS        Z2, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VMAXPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0x4E, X0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0xB1, X0, X1
	VMAXPS        X1, X0, X0
	VMOVSS        X0, (DI)
	VEXTRACTF64X4 $1, Z4, Y5
	VADDPS        Y5, Y4, Y4
	VEXTRACTF128  $1, Y4, X5
	VADDPS        X5, X4, X4
	VHADDPS       X4, X4, X4
	VHADDPS       X4, X4, X4
	VMOVSS        X4, (DX)
	ADDQ          $256, SI
	ADDQ          $4, DI
	ADDQ          $4, DX
	DECQ          CX
	JNZ           amloop
	VZEROUPPER
	RET

// func quantI8AVX512(n128 int, x, inv *float32, xq *int8, sums *int32, perm *[64]byte)
// Rounds each 64-float block b of x (n128 groups of two) to signed bytes round(x·inv[b]) (to
// nearest even; |x·inv| ≤ 127 as inv = 127/amax) in gemv4i8AVX512's layout: a group's first
// block's odd elements, its second block's odd ones, then the even ones of each (perm: VPERMB's
// index of a block's odd bytes, then its even ones). sums[b] is the block's Σ bytes.
TEXT ·quantI8AVX512(SB), NOSPLIT, $0-48
	MOVQ    n128+0(FP), CX
	MOVQ    x+8(FP), SI
	MOVQ    inv+16(FP), R8
	MOVQ    xq+24(FP), DI
	MOVQ    sums+32(FP), DX
	MOVQ    perm+40(FP), AX
	VMOVDQU32 (AX), Z15

qloop:
	VBROADCASTSS (R8), Z16
	VBROADCASTSS 4(R8), Z17
	VMULPS       (SI), Z16, Z0
	VMULPS       64(SI), Z16, Z1
	VMULPS       128(SI), Z16, Z2
	VMULPS       192(SI), Z16, Z3
	VMULPS       256(SI), Z17, Z4
	VMULPS       320(SI), Z17, Z5
	VMULPS       384(SI), Z17, Z6
	VMULPS       448(SI), Z17, Z7
	VCVTPS2DQ    Z0, Z0
	VCVTPS2DQ    Z1, Z1
	VCVTPS2DQ    Z2, Z2
	VCVTPS2DQ    Z3, Z3
	VCVTPS2DQ    Z4, Z4
	VCVTPS2DQ    Z5, Z5
	VCVTPS2DQ    Z6, Z6
	VCVTPS2DQ    Z7, Z7

	// Each block's Σ bytes.
	VPADDD        Z1, Z0, Z8
	VPADDD        Z3, Z2, Z9
	VPADDD        Z9, Z8, Z8
	VPADDD        Z5, Z4, Z10
	VPADDD        Z7, Z6, Z11
	VPADDD        Z11, Z10, Z10
	VEXTRACTI64X4 $1, Z8, Y9
	VPADDD        Y9, Y8, Y8
	VEXTRACTI64X4 $1, Z10, Y11
	VPADDD        Y11, Y10, Y10
	VPHADDD       Y10, Y8, Y8
	VEXTRACTI128  $1, Y8, X9
	VPADDD        X9, X8, X8
	VPHADDD       X8, X8, X8
	VMOVQ         X8, (DX)

	// The bytes: each block's 64 in order, then its odd ones before its even ones.
	VPMOVSDB     Z0, X0
	VPMOVSDB     Z1, X1
	VPMOVSDB     Z2, X2
	VPMOVSDB     Z3, X3
	VPMOVSDB     Z4, X4
	VPMOVSDB     Z5, X5
	VPMOVSDB     Z6, X6
	VPMOVSDB     Z7, X7
	VINSERTI32X4 $1, X1, Z0, Z0
	VINSERTI32X4 $2, X2, Z0, Z0
	VINSERTI32X4 $3, X3, Z0, Z0
	VINSERTI32X4 $1, X5, Z4, Z4
	VINSERTI32X4 $2, X6, Z4, Z4
	VINSERTI32X4 $3, X7, Z4, Z4
	VPERMB       Z0, Z15, Z0
	VPERMB       Z4, Z15, Z4
	VSHUFI64X2   $0x44, Z4, Z0, Z1
	VSHUFI64X2   $0xEE, Z4, Z0, Z2
	VMOVDQU32    Z1, (DI)
	VMOVDQU32    Z2, 64(DI)
	ADDQ         $512, SI
	ADDQ         $8, R8
	ADDQ         $128, DI
	ADDQ         $8, DX
	DECQ         CX
	JNZ          qloop
	VZEROUPPER
	RET

// func quantRowsI8AVX512(nblk int, x, inv *float32, xq *int8, sums *int32)
// Rounds each 64-float block b < nblk of x to signed bytes round(x·inv[b]) (to nearest even), in
// order, and sets sums[b] to the block's Σ bytes: the 8-bit GEMM's rows of x.
TEXT ·quantRowsI8AVX512(SB), NOSPLIT, $0-40
	MOVQ nblk+0(FP), CX
	MOVQ x+8(FP), SI
	MOVQ inv+16(FP), R8
	MOVQ xq+24(FP), DI
	MOVQ sums+32(FP), DX

qrloop:
	VBROADCASTSS  (R8), Z16
	VMULPS        (SI), Z16, Z0
	VMULPS        64(SI), Z16, Z1
	VMULPS        128(SI), Z16, Z2
	VMULPS        192(SI), Z16, Z3
	VCVTPS2DQ     Z0, Z0
	VCVTPS2DQ     Z1, Z1
	VCVTPS2DQ     Z2, Z2
	VCVTPS2DQ     Z3, Z3
	VPADDD        Z1, Z0, Z8
	VPADDD        Z3, Z2, Z9
	VPADDD        Z9, Z8, Z8
	VEXTRACTI64X4 $1, Z8, Y9
	VPADDD        Y9, Y8, Y8
	VEXTRACTI128  $1, Y8, X9
	VPADDD        X9, X8, X8
	VPHADDD       X8, X8, X8
	VPHADDD       X8, X8, X8
	VMOVD         X8, (DX)
	VPMOVSDB      Z0, (DI)
	VPMOVSDB      Z1, 16(DI)
	VPMOVSDB      Z2, 32(DI)
	VPMOVSDB      Z3, 48(DI)
	ADDQ          $256, SI
	ADDQ          $4, R8
	ADDQ          $64, DI
	ADDQ          $4, DX
	DECQ          CX
	JNZ           qrloop
	VZEROUPPER
	RET

// func packI8AVX512(nkb int, w *byte, ldw int, table *[64]byte, dst *byte)
// Sixteen columns of the 8-bit GEMM's packed B strip from 16 rows of W (ldw bytes apart), nkb
// blocks of 64 codes (32 bytes) each. A block of a row: its bytes widen to words, the high nibble
// (the first element) stays in the low byte and the low nibble moves to the high one, so the 64
// codes lie in depth order; VPSHUFB looks them up as unsigned bytes (code·127 + 128): 16 dwords
// of four consecutive depths in Zr. The 16×16 dword transpose (transpose16AVX512) turns them into
// the block's 16 four-depth steps of the 16 columns, stored 256 bytes apart (a step of the
// strip's 64 columns).
TEXT ·packI8AVX512(SB), NOSPLIT, $0-40
	MOVQ nkb+0(FP), CX
	MOVQ w+8(FP), SI
	MOVQ ldw+16(FP), R8
	LEAQ (R8)(R8*2), R10
	MOVQ dst+32(FP), DI

pi8block:
	MOVQ         table+24(FP), AX
	VMOVDQU32    (AX), Z16
	MOVL         $0x0F000F00, AX
	VPBROADCASTD AX, Z17
	MOVQ         SI, R9
	VPMOVZXBW    (R9), Z0
	VPMOVZXBW    (R9)(R8*1), Z1
	VPMOVZXBW    (R9)(R8*2), Z2
	VPMOVZXBW    (R9)(R10*1), Z3
	LEAQ         (R9)(R8*4), R9
	VPMOVZXBW    (R9), Z4
	VPMOVZXBW    (R9)(R8*1), Z5
	VPMOVZXBW    (R9)(R8*2), Z6
	VPMOVZXBW    (R9)(R10*1), Z7
	LEAQ         (R9)(R8*4), R9
	VPMOVZXBW    (R9), Z8
	VPMOVZXBW    (R9)(R8*1), Z9
	VPMOVZXBW    (R9)(R8*2), Z10
	VPMOVZXBW    (R9)(R10*1), Z11
	LEAQ         (R9)(R8*4), R9
	VPMOVZXBW    (R9), Z12
	VPMOVZXBW    (R9)(R8*1), Z13
	VPMOVZXBW    (R9)(R8*2), Z14
	VPMOVZXBW    (R9)(R10*1), Z15
	VPSRLW       $4, Z0, Z18
	VPSLLW       $8, Z0, Z0
	VPTERNLOGD   $0xEA, Z18, Z17, Z0
	VPSHUFB      Z0, Z16, Z0
	VPSRLW       $4, Z1, Z18
	VPSLLW       $8, Z1, Z1
	VPTERNLOGD   $0xEA, Z18, Z17, Z1
	VPSHUFB      Z1, Z16, Z1
	VPSRLW       $4, Z2, Z18
	VPSLLW       $8, Z2, Z2
	VPTERNLOGD   $0xEA, Z18, Z17, Z2
	VPSHUFB      Z2, Z16, Z2
	VPSRLW       $4, Z3, Z18
	VPSLLW       $8, Z3, Z3
	VPTERNLOGD   $0xEA, Z18, Z17, Z3
	VPSHUFB      Z3, Z16, Z3
	VPSRLW       $4, Z4, Z18
	VPSLLW       $8, Z4, Z4
	VPTERNLOGD   $0xEA, Z18, Z17, Z4
	VPSHUFB      Z4, Z16, Z4
	VPSRLW       $4, Z5, Z18
	VPSLLW       $8, Z5, Z5
	VPTERNLOGD   $0xEA, Z18, Z17, Z5
	VPSHUFB      Z5, Z16, Z5
	VPSRLW       $4, Z6, Z18
	VPSLLW       $8, Z6, Z6
	VPTERNLOGD   $0xEA, Z18, Z17, Z6
	VPSHUFB      Z6, Z16, Z6
	VPSRLW       $4, Z7, Z18
	VPSLLW       $8, Z7, Z7
	VPTERNLOGD   $0xEA, Z18, Z17, Z7
	VPSHUFB      Z7, Z16, Z7
	VPSRLW       $4, Z8, Z18
	VPSLLW       $8, Z8, Z8
	VPTERNLOGD   $0xEA, Z18, Z17, Z8
	VPSHUFB      Z8, Z16, Z8
	VPSRLW       $4, Z9, Z18
	VPSLLW       $8, Z9, Z9
	VPTERNLOGD   $0xEA, Z18, Z17, Z9
	VPSHUFB      Z9, Z16, Z9
	VPSRLW       $4, Z10, Z18
	VPSLLW       $8, Z10, Z10
	VPTERNLOGD   $0xEA, Z18, Z17, Z10
	VPSHUFB      Z10, Z16, Z10
	VPSRLW       $4, Z11, Z18
	VPSLLW       $8, Z11, Z11
	VPTERNLOGD   $0xEA, Z18, Z17, Z11
	VPSHUFB      Z11, Z16, Z11
	VPSRLW       $4, Z12, Z18
	VPSLLW       $8, Z12, Z12
	VPTERNLOGD   $0xEA, Z18, Z17, Z12
	VPSHUFB      Z12, Z16, Z12
	VPSRLW       $4, Z13, Z18
	VPSLLW       $8, Z13, Z13
	VPTERNLOGD   $0xEA, Z18, Z17, Z13
	VPSHUFB      Z13, Z16, Z13
	VPSRLW       $4, Z14, Z18
	VPSLLW       $8, Z14, Z14
	VPTERNLOGD   $0xEA, Z18, Z17, Z14
	VPSHUFB      Z14, Z16, Z14
	VPSRLW       $4, Z15, Z18
	VPSLLW       $8, Z15, Z15
	VPTERNLOGD   $0xEA, Z18, Z17, Z15
	VPSHUFB      Z15, Z16, Z15
	CALL         ·transpose16AVX512(SB)
	VMOVDQU32    Z0, (DI)
	VMOVDQU32    Z1, 256(DI)
	VMOVDQU32    Z2, 512(DI)
	VMOVDQU32    Z3, 768(DI)
	VMOVDQU32    Z4, 1024(DI)
	VMOVDQU32    Z5, 1280(DI)
	VMOVDQU32    Z6, 1536(DI)
	VMOVDQU32    Z7, 1792(DI)
	VMOVDQU32    Z8, 2048(DI)
	VMOVDQU32    Z9, 2304(DI)
	VMOVDQU32    Z10, 2560(DI)
	VMOVDQU32    Z11, 2816(DI)
	VMOVDQU32    Z12, 3072(DI)
	VMOVDQU32    Z13, 3328(DI)
	VMOVDQU32    Z14, 3584(DI)
	VMOVDQU32    Z15, 3840(DI)
	ADDQ         $32, SI
	ADDQ         $4096, DI
	DECQ         CX
	JNZ          pi8block
	VZEROUPPER
	RET

// func kernI8x64(nkb int, a *int8, lda int, b *byte, sw, sa *float32, u *int32, c *float32)
// The 8-bit GEMM's 6×64 tile: c[r·64 + j] += Σ over the nkb blocks of 64 depths of
// (Σ_d b_u8[d, j]·a[r, d] − u[r]) · sw[j] · sa[r], the block's scales and corrections advancing
// (sw 64 floats, sa and u 6 a block). a holds 6 rows of signed bytes lda apart; b the packed strip
// (per four-depth step, 64 columns of 4 unsigned bytes); u each row's 128·Σ bytes, which the
// codebook's +128 added. Per step four B vectors are loaded and each row's four bytes broadcast
// once (a register, not an embedded broadcast, which would load them once an instruction) into
// the 24 VPDPBUSD of the tile's int32 accumulators (Z8-Z31); after 16 steps they are made
// exact products (− u), converted, scaled and added into c.
TEXT ·kernI8x64(SB), NOSPLIT, $0-64
	MOVQ nkb+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	MOVQ b+24(FP), DI
	MOVQ sw+32(FP), R11
	MOVQ sa+40(FP), R12
	MOVQ u+48(FP), R13
	MOVQ c+56(FP), R14

ki8block:
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31
	MOVQ   $16, BX
	MOVQ   SI, R9
	LEAQ   (SI)(R8*2), R15
	LEAQ   (R15)(R8*2), R10

ki8step:
	VMOVDQU32 (DI), Z0
	VMOVDQU32 64(DI), Z1
	VMOVDQU32 128(DI), Z2
	VMOVDQU32 192(DI), Z3
	VPBROADCASTD  (R9), Z4
	VPDPBUSD      Z4, Z0, Z8
	VPDPBUSD      Z4, Z1, Z9
	VPDPBUSD      Z4, Z2, Z10
	VPDPBUSD      Z4, Z3, Z11
	VPBROADCASTD  (R9)(R8*1), Z5
	VPDPBUSD      Z5, Z0, Z12
	VPDPBUSD      Z5, Z1, Z13
	VPDPBUSD      Z5, Z2, Z14
	VPDPBUSD      Z5, Z3, Z15
	VPBROADCASTD  (R15), Z6
	VPDPBUSD      Z6, Z0, Z16
	VPDPBUSD      Z6, Z1, Z17
	VPDPBUSD      Z6, Z2, Z18
	VPDPBUSD      Z6, Z3, Z19
	VPBROADCASTD  (R15)(R8*1), Z7
	VPDPBUSD      Z7, Z0, Z20
	VPDPBUSD      Z7, Z1, Z21
	VPDPBUSD      Z7, Z2, Z22
	VPDPBUSD      Z7, Z3, Z23
	VPBROADCASTD  (R10), Z4
	VPDPBUSD      Z4, Z0, Z24
	VPDPBUSD      Z4, Z1, Z25
	VPDPBUSD      Z4, Z2, Z26
	VPDPBUSD      Z4, Z3, Z27
	VPBROADCASTD  (R10)(R8*1), Z5
	VPDPBUSD      Z5, Z0, Z28
	VPDPBUSD      Z5, Z1, Z29
	VPDPBUSD      Z5, Z2, Z30
	VPDPBUSD      Z5, Z3, Z31
	ADDQ $256, DI
	ADDQ $4, R9
	ADDQ $4, R15
	ADDQ $4, R10
	DECQ BX
	JNZ  ki8step

	VPBROADCASTD 0(R13), Z4
	VBROADCASTSS 0(R12), Z5
	VPSUBD       Z4, Z8, Z8
	VCVTDQ2PS    Z8, Z8
	VMULPS       0(R11), Z8, Z8
	VFMADD213PS  0(R14), Z5, Z8
	VMOVUPS      Z8, 0(R14)
	VPSUBD       Z4, Z9, Z9
	VCVTDQ2PS    Z9, Z9
	VMULPS       64(R11), Z9, Z9
	VFMADD213PS  64(R14), Z5, Z9
	VMOVUPS      Z9, 64(R14)
	VPSUBD       Z4, Z10, Z10
	VCVTDQ2PS    Z10, Z10
	VMULPS       128(R11), Z10, Z10
	VFMADD213PS  128(R14), Z5, Z10
	VMOVUPS      Z10, 128(R14)
	VPSUBD       Z4, Z11, Z11
	VCVTDQ2PS    Z11, Z11
	VMULPS       192(R11), Z11, Z11
	VFMADD213PS  192(R14), Z5, Z11
	VMOVUPS      Z11, 192(R14)
	VPBROADCASTD 4(R13), Z4
	VBROADCASTSS 4(R12), Z5
	VPSUBD       Z4, Z12, Z12
	VCVTDQ2PS    Z12, Z12
	VMULPS       0(R11), Z12, Z12
	VFMADD213PS  256(R14), Z5, Z12
	VMOVUPS      Z12, 256(R14)
	VPSUBD       Z4, Z13, Z13
	VCVTDQ2PS    Z13, Z13
	VMULPS       64(R11), Z13, Z13
	VFMADD213PS  320(R14), Z5, Z13
	VMOVUPS      Z13, 320(R14)
	VPSUBD       Z4, Z14, Z14
	VCVTDQ2PS    Z14, Z14
	VMULPS       128(R11), Z14, Z14
	VFMADD213PS  384(R14), Z5, Z14
	VMOVUPS      Z14, 384(R14)
	VPSUBD       Z4, Z15, Z15
	VCVTDQ2PS    Z15, Z15
	VMULPS       192(R11), Z15, Z15
	VFMADD213PS  448(R14), Z5, Z15
	VMOVUPS      Z15, 448(R14)
	VPBROADCASTD 8(R13), Z4
	VBROADCASTSS 8(R12), Z5
	VPSUBD       Z4, Z16, Z16
	VCVTDQ2PS    Z16, Z16
	VMULPS       0(R11), Z16, Z16
	VFMADD213PS  512(R14), Z5, Z16
	VMOVUPS      Z16, 512(R14)
	VPSUBD       Z4, Z17, Z17
	VCVTDQ2PS    Z17, Z17
	VMULPS       64(R11), Z17, Z17
	VFMADD213PS  576(R14), Z5, Z17
	VMOVUPS      Z17, 576(R14)
	VPSUBD       Z4, Z18, Z18
	VCVTDQ2PS    Z18, Z18
	VMULPS       128(R11), Z18, Z18
	VFMADD213PS  640(R14), Z5, Z18
	VMOVUPS      Z18, 640(R14)
	VPSUBD       Z4, Z19, Z19
	VCVTDQ2PS    Z19, Z19
	VMULPS       192(R11), Z19, Z19
	VFMADD213PS  704(R14), Z5, Z19
	VMOVUPS      Z19, 704(R14)
	VPBROADCASTD 12(R13), Z4
	VBROADCASTSS 12(R12), Z5
	VPSUBD       Z4, Z20, Z20
	VCVTDQ2PS    Z20, Z20
	VMULPS       0(R11), Z20, Z20
	VFMADD213PS  768(R14), Z5, Z20
	VMOVUPS      Z20, 768(R14)
	VPSUBD       Z4, Z21, Z21
	VCVTDQ2PS    Z21, Z21
	VMULPS       64(R11), Z21, Z21
	VFMADD213PS  832(R14), Z5, Z21
	VMOVUPS      Z21, 832(R14)
	VPSUBD       Z4, Z22, Z22
	VCVTDQ2PS    Z22, Z22
	VMULPS       128(R11), Z22, Z22
	VFMADD213PS  896(R14), Z5, Z22
	VMOVUPS      Z22, 896(R14)
	VPSUBD       Z4, Z23, Z23
	VCVTDQ2PS    Z23, Z23
	VMULPS       192(R11), Z23, Z23
	VFMADD213PS  960(R14), Z5, Z23
	VMOVUPS      Z23, 960(R14)
	VPBROADCASTD 16(R13), Z4
	VBROADCASTSS 16(R12), Z5
	VPSUBD       Z4, Z24, Z24
	VCVTDQ2PS    Z24, Z24
	VMULPS       0(R11), Z24, Z24
	VFMADD213PS  1024(R14), Z5, Z24
	VMOVUPS      Z24, 1024(R14)
	VPSUBD       Z4, Z25, Z25
	VCVTDQ2PS    Z25, Z25
	VMULPS       64(R11), Z25, Z25
	VFMADD213PS  1088(R14), Z5, Z25
	VMOVUPS      Z25, 1088(R14)
	VPSUBD       Z4, Z26, Z26
	VCVTDQ2PS    Z26, Z26
	VMULPS       128(R11), Z26, Z26
	VFMADD213PS  1152(R14), Z5, Z26
	VMOVUPS      Z26, 1152(R14)
	VPSUBD       Z4, Z27, Z27
	VCVTDQ2PS    Z27, Z27
	VMULPS       192(R11), Z27, Z27
	VFMADD213PS  1216(R14), Z5, Z27
	VMOVUPS      Z27, 1216(R14)
	VPBROADCASTD 20(R13), Z4
	VBROADCASTSS 20(R12), Z5
	VPSUBD       Z4, Z28, Z28
	VCVTDQ2PS    Z28, Z28
	VMULPS       0(R11), Z28, Z28
	VFMADD213PS  1280(R14), Z5, Z28
	VMOVUPS      Z28, 1280(R14)
	VPSUBD       Z4, Z29, Z29
	VCVTDQ2PS    Z29, Z29
	VMULPS       64(R11), Z29, Z29
	VFMADD213PS  1344(R14), Z5, Z29
	VMOVUPS      Z29, 1344(R14)
	VPSUBD       Z4, Z30, Z30
	VCVTDQ2PS    Z30, Z30
	VMULPS       128(R11), Z30, Z30
	VFMADD213PS  1408(R14), Z5, Z30
	VMOVUPS      Z30, 1408(R14)
	VPSUBD       Z4, Z31, Z31
	VCVTDQ2PS    Z31, Z31
	VMULPS       192(R11), Z31, Z31
	VFMADD213PS  1472(R14), Z5, Z31
	VMOVUPS      Z31, 1472(R14)
	ADDQ $64, SI
	ADDQ $256, R11
	ADDQ $24, R12
	ADDQ $24, R13
	DECQ CX
	JNZ  ki8block
	VZEROUPPER
	RET

// func gemv4i8x4AVX512(wrows, n128 int, xq *int8, ldx int, xs *float32, ldxs int, w *byte, scales *float32, table *[64]byte, out *float32, ldo int)
// gemv4i8AVX512 for four rows of x (their bytes ldx apart, their scales ldxs floats apart) against
// wrows rows of W, row r's result for W's row j at out[r·ldo + j]: each 64-byte group of W is
// looked up once (VPSHUFB) for the four rows' VPDPBUSD. Z24-Z27 accumulate each row's scaled
// sums, Z28-Z31 its 128·Σ corrections.
TEXT ·gemv4i8x4AVX512(SB), NOSPLIT, $0-88
	MOVQ         wrows+0(FP), DX
	MOVQ         ldx+24(FP), R9
	LEAQ         (R9)(R9*2), R10
	MOVQ         ldxs+40(FP), R13
	SHLQ         $2, R13
	LEAQ         (R13)(R13*2), R14
	MOVQ         w+48(FP), DI
	MOVQ         scales+56(FP), BX
	MOVQ         table+64(FP), AX
	VMOVDQU32    (AX), Z14
	MOVQ         out+72(FP), R8
	MOVQ         ldo+80(FP), R11
	SHLQ         $2, R11
	LEAQ         (R11)(R11*2), R15
	MOVL         $0x0F0F0F0F, AX
	VPBROADCASTD AX, Z15
	MOVL         $0xFF00, AX
	KMOVW        AX, K1

i8x4row:
	MOVQ n128+8(FP), CX
	MOVQ xq+16(FP), SI
	MOVQ xs+32(FP), R12
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	VPXORD Z28, Z28, Z28
	VPXORD Z29, Z29, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z31, Z31, Z31

i8x4loop:
	PREFETCHT0   8192(DI)
	VMOVDQU32    (DI), Z1
	VPSRLW       $4, Z1, Z2
	VPANDD       Z15, Z1, Z1
	VPANDD       Z15, Z2, Z2
	VPSHUFB      Z1, Z14, Z1
	VPSHUFB      Z2, Z14, Z2
	VBROADCASTSS (BX), Z3
	VBROADCASTSS 4(BX), K1, Z3
	VPXORD       Z16, Z16, Z16
	VPDPBUSD     (SI), Z1, Z16
	VPDPBUSD     64(SI), Z2, Z16
	VCVTDQ2PS    Z16, Z16
	VMULPS       (R12), Z3, Z17
	VFMADD231PS  Z17, Z16, Z24
	VFMADD231PS  64(R12), Z3, Z28
	VPXORD       Z18, Z18, Z18
	VPDPBUSD     (SI)(R9*1), Z1, Z18
	VPDPBUSD     64(SI)(R9*1), Z2, Z18
	VCVTDQ2PS    Z18, Z18
	VMULPS       (R12)(R13*1), Z3, Z19
	VFMADD231PS  Z19, Z18, Z25
	VFMADD231PS  64(R12)(R13*1), Z3, Z29
	VPXORD       Z20, Z20, Z20
	VPDPBUSD     (SI)(R9*2), Z1, Z20
	VPDPBUSD     64(SI)(R9*2), Z2, Z20
	VCVTDQ2PS    Z20, Z20
	VMULPS       (R12)(R13*2), Z3, Z21
	VFMADD231PS  Z21, Z20, Z26
	VFMADD231PS  64(R12)(R13*2), Z3, Z30
	VPXORD       Z22, Z22, Z22
	VPDPBUSD     (SI)(R10*1), Z1, Z22
	VPDPBUSD     64(SI)(R10*1), Z2, Z22
	VCVTDQ2PS    Z22, Z22
	VMULPS       (R12)(R14*1), Z3, Z23
	VFMADD231PS  Z23, Z22, Z27
	VFMADD231PS  64(R12)(R14*1), Z3, Z31
	ADDQ         $64, DI
	ADDQ         $128, SI
	ADDQ         $128, R12
	ADDQ         $8, BX
	DECQ         CX
	JNZ          i8x4loop

	VSUBPS        Z28, Z24, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)
	VSUBPS        Z29, Z25, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)(R11*1)
	VSUBPS        Z30, Z26, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)(R11*2)
	VSUBPS        Z31, Z27, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VHADDPS       X0, X0, X0
	VHADDPS       X0, X0, X0
	VMOVSS        X0, (R8)(R15*1)
	ADDQ $4, R8
	DECQ DX
	JNZ  i8x4row
	VZEROUPPER
	RET
