//go:build amd64 && !purego

#include "textflag.h"

// ZERO_Z16_Z31 clears the sixteen accumulators Z16-Z31.
#define ZERO_Z16_Z31 \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; \
	VPXORD Z21, Z21, Z21; \
	VPXORD Z22, Z22, Z22; \
	VPXORD Z23, Z23, Z23; \
	VPXORD Z24, Z24, Z24; \
	VPXORD Z25, Z25, Z25; \
	VPXORD Z26, Z26, Z26; \
	VPXORD Z27, Z27, Z27; \
	VPXORD Z28, Z28, Z28; \
	VPXORD Z29, Z29, Z29; \
	VPXORD Z30, Z30, Z30; \
	VPXORD Z31, Z31, Z31

// REDUCE16 sums each of the sixteen accumulators Z16-Z31 across its lanes into one register, Z2,
// by a tree of shuffles (512→256→128→64→32 bits), with Z0-Z1 and Z3-Z13 as scratch: lane 4t+u
// of Z2 is the sum of accumulator 4u+t.
#define REDUCE16 \
	VSHUFF32X4 $0x44, Z17, Z16, Z8; \
	VSHUFF32X4 $0xEE, Z17, Z16, Z9; \
	VADDPS Z9, Z8, Z0; \
	VSHUFF32X4 $0x44, Z19, Z18, Z8; \
	VSHUFF32X4 $0xEE, Z19, Z18, Z9; \
	VADDPS Z9, Z8, Z1; \
	VSHUFF32X4 $0x44, Z21, Z20, Z8; \
	VSHUFF32X4 $0xEE, Z21, Z20, Z9; \
	VADDPS Z9, Z8, Z2; \
	VSHUFF32X4 $0x44, Z23, Z22, Z8; \
	VSHUFF32X4 $0xEE, Z23, Z22, Z9; \
	VADDPS Z9, Z8, Z3; \
	VSHUFF32X4 $0x44, Z25, Z24, Z8; \
	VSHUFF32X4 $0xEE, Z25, Z24, Z9; \
	VADDPS Z9, Z8, Z4; \
	VSHUFF32X4 $0x44, Z27, Z26, Z8; \
	VSHUFF32X4 $0xEE, Z27, Z26, Z9; \
	VADDPS Z9, Z8, Z5; \
	VSHUFF32X4 $0x44, Z29, Z28, Z8; \
	VSHUFF32X4 $0xEE, Z29, Z28, Z9; \
	VADDPS Z9, Z8, Z6; \
	VSHUFF32X4 $0x44, Z31, Z30, Z8; \
	VSHUFF32X4 $0xEE, Z31, Z30, Z9; \
	VADDPS Z9, Z8, Z7; \
	VSHUFF32X4 $0x88, Z1, Z0, Z12; \
	VSHUFF32X4 $0xDD, Z1, Z0, Z13; \
	VADDPS Z13, Z12, Z8; \
	VSHUFF32X4 $0x88, Z3, Z2, Z12; \
	VSHUFF32X4 $0xDD, Z3, Z2, Z13; \
	VADDPS Z13, Z12, Z9; \
	VSHUFF32X4 $0x88, Z5, Z4, Z12; \
	VSHUFF32X4 $0xDD, Z5, Z4, Z13; \
	VADDPS Z13, Z12, Z10; \
	VSHUFF32X4 $0x88, Z7, Z6, Z12; \
	VSHUFF32X4 $0xDD, Z7, Z6, Z13; \
	VADDPS Z13, Z12, Z11; \
	VUNPCKLPD Z9, Z8, Z12; \
	VUNPCKHPD Z9, Z8, Z13; \
	VADDPS Z13, Z12, Z0; \
	VUNPCKLPD Z11, Z10, Z12; \
	VUNPCKHPD Z11, Z10, Z13; \
	VADDPS Z13, Z12, Z1; \
	VSHUFPS $0x88, Z1, Z0, Z12; \
	VSHUFPS $0xDD, Z1, Z0, Z13; \
	VADDPS Z13, Z12, Z2;


// Attention's decoding kernels (attend.go): a few query rows against a block of keys in place.

// func attendScoresAVX512(n4, d16, rows int, q, k *float32, ldk int, scale float32, s *float32, lds int)
// s[r·lds + j] = scale·q_r·k_j for 4·n4 keys of k (row stride ldk floats) and rows r < rows of q
// (row stride 16·d16), 16·d16 floats each. Four keys at a time against four rows at a time: each
// depth step loads four key vectors and four query vectors for sixteen FMAs (one accumulator a
// (row, key) pair). The earlier form, sixteen keys against one row at a time, loaded seventeen
// vectors for sixteen FMAs, re-reading every key for every row, and its sixteen key rows, 2 KiB
// apart in Llama-3.2-1B's cache, crowded L1's sets: 33% of the FMA peak there, against 50% now.
// A last group of fewer than four rows repeats its last row and stores only its own. Accumulator
// 4j+r holds row r's product with key j, so REDUCE16 leaves row r's four scores in lanes
// 4r..4r+3. The rows sixteen keys ahead are asked for as each group starts.
TEXT ·attendScoresAVX512(SB), NOSPLIT, $0-72
	MOVQ         n4+0(FP), CX
	MOVQ         k+32(FP), SI
	MOVQ         ldk+40(FP), R8
	SHLQ         $2, R8
	LEAQ         (R8)(R8*2), R10
	VBROADCASTSS scale+48(FP), Z15
	MOVQ         s+56(FP), DX
	MOVQ         lds+64(FP), R14
	SHLQ         $2, R14

scgroup:
	LEAQ (SI)(R8*8), DI
	LEAQ (DI)(R8*8), DI
	MOVQ d16+8(FP), BX

scpf:
	PREFETCHT0 (DI)
	PREFETCHT0 (DI)(R8*1)
	PREFETCHT0 (DI)(R8*2)
	PREFETCHT0 (DI)(R10*1)
	ADDQ       $64, DI
	DECQ       BX
	JNZ        scpf

	MOVQ q+24(FP), AX
	MOVQ rows+16(FP), R9

scrows:
	// R11, R12, R13, R15: the four rows' offsets from the key pointer, so that one pointer (DI)
	// steps through the depth; rows past the last repeat it.
	MOVQ    d16+8(FP), BX
	SHLQ    $6, BX
	MOVQ    AX, R11
	SUBQ    SI, R11
	LEAQ    (R11)(BX*1), R12
	CMPQ    R9, $1
	CMOVQLE R11, R12
	LEAQ    (R12)(BX*1), R13
	CMPQ    R9, $2
	CMOVQLE R12, R13
	LEAQ    (R13)(BX*1), R15
	CMPQ    R9, $3
	CMOVQLE R13, R15
	ZERO_Z16_Z31
	MOVQ    d16+8(FP), BX
	MOVQ    SI, DI

scdepth:
	VMOVUPS     (DI), Z0
	VMOVUPS     (DI)(R8*1), Z1
	VMOVUPS     (DI)(R8*2), Z2
	VMOVUPS     (DI)(R10*1), Z3
	VMOVUPS     (DI)(R11*1), Z4
	VMOVUPS     (DI)(R12*1), Z5
	VMOVUPS     (DI)(R13*1), Z6
	VMOVUPS     (DI)(R15*1), Z7
	VFMADD231PS Z4, Z0, Z16
	VFMADD231PS Z5, Z0, Z17
	VFMADD231PS Z6, Z0, Z18
	VFMADD231PS Z7, Z0, Z19
	VFMADD231PS Z4, Z1, Z20
	VFMADD231PS Z5, Z1, Z21
	VFMADD231PS Z6, Z1, Z22
	VFMADD231PS Z7, Z1, Z23
	VFMADD231PS Z4, Z2, Z24
	VFMADD231PS Z5, Z2, Z25
	VFMADD231PS Z6, Z2, Z26
	VFMADD231PS Z7, Z2, Z27
	VFMADD231PS Z4, Z3, Z28
	VFMADD231PS Z5, Z3, Z29
	VFMADD231PS Z6, Z3, Z30
	VFMADD231PS Z7, Z3, Z31
	ADDQ        $64, DI
	DECQ        BX
	JNZ         scdepth

	REDUCE16
	VMULPS  Z15, Z2, Z2

	// Store the group's rows: row r < rows of it from lanes 4r..4r+3.
	MOVQ          rows+16(FP), DI
	SUBQ          R9, DI
	IMULQ         R14, DI
	ADDQ          DX, DI
	VMOVUPS       X2, (DI)
	CMPQ          R9, $1
	JLE           scnext
	VEXTRACTF32X4 $1, Z2, X3
	VMOVUPS       X3, (DI)(R14*1)
	CMPQ          R9, $2
	JLE           scnext
	VEXTRACTF32X4 $2, Z2, X3
	VMOVUPS       X3, (DI)(R14*2)
	CMPQ          R9, $3
	JLE           scnext
	VEXTRACTF32X4 $3, Z2, X3
	ADDQ          R14, DI
	VMOVUPS       X3, (DI)(R14*2)

scnext:
	MOVQ d16+8(FP), BX
	SHLQ $8, BX
	ADDQ BX, AX
	SUBQ $4, R9
	JG   scrows
	ADDQ $16, DX
	LEAQ (SI)(R8*4), SI
	DECQ CX
	JNZ  scgroup
	VZEROUPPER
	RET

// func attendValuesAVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)
// out[r, 0:32] += Σ_j p[r·ldp + j]·v[j·ldv + 0:32] for the four rows r < 4, n ≥ 1 keys. Each value
// row's 32 floats are loaded once for the four rows, whose weights are broadcast inside the FMAs;
// even and odd keys go to two sets of accumulators (Z16-Z23, Z24-Z31), so that no FMA waits for
// the one before it.
TEXT ·attendValuesAVX512(SB), NOSPLIT, $0-56
	MOVQ   n+0(FP), CX
	MOVQ   p+8(FP), AX
	MOVQ   ldp+16(FP), R8
	SHLQ   $2, R8
	LEAQ   (R8)(R8*2), R10
	MOVQ   v+24(FP), SI
	MOVQ   ldv+32(FP), R9
	SHLQ   $2, R9
	ZERO_Z16_Z31
	MOVQ   CX, BX
	SHRQ   $1, CX
	JZ     vtail

vloop:
	VMOVUPS          (SI), Z0
	VMOVUPS          64(SI), Z1
	VMOVUPS          (SI)(R9*1), Z2
	VMOVUPS          64(SI)(R9*1), Z3
	VFMADD231PS.BCST (AX), Z0, Z16
	VFMADD231PS.BCST (AX), Z1, Z17
	VFMADD231PS.BCST (AX)(R8*1), Z0, Z18
	VFMADD231PS.BCST (AX)(R8*1), Z1, Z19
	VFMADD231PS.BCST (AX)(R8*2), Z0, Z20
	VFMADD231PS.BCST (AX)(R8*2), Z1, Z21
	VFMADD231PS.BCST (AX)(R10*1), Z0, Z22
	VFMADD231PS.BCST (AX)(R10*1), Z1, Z23
	VFMADD231PS.BCST 4(AX), Z2, Z24
	VFMADD231PS.BCST 4(AX), Z3, Z25
	VFMADD231PS.BCST 4(AX)(R8*1), Z2, Z26
	VFMADD231PS.BCST 4(AX)(R8*1), Z3, Z27
	VFMADD231PS.BCST 4(AX)(R8*2), Z2, Z28
	VFMADD231PS.BCST 4(AX)(R8*2), Z3, Z29
	VFMADD231PS.BCST 4(AX)(R10*1), Z2, Z30
	VFMADD231PS.BCST 4(AX)(R10*1), Z3, Z31
	ADDQ             $8, AX
	LEAQ             (SI)(R9*2), SI
	DECQ             CX
	JNZ              vloop

vtail:
	ANDQ             $1, BX
	JZ               vsum
	VMOVUPS          (SI), Z0
	VMOVUPS          64(SI), Z1
	VFMADD231PS.BCST (AX), Z0, Z16
	VFMADD231PS.BCST (AX), Z1, Z17
	VFMADD231PS.BCST (AX)(R8*1), Z0, Z18
	VFMADD231PS.BCST (AX)(R8*1), Z1, Z19
	VFMADD231PS.BCST (AX)(R8*2), Z0, Z20
	VFMADD231PS.BCST (AX)(R8*2), Z1, Z21
	VFMADD231PS.BCST (AX)(R10*1), Z0, Z22
	VFMADD231PS.BCST (AX)(R10*1), Z1, Z23

vsum:
	MOVQ    out+40(FP), DX
	MOVQ    ldo+48(FP), R11
	SHLQ    $2, R11
	VADDPS  Z24, Z16, Z16
	VADDPS  Z25, Z17, Z17
	VADDPS  Z26, Z18, Z18
	VADDPS  Z27, Z19, Z19
	VADDPS  Z28, Z20, Z20
	VADDPS  Z29, Z21, Z21
	VADDPS  Z30, Z22, Z22
	VADDPS  Z31, Z23, Z23
	VADDPS  (DX), Z16, Z16
	VADDPS  64(DX), Z17, Z17
	VMOVUPS Z16, (DX)
	VMOVUPS Z17, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z18, Z18
	VADDPS  64(DX), Z19, Z19
	VMOVUPS Z18, (DX)
	VMOVUPS Z19, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z20, Z20
	VADDPS  64(DX), Z21, Z21
	VMOVUPS Z20, (DX)
	VMOVUPS Z21, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z22, Z22
	VADDPS  64(DX), Z23, Z23
	VMOVUPS Z22, (DX)
	VMOVUPS Z23, 64(DX)
	VZEROUPPER
	RET

// func attendValues8AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)
// out[r, 0:32] += Σ_j p[r·ldp + j]·v[j·ldv + 0:32] for the eight rows r < 8, n ≥ 1 keys: each value
// row's 32 floats loaded once for eight rows (twice attendValuesAVX512's), the weights broadcast
// inside the FMAs. Sixteen accumulators (Z16-Z31, row r in Z(16+2r) and Z(17+2r)) keep both FMA
// pipes busy without a second set; two keys an iteration, each asking for the value rows sixteen
// keys ahead (a decoding step reads them from memory).
TEXT ·attendValues8AVX512(SB), NOSPLIT, $0-56
	MOVQ   n+0(FP), CX
	MOVQ   p+8(FP), AX
	MOVQ   ldp+16(FP), R8
	SHLQ   $2, R8
	LEAQ   (R8)(R8*2), R10
	LEAQ   (AX)(R8*4), BX
	MOVQ   v+24(FP), SI
	MOVQ   ldv+32(FP), R9
	SHLQ   $2, R9
	ZERO_Z16_Z31
	MOVQ   CX, DX
	SHRQ   $1, CX
	JZ     v8tail

v8loop:
	LEAQ             (SI)(R9*8), DI
	LEAQ             (DI)(R9*8), DI
	PREFETCHT0       (DI)
	PREFETCHT0       64(DI)
	PREFETCHT0       (DI)(R9*1)
	PREFETCHT0       64(DI)(R9*1)
	VMOVUPS          (SI), Z0
	VMOVUPS          64(SI), Z1
	VMOVUPS          (SI)(R9*1), Z2
	VMOVUPS          64(SI)(R9*1), Z3
	VFMADD231PS.BCST (AX), Z0, Z16
	VFMADD231PS.BCST (AX), Z1, Z17
	VFMADD231PS.BCST (AX)(R8*1), Z0, Z18
	VFMADD231PS.BCST (AX)(R8*1), Z1, Z19
	VFMADD231PS.BCST (AX)(R8*2), Z0, Z20
	VFMADD231PS.BCST (AX)(R8*2), Z1, Z21
	VFMADD231PS.BCST (AX)(R10*1), Z0, Z22
	VFMADD231PS.BCST (AX)(R10*1), Z1, Z23
	VFMADD231PS.BCST (BX), Z0, Z24
	VFMADD231PS.BCST (BX), Z1, Z25
	VFMADD231PS.BCST (BX)(R8*1), Z0, Z26
	VFMADD231PS.BCST (BX)(R8*1), Z1, Z27
	VFMADD231PS.BCST (BX)(R8*2), Z0, Z28
	VFMADD231PS.BCST (BX)(R8*2), Z1, Z29
	VFMADD231PS.BCST (BX)(R10*1), Z0, Z30
	VFMADD231PS.BCST (BX)(R10*1), Z1, Z31
	VFMADD231PS.BCST 4(AX), Z2, Z16
	VFMADD231PS.BCST 4(AX), Z3, Z17
	VFMADD231PS.BCST 4(AX)(R8*1), Z2, Z18
	VFMADD231PS.BCST 4(AX)(R8*1), Z3, Z19
	VFMADD231PS.BCST 4(AX)(R8*2), Z2, Z20
	VFMADD231PS.BCST 4(AX)(R8*2), Z3, Z21
	VFMADD231PS.BCST 4(AX)(R10*1), Z2, Z22
	VFMADD231PS.BCST 4(AX)(R10*1), Z3, Z23
	VFMADD231PS.BCST 4(BX), Z2, Z24
	VFMADD231PS.BCST 4(BX), Z3, Z25
	VFMADD231PS.BCST 4(BX)(R8*1), Z2, Z26
	VFMADD231PS.BCST 4(BX)(R8*1), Z3, Z27
	VFMADD231PS.BCST 4(BX)(R8*2), Z2, Z28
	VFMADD231PS.BCST 4(BX)(R8*2), Z3, Z29
	VFMADD231PS.BCST 4(BX)(R10*1), Z2, Z30
	VFMADD231PS.BCST 4(BX)(R10*1), Z3, Z31
	ADDQ             $8, AX
	ADDQ             $8, BX
	LEAQ             (SI)(R9*2), SI
	DECQ             CX
	JNZ              v8loop

v8tail:
	ANDQ             $1, DX
	JZ               v8sum
	VMOVUPS          (SI), Z0
	VMOVUPS          64(SI), Z1
	VFMADD231PS.BCST (AX), Z0, Z16
	VFMADD231PS.BCST (AX), Z1, Z17
	VFMADD231PS.BCST (AX)(R8*1), Z0, Z18
	VFMADD231PS.BCST (AX)(R8*1), Z1, Z19
	VFMADD231PS.BCST (AX)(R8*2), Z0, Z20
	VFMADD231PS.BCST (AX)(R8*2), Z1, Z21
	VFMADD231PS.BCST (AX)(R10*1), Z0, Z22
	VFMADD231PS.BCST (AX)(R10*1), Z1, Z23
	VFMADD231PS.BCST (BX), Z0, Z24
	VFMADD231PS.BCST (BX), Z1, Z25
	VFMADD231PS.BCST (BX)(R8*1), Z0, Z26
	VFMADD231PS.BCST (BX)(R8*1), Z1, Z27
	VFMADD231PS.BCST (BX)(R8*2), Z0, Z28
	VFMADD231PS.BCST (BX)(R8*2), Z1, Z29
	VFMADD231PS.BCST (BX)(R10*1), Z0, Z30
	VFMADD231PS.BCST (BX)(R10*1), Z1, Z31

v8sum:
	MOVQ    out+40(FP), DX
	MOVQ    ldo+48(FP), R11
	SHLQ    $2, R11
	VADDPS  (DX), Z16, Z16
	VADDPS  64(DX), Z17, Z17
	VMOVUPS Z16, (DX)
	VMOVUPS Z17, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z18, Z18
	VADDPS  64(DX), Z19, Z19
	VMOVUPS Z18, (DX)
	VMOVUPS Z19, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z20, Z20
	VADDPS  64(DX), Z21, Z21
	VMOVUPS Z20, (DX)
	VMOVUPS Z21, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z22, Z22
	VADDPS  64(DX), Z23, Z23
	VMOVUPS Z22, (DX)
	VMOVUPS Z23, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z24, Z24
	VADDPS  64(DX), Z25, Z25
	VMOVUPS Z24, (DX)
	VMOVUPS Z25, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z26, Z26
	VADDPS  64(DX), Z27, Z27
	VMOVUPS Z26, (DX)
	VMOVUPS Z27, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z28, Z28
	VADDPS  64(DX), Z29, Z29
	VMOVUPS Z28, (DX)
	VMOVUPS Z29, 64(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z30, Z30
	VADDPS  64(DX), Z31, Z31
	VMOVUPS Z30, (DX)
	VMOVUPS Z31, 64(DX)
	VZEROUPPER
	RET

// func attendValues4x64AVX512(n int, p *float32, ldp int, v *float32, ldv int, out *float32, ldo int)
// out[r, 0:64] += Σ_j p[r·ldp + j]·v[j·ldv + 0:64] for the four rows r < 4, n ≥ 1 keys: a value
// row's 64 floats loaded once (four vectors) for four rows whose weights are broadcast into
// registers, sixteen FMAs on eight loads; row r's accumulators Z(16+4r)-Z(19+4r). Each key asks
// for the value row sixteen keys ahead.
TEXT ·attendValues4x64AVX512(SB), NOSPLIT, $0-56
	MOVQ   n+0(FP), CX
	MOVQ   p+8(FP), AX
	MOVQ   ldp+16(FP), R8
	SHLQ   $2, R8
	LEAQ   (R8)(R8*2), R10
	MOVQ   v+24(FP), SI
	MOVQ   ldv+32(FP), R9
	SHLQ   $2, R9
	ZERO_Z16_Z31

v4loop:
	LEAQ         (SI)(R9*8), DI
	LEAQ         (DI)(R9*8), DI
	PREFETCHT0   (DI)
	PREFETCHT0   64(DI)
	PREFETCHT0   128(DI)
	PREFETCHT0   192(DI)
	VMOVUPS      (SI), Z0
	VMOVUPS      64(SI), Z1
	VMOVUPS      128(SI), Z2
	VMOVUPS      192(SI), Z3
	VBROADCASTSS (AX), Z4
	VBROADCASTSS (AX)(R8*1), Z5
	VBROADCASTSS (AX)(R8*2), Z6
	VBROADCASTSS (AX)(R10*1), Z7
	VFMADD231PS  Z0, Z4, Z16
	VFMADD231PS  Z1, Z4, Z17
	VFMADD231PS  Z2, Z4, Z18
	VFMADD231PS  Z3, Z4, Z19
	VFMADD231PS  Z0, Z5, Z20
	VFMADD231PS  Z1, Z5, Z21
	VFMADD231PS  Z2, Z5, Z22
	VFMADD231PS  Z3, Z5, Z23
	VFMADD231PS  Z0, Z6, Z24
	VFMADD231PS  Z1, Z6, Z25
	VFMADD231PS  Z2, Z6, Z26
	VFMADD231PS  Z3, Z6, Z27
	VFMADD231PS  Z0, Z7, Z28
	VFMADD231PS  Z1, Z7, Z29
	VFMADD231PS  Z2, Z7, Z30
	VFMADD231PS  Z3, Z7, Z31
	ADDQ         $4, AX
	ADDQ         R9, SI
	DECQ         CX
	JNZ          v4loop

	MOVQ out+40(FP), DX
	MOVQ ldo+48(FP), R11
	SHLQ $2, R11
	VADDPS  (DX), Z16, Z16
	VMOVUPS Z16, (DX)
	VADDPS  64(DX), Z17, Z17
	VMOVUPS Z17, 64(DX)
	VADDPS  128(DX), Z18, Z18
	VMOVUPS Z18, 128(DX)
	VADDPS  192(DX), Z19, Z19
	VMOVUPS Z19, 192(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z20, Z20
	VMOVUPS Z20, (DX)
	VADDPS  64(DX), Z21, Z21
	VMOVUPS Z21, 64(DX)
	VADDPS  128(DX), Z22, Z22
	VMOVUPS Z22, 128(DX)
	VADDPS  192(DX), Z23, Z23
	VMOVUPS Z23, 192(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z24, Z24
	VMOVUPS Z24, (DX)
	VADDPS  64(DX), Z25, Z25
	VMOVUPS Z25, 64(DX)
	VADDPS  128(DX), Z26, Z26
	VMOVUPS Z26, 128(DX)
	VADDPS  192(DX), Z27, Z27
	VMOVUPS Z27, 192(DX)
	ADDQ    R11, DX
	VADDPS  (DX), Z28, Z28
	VMOVUPS Z28, (DX)
	VADDPS  64(DX), Z29, Z29
	VMOVUPS Z29, 64(DX)
	VADDPS  128(DX), Z30, Z30
	VMOVUPS Z30, 128(DX)
	VADDPS  192(DX), Z31, Z31
	VMOVUPS Z31, 192(DX)
	VZEROUPPER
	RET

// func maxAVX512(n int, x *float32) float32
// The largest of x[:n], n a positive multiple of 16: four accumulators of sixteen lanes (so the
// compares do not wait on each other), then folded to one lane.
TEXT ·maxAVX512(SB), NOSPLIT, $0-20
	MOVQ    n+0(FP), CX
	MOVQ    x+8(FP), SI
	VMOVUPS (SI), Z0
	VMOVAPS Z0, Z1
	VMOVAPS Z0, Z2
	VMOVAPS Z0, Z3
	SHRQ    $4, CX

mloop4:
	CMPQ    CX, $4
	JLT     mloop1
	VMAXPS  (SI), Z0, Z0
	VMAXPS  64(SI), Z1, Z1
	VMAXPS  128(SI), Z2, Z2
	VMAXPS  192(SI), Z3, Z3
	ADDQ    $256, SI
	SUBQ    $4, CX
	JMP     mloop4

mloop1:
	TESTQ   CX, CX
	JZ      mfold
	VMAXPS  (SI), Z0, Z0
	ADDQ    $64, SI
	DECQ    CX
	JMP     mloop1

mfold:
	VMAXPS        Z1, Z0, Z0
	VMAXPS        Z3, Z2, Z2
	VMAXPS        Z2, Z0, Z0
	VEXTRACTF32X8 $1, Z0, Y1
	VMAXPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0x4E, X0, X1
	VMAXPS        X1, X0, X0
	VPERMILPS     $0xB1, X0, X1
	VMAXPS        X1, X0, X0
	VZEROUPPER
	MOVSS         X0, ret+16(FP)
	RET

// func scaleAVX512(n int, x *float32, a float32)
// x[i] *= a for i < n, n a positive multiple of 16.
TEXT ·scaleAVX512(SB), NOSPLIT, $0-20
	MOVQ         n+0(FP), CX
	MOVQ         x+8(FP), SI
	VBROADCASTSS a+16(FP), Z1
	SHRQ         $4, CX

sloop:
	VMULPS  (SI), Z1, Z0
	VMOVUPS Z0, (SI)
	ADDQ    $64, SI
	DECQ    CX
	JNZ     sloop
	VZEROUPPER
	RET

// func addScaledAVX512(n int, y, x *float32, a float32)
// y[:n] += a·x[:n], n a positive multiple of 16.
TEXT ·addScaledAVX512(SB), NOSPLIT, $0-28
	MOVQ         n+0(FP), CX
	MOVQ         y+8(FP), DI
	MOVQ         x+16(FP), SI
	VBROADCASTSS a+24(FP), Z1
	SHRQ         $4, CX

aloop:
	VMOVUPS     (DI), Z0
	VFMADD231PS (SI), Z1, Z0
	VMOVUPS     Z0, (DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         aloop
	VZEROUPPER
	RET
